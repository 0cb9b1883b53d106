"""Editorial admin: categories, stories with their sources, publishing.

A story's status is read-only in its form: publishing and unpublishing go
through the `publish`/`unpublish` actions, which need the `publish_story`
permission and call the services, so every transition is guarded, recorded and
announced the same way.

Publishing a breaking story leads editors with `subscriptions.send_edition` to
the story's alert page (also reached by the "Send breaking alert" action and a
button on the story), which sends the alert only on a confirmed POST.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import model_ngettext, unquote
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from newsroom import services
from newsroom.admin_mixins import admin_user
from newsroom.middleware import allow_inline_styles
from newsroom.models import Category, Operations, Source, Story
from newsroom.ops.views import OperationsAdmin
from newsroom.rendering import render_html
from subscriptions.edition_content import ContentError
from subscriptions.models import Edition
from subscriptions.services.editions import (
    ALERT_ENDED_EARLY,
    AlertAlreadySent,
    EditionError,
    alert_audience,
    alert_preview,
    alerts_unfinished,
    edition_create_alert,
)

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _StoryCount(TypedDict):
    story_count: int


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "order", "story_count"]
    list_editable = ["order"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Category]:
        return super().get_queryset(request).annotate(story_count=Count("stories"))

    @admin.display(description="stories", ordering="story_count")
    def story_count(self, category: WithAnnotations[Category, _StoryCount]) -> int:
        return category.story_count


class SourceInline(admin.TabularInline):
    model = Source
    fields = ["order", "name", "url", "domain"]
    ordering = ["order", "id"]
    extra = 1
    # A bare "example.com" typed by an editor becomes https://, as Django 6 will do.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


class StoryAdminForm(forms.ModelForm):
    class Meta:
        model = Story
        fields = [
            "headline", "slug", "category", "story_number", "dek", "body", "breaking",
            "published_at",
        ]

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        # Status is not a form field, so the model's check constraint (published
        # implies a publication time) would be skipped and fail in the database.
        if (
            self.instance.status == Story.Status.PUBLISHED
            and "published_at" in cleaned
            and cleaned["published_at"] is None
        ):
            self.add_error(
                "published_at",
                "A published story needs a publication time. Unpublish it first to clear it.",
            )
        return cleaned


@admin.register(Story)
class StoryAdmin(admin.ModelAdmin):
    form = StoryAdminForm
    list_display = ["headline", "category", "status", "breaking", "published_at", "last_editor"]
    list_filter = ["category", "status", "breaking", "published_at"]
    list_select_related = ["category", "last_editor"]
    date_hierarchy = "published_at"
    search_fields = ["headline", "dek", "body", "slug"]
    prepopulated_fields = {"slug": ["headline"]}
    readonly_fields = ["status", "preview", "last_editor", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["headline", "slug", "category", "story_number", "dek", "body"]}),
        ("Publication", {"fields": ["status", "breaking", "published_at"]}),
        ("Preview", {"fields": ["preview"]}),
        ("History", {"fields": ["last_editor", "created_at", "updated_at"]}),
    ]
    inlines = [SourceInline]
    actions = ["publish", "unpublish", "send_alert"]
    status_confirmation_template = "admin/newsroom/story/status_confirmation.html"
    alert_confirmation_template = "admin/newsroom/story/alert_confirmation.html"
    change_form_template = "admin/newsroom/story/change_form.html"

    class Media:
        # The sources table within 1280 px, and a preview that looks like the site.
        css = {"all": ["newsroom/admin-story.css"]}

    def save_model(
        self, request: HttpRequest, obj: Story, form: forms.ModelForm, change: bool
    ) -> None:
        obj.last_editor = admin_user(request)
        super().save_model(request, obj, form, change)

    @admin.display(description="preview")
    def preview(self, story: Story) -> SafeString | str:
        if not story.pk:
            return "Save the story to see a preview."
        # mark_safe is sound only because render_html's output is sanitised by
        # nh3 against a strict allow-list; headline and dek are escaped here.
        body = mark_safe(render_html(story.body))  # noqa: S308
        return format_html(
            '<div class="story-preview"><h1>{}</h1>{}{}</div>',
            story.headline,
            format_html('<p class="dek"><em>{}</em></p>', story.dek) if story.dek else "",
            body,
        )

    def has_publish_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.publish_story")

    @admin.action(permissions=["publish"], description="Publish selected stories")
    def publish(self, request: HttpRequest, queryset: QuerySet[Story]) -> HttpResponse | None:
        return self._change_status(
            request,
            queryset,
            action="publish",
            pending=Story.Status.DRAFT,
            transition=lambda story: services.story_publish(story=story, by=admin_user(request)),
            done="Published",
            unchanged="already published",
            then=lambda published: self._offer_alerts(request, published),
        )

    @admin.action(permissions=["publish"], description="Unpublish selected stories")
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Story]) -> HttpResponse | None:
        """The confirmation asks whether an unfinished alert of these stories stops
        too (ticked: its readers not reached yet would get a link to a gone page)."""
        withdraw = (request.POST.get("withdraw_alerts") == "yes"
                    or not request.POST.get("withdraw_alerts_offered"))
        return self._change_status(
            request,
            queryset,
            action="unpublish",
            pending=Story.Status.PUBLISHED,
            transition=lambda story: services.story_unpublish(
                story=story, by=admin_user(request), withdraw_alerts=withdraw),
            done="Unpublished",
            unchanged="not published",
        )

    def _change_status(
        self,
        request: HttpRequest,
        queryset: QuerySet[Story],
        *,
        action: str,
        pending: str,
        transition: Callable[[Story], bool],
        done: str,
        unchanged: str,
        then: Callable[[list[Story]], HttpResponse | None] | None = None,
    ) -> HttpResponse | None:
        """Shaped like Django's delete_selected: confirm first, act on a POST
        that carries the confirmation, report, then return to the change list
        (or wherever `then`, given the stories changed, sends the editor)."""
        if not self.has_publish_permission(request):
            raise PermissionDenied
        stories = list(queryset.select_related("category"))

        if request.method == "POST" and request.POST.get("post") == "yes":
            changed: list[Story] = []
            with transaction.atomic():
                for story in stories:
                    if transition(story):
                        changed.append(story)
                        self.log_change(request, story, f"{done}.")
            skipped = len(stories) - len(changed)
            message = f"{done} {len(changed)} {model_ngettext(self.opts, len(changed))}."
            if skipped:
                items = model_ngettext(self.opts, skipped)
                message += f" {skipped} {items} {unchanged}, left as is."
            self.message_user(request, message, messages.SUCCESS if changed else messages.WARNING)
            return then(changed) if then is not None else None  # None: back to the list

        unfinished = (alerts_unfinished(story_ids=[story.pk for story in stories])
                      if action == "unpublish" else {})
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.capitalize()} {model_ngettext(self.opts, len(stories))}",
            "subtitle": None,
            "opts": self.opts,
            "action": action,
            "verb": action.capitalize(),
            "stories": stories,
            "to_change": [story for story in stories if story.status == pending],
            "unchanged": [story for story in stories if story.status != pending],
            "unchanged_reason": unchanged,
            # Publishing these is what offers subscribers a breaking alert.
            "breaking": [
                story for story in stories
                if action == "publish" and story.status == pending and story.breaking
            ],
            # Unpublishing these stops their alerts unless the editor says otherwise.
            "alerts": [
                (story, edition) for story in stories
                if action == "unpublish" and story.status == pending
                and (edition := unfinished.get(story.pk)) is not None
            ],
            "may_send_alerts": self.has_send_alert_permission(request),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.status_confirmation_template, context)

    # --- Breaking alerts -------------------------------------------------------------
    #
    # Publishing a breaking story offers its alert; the alert itself is sent only
    # from the story's alert page, by a POST made after seeing whom it reaches.
    # The service keeps one alert per story, so a double click sends one.

    def has_send_alert_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("subscriptions.send_edition")

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

    @staticmethod
    def _alert_editions(stories: list[Story]) -> dict[int, int]:
        """Story id -> id of the alert edition made for it (one that was cancelled or
        expired does not count: the story may be alerted again), in one query."""
        return dict(
            Edition.objects.filter(kind=Edition.Kind.ALERT, stories__in=stories)
            .exclude(status__in=ALERT_ENDED_EARLY).values_list("stories", "pk")
        )

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
            assert story.published_at is not None  # published, so dated (a check constraint)
            return (f"it is scheduled for {date_format(story.published_at, 'DATETIME_FORMAT')}; "
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

    def _offer_alerts(self, request: HttpRequest, published: list[Story]) -> HttpResponse | None:
        """After publishing: straight to the alert page when one breaking story
        went live, links to each page when several did. Without the permission
        to send alerts, say so rather than leave the editor waiting for an offer."""
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
                assert story.published_at is not None  # published, so dated
                self.message_user(
                    request,
                    f"“{story.headline}” is scheduled for "
                    f"{date_format(story.published_at, 'DATETIME_FORMAT')}: send its breaking "
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
        extra_context: dict | None = None,
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


# The Operations page for the people on call (newsroom/ops/views.py).
admin.site.register(Operations, OperationsAdmin)
