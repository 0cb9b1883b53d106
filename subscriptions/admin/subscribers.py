"""Subscriber admin: look people up, export, erase, unsubscribe.

Subscribers are view-only here. Every change to a subscriber goes through a
service that records consent evidence (subscriptions/services/), so staff act
through actions and buttons that call those services: "Unsubscribe selected"
(change permission), "Export data (JSON)" and the CSV export (export
permission), "Erase" (erase permission). Nobody adds subscribers by hand
(double opt-in is the only way in) or deletes them (erasure is).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import model_ngettext, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from newsroom.admin_mixins import ReadOnlyAdminMixin, admin_user
from newsroom.models import Category
from subscriptions.addresses import search_term
from subscriptions.admin.imports import import_urls
from subscriptions.models import ConsentRecord, Subscriber, TrackingEvent
from subscriptions.selectors import categories_with_active_counts
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
    fields = readonly_fields = ("at", "action", "method", "ip_address", "user_agent", "page",
                                "wording_version", "details")
    ordering = ["at", "id"]
    extra = 0
    can_delete = False


class TrackingEventInline(_SubscriberPermissionMixin, admin.TabularInline):
    """Bounces and complaints the ESP reported, and what we did about them."""

    model = TrackingEvent
    verbose_name_plural = "email events (bounces, complaints, ESP unsubscribes)"
    fields = readonly_fields = ("received_at", "esp", "event_type", "reason", "outcome")
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

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        export_url = reverse("admin:subscriptions_subscriber_export_csv")
        if request.GET:
            export_url += f"?{request.GET.urlencode()}"  # the export keeps the list's filters
        context = {
            "category_counts": categories_with_active_counts(),
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

    def export_csv_view(self, request: HttpRequest) -> HttpResponseBase:
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
            subscriber_erase(subscriber=subscriber, by=admin_user(request))
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
