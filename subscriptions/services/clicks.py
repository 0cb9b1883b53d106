"""Counting a followed edition link (the redirect view, subscriptions.views.click)."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F

from newsroom.models import Story
from subscriptions.models import ClickCount, Edition


def click_record(*, edition_id: int, story_id: int, url: str) -> bool:
    """Count one click on `url` in `story_id` of `edition_id`; False if either is gone.

    One UPDATE for every click but a link's first, which inserts its row (two
    first clicks at once: the loser's INSERT fails and it updates instead).
    """
    link = ClickCount.objects.filter(edition_id=edition_id, story_id=story_id, url=url)
    if link.update(count=F("count") + 1):
        return True
    if not (Edition.objects.filter(pk=edition_id).exists()
            and Story.objects.filter(pk=story_id).exists()):
        return False
    try:
        with transaction.atomic():
            ClickCount.objects.create(edition_id=edition_id, story_id=story_id, url=url, count=1)
    except IntegrityError:
        return bool(link.update(count=F("count") + 1))
    return True
