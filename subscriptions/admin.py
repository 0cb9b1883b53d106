"""Subscriber admin: look people up, export, erase, unsubscribe.

Subscribers are view-only here. Every change to a subscriber goes through a
service that records consent evidence (subscriptions/services/), so staff act
through actions and buttons that call those services: "Unsubscribe selected"
(change permission), "Export data (JSON)" and the CSV export (export
permission), "Erase" (erase permission). Nobody adds subscribers by hand
(double opt-in is the only way in) or deletes them (erasure is).

Editions and deliveries are read-only too: services make them, and staff with
`send_edition` steer a send (pause, resume, cancel, retry failed, test) from the
edition's page, each change a confirmed POST through a service.
"""

from __future__ import annotations

import csv
import email
import email.policy
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from anymail.exceptions import AnymailError
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import display_for_field, lookup_field, model_ngettext, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.template.defaultfilters import linebreaksbr
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import conditional_escape, format_html, format_html_join

from newsroom.admin_mixins import ReadOnlyAdminMixin
from newsroom.middleware import allow_inline_styles
from newsroom.models import Category
from newsroom.ops.samples import edition_rate_chart
from subscriptions.addresses import search_term
from subscriptions.admin_import import import_urls
from subscriptions.edition_content import ContentError
from subscriptions.forms import AddressField
from subscriptions.models import (
    ConsentRecord,
    Delivery,
    Edition,
    Subscriber,
    TrackingEvent,
)
from subscriptions.selectors import (
    edition_audience_text,
    edition_delivery_counts,
    edition_stalled_for,
    eta_text,
    stalled_text,
)
from subscriptions.services.deliveries import edition_render_for, edition_send_test
from subscriptions.services.editions import (
    EditionError,
    alert_audience,
    edition_cancel,
    edition_pause,
    edition_resume,
    edition_retry_failed,
)
from subscriptions.services.privacy import subscriber_erase, subscriber_export
from subscriptions.services.subscribers import subscriber_unsubscribe

logger = logging.getLogger(__name__)

CSV_COLUMNS = [
    "email", "status", "frequency", "wants_alerts", "categories", "timezone", "digest_hour",
    "created_at", "confirmed_at", "unsubscribed_at", "suppression_reason",
]
# A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """A file-like object whose write() hands the line back, for streaming csv."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


class _SubscriberPermissionMixin(ReadOnlyAdminMixin):
    """Consent and event rows are part of the subscriber: seeing one is seeing both."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("subscriptions.view_subscriber")


class ConsentRecordInline(_SubscriberPermissionMixin, admin.TabularInline):
    """The append-only consent record, shown, never edited."""

    model = ConsentRecord
    fields = ["at", "action", "method", "ip_address", "user_agent", "page", "wording_version",
              "details"]
    readonly_fields = fields
    ordering = ["at", "id"]
    extra = 0
    can_delete = False


class TrackingEventInline(_SubscriberPermissionMixin, admin.TabularInline):
    """Bounces and complaints the ESP reported, and what we did about them."""

    model = TrackingEvent
    verbose_name_plural = "email events (bounces, complaints, ESP unsubscribes)"
    fields = ["received_at", "esp", "event_type", "reason", "outcome"]
    readonly_fields = fields
    ordering = ["received_at", "id"]
    extra = 0
    can_delete = False


@admin.register(Subscriber)
class SubscriberAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only rows: double opt-in is the only way in, changes go through services
    (see the module docstring), and erasure replaces deletion, since consent
    records must outlive the person's data."""

    list_display = ["email", "status", "frequency", "wants_alerts", "category_list",
                    "created_at", "confirmed_at"]
    list_filter = ["status", "frequency", "wants_alerts", "categories"]
    search_fields = ["email"]
    search_help_text = "Search by email address (or part of it)."

    def get_search_results(self, request, queryset, search_term_):
        # Addresses are stored with ASCII domains: search in that spelling.
        return super().get_search_results(request, queryset, search_term(search_term_))
    fieldsets = [
        (None, {"fields": ["email", "status", "suppression_reason"]}),
        ("Preferences", {"fields": ["categories", "frequency", "wants_alerts", "timezone",
                                    "digest_hour"]}),
        ("History", {"fields": ["created_at", "confirmed_at", "unsubscribed_at", "soft_bounces",
                                "erased_at"]}),
    ]
    inlines = [ConsentRecordInline, TrackingEventInline]
    actions = ["unsubscribe_selected"]
    change_list_template = "admin/subscriptions/subscriber/change_list.html"
    change_form_template = "admin/subscriptions/subscriber/change_form.html"
    erase_confirmation_template = "admin/subscriptions/subscriber/erase_confirmation.html"
    unsubscribe_confirmation_template = (
        "admin/subscriptions/subscriber/unsubscribe_confirmation.html"
    )

    # --- Permissions ---------------------------------------------------------

    def has_unsubscribe_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.change_subscriber")

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.export_subscriber")

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.erase_subscriber")

    # --- Change list -------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subscriber]:
        return super().get_queryset(request).prefetch_related(
            Prefetch("categories", queryset=Category.objects.only("id", "name", "order"))
        )

    @admin.display(description="categories")
    def category_list(self, subscriber: Subscriber) -> str:
        return ", ".join(category.name for category in subscriber.categories.all()) or "—"

    def category_counts(self) -> list[Category]:
        """Active subscribers per category, in category order, in one query."""
        active = Count("subscribers", filter=Q(subscribers__status=Subscriber.Status.ACTIVE))
        # Explicit order: Meta.ordering does not apply to a GROUP BY query.
        return list(
            Category.objects.annotate(active=active)
            .only("id", "name", "slug", "order")
            .order_by("order", "name")
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        export_url = reverse("admin:subscriptions_subscriber_export_csv")
        if request.GET:
            export_url += f"?{request.GET.urlencode()}"  # the export keeps the list's filters
        context = {
            "category_counts": self.category_counts(),
            "has_export_permission": self.has_export_permission(request),
            "export_csv_url": export_url,
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    # --- Change form -----------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            "has_export_permission": self.has_export_permission(request),
            "has_erase_permission": self.has_erase_permission(request),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    # --- Extra views -------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("export.csv", view(self.export_csv_view),
                 name="subscriptions_subscriber_export_csv"),
            path("<path:object_id>/export/", view(self.export_json_view),
                 name="subscriptions_subscriber_export_json"),
            path("<path:object_id>/erase/", view(self.erase_view),
                 name="subscriptions_subscriber_erase"),
            *import_urls(self),
            *super().get_urls(),
        ]

    def _get_subscriber(self, request: HttpRequest, object_id: str) -> Subscriber:
        subscriber = self.get_object(request, unquote(object_id))
        if subscriber is None:
            raise Http404(f"No subscriber with id {object_id!r}.")
        return subscriber

    def export_csv_view(self, request: HttpRequest) -> HttpResponse:
        """The change list as it stands (filters, search, order) as CSV, streamed."""
        if not (self.has_view_permission(request) and self.has_export_permission(request)):
            raise PermissionDenied
        try:
            queryset = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(
                reverse("admin:subscriptions_subscriber_changelist") + "?e=1"
            )
        logger.info("subscriber CSV export",
                    extra={"user_id": request.user.pk, "query": request.GET.urlencode()})
        writer = csv.writer(_Echo())

        def rows() -> Iterator[str]:
            yield writer.writerow(CSV_COLUMNS)
            for subscriber in queryset.iterator(chunk_size=1000):
                yield writer.writerow([
                    _cell(subscriber.email), subscriber.status, subscriber.frequency,
                    subscriber.wants_alerts,
                    " ".join(category.slug for category in subscriber.categories.all()),
                    subscriber.timezone, subscriber.digest_hour, _cell(subscriber.created_at),
                    _cell(subscriber.confirmed_at), _cell(subscriber.unsubscribed_at),
                    _cell(subscriber.suppression_reason),
                ])

        response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
        filename = f"subscribers-{timezone.now():%Y%m%d-%H%M}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    def export_json_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Everything held about one person (a subject access request), as a download."""
        if not self.has_export_permission(request):
            raise PermissionDenied
        subscriber = self._get_subscriber(request, object_id)
        data = subscriber_export(subscriber=subscriber)
        self.log_change(request, subscriber, "Exported personal data.")
        response = HttpResponse(
            json.dumps(data, indent=2, ensure_ascii=False),
            content_type="application/json; charset=utf-8",
        )
        response["Content-Disposition"] = (
            f'attachment; filename="subscriber-{subscriber.pk}.json"'
        )
        return response

    def erase_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Confirm first; erase only on a POST that carries the confirmation."""
        if not self.has_erase_permission(request):
            raise PermissionDenied
        subscriber = self._get_subscriber(request, object_id)
        change_url = reverse("admin:subscriptions_subscriber_change", args=[subscriber.pk])
        if request.method == "POST" and request.POST.get("post") == "yes":
            if subscriber.erased_at is not None:
                self.message_user(request, "This subscriber was already erased.", messages.WARNING)
                return HttpResponseRedirect(change_url)
            subscriber_erase(subscriber=subscriber, by=request.user)
            subscriber.refresh_from_db()  # the history must name the erased row, not the address
            self.log_change(request, subscriber, "Erased personal data on request.")
            self.message_user(
                request,
                f"Subscriber #{subscriber.pk} erased: the address and consent details are gone; "
                "topics and frequency remain for the counts.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": "Erase subscriber",
            "subtitle": None,
            "opts": self.opts,
            "subscriber": subscriber,
            "consent_count": subscriber.consents.count(),
            "change_url": change_url,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.erase_confirmation_template, context)

    # --- Actions -------------------------------------------------------------------------

    @admin.action(permissions=["unsubscribe"], description="Unsubscribe selected subscribers")
    def unsubscribe_selected(
        self, request: HttpRequest, queryset: QuerySet[Subscriber]
    ) -> TemplateResponse | None:
        """Shaped like Django's delete_selected: confirm, then act on the POST that
        carries the confirmation. No goodbye email: the reader did not ask."""
        subscribers = list(queryset)
        to_change = [
            s for s in subscribers
            if s.status != Subscriber.Status.UNSUBSCRIBED and s.erased_at is None
        ]
        unchanged = [s for s in subscribers if s not in to_change]

        if request.method == "POST" and request.POST.get("post") == "yes":
            changed = 0
            for subscriber in to_change:
                if subscriber_unsubscribe(
                    subscriber=subscriber, info=None, method="admin", send_goodbye=False,
                    reason="unsubscribed by staff",
                ):
                    changed += 1
                    self.log_change(request, subscriber, "Unsubscribed (admin action).")
            message = f"Unsubscribed {changed} {model_ngettext(self.opts, changed)}."
            skipped = len(subscribers) - changed
            if skipped:
                message += f" {skipped} already unsubscribed, left as is."
            self.message_user(request, message, messages.SUCCESS if changed else messages.WARNING)
            return None

        context = {
            **self.admin_site.each_context(request),
            "title": f"Unsubscribe {model_ngettext(self.opts, len(subscribers))}",
            "subtitle": None,
            "opts": self.opts,
            "subscribers": subscribers,
            "to_change": to_change,
            "unchanged": unchanged,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.unsubscribe_confirmation_template, context)


# --- Editions ----------------------------------------------------------------------------
#
# Editions are made by services (alerts from the story admin, digests by the
# scheduler) and are never edited by hand: the admin shows them and steers them
# through the services, each change on a confirmed POST with `send_edition`.


@dataclass(frozen=True)
class SendProgress:
    """How far a send is, from the counters on the edition row alone (no query)."""

    done: int  # sent + failed + skipped: deliveries needing no more work
    targeted: int
    rate: float | None  # messages sent per second since it started (a mean, pauses included)
    eta: datetime | None  # when the rest should be through, at the pace so far

    @property
    def percent(self) -> int | None:
        return min(100, self.done * 100 // self.targeted) if self.targeted else None


def send_progress(edition: Edition, *, now: datetime) -> SendProgress:
    """The ETA follows all work done, not only sends: skips and failures also
    empty the queue, and a digest skips many readers with nothing new."""
    done = edition.sent + edition.failed + edition.skipped
    rate = eta = None
    if edition.started_at is not None:
        elapsed = ((edition.finished_at or now) - edition.started_at).total_seconds()
        if elapsed > 0:
            rate = edition.sent / elapsed
            left = edition.targeted - done
            if edition.status == Edition.Status.SENDING and left > 0 and done > 0:
                eta = now + timedelta(seconds=left * elapsed / done)
    return SendProgress(done=done, targeted=edition.targeted, rate=rate, eta=eta)


class SubscriberEmailForm(forms.Form):
    email = AddressField(label="Subscriber email", max_length=254)

    def __init__(self, *args: Any, required: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["email"].required = required


@dataclass(frozen=True)
class _Steer:
    """One way to steer an edition: when it applies, what it does, the service."""

    verb: str
    explain: str
    problem: Callable[[Edition], str | None]  # why it does not apply now, or None
    run: Callable[[Edition], str | None]  # the outcome for the message; None: nothing done


def _not_in(*statuses: str) -> Callable[[Edition], str | None]:
    def problem(edition: Edition) -> str | None:
        if edition.status in statuses:
            return None
        return f"it is {edition.get_status_display().lower()}"
    return problem


def _retry_problem(edition: Edition) -> str | None:
    # Only where sending goes on or is over: retrying sets the edition sending,
    # which would undo a pause or bring back a cancelled or expired send.
    if problem := _not_in(Edition.Status.SENDING, Edition.Status.DONE,
                          Edition.Status.FAILED)(edition):
        return problem
    if edition.status == Edition.Status.FAILED:  # stopped as a whole: it goes on
        return None
    return None if edition.failed else "it has no failed deliveries"


def _pause(edition: Edition) -> str | None:
    return "paused" if edition_pause(edition=edition) else None


def _resume(edition: Edition) -> str | None:
    return "resumed" if edition_resume(edition=edition) else None


def _cancel(edition: Edition) -> str | None:
    skipped = edition_cancel(edition=edition)  # 0 both when cancelled early and when refused
    edition.refresh_from_db(fields=["status"])
    if edition.status != Edition.Status.CANCELLED:
        return None
    return f"cancelled; {skipped} deliveries not sent yet were skipped"


def _retry(edition: Edition) -> str | None:
    was_failed = edition.status == Edition.Status.FAILED
    count = edition_retry_failed(edition=edition)
    if was_failed:
        return f"sending again ({count} failed deliveries queued again)"
    return f"{count} failed deliveries queued again" if count else None


STEERS: dict[str, _Steer] = {
    "pause": _Steer(
        "Pause",
        "Batches stop taking deliveries; messages already handed to the mail server still "
        "go out. Resume carries on where it stopped.",
        _not_in(Edition.Status.PLANNED, Edition.Status.SENDING), _pause,
    ),
    "resume": _Steer(
        "Resume", "Its remaining deliveries are queued again and sending carries on.",
        _not_in(Edition.Status.PAUSED), _resume,
    ),
    "cancel": _Steer(
        "Cancel",
        "Sending stops for good: every delivery not sent yet is skipped. This cannot be "
        "undone, and the same edition can never be sent again.",
        _not_in(Edition.Status.PLANNED, Edition.Status.SENDING, Edition.Status.PAUSED),
        _cancel,
    ),
    "retry": _Steer(
        "Retry",
        "A failed edition sends again, its content checked first; failed deliveries are "
        "queued again with fresh attempts. Fix what made them fail first (the story, a mail "
        "server refusing, a wrong setting), or they fail again.",
        _retry_problem, _retry,
    ),
}


@admin.register(Edition)
class EditionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Made by services only, steered through them, never edited; kept as the
    ledger of who got what."""


    list_display = ["id", "kind", "key", "status", "scheduled_at", "started_at", "finished_at",
                    "targeted", "sent", "failed", "skipped", "requeued", "progress", "rate",
                    "eta"]
    list_display_links = ["id", "key"]
    list_filter = ["kind", "status"]
    search_fields = ["key"]
    fieldsets = [
        (None, {"fields": ["key", "kind", "frequency", "status", "note", "story_list",
                           "audience_text", "created_by", "created_at"]}),
        ("Timing", {"fields": ["scheduled_at", "window_end", "started_at", "dispatched_at",
                               "finished_at", "last_progress_at"]}),
        ("Progress", {"fields": ["targeted", "sent", "failed", "skipped", "requeued",
                                 "progress", "rate", "eta"]}),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]
    actions = ["pause_selected", "resume_selected", "cancel_selected"]
    change_form_template = "admin/subscriptions/edition/change_form.html"
    steer_confirmation_template = "admin/subscriptions/edition/steer_confirmation.html"
    send_test_template = "admin/subscriptions/edition/send_test.html"
    preview_template = "admin/subscriptions/edition/preview.html"
    recent_failures = 20

    # --- Permissions ---------------------------------------------------------------

    def has_send_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.send_edition")

    def has_preview_permission(self, request: HttpRequest) -> bool:
        """A preview shows a named reader's copy, personal links included."""
        return request.user.has_perm(f"{self.opts.app_label}.view_subscriber")

    # --- Columns (from the row alone: the change list makes no query per row) -----------

    @admin.display(description="progress")
    def progress(self, edition: Edition) -> str:
        progress = send_progress(edition, now=timezone.now())
        if progress.percent is None:
            return "—"
        return format_html(
            '<progress value="{}" max="{}" title="{} of {}"></progress> {}%',
            progress.done, progress.targeted, progress.done, progress.targeted,
            progress.percent,
        )

    @admin.display(description="rate")
    def rate(self, edition: Edition) -> str:
        rate = send_progress(edition, now=timezone.now()).rate
        return "—" if rate is None else f"{rate:.1f}/s"

    @admin.display(description="ETA")
    def eta(self, edition: Edition) -> str:
        now = timezone.now()
        eta = send_progress(edition, now=now).eta
        if eta is None:
            return "—"
        return format_html('<time datetime="{}" title="{}">{}</time>', eta.isoformat(),
                           date_format(timezone.localtime(eta), "DATETIME_FORMAT"),
                           eta_text(eta, now=now))

    @admin.display(description="audience")
    def audience_text(self, edition: Edition) -> str:
        return edition_audience_text(edition)

    @admin.display(description="stories")
    def story_list(self, edition: Edition) -> str:
        stories = list(edition.stories.only("id", "headline")[:21])
        if not stories:
            return "—"
        links = format_html_join(
            "", '<li><a href="{}">{}</a></li>',
            ((reverse("admin:newsroom_story_change", args=[story.pk]), story.headline)
             for story in stories[:20]),
        )
        more = format_html("<li>…</li>") if len(stories) > 20 else ""
        return format_html("<ul>{}{}</ul>", links, more)

    # --- Change page ----------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        edition = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if edition is not None:
            counts, sent_by_revision = edition_delivery_counts(edition)
            context.update(self._live_context(request, edition))
            context.update({
                "status_counts": [
                    (label, counts[value]) for value, label in Delivery.Status.choices
                ],
                "sent_by_revision": sent_by_revision,
                "recent_failed": list(
                    Delivery.objects.filter(edition=edition, status=Delivery.Status.FAILED)
                    .select_related("subscriber").only(
                        "id", "attempts", "last_error", "claimed_at", "subscriber__email")
                    .order_by("-claimed_at", "-id")[: self.recent_failures]
                ),
                "failed_list_url": (
                    reverse("admin:subscriptions_delivery_changelist")
                    + f"?edition__id__exact={edition.pk}&status__exact={Delivery.Status.FAILED}"
                    if request.user.has_perm("subscriptions.view_delivery") else None
                ),
                "has_send_permission": self.has_send_permission(request),
                "has_preview_permission": self.has_preview_permission(request),
                # Editors see editions, not readers: addresses are subscribers' data.
                "shows_addresses": request.user.has_perm("subscriptions.view_subscriber"),
                "steers": [
                    (name, spec.verb) for name, spec in STEERS.items()
                    if spec.problem(edition) is None
                ],
            })
        return super().change_view(request, object_id, form_url, extra_context=context)

    # --- The live part of the change page -------------------------------------------------
    #
    # The page's top panel (state, stop reason, stalled badge, progress, rate, ETA,
    # chart) is one template, rendered into the page and again by the JSON view
    # that the page's script polls, so the two cannot drift apart. The script
    # swaps the panel and the read-only fields below that a send changes, and
    # reloads the page when the status changes (steering buttons and counts
    # follow), never while the user is typing; without JavaScript a meta refresh
    # does the same. Every poll reads the edition row and the sampler's history,
    # never counts deliveries.

    live_template = "admin/subscriptions/edition/_live.html"
    live_statuses = (Edition.Status.PLANNED, Edition.Status.SENDING, Edition.Status.PAUSED)
    # Fields of the read-only form a running send changes, refreshed with the panel.
    live_fields = ("status", "note", "started_at", "dispatched_at", "finished_at",
                   "last_progress_at", "targeted", "sent", "failed", "skipped", "requeued",
                   "progress", "rate", "eta")
    poll_seconds = 3  # planned or sending: an alert is through in seconds
    paused_poll_seconds = 15  # paused: only someone resuming it changes anything
    noscript_refresh_seconds = 15

    def _live_context(self, request: HttpRequest, edition: Edition) -> dict[str, Any]:
        now = timezone.now()
        progress = send_progress(edition, now=now)
        stalled = edition_stalled_for(edition, now=now)
        live = edition.status in self.live_statuses
        return {
            "edition": edition,
            "progress": progress,
            "eta_text": eta_text(progress.eta, now=now),
            "stalled": stalled_text(stalled) if stalled else "",
            "live": live,
            "live_url": reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_live",
                                args=[edition.pk], current_app=self.admin_site.name),
            "poll_seconds": (self.paused_poll_seconds if edition.status == Edition.Status.PAUSED
                             else self.poll_seconds),
            "noscript_refresh_seconds": self.noscript_refresh_seconds,
            "rate_chart": edition_rate_chart(edition),  # from the ops sampler
        }

    def _field_html(self, edition: Edition, name: str) -> str:
        """A read-only field as the change form shows it (AdminReadonlyField.contents)."""
        try:
            field, _attr, value = lookup_field(name, edition, self)
        except (AttributeError, ValueError):
            return self.get_empty_value_display()
        if field is None:
            return conditional_escape(value if hasattr(value, "__html__") else
                                      linebreaksbr(value))
        return conditional_escape(linebreaksbr(
            display_for_field(value, field, self.get_empty_value_display())))

    def live_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The panel and the changing fields as JSON, for the page's script."""
        edition = self._get_edition(request, object_id)
        context = self._live_context(request, edition)
        response = JsonResponse({
            "status": edition.status,
            "live": context["live"],
            "poll_seconds": context["poll_seconds"],
            "stalled": context["stalled"],
            "note": edition.note,
            "html": render_to_string(self.live_template, context, request=request),
            "fields": {name: self._field_html(edition, name) for name in self.live_fields},
        })
        response["Cache-Control"] = "no-store"
        return response

    # --- Extra views ----------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        steers = [
            path(f"<path:object_id>/{name}/", view(self._steer_view(name)),
                 name=f"{info}_{name}")
            for name in STEERS
        ]
        return [
            *steers,
            path("<path:object_id>/send-test/", view(self.send_test_view),
                 name=f"{info}_send_test"),
            path("<path:object_id>/preview/", view(self.preview_view), name=f"{info}_preview"),
            path("<path:object_id>/live/", view(self.live_view), name=f"{info}_live"),
            *super().get_urls(),
        ]

    def _get_edition(self, request: HttpRequest, object_id: str) -> Edition:
        if not self.has_view_permission(request):
            raise PermissionDenied
        edition = self.get_object(request, unquote(object_id))
        if edition is None:
            raise Http404(f"No edition with id {object_id!r}.")
        return edition

    def _change_url(self, edition: Edition) -> str:
        return reverse("admin:subscriptions_edition_change", args=[edition.pk],
                       current_app=self.admin_site.name)

    def _context(self, request: HttpRequest, edition: Edition | None, title: str,
                 **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": self.opts,
            "edition": edition,
            "change_url": self._change_url(edition) if edition else None,
            "media": self.media,
            **extra,
        }

    def _steer_view(self, name: str) -> Callable[[HttpRequest, str], HttpResponse]:
        spec = STEERS[name]

        def steer(request: HttpRequest, object_id: str) -> HttpResponse:
            """Confirm first; steer only on a POST that carries the confirmation."""
            edition = self._get_edition(request, object_id)
            if not self.has_send_permission(request):
                raise PermissionDenied
            change_url = self._change_url(edition)
            if problem := spec.problem(edition):
                self.message_user(request, f"{spec.verb} is not possible for {edition}: "
                                  f"{problem}.", messages.WARNING)
                return HttpResponseRedirect(change_url)
            if request.method == "POST" and request.POST.get("post") == "yes":
                self._steer_one(request, spec, edition)
                return HttpResponseRedirect(change_url)
            request.current_app = self.admin_site.name
            return TemplateResponse(request, self.steer_confirmation_template, self._context(
                request, edition, f"{spec.verb}: {edition}", spec=spec, to_change=[edition],
                unchanged=[],
            ))

        steer.__name__ = f"{name}_view"
        return steer

    def _steer_one(self, request: HttpRequest, spec: _Steer, edition: Edition) -> bool:
        try:
            outcome = spec.run(edition)
        except EditionError as exc:  # e.g. a retry whose story still cannot be sent
            self.message_user(request, f"{spec.verb}: {edition}: {exc}", messages.ERROR)
            return False
        if outcome is None:  # its status changed between the page and the click
            self.message_user(request, f"{spec.verb}: {edition} changed meanwhile; nothing done.",
                              messages.WARNING)
            return False
        self.log_change(request, edition, f"{spec.verb}: {outcome}.")
        self.message_user(request, f"{edition}: {outcome}.", messages.SUCCESS)
        return True

    def _steer_selected(self, request: HttpRequest, queryset: QuerySet[Edition], name: str
                        ) -> TemplateResponse | None:
        """Shaped like Django's delete_selected: confirm, then act on the POST
        that carries the confirmation."""
        spec = STEERS[name]
        editions = list(queryset)
        to_change = [edition for edition in editions if spec.problem(edition) is None]
        unchanged = [edition for edition in editions if edition not in to_change]
        if request.method == "POST" and request.POST.get("post") == "yes":
            for edition in to_change:
                self._steer_one(request, spec, edition)
            if unchanged:
                self.message_user(request, f"{spec.verb}: {len(unchanged)} selected "
                                  f"{model_ngettext(self.opts, len(unchanged))} left as "
                                  "they were.", messages.WARNING)
            return None
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.steer_confirmation_template, self._context(
            request, None, f"{spec.verb}: {len(editions)} "
            f"{model_ngettext(self.opts, len(editions))}",
            spec=spec, to_change=to_change, unchanged=unchanged, editions=editions,
            action=f"{name}_selected", action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
        ))

    @admin.action(permissions=["send"], description="Pause selected editions")
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Edition]
                       ) -> TemplateResponse | None:
        return self._steer_selected(request, queryset, "pause")

    @admin.action(permissions=["send"], description="Resume selected editions")
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Edition]
                        ) -> TemplateResponse | None:
        return self._steer_selected(request, queryset, "resume")

    @admin.action(permissions=["send"], description="Cancel selected editions")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Edition]
                        ) -> TemplateResponse | None:
        return self._steer_selected(request, queryset, "cancel")

    def _find_subscriber(self, form: SubscriberEmailForm) -> Subscriber | None:
        subscriber = Subscriber.objects.filter(email=form.cleaned_data["email"]).first()
        if subscriber is None:
            form.add_error("email", "No subscriber has this address.")
        return subscriber

    def send_test_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Mail the edition to the staff member, marked [TEST], with no reader's
        personal links. A digest differs per reader, so one must be named."""
        edition = self._get_edition(request, object_id)
        if not self.has_send_permission(request):
            raise PermissionDenied
        change_url = self._change_url(edition)
        to = request.user.email
        if not to:
            self.message_user(request, "Your user account has no email address: add one to "
                              "receive test sends.", messages.ERROR)
            return HttpResponseRedirect(change_url)
        needs_reader = edition.kind == Edition.Kind.DIGEST
        form = SubscriberEmailForm(request.POST if request.method == "POST" else None,
                                   required=needs_reader)
        if form.is_valid():
            reader = self._find_subscriber(form) if form.cleaned_data["email"] else None
            if reader is not None and edition_render_for(edition=edition,
                                                         subscriber=reader) is None:
                form.add_error("email", f"{reader.email} gets nothing from this edition (no "
                               "new stories in their topics): there is nothing to send.")
            if form.is_valid():
                return self._send_test(request, edition, to, reader, change_url)
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.send_test_template, self._context(
            request, edition, f"Send a test: {edition}", form=form, to=to,
            needs_reader=needs_reader,
        ))

    def _send_test(self, request: HttpRequest, edition: Edition, to: str,
                   reader: Subscriber | None, change_url: str) -> HttpResponse:
        try:
            sent = edition_send_test(edition=edition, to=to, as_subscriber=reader)
        except ContentError as exc:
            self.message_user(request, f"No test sent: {exc}.", messages.ERROR)
            return HttpResponseRedirect(change_url)
        except (OSError, AnymailError) as exc:  # smtplib errors are OSErrors
            logger.exception("test send failed", extra={"edition_id": edition.pk})
            sent, reason = False, f" ({exc})"
        else:
            reason = ""
        if sent:
            copy = f" as {reader.email} would get it" if reader else ""
            self.log_change(request, edition, f"Sent a test to {to}{copy}.")
            self.message_user(request, f"Test sent to {to}{copy}.", messages.SUCCESS)
        else:
            self.message_user(request, f"The test to {to} was not accepted by the mail "
                              f"server{reason}; see the logs.", messages.ERROR)
        return HttpResponseRedirect(change_url)

    def preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """What one subscriber gets, exactly: the rendered bytes, taken apart.

        A GET: it changes nothing. The HTML part is shown in a sandboxed iframe
        (no scripts, no same origin), so the mail's markup cannot act on the admin.
        """
        edition = self._get_edition(request, object_id)
        if not self.has_preview_permission(request):
            raise PermissionDenied
        form = SubscriberEmailForm(request.GET if "email" in request.GET else None)
        extra: dict[str, Any] = {"form": form}
        if form.is_valid() and (subscriber := self._find_subscriber(form)) is not None:
            extra.update(self._preview(edition, subscriber))
        request.current_app = self.admin_site.name
        # The iframe's srcdoc inherits this page's CSP, and the mail's CSS is inline.
        return allow_inline_styles(TemplateResponse(request, self.preview_template, self._context(
            request, edition, f"Preview: {edition}", **extra,
        )))

    def _preview(self, edition: Edition, subscriber: Subscriber) -> dict[str, Any]:
        delivery = Delivery.objects.filter(edition=edition, subscriber=subscriber).first()
        if delivery is None and edition.started_at is not None:
            return {"subscriber": subscriber, "nothing": "is not among this edition's "
                    "recipients (it went to those who followed, and wanted, it when it started)."}
        if (delivery is None and edition.kind == Edition.Kind.ALERT
                and not alert_audience(category_id=edition.audience["category_id"])
                .filter(pk=subscriber.pk).exists()):
            return {"subscriber": subscriber, "nothing": "is not in this alert's audience "
                    "(active, following its category, with breaking alerts on)."}
        try:
            raw = edition_render_for(edition=edition, subscriber=subscriber)
        except ContentError as exc:
            return {"subscriber": subscriber, "delivery": delivery,
                    "nothing": f"cannot be shown this edition: {exc}."}
        if raw is None:
            return {"subscriber": subscriber, "delivery": delivery,
                    "nothing": "gets nothing from this digest: no new stories in their topics."}
        message = email.message_from_bytes(raw, policy=email.policy.default)
        html = message.get_body(("html",))
        text = message.get_body(("plain",))
        return {
            "subscriber": subscriber,
            "delivery": delivery,
            "undecided": delivery is None and edition.kind == Edition.Kind.DIGEST,
            "subject": message["Subject"],
            "headers": [(name, str(value)) for name, value in message.items()
                        if name.lower() not in ("mime-version", "content-type",
                                                "content-transfer-encoding")],
            "html": html.get_content() if html is not None else "",
            "text": text.get_content() if text is not None else "",
        }


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: one row per edition and reader, for tracing what happened.

    The table is the biggest there is: no full count, no filter that lists
    editions, one join for the reader's address.
    """

    list_display = ["id", "edition_id", "subscriber", "status", "attempts", "claimed_at",
                    "sent_at", "last_error"]
    list_filter = ["status"]
    list_select_related = ["subscriber"]
    search_fields = ["subscriber__email"]
    search_help_text = "Search by the subscriber's email address."

    def get_search_results(self, request, queryset, search_term_):
        return super().get_search_results(request, queryset, search_term(search_term_))
    show_full_result_count = False
    fields = ["edition", "subscriber", "status", "attempts", "window_start", "claim",
              "claimed_at", "sent_at", "message_id", "last_error"]
    readonly_fields = fields
