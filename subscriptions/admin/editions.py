"""Edition and delivery admin: the ledger of sends, and the controls of one.

Editions are made by services (alerts from the story admin, digests by the
scheduler) and are never edited by hand: the admin shows them and steers them
(pause, resume, cancel, retry failed) through the services, each change a
confirmed POST with `send_edition`; it also previews one reader's copy and
sends a test. Deliveries are shown for tracing, never changed.
"""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from anymail.exceptions import AnymailError
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import display_for_field, lookup_field, model_ngettext, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.defaultfilters import linebreaksbr
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import SafeString

from newsroom.admin_mixins import ReadOnlyAdminMixin, admin_user
from newsroom.middleware import allow_inline_styles
from subscriptions.addresses import search_term
from subscriptions.forms import AddressField
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.selectors import (
    alert_audience,
    delivery_get,
    edition_audience_text,
    edition_clicks,
    edition_delivery_counts,
    edition_failures_recent,
    edition_progress,
    edition_stalled_for,
    eta_text,
    stalled_text,
    subscriber_get,
)
from subscriptions.sending.batches import edition_render_for, edition_send_test
from subscriptions.sending.content import ContentError
from subscriptions.sending.steering import (
    EditionError,
    edition_cancel,
    edition_pause,
    edition_resume,
    edition_retry_failed,
)

logger = logging.getLogger(__name__)


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
    # Flat lists above: every entry is a field name.
    readonly_fields = [name for _, options in fieldsets
                       for name in cast("list[str]", options["fields"])]
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
        progress = edition_progress(edition, now=timezone.now())
        if progress.percent is None:
            return "—"
        return format_html(
            '<progress value="{}" max="{}" title="{} of {}"></progress> {}%',
            progress.done, progress.targeted, progress.done, progress.targeted,
            progress.percent,
        )

    @admin.display(description="rate")
    def rate(self, edition: Edition) -> str:
        rate = edition_progress(edition, now=timezone.now()).rate
        return "—" if rate is None else f"{rate:.1f}/s"

    @admin.display(description="ETA")
    def eta(self, edition: Edition) -> str:
        now = timezone.now()
        eta = edition_progress(edition, now=now).eta
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
                "clicks": edition_clicks(edition),
                "click_tracking": settings.NEWSROOM_CLICK_TRACKING,
                "recent_failed": edition_failures_recent(edition=edition,
                                                         limit=self.recent_failures),
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
        progress = edition_progress(edition, now=now)
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
            "rate_chart": self.rate_chart(edition),
        }

    def rate_chart(self, edition: Edition) -> SafeString | None:
        """The edition's send rate over the last hour, or None (no chart).

        The samples belong to the operations app, which must not be imported
        from here: it registers a subclass that draws the chart
        (newsroom/ops/admin.py)."""
        return None

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
        subscriber = subscriber_get(email=form.cleaned_data["email"])
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
        to = admin_user(request).email
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
        delivery = delivery_get(edition=edition, subscriber=subscriber)
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


# --- Deliveries ------------------------------------------------------------------------


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
    fields = readonly_fields = ("edition", "subscriber", "status", "attempts", "window_start",
                                "claim", "claimed_at", "sent_at", "message_id", "last_error")
