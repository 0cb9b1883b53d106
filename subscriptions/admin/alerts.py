"""Breaking alerts from the story admin: the action, the story's alert page and
its button, and the unpublish confirmation's "Also cancel the alert".

Editorial's story admin knows nothing of sending; this subclass replaces it in
the admin site and fills its hooks. Publishing a breaking story leads editors
with `subscriptions.send_edition` to the story's alert page (also reached by the
"Send breaking alert" action and a button on the story), which sends the alert
only on a POST made after seeing whom it reaches. The service keeps one alert
per story, so a double click sends one.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from newsroom.admin import StoryAdmin
from newsroom.admin_mixins import admin_user
from newsroom.middleware import allow_inline_styles
from newsroom.models import Story
from subscriptions.selectors import (
    alert_audience,
    alert_editions_by_story,
    alerts_unfinished,
    story_clicks_total,
)
from subscriptions.sending.content import ContentError, alert_preview
from subscriptions.sending.dispatch import AlertAlreadySent, edition_create_alert
from subscriptions.sending.steering import EditionError


class StoryAlertAdmin(StoryAdmin):
    """Editorial's story admin with breaking alerts (registered for Story below)."""

    actions = ["publish", "unpublish", "send_alert"]
    alert_confirmation_template = "admin/newsroom/story/alert_confirmation.html"
    change_form_template = "admin/newsroom/story/change_form.html"
    readonly_fields = [*StoryAdmin.readonly_fields, "clicks"]
    fieldsets = [*StoryAdmin.fieldsets, ("Readers", {"fields": ["clicks"]})]

    @admin.display(description="clicks")
    def clicks(self, story: Story | None) -> str:
        """Followed links to and in this story, over every edition that carried it
        (counted per edition and link, never per reader)."""
        if story is None or story.pk is None:
            return "—"
        return str(story_clicks_total(story))

    def has_send_alert_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("subscriptions.send_edition")

    # --- Editorial's hooks -----------------------------------------------------------

    def after_publish(self, request: HttpRequest, published: list[Story]) -> HttpResponse | None:
        """Straight to the alert page when one breaking story went live, links to
        each page when several did. Without the permission to send alerts, say so
        rather than leave the editor waiting for an offer."""
        breaking = [story for story in published if story.breaking]
        if not self.has_send_alert_permission(request):
            if breaking:
                self.message_user(
                    request,
                    "Breaking alerts are sent by editors with the permission to send them "
                    "(the Editors group): ask one to send the alert from the story's page.",
                    messages.INFO,
                )
            return None
        for story in breaking:
            if not story.is_live:
                self.message_user(
                    request,
                    f"“{story.headline}” is scheduled for "
                    f"{date_format(story.published_at or '', 'DATETIME_FORMAT')}: "
                    "send its breaking "
                    "alert from its page once it is live.",
                    messages.INFO,
                )
        live = [story for story in breaking if story.is_live]
        if len(live) == 1:
            return HttpResponseRedirect(self._alert_url(live[0]))
        if live:
            self.message_user(request, self._alert_links("Send their breaking alerts:", live),
                              messages.INFO)
        return None

    def unpublish_kwargs(self, request: HttpRequest) -> dict[str, Any]:
        """The confirmation asks whether an unfinished alert of these stories stops
        too (ticked: its readers not reached yet would get a link to a gone page);
        a confirmation that did not ask (no alert was unfinished then) stops it."""
        withdraw = (request.POST.get("withdraw_alerts") == "yes"
                    or not request.POST.get("withdraw_alerts_offered"))
        return {**super().unpublish_kwargs(request), "withdraw_alerts": withdraw}

    def status_confirmation_extra(self, request: HttpRequest, action: str,
                                  to_change: list[Story]) -> dict[str, Any]:
        unfinished = (alerts_unfinished(story_ids=[story.pk for story in to_change])
                      if action == "unpublish" else {})
        return {
            **super().status_confirmation_extra(request, action, to_change),
            # Publishing these is what offers subscribers a breaking alert.
            "breaking": [story for story in to_change
                         if action == "publish" and story.breaking],
            # Unpublishing these stops their alerts unless the editor says otherwise.
            "alerts": [(story, edition) for story in to_change
                       if (edition := unfinished.get(story.pk)) is not None],
            "may_send_alerts": self.has_send_alert_permission(request),
        }

    # --- URLs ------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        return [
            path("<path:object_id>/alert/", self.admin_site.admin_view(self.alert_view),
                 name=f"{self.opts.app_label}_{self.opts.model_name}_alert"),
            *super().get_urls(),
        ]

    def _alert_url(self, story: Story) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_alert",
                       args=[story.pk], current_app=self.admin_site.name)

    def _story_url(self, story: Story) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                       args=[story.pk], current_app=self.admin_site.name)

    def _edition_url(self, request: HttpRequest, edition_id: int) -> str | None:
        """The edition's admin page, if this user may see it."""
        if not request.user.has_perm("subscriptions.view_edition"):
            return None
        return reverse("admin:subscriptions_edition_change", args=[edition_id],
                       current_app=self.admin_site.name)

    # --- The alert page and action ------------------------------------------------------

    @staticmethod
    def _alert_editions(stories: list[Story]) -> dict[int, int]:
        """Story id -> its standing alert edition's id (selectors), in one query."""
        return alert_editions_by_story(story_ids=[story.pk for story in stories])

    @staticmethod
    def _alert_problem(story: Story) -> str | None:
        """Why this story cannot send an alert now, or None.

        The service checks the first two again when sending; asking here lets
        the pages offer no button that would be refused. A scheduled story is
        refused here only: its alert would link to a page that is not out yet.
        """
        if not story.breaking:
            return "it is not marked breaking; only breaking stories send alerts"
        if story.status != Story.Status.PUBLISHED:
            return "it is not published; publish it before sending an alert"
        if not story.is_live:
            when = date_format(story.published_at or "", "DATETIME_FORMAT")
            return (f"it is scheduled for {when}; "
                    "send its alert once it is live, or the link would lead nowhere")
        return None

    def _already_sent(self, request: HttpRequest, story: Story, edition_id: int
                      ) -> HttpResponseRedirect:
        url = self._edition_url(request, edition_id)
        message = format_html(
            "An alert for “{}” already exists ({}): no second alert was made.",
            story.headline,
            format_html('<a href="{}">edition #{}</a>', url, edition_id)
            if url else f"edition #{edition_id}",
        )
        self.message_user(request, message, messages.WARNING)
        return HttpResponseRedirect(url or self._story_url(story))

    def _alert_links(self, lead: str, stories: list[Story]) -> SafeString:
        return format_html(
            "{} {}", lead,
            format_html_join(", ", '<a href="{}">{}</a>',
                             ((self._alert_url(story), story.headline) for story in stories)),
        )

    @admin.action(permissions=["send_alert"], description="Send breaking alert")
    def send_alert(self, request: HttpRequest, queryset: QuerySet[Story]) -> HttpResponse | None:
        """Leads to the alert page (several: links to each); nothing is sent here."""
        stories = list(queryset)
        sent = self._alert_editions(stories)
        ready = []
        for story in stories:
            if story.pk in sent:
                self.message_user(
                    request, f"“{story.headline}”: its alert was already sent "
                    f"(edition #{sent[story.pk]}).", messages.WARNING,
                )
            elif problem := self._alert_problem(story):
                self.message_user(request, f"No alert for “{story.headline}”: {problem}.",
                                  messages.WARNING)
            else:
                ready.append(story)
        if len(ready) == 1:
            return HttpResponseRedirect(self._alert_url(ready[0]))
        if ready:
            self.message_user(request, self._alert_links("Send breaking alerts for:", ready),
                              messages.INFO)
        return None

    def alert_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the story, its category and audience size, and a send button;
        POST with the confirmation: create the alert edition and go to it."""
        if not self.has_send_alert_permission(request):
            raise PermissionDenied
        story = self.get_object(request, unquote(object_id))
        if story is None:
            raise Http404(f"No story with id {object_id!r}.")
        if not self.has_view_or_change_permission(request, story):
            raise PermissionDenied
        sent = self._alert_editions([story])
        if story.pk in sent:
            return self._already_sent(request, story, sent[story.pk])
        if problem := self._alert_problem(story):
            self.message_user(request, f"No alert for “{story.headline}”: {problem}.",
                              messages.ERROR)
            return HttpResponseRedirect(self._story_url(story))

        try:
            preview, problem = alert_preview(story=story), None
        except ContentError as exc:
            preview, problem = None, str(exc)
        if request.method == "POST" and request.POST.get("post") == "yes":
            if problem:  # the page said so; a stale page or a crafted POST gets it again
                self.message_user(request, f"No alert for “{story.headline}”: it cannot be "
                                  f"sent as it is: {problem}.", messages.ERROR)
                return HttpResponseRedirect(self._alert_url(story))
            try:
                edition = edition_create_alert(story=story, by=admin_user(request))
            except AlertAlreadySent as exc:  # another editor, or a double click, won
                return self._already_sent(request, story, exc.edition.pk)
            except EditionError as exc:
                self.message_user(request, f"No alert for “{story.headline}”: {exc}",
                                  messages.ERROR)
                return HttpResponseRedirect(self._story_url(story))
            self.log_change(request, story, f"Sent a breaking alert (edition #{edition.pk}).")
            self.message_user(
                request,
                f"Breaking alert for “{story.headline}” planned: edition #{edition.pk} "
                "starts sending now.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(
                self._edition_url(request, edition.pk) or self._story_url(story)
            )

        context = {
            **self.admin_site.each_context(request),
            "title": "Send a breaking alert?",
            "subtitle": None,
            "opts": self.opts,
            "story": story,
            "category": story.category,
            "audience": alert_audience(category_id=story.category_id,
                                       not_reached_for=story.pk).count(),
            "preview": preview,
            "problem": problem,
            "story_url": self._story_url(story),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        # Its preview frames show the email's HTML, whose CSS is inlined.
        return allow_inline_styles(
            TemplateResponse(request, self.alert_confirmation_template, context))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Adds the alert button (or a link to the alert sent) to a breaking story."""
        context = dict(extra_context or {})
        story = self.get_object(request, unquote(object_id))
        if (
            story is not None and story.breaking and story.status == Story.Status.PUBLISHED
            and self.has_send_alert_permission(request)
        ):
            sent = self._alert_editions([story])
            if story.pk in sent:
                context["alert_edition"] = sent[story.pk]
                context["alert_edition_url"] = self._edition_url(request, sent[story.pk])
            elif story.is_live:
                context["alert_url"] = self._alert_url(story)
        return super().change_view(request, object_id, form_url, extra_context=context)


admin.site.unregister(Story)
admin.site.register(Story, StoryAlertAdmin)
