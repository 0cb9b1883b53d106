"""Subscribers, what they follow, and the record of their consent."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from newsroom.models import Category
from subscriptions.addresses import MAX_LENGTH as EMAIL_MAX_LENGTH
from subscriptions.addresses import normalise_email

# Characters kept of free text from outside (an MTA reply, an ESP's description,
# a user agent, an error): the length of those columns; longer text is cut to it.
TEXT_LIMIT = 500


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone, e.g. Europe/Berlin.")


class Subscriber(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending confirmation"
        ACTIVE = "active", "Active"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"

    class Frequency(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly"
        OFF = "off", "No digest"

    # Statuses that must never be mailed until the person acts again.
    SUPPRESSED = (Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED)

    email = models.EmailField(max_length=EMAIL_MAX_LENGTH, unique=True)
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    categories = models.ManyToManyField(Category, blank=True, related_name="subscribers")
    frequency = models.CharField(
        "digest frequency", max_length=6, choices=Frequency.choices, default=Frequency.DAILY
    )
    wants_alerts = models.BooleanField("breaking alerts", default=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    digest_hour = models.PositiveSmallIntegerField(
        default=7, validators=[MaxValueValidator(23)], help_text="Local hour, 0-23."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    suppression_reason = models.CharField(max_length=TEXT_LIMIT, blank=True)
    soft_bounces = models.PositiveIntegerField(
        default=0, help_text="Soft bounces in a row; reset by a delivery."
    )
    erased_at = models.DateTimeField(null=True, blank=True)
    last_digest_due_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the last digest was due; the next one holds stories after it.",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="subscriber_email_ci_unique"),
            models.CheckConstraint(
                condition=models.Q(digest_hour__lte=23), name="subscriber_digest_hour_0_23"
            ),
        ]
        permissions = [
            ("export_subscriber", "Can export subscriber data"),
            ("erase_subscriber", "Can erase a subscriber"),
            ("import_subscriber", "Can import subscriber lists"),
        ]

    def __str__(self) -> str:
        return self.email

    def save(self, *args, **kwargs) -> None:
        # New rows only: an existing row whose stored spelling no longer passes
        # (kept by migration 0008 on a collision) must still save its preferences.
        if self._state.adding:
            self.email = normalise_email(self.email)
        super().save(*args, **kwargs)

    @property
    def is_suppressed(self) -> bool:
        return self.status in self.SUPPRESSED


class ConsentRecord(models.Model):
    """Append-only evidence of each consent given and withdrawn (GDPR Art. 7).

    Rows are never updated or deleted; erasing a subscriber blanks the
    personal fields (IP, user agent) but keeps the fact and time of consent.
    """

    class Action(models.TextChoices):
        SIGNUP = "signup", "Signed up"
        CONFIRM = "confirm", "Confirmed"
        CHANGE = "change", "Changed preferences"
        WITHDRAW = "withdraw", "Withdrew consent"
        RESUBSCRIBE = "resubscribe", "Subscribed again"

    subscriber = models.ForeignKey(
        Subscriber, on_delete=models.PROTECT, related_name="consents"
    )
    action = models.CharField(max_length=12, choices=Action.choices)
    method = models.CharField(
        max_length=40,
        help_text="How: form, email-link, one-click, esp-webhook, admin, import…",
    )
    # Set on insert; an imported record carries the time consent was given at the source.
    at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=TEXT_LIMIT, blank=True)
    page = models.CharField(max_length=TEXT_LIMIT, blank=True, help_text="The page it came from.")
    wording_version = models.CharField(max_length=40, blank=True)
    details = models.JSONField(default=dict, blank=True, help_text="Topics, frequency, reason…")

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} ({self.method}) at {self.at:%Y-%m-%d %H:%M}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("consent records are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("consent records are append-only")


class TrackingEvent(models.Model):
    """An ESP tracking event we acted on: the dedupe ledger for webhooks.

    ESPs deliver webhooks at least once, so the same bounce can arrive twice;
    the unique (esp, event_id, recipient) row makes processing it again a no-op
    (SES sends one event id for all recipients of a message, hence the recipient).
    Deliveries, opens and clicks are not stored: only what changes a subscriber.
    The address and ESP text are personal data: export and erasure cover them.
    """

    esp = models.CharField(max_length=40)
    event_id = models.CharField(max_length=200, blank=True, help_text="Empty if the ESP sent none.")
    event_type = models.CharField(max_length=20)
    recipient = models.EmailField(max_length=EMAIL_MAX_LENGTH, db_index=True)
    subscriber = models.ForeignKey(
        Subscriber, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="tracking_events",
    )
    message_id = models.CharField(max_length=250, blank=True)
    reason = models.CharField(max_length=TEXT_LIMIT, blank=True,
                              help_text="ESP description or MTA reply.")
    outcome = models.CharField(max_length=30, blank=True, help_text="What we did about it.")
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["received_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["esp", "event_id", "recipient"],
                condition=~models.Q(event_id=""),
                name="trackingevent_esp_event_recipient_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.esp} {self.event_type} {self.event_id or '(no id)'}"


class Edition(models.Model):
    """One send: a breaking alert, or the digests due at one moment.

    The delivery rows below are the ledger of who gets it; Celery messages only
    carry ids, so anything lost from the broker is found again from here.
    """

    class Kind(models.TextChoices):
        ALERT = "alert", "Breaking alert"
        DIGEST = "digest", "Digest"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"
        EXPIRED = "expired", "Expired (too late to send)"

    ACTIVE = (Status.PLANNED, Status.SENDING)
    # How the note of a digest made after its lateness window begins (beat was down).
    CAUGHT_UP = "caught up"

    key = models.CharField(
        max_length=100, unique=True,
        help_text="What this edition is for (alert:story:12, digest:daily:…): never sent twice.",
    )
    kind = models.CharField(max_length=6, choices=Kind.choices)
    frequency = models.CharField(max_length=6, blank=True, help_text="Digests: daily or weekly.")
    stories = models.ManyToManyField("newsroom.Story", related_name="editions", blank=True)
    audience = models.JSONField(default=dict, help_text="The rule that chose the recipients.")
    status = models.CharField(
        max_length=9, choices=Status.choices, default=Status.PLANNED, db_index=True
    )
    scheduled_at = models.DateTimeField(db_index=True)
    window_end = models.DateTimeField(
        null=True, blank=True, help_text="Digests: stories published up to this moment."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When all its deliveries were written; until then it cannot be done, "
                  "and its targeted count is an estimate.",
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    last_progress_at = models.DateTimeField(null=True, blank=True)
    targeted = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    requeued = models.PositiveIntegerField(
        default=0,
        help_text="Deliveries put back after a worker died mid-batch (possible duplicates).",
    )
    note = models.CharField(max_length=TEXT_LIMIT, blank=True,
                            help_text="Why it stopped, if it did.")
    transport = models.CharField(
        max_length=40, blank=True,
        help_text="The transport it was sent through (EMAIL_TRANSPORT at dispatch).",
    )
    ledger_purged_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When its per-reader rows were removed (NEWSROOM_DELIVERY_RETENTION_DAYS); "
                  "the counters above stay.",
    )

    class Meta:
        ordering = ["-scheduled_at", "-id"]
        permissions = [("send_edition", "Can send, pause, resume and cancel editions")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.key})"

    @property
    def queue(self) -> str:
        if self.kind == self.Kind.ALERT:
            return settings.NEWSROOM_ALERTS_QUEUE
        return settings.NEWSROOM_DIGESTS_QUEUE


class Delivery(models.Model):
    """One edition for one subscriber: the unit of exactly-once."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    # No index of its own: (edition, subscriber) and (edition, status) lead with it.
    edition = models.ForeignKey(
        Edition, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    subscriber = models.ForeignKey(Subscriber, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=7, choices=Status.choices, default=Status.QUEUED)
    window_start = models.DateTimeField(
        null=True, blank=True, help_text="Digests: stories published after this moment."
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    claim = models.UUIDField(null=True, blank=True, help_text="The batch run that holds it.")
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    message_id = models.CharField(max_length=255, blank=True, help_text="The ESP's message id.")
    last_error = models.CharField(max_length=TEXT_LIMIT, blank=True)
    revision = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Alerts: the story revision this reader was sent (written with the outcome).",
    )

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["edition", "subscriber"], name="delivery_once"),
        ]
        # Every index is written on each insert (dispatch writes the whole audience),
        # so each one earns its place. Queued rows, the bulk of an insert, enter
        # neither partial index.
        indexes = [
            # batch ranges, the finish check, cancel, the admin's counts
            models.Index(fields=["edition", "status"]),
            # editions_reconcile: rows held by batch runs that died
            models.Index(fields=["claimed_at"], condition=models.Q(status="sending"),
                         name="delivery_sending_claimed"),
            # the newest failures (Operations page), read backwards
            models.Index(fields=["claimed_at", "id"], condition=models.Q(status="failed"),
                         name="delivery_failed_claimed"),
        ]

    def __str__(self) -> str:
        return f"{self.edition_id}/{self.subscriber_id}: {self.status}"


class ClickCount(models.Model):
    """How often a link of an edition was followed: one row per (edition, story, URL).

    Counted through the edition's signed redirect links (`/r/<token>`,
    subscriptions.sending.links), which are the same for every reader of a
    content, so nothing here says who clicked: a count, never a person. A
    database row rather than a Redis counter: the counts are read with the
    edition (its admin page, the story's total), outlive a Redis flush, and are
    deleted with the edition; a click is one UPDATE … count + 1 (an INSERT for
    the first click on a link).
    """

    edition = models.ForeignKey(Edition, on_delete=models.CASCADE, related_name="click_counts",
                                db_index=False)  # the unique constraint leads with it
    story = models.ForeignKey("newsroom.Story", on_delete=models.CASCADE,
                              related_name="click_counts")
    url = models.CharField(max_length=2000, help_text="Where the link led.")
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["edition", "story", "url"], name="clickcount_link"),
        ]

    def __str__(self) -> str:
        return f"{self.edition_id}/{self.story_id} {self.url}: {self.count}"


class ApiKey(models.Model):
    """A key for server-to-server calls to the JSON API, sent as
    `Authorization: Bearer nr_<prefix>_<secret>`.

    Only a SHA-256 of the secret is kept: the secret is 256 random bits, so a
    slow password hash would add no protection against guessing, and would cost
    every API call tens of milliseconds. The prefix finds the row and names the
    key in logs and the admin without revealing it.
    """

    class Scope(models.TextChoices):
        SIGNUP = "signup", "Sign readers up"

    name = models.CharField(max_length=100, help_text="Who uses it, e.g. “Partner site X”.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, blank=True, help_text="What the key may do.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (nr_{self.prefix}_…)"
