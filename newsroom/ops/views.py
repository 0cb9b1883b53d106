"""The Operations page: queues, workers, running editions and recent failures.

It is for the person on call, so it must answer fast and keep answering when
something is wrong. It reads only what is cheap: one broker round trip for the
queues, the workers' snapshot and the sample history from the cache (written by
the `ops_sample` task; asking workers live would take a second), the edition
rows' own counters, and the newest failed deliveries through an index. It
never counts deliveries, so a million queued ones cost it nothing. A Redis
that does not answer is shown on the page instead of failing it.

It hangs on the admin (newsroom/ops/admin.py) as the page of the table-less
`Operations` model, which gives it a permission, a link on the admin index and
the admin's login handling without a custom AdminSite.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from amqp.exceptions import AMQPError
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from newsroom.admin_mixins import ReadOnlyAdminMixin
from newsroom.ops import broker, charts, samples, workers
from subscriptions.models import Delivery, Edition
from subscriptions.selectors import (
    STALL_FIELDS,
    SendProgress,
    duration_text,
    edition_progress,
    edition_stalled_for,
    editions_needing_attention,
    eta_text,
    stalled_text,
)

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 15
EDITIONS_SHOWN = 50
FAILURES_SHOWN = 20
RATE_OVER = 300  # seconds of samples behind the "rate now" of an edition
UNAVAILABLE = (RedisError, BrokerError, AMQPError, OSError)


@dataclass(frozen=True)
class QueueRow:
    name: str
    depth: int
    oldest: str  # age of the oldest waiting message, "unknown", or "" when empty
    chart: SafeString


@dataclass(frozen=True)
class WorkerRow:
    worker: workers.WorkerInfo
    answered: bool
    last_seen: str  # "12 s ago"
    longest_task: str  # how long its oldest task in progress has run, or ""


@dataclass(frozen=True)
class EditionRow:
    edition: Edition
    url: str | None
    progress: SendProgress
    rate: float | None  # messages/s over the last samples, else the mean since it started
    rate_is_recent: bool
    eta: datetime | None
    eta_text: str  # "in 20 s"; "—" while the rate is unknown
    stalled: str  # "Stalled: no progress for 6 min", or "" (subscriptions.selectors)


def recent_failures(limit: int = FAILURES_SHOWN) -> QuerySet[Delivery]:
    """The newest failed deliveries, newest attempt first.

    A backward range scan of the (status, claimed_at) index, stopped after
    `limit` rows: its cost does not grow with the table (see the query plan
    test). Failed deliveries always have claimed_at: they fail while claimed.
    """
    return (
        Delivery.objects.filter(status=Delivery.Status.FAILED)
        .select_related("subscriber")
        .only("id", "edition_id", "last_error", "claimed_at", "subscriber__email")
        .order_by("-claimed_at", "-id")[:limit]
    )


def _queues(names: list[str], history: list[samples.Sample]
            ) -> tuple[list[QueueRow], int | None, str]:
    try:
        stats = broker.queue_stats(names)
        unacked: int | None = broker.unacked_count()
    except UNAVAILABLE as exc:
        logger.warning("ops page: broker unavailable", exc_info=True)
        return [], None, f"The broker did not answer: {exc}"
    rows = [
        QueueRow(
            name=stat.name, depth=stat.depth,
            oldest=(duration_text(stat.oldest_age) if stat.oldest_age is not None
                    else "unknown" if stat.depth else ""),
            chart=charts.line_chart(samples.depth_series(history, stat.name),
                                    title=f"Messages waiting in {stat.name}, last hour",
                                    unit="messages", ident=f"depth-{stat.name}"),
        )
        for stat in stats
    ]
    return rows, unacked, ""


def _workers(snapshot: workers.Snapshot, now: float) -> list[WorkerRow]:
    return [
        WorkerRow(
            worker=worker, answered=snapshot.answered(worker),
            last_seen=f"{duration_text(now - worker.last_seen)} ago",
            longest_task=(duration_text(now - worker.oldest_task_started)
                          if worker.oldest_task_started else ""),
        )
        for worker in snapshot.workers
    ]


def _editions(request: HttpRequest, history: list[samples.Sample], now: datetime
              ) -> tuple[list[EditionRow], bool]:
    found = list(
        Edition.objects.filter(status__in=samples.RUNNING)
        .only(*STALL_FIELDS, "key", "finished_at", "targeted", "sent", "failed", "skipped")
        .order_by("scheduled_at", "id")[: EDITIONS_SHOWN + 1]
    )
    may_view = request.user.has_perm("subscriptions.view_edition")
    rows = []
    for edition in found[:EDITIONS_SHOWN]:
        progress = edition_progress(edition, now=now)
        sent_rate = samples.recent_rate(samples.edition_series(history, edition.pk),
                                        over=RATE_OVER)
        done_rate = samples.recent_rate(samples.edition_series(history, edition.pk, done=True),
                                        over=RATE_OVER)
        eta = progress.eta
        left = edition.targeted - progress.done
        if done_rate and edition.status == Edition.Status.SENDING and left > 0:
            eta = now + timedelta(seconds=left / done_rate)
        stalled = edition_stalled_for(edition, now=now)
        rows.append(EditionRow(
            edition=edition,
            url=reverse("admin:subscriptions_edition_change", args=[edition.pk])
            if may_view else None,
            progress=progress,
            rate=sent_rate if sent_rate is not None else progress.rate,
            rate_is_recent=sent_rate is not None,
            eta=eta,
            eta_text=eta_text(eta, now=now),
            stalled=stalled_text(stalled) if stalled else "",
        ))
    return rows, len(found) > EDITIONS_SHOWN


def operations_context(request: HttpRequest) -> dict[str, Any]:
    """Everything the page shows; a constant number of queries and Redis calls."""
    now = time.time()
    try:
        snapshot, history, cache_error = workers.snapshot_get(), samples.history(now=now), ""
    except UNAVAILABLE as exc:
        logger.warning("ops page: cache unavailable", exc_info=True)
        snapshot, history, cache_error = None, [], f"The cache did not answer: {exc}"
    names = sorted(set(broker.known_queues()) | (snapshot.queues if snapshot else set()))
    queues, unacked, broker_error = _queues(names, history)
    editions, more_editions = _editions(request, history, timezone.now())
    interval = samples.sample_interval()
    return {
        "refresh_seconds": REFRESH_SECONDS,
        "queues": queues,
        "waiting": sum(queue.depth for queue in queues),
        "unacked": unacked,
        "broker_error": broker_error,
        "cache_error": cache_error,
        "snapshot": snapshot,
        "snapshot_age": duration_text(snapshot.age(now)) if snapshot else "",
        "snapshot_stale": snapshot is not None and snapshot.age(now) > 3 * interval,
        "workers": _workers(snapshot, now) if snapshot else [],
        "sample_interval": interval,
        "editions": editions,
        "more_editions": more_editions,
        "stalled_count": sum(1 for row in editions if row.stalled),
        "attention": editions_needing_attention(now=timezone.now()),
        "stall_after": duration_text(settings.NEWSROOM_STALL_AFTER),
        "send_rate_chart": charts.line_chart(
            samples.send_rate_series(history), title="Messages sent per second, last hour",
            unit="msg/s", ident="send-rate",
        ),
        "failures": list(recent_failures()),
        "failures_url": reverse("admin:subscriptions_delivery_changelist")
        + f"?status__exact={Delivery.Status.FAILED}"
        if request.user.has_perm("subscriptions.view_delivery") else None,
    }


class OperationsAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The admin face of the `Operations` model: one read-only page, no rows."""

    template = "admin/ops/operations.html"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("newsroom.view_operations")

    def get_urls(self) -> list[URLPattern]:
        # Named like a change list, so the admin index links to it.
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [path("", self.admin_site.admin_view(self.operations_view),
                     name=f"{info}_changelist")]

    def operations_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.template, {
            **self.admin_site.each_context(request),
            "title": "Operations",
            "subtitle": None,
            "opts": self.opts,
            **operations_context(request),
        })
