"""Editorial data: categories, stories and their sources."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    order = models.PositiveIntegerField(default=0, help_text="Lower comes first.")

    class Meta:
        ordering = ["order", "name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("newsroom:category", args=[self.slug])


class StoryQuerySet(models.QuerySet):
    def live(self) -> StoryQuerySet:
        """Published and due: what readers may see."""
        return self.filter(status=Story.Status.PUBLISHED, published_at__lte=timezone.now())


class Story(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    headline = models.CharField(max_length=300)
    slug = models.SlugField(max_length=200, unique=True)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="stories")
    story_number = models.PositiveIntegerField(null=True, blank=True)
    dek = models.TextField(
        "summary", blank=True, help_text="One or two sentences shown under the headline."
    )
    body = models.TextField(help_text="Markdown.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    breaking = models.BooleanField(
        default=False, help_text="Publishing a breaking story offers to send an alert."
    )
    published_at = models.DateTimeField(
        "publication time", null=True, blank=True, db_index=True,
        help_text="A published story appears from this moment on.",
    )
    live_since = models.DateTimeField(
        null=True, blank=True, editable=False, db_index=True,
        help_text="When it last went live for readers (set by publishing, not by editing "
                  "its date): digests hold a story by this moment, once.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    revision = models.PositiveIntegerField(
        default=1, editable=False,
        help_text="Goes up by one at every save: mail built from an older revision is stale.",
    )
    last_editor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )

    objects = StoryQuerySet.as_manager()

    class Meta:
        ordering = ["-published_at", "-id"]
        verbose_name_plural = "stories"
        permissions = [("publish_story", "Can publish and unpublish stories")]
        indexes = [models.Index(fields=["category", "status", "published_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="draft") | Q(published_at__isnull=False),
                name="story_published_has_time",
            ),
        ]

    def __str__(self) -> str:
        return self.headline

    def save(self, *args, **kwargs) -> None:
        """A save of an existing story is a new revision, counted in the database
        (F + 1), so two editors saving at once make two revisions, never one.

        A published story saved without a live moment (made published directly, as
        fixtures and benchmarks do) went live at its date; one whose date is moved
        into the future is off the site until then, and goes live again then.
        Publishing through services.story_publish (or an import) sets it to when
        it really went live.
        """
        if self.status == self.Status.PUBLISHED and self.published_at is not None:
            now = timezone.now()
            if self.live_since is None or (
                    self.published_at > now and self.published_at > self.live_since):
                self.live_since = self.published_at
                if kwargs.get("update_fields") is not None:
                    kwargs["update_fields"] = {*kwargs["update_fields"], "live_since"}
        if self.pk is None or self._state.adding:
            super().save(*args, **kwargs)
            return
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "revision"}
        self.revision = F("revision") + 1
        super().save(*args, **kwargs)
        self.refresh_from_db(fields=["revision"])

    def get_absolute_url(self) -> str:
        return reverse("newsroom:story", args=[self.slug])

    @property
    def is_live(self) -> bool:
        return (
            self.status == self.Status.PUBLISHED
            and self.published_at is not None
            and self.published_at <= timezone.now()
        )

    @property
    def body_html(self) -> str:
        from newsroom.rendering import render_html

        return render_html(self.body)

    @property
    def body_text(self) -> str:
        from newsroom.rendering import render_text

        return render_text(self.body)


class Source(models.Model):
    story = models.ForeignKey(Story, on_delete=models.CASCADE, related_name="sources")
    name = models.CharField(max_length=200)
    url = models.URLField(max_length=1000)
    domain = models.CharField(max_length=253, blank=True)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return self.name


class Operations(models.Model):
    """No table: the anchor of the `view_operations` permission and of the
    Operations page in the admin (newsroom/ops/views.py).

    Django permissions belong to a model; an unmanaged one gives the page its own
    permission and its place on the admin index without a table or a custom
    AdminSite.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_operations", "Can view the operations page")]
        verbose_name = verbose_name_plural = "operations"

    def __str__(self) -> str:
        return "Operations"
