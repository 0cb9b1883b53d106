"""Editorial state changes: the only code that publishes or unpublishes stories.

Each transition is a conditional UPDATE on the current status, so two editors
clicking at once (or a double click) change the story once and announce it
once. Unpublishing is announced by a signal sent on commit (the delivery side
withdraws the story's alert); publishing announces nothing, because alerts go
out only when an editor confirms one. Nothing is emailed here.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import DateTimeField, Value
from django.db.models.functions import Coalesce, Greatest
from django.dispatch import Signal
from django.utils import timezone

from newsroom.models import Story
from newsroom.signals import story_unpublished

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

logger = logging.getLogger(__name__)

_REFRESHED_FIELDS = ["status", "published_at", "live_since", "breaking", "last_editor",
                     "updated_at"]


def story_publish(
    *, story: Story, by: AbstractBaseUser | None, at: datetime | None = None
) -> bool:
    """Publish a draft; return False if it was already published.

    The publication time is `at` when given (a future time schedules the
    story), else the time the story already carries (so a story unpublished for
    a correction keeps its place), else now.
    """
    if at is not None and timezone.is_naive(at):
        raise ValueError("story_publish needs an aware datetime for `at`.")
    now = timezone.now()
    kept_or_now = Coalesce("published_at", Value(now, output_field=DateTimeField()))
    published_at = at if at is not None else kept_or_now
    with transaction.atomic():
        changed = Story.objects.filter(pk=story.pk, status=Story.Status.DRAFT).update(
            status=Story.Status.PUBLISHED,
            published_at=published_at,
            # Digests hold it from when it goes live: now, or its scheduled time. Not
            # its date, which may lie before digests already sent (a dated draft, a
            # story taken down and published again).
            live_since=Greatest(published_at, Value(now, output_field=DateTimeField())),
            last_editor=by,
            updated_at=now,  # update() skips auto_now
        )
        story.refresh_from_db(fields=_REFRESHED_FIELDS)
    return bool(changed)


def story_unpublish(
    *, story: Story, by: AbstractBaseUser | None, withdraw_alerts: bool = True
) -> bool:
    """Take a story back to draft; return False if it was not published.

    Its publication time is kept, so publishing it again restores its place.
    With `withdraw_alerts` (the default) its alert stops for the readers it has
    not reached yet (a receiver of story_unpublished does it).
    """
    with transaction.atomic():
        changed = Story.objects.filter(pk=story.pk, status=Story.Status.PUBLISHED).update(
            status=Story.Status.DRAFT, last_editor=by, updated_at=timezone.now()
        )
        story.refresh_from_db(fields=_REFRESHED_FIELDS)
        if changed:
            transaction.on_commit(partial(_announce, story_unpublished, story_id=story.pk,
                                          withdraw_alerts=withdraw_alerts))
    return bool(changed)


def _announce(signal: Signal, **kwargs: object) -> None:
    """Send after commit, robustly: the change is already committed, so a
    failing receiver must not turn it into an error page; it is logged loudly."""
    for receiver, result in signal.send_robust(sender=Story, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "Receiver %r failed for story %s", receiver, kwargs.get("story_id"),
                exc_info=result,
            )
