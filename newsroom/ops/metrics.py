"""Prometheus metrics at /metrics, read from shared state at scrape time.

Every figure comes from the database or Redis when Prometheus asks, never from
counters in process memory: gunicorn runs several workers and Celery several
processes, and per-process counters would differ by whichever one answered.
The scrape stays cheap because it only aggregates small tables (editions,
tracking events) and never counts deliveries, which can be millions of rows:
delivery figures are the per-edition counters the send path already keeps.

Each section is gathered on its own; one that fails (Redis down, say) is left
out and `newsroom_scrape_section_ok{section}` turns 0, so the rest still arrive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DateTimeField, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from newsroom.ops import broker, canary
from newsroom.ops.health import metrics_token_valid
from subscriptions.models import Edition, TrackingEvent
from subscriptions.reconcile_counters import RECONCILE_ACTIONS, reconcile_totals
from subscriptions.selectors import editions_stalled

logger = logging.getLogger(__name__)

REDIS_TIMEOUT = 2

# --- The collector ---------------------------------------------------------------------

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
DELIVERY_STATUSES = ("sent", "failed", "skipped")


def _transport(value: str) -> str:
    return value or "unknown"  # editions dispatched before the transport was recorded


class NewsroomCollector:
    """Collects every Newsroom metric at scrape time (a prometheus_client Collector)."""

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        sections: list[tuple[str, Callable[[], list[Metric]]]] = [
            ("queues", self._queues), ("canary", self._canary),
            ("reconcile", self._reconcile), ("editions", self._editions),
            ("webhooks", self._webhooks),
        ]
        ok = GaugeMetricFamily("newsroom_scrape_section_ok",
                               "1 if the section was read, 0 if it failed (see the logs).",
                               labels=["section"])
        for name, gather in sections:
            try:
                metrics = gather()
            except Exception:  # one dead source must not blank the whole scrape
                logger.exception("metrics section %s failed", name)
                ok.add_metric([name], 0)
                continue
            ok.add_metric([name], 1)
            yield from metrics
        yield ok
        yield GaugeMetricFamily("newsroom_scrape_duration_seconds",
                                "Time taken to gather these metrics.",
                                value=time.monotonic() - started)

    def _queues(self) -> list[Metric]:
        # Fail fast: kombu would retry a dead broker for seconds before giving up.
        broker.broker_ping(REDIS_TIMEOUT)
        depth = GaugeMetricFamily("newsroom_queue_depth",
                                  "Messages waiting in the queue.", labels=["queue"])
        age = GaugeMetricFamily(
            "newsroom_queue_oldest_age_seconds",
            "Age of the oldest waiting message (0 when the queue is empty).", labels=["queue"],
        )
        consumers = GaugeMetricFamily(
            "newsroom_queue_consumers",
            "Consumers subscribed to the queue (RabbitMQ only; 0: nobody drains it).",
            labels=["queue"],
        )
        for stats in broker.queue_stats():
            depth.add_metric([stats.name], stats.depth)
            if stats.depth == 0:
                age.add_metric([stats.name], 0)
            elif stats.oldest_age is not None:  # left out when unstamped or unknown (RabbitMQ)
                age.add_metric([stats.name], stats.oldest_age)
            if stats.consumers is not None:
                consumers.add_metric([stats.name], stats.consumers)
        unacked = GaugeMetricFamily(
            "newsroom_queue_unacked",
            "Messages taken by workers and not yet acknowledged (in progress; Redis only).",
            labels=[],
        )
        if (in_progress := broker.unacked_count()) is not None:  # RabbitMQ: unknown, left out
            unacked.add_metric([], in_progress)
        return [depth, age, consumers, unacked]

    def _canary(self) -> list[Metric]:
        states = canary.canary_states()
        now = time.time()
        completed = GaugeMetricFamily(
            "newsroom_canary_last_completed_timestamp_seconds",
            "When a worker last completed the canary task from this queue (unix time).",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "newsroom_canary_age_seconds",
            "Seconds since the canary last completed on this queue (+Inf: never).",
            labels=["queue"],
        )
        waited = GaugeMetricFamily(
            "newsroom_canary_wait_seconds",
            "How long the last completed canary waited in this queue.", labels=["queue"],
        )
        for queue in broker.known_queues():
            state = states.get(queue)
            if state is None:
                age.add_metric([queue], float("inf"))
                continue
            completed.add_metric([queue], state.completed_at)
            age.add_metric([queue], max(0.0, now - state.completed_at))
            if state.waited is not None:
                waited.add_metric([queue], state.waited)
        return [completed, age, waited]

    def _reconcile(self) -> list[Metric]:
        totals = reconcile_totals()
        actions = CounterMetricFamily(
            "newsroom_reconcile_actions",
            "Repairs made by editions_reconcile: " + "; ".join(
                f"{action} = {meaning}" for action, meaning in RECONCILE_ACTIONS.items()),
            labels=["action"],
        )
        for action in RECONCILE_ACTIONS:
            actions.add_metric([action], totals.get(action, 0))
        metrics: list[Metric] = [
            actions,
            CounterMetricFamily("newsroom_reconcile_runs", "editions_reconcile runs.",
                                value=totals.get("runs", 0)),
        ]
        if "last_run" in totals:
            metrics.append(GaugeMetricFamily(
                "newsroom_reconcile_last_run_timestamp_seconds",
                "When editions_reconcile last ran (unix time).", value=totals["last_run"],
            ))
        return metrics

    def _editions(self) -> list[Metric]:
        deliveries = CounterMetricFamily(
            "newsroom_deliveries",
            "Deliveries by outcome, summed from the editions' counters. Retrying an "
            "edition's failed deliveries lowers its failed count (read as a counter reset).",
            labels=["kind", "transport", "status"],
        )
        targeted = CounterMetricFamily(
            "newsroom_deliveries_targeted", "Deliveries written when editions were dispatched.",
            labels=["kind", "transport"],
        )
        requeued = CounterMetricFamily(
            "newsroom_deliveries_requeued",
            "Deliveries put back after a worker died mid-batch (possible duplicates).",
            labels=["kind", "transport"],
        )
        for row in (
            Edition.objects.order_by().values("kind", "transport").annotate(
                targeted=Sum("targeted"), sent=Sum("sent"), failed=Sum("failed"),
                skipped=Sum("skipped"), requeued=Sum("requeued"),
            )
        ):
            labels = [row["kind"], _transport(row["transport"])]
            for status in DELIVERY_STATUSES:
                deliveries.add_metric([*labels, status], row[status] or 0)
            targeted.add_metric(labels, row["targeted"] or 0)
            requeued.add_metric(labels, row["requeued"] or 0)

        by_status = GaugeMetricFamily("newsroom_editions", "Editions by kind and status.",
                                      labels=["kind", "status"])
        counts = {
            (row["kind"], row["status"]): row["n"]
            for row in Edition.objects.order_by().values("kind", "status").annotate(n=Count("id"))
        }
        for kind in Edition.Kind.values:
            for status in Edition.Status.values:
                by_status.add_metric([kind, status], counts.get((kind, status), 0))

        stalled = GaugeMetricFamily(
            "newsroom_editions_stalled",
            "Planned or sending editions with no progress for NEWSROOM_STALL_AFTER seconds "
            "(the rule the edition and Operations pages flag).", labels=["kind"],
        )
        found = editions_stalled(now=timezone.now())
        for kind in Edition.Kind.values:
            stalled.add_metric([kind], sum(1 for edition in found if edition.kind == kind))

        caught_up = CounterMetricFamily(
            "newsroom_digests_caught_up",
            "Digest editions made after their lateness window because the schedule (beat) "
            "was not running when they were due.",
            value=Edition.objects.filter(kind=Edition.Kind.DIGEST,
                                         note__startswith=Edition.CAUGHT_UP).count(),
        )
        return [deliveries, targeted, requeued, by_status, stalled, caught_up, self._failed(),
                *self._durations()]

    def _failed(self) -> Metric:
        """Editions stopped for a person to act, each with its reason (few: they wait
        for a retry or a cancel), so an alert rule can say what is wrong."""
        failed = GaugeMetricFamily(
            "newsroom_edition_failed_info",
            "1 for each edition stopped as failed (the reason is on its admin page too).",
            labels=["edition", "kind", "reason"],
        )
        for pk, kind, note in (Edition.objects.filter(status=Edition.Status.FAILED)
                               .order_by("-id").values_list("pk", "kind", "note")[:50]):
            failed.add_metric([str(pk), kind, note[:200]], 1)
        return failed

    def _durations(self) -> list[Metric]:
        """Send durations of done editions: a histogram over all of them (cumulative, as
        Prometheus expects), the last one per kind, and how long the oldest still sending
        edition has been at it."""
        finished = Edition.objects.order_by().filter(
            status=Edition.Status.DONE, started_at__isnull=False, finished_at__isnull=False,
        )
        took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        within = {
            f"le_{bucket}": Count("id", filter=Q(
                finished_at__lte=ExpressionWrapper(
                    F("started_at") + timedelta(seconds=bucket), output_field=DateTimeField())
            ))
            for bucket in DURATION_BUCKETS
        }
        histogram = HistogramMetricFamily(
            "newsroom_edition_duration_seconds",
            "From dispatch to done, for editions that finished sending.", labels=["kind"],
        )
        for row in finished.values("kind").annotate(n=Count("id"), total=Sum(took), **within):
            buckets = [(floatToGoString(bucket), row[f"le_{bucket}"])
                       for bucket in DURATION_BUCKETS]
            total = row["total"].total_seconds() if row["total"] is not None else 0.0
            histogram.add_metric([row["kind"]], [*buckets, ("+Inf", row["n"])], total)

        last = GaugeMetricFamily("newsroom_edition_last_duration_seconds",
                                 "Send duration of the latest finished edition.", labels=["kind"])
        for kind in Edition.Kind.values:
            latest = (finished.filter(kind=kind).order_by("-finished_at")
                      .values_list("started_at", "finished_at").first())
            if latest is not None and latest[0] and latest[1]:  # both set, as filtered
                last.add_metric([kind], (latest[1] - latest[0]).total_seconds())

        sending = GaugeMetricFamily(
            "newsroom_edition_oldest_sending_age_seconds",
            "How long the longest-running edition still sending has been at it (0: none).",
            labels=["kind"],
        )
        oldest = dict(
            Edition.objects.order_by().filter(status=Edition.Status.SENDING)
            .values("kind").annotate(first=Min("started_at")).values_list("kind", "first")
        )
        now = timezone.now()
        for kind in Edition.Kind.values:
            first = oldest.get(kind)
            sending.add_metric([kind], (now - first).total_seconds() if first else 0)
        return [histogram, last, sending]

    def _webhooks(self) -> list[Metric]:
        events = CounterMetricFamily(
            "newsroom_webhook_events",
            "ESP tracking events acted on (bounces, complaints...), deduplicated.",
            labels=["event_type"],
        )
        for event_type, n in (
            TrackingEvent.objects.order_by().values("event_type").annotate(n=Count("id"))
            .values_list("event_type", "n")
        ):
            events.add_metric([event_type], n)
        return [events]


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(NewsroomCollector())


# --- The endpoint -------------------------------------------------------------------------

@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for `Authorization: Bearer <NEWSROOM_METRICS_TOKEN>`.

    Without a configured token the endpoint does not exist (404), so it is never
    open by accident; the token is compared in constant time.
    """
    if not settings.NEWSROOM_METRICS_TOKEN:
        return HttpResponseNotFound("not found\n", content_type="text/plain")
    if not metrics_token_valid(request):
        response = HttpResponse("a valid bearer token is required\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
