"""Editorial admin: categories, stories with their sources, publishing.

A story's status is read-only in its form: publishing and unpublishing go
through the `publish`/`unpublish` actions, which need the `publish_story`
permission and call the services, so every transition is guarded, recorded and
announced the same way.

Editorial knows nothing of subscribers or sending. The subscriptions app
replaces this story admin with a subclass (subscriptions/admin/alerts.py) that
adds breaking alerts through the hooks below: `after_publish` (where an editor
goes once stories are published), `unpublish_kwargs` (the editor's choices the
unpublish passes on to story_unpublish) and `status_confirmation_extra` (what
else the publish/unpublish confirmation shows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import model_ngettext
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from newsroom import services
from newsroom.models import Category, Source, Story
from newsroom.rendering import render_html


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "order", "story_count"]
    list_editable = ["order"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name", "slug"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Category]:
        return super().get_queryset(request).annotate(story_count=Count("stories"))

    @admin.display(description="stories", ordering="story_count")
    def story_count(self, category: Category) -> int:
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

    def clean(self) -> dict:
        cleaned = super().clean()
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
    actions = ["publish", "unpublish"]
    status_confirmation_template = "admin/newsroom/story/status_confirmation.html"

    class Media:
        # The sources table within 1280 px, and a preview that looks like the site.
        css = {"all": ["newsroom/admin-story.css"]}

    def save_model(
        self, request: HttpRequest, obj: Story, form: forms.ModelForm, change: bool
    ) -> None:
        obj.last_editor = request.user
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
            transition=lambda story: services.story_publish(story=story, by=request.user),
            done="Published",
            unchanged="already published",
            then=lambda published: self.after_publish(request, published),
        )

    @admin.action(permissions=["publish"], description="Unpublish selected stories")
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Story]) -> HttpResponse | None:
        options = self.unpublish_kwargs(request)
        return self._change_status(
            request,
            queryset,
            action="unpublish",
            pending=Story.Status.PUBLISHED,
            transition=lambda story: services.story_unpublish(
                story=story, by=request.user, **options),
            done="Unpublished",
            unchanged="not published",
        )

    # --- Hooks for the apps that act on publishing --------------------------------------

    def after_publish(self, request: HttpRequest, published: list[Story]) -> HttpResponse | None:
        """Where the editor goes once `published` went out; None: back to the list."""
        return None

    def unpublish_kwargs(self, request: HttpRequest) -> dict[str, Any]:
        """More keyword arguments for story_unpublish, from the confirmed POST."""
        return {}

    def status_confirmation_extra(self, request: HttpRequest, action: str,
                                  to_change: list[Story]) -> dict[str, Any]:
        """More context for the publish/unpublish confirmation of `to_change`."""
        return {}

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

        to_change = [story for story in stories if story.status == pending]
        context = {
            **self.admin_site.each_context(request),
            "title": f"{action.capitalize()} {model_ngettext(self.opts, len(stories))}",
            "subtitle": None,
            "opts": self.opts,
            "action": action,
            "verb": action.capitalize(),
            "stories": stories,
            "to_change": to_change,
            "unchanged": [story for story in stories if story.status != pending],
            "unchanged_reason": unchanged,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
            **self.status_confirmation_extra(request, action, to_change),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.status_confirmation_template, context)
