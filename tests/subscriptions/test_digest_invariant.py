"""The digest invariant, checked against a plain model of newsroom days.

Hypothesis drives the real services through random days: stories published
(some with past dates), taken down, published again, their dates edited;
readers subscribing in several time zones (half-hour and 45-minute offsets,
zones that change clocks in the simulated weeks), leaving, coming back,
changing topics, zones and hours; beat running, or stalling past the lateness
window; digests cancelled, paused or failed halfway (then resumed or retried).
After every beat it checks that no reader got
a story that was not live, nor the same story twice in one of its live periods;
at the end, with beat running normally for a day, that every reader got every
story they followed throughout: **for every reader and every live story in a
category they followed throughout a window, the story is in exactly one of
their digests.**

The clock is simulated (services take `now`; what they stamp with the real
clock is set to the simulated one, as it would have been). CI runs a fixed
budget of examples; a longer run is one command:

    NEWSROOM_INVARIANT_EXAMPLES=500 python3 manage.py test \
        tests/subscriptions/test_digest_invariant.py
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from unittest import mock

import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from newsroom.models import Category, Story
from newsroom.services import story_publish, story_unpublish
from subscriptions.models import Edition, Subscriber
from subscriptions.sending import batches, dispatch, enqueue, scheduling, steering
from subscriptions.services.subscribers import (
    RequestInfo,
    subscriber_resubscribe,
    subscriber_unsubscribe,
)
from tests import recording_transport

pytestmark = pytest.mark.django_db

# Berlin and New York change clocks in March, Chatham (+12:45) and Lord Howe (30
# minutes) in early April; Kolkata is +05:30 all year.
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham",
         "Australia/Lord_Howe"]
START = datetime(2026, 3, 26, 0, 0, tzinfo=UTC)
HEADLINE = re.compile(r"^\* Story (\d+)\s*$", re.M)
INFO = RequestInfo()


class NewsroomDays(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self._patches = [
            mock.patch.object(enqueue, "enqueue_dispatch", lambda edition, **kw: None),
            mock.patch.object(enqueue, "enqueue_batches", lambda edition, **kw: 0),
            mock.patch.object(batches, "transport_get", recording_transport.RecordingTransport),
            override_settings(NEWSROOM_BATCH_SIZE=2, NEWSROOM_SEND_RATE=0),
        ]
        for patch in self._patches:
            patch.start() if hasattr(patch, "start") else patch.enable()
        recording_transport.SENT.clear()
        scheduling.cache.delete(scheduling._SCHEDULE_RUN_KEY)
        self.now = START
        self.categories: list[int] = []
        self.readers: dict[int, dict] = {}  # pk -> email, active, since{category: t}
        self.stories: dict[int, dict] = {}  # pk -> category, published, periods [(start, end)]
        self.got: dict[tuple[str, int], list[datetime]] = {}  # (email, story) -> when

    def teardown(self) -> None:
        try:
            if self.categories:
                self._flush_and_check()
        finally:
            for patch in reversed(self._patches):
                patch.stop() if hasattr(patch, "stop") else patch.disable()
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)

    # --- The world -------------------------------------------------------------------------

    @initialize()
    def newsdesk(self) -> None:
        for slug in ("world", "tech"):
            self.categories.append(Category.objects.create(name=slug.title(), slug=slug).pk)

    @rule(zone=st.sampled_from(ZONES), hour=st.integers(0, 23),
          follows=st.sets(st.sampled_from([0, 1]), min_size=1))
    def subscribe(self, zone: str, hour: int, follows: set[int]) -> None:
        n = len(self.readers)
        reader = Subscriber.objects.create(
            email=f"r{n}@example.com", status=Subscriber.Status.ACTIVE, timezone=zone,
            digest_hour=hour, confirmed_at=self.now, last_digest_due_at=self.now,
        )
        reader.categories.set([self.categories[i] for i in follows])
        self.readers[reader.pk] = {"email": reader.email, "active": True,
                                   "since": {self.categories[i]: self.now for i in follows}}

    @precondition(lambda self: self.readers)
    @rule(data=st.data())
    def unsubscribe(self, data) -> None:
        pk = data.draw(st.sampled_from(sorted(self.readers)))
        subscriber_unsubscribe(subscriber=Subscriber.objects.get(pk=pk), info=INFO,
                               method="test", send_goodbye=False)
        self.readers[pk]["active"] = False
        self.readers[pk]["since"] = {}

    @precondition(lambda self: any(not r["active"] for r in self.readers.values()))
    @rule(data=st.data())
    def come_back(self, data) -> None:
        pk = data.draw(st.sampled_from(sorted(p for p, r in self.readers.items()
                                              if not r["active"])))
        subscriber_resubscribe(subscriber=Subscriber.objects.get(pk=pk), info=INFO)
        Subscriber.objects.filter(pk=pk).update(confirmed_at=self.now,
                                                last_digest_due_at=self.now)
        follows = Subscriber.categories.through.objects.filter(subscriber_id=pk)
        self.readers[pk]["active"] = True
        self.readers[pk]["since"] = {c: self.now for c in
                                     follows.values_list("category_id", flat=True)}

    @precondition(lambda self: self.readers)
    @rule(data=st.data(), follows=st.sets(st.sampled_from([0, 1])))
    def change_topics(self, data, follows: set[int]) -> None:
        pk = data.draw(st.sampled_from(sorted(self.readers)))
        wanted = {self.categories[i] for i in follows}
        Subscriber.objects.get(pk=pk).categories.set(wanted)
        since = self.readers[pk]["since"]
        if self.readers[pk]["active"]:
            self.readers[pk]["since"] = {c: since.get(c, self.now) for c in wanted}

    @precondition(lambda self: self.readers)
    @rule(data=st.data(), zone=st.sampled_from(ZONES), hour=st.integers(0, 23))
    def change_time(self, data, zone: str, hour: int) -> None:
        pk = data.draw(st.sampled_from(sorted(self.readers)))
        Subscriber.objects.filter(pk=pk).update(timezone=zone, digest_hour=hour)

    @rule(category=st.sampled_from([0, 1]), backdated=st.sampled_from([0, 0, 3, 30, 200]))
    def publish(self, category: int, backdated: int) -> None:
        """A story published now; its date may lie hours (or days) before now."""
        story = Story.objects.create(
            headline="Story", slug=f"s{len(self.stories)}", body="Text.",
            category_id=self.categories[category],
            published_at=self.now - timedelta(hours=backdated),
        )
        Story.objects.filter(pk=story.pk).update(headline=f"Story {story.pk}")
        self._go_live(story)
        self.stories[story.pk] = {"category": self.categories[category], "published": True,
                                  "periods": [(self.now, None)]}

    def _go_live(self, story: Story) -> None:
        story_publish(story=story, by=None)
        Story.objects.filter(pk=story.pk).update(live_since=self.now)  # the simulated clock

    @precondition(lambda self: any(s["published"] for s in self.stories.values()))
    @rule(data=st.data())
    def take_down(self, data) -> None:
        pk = data.draw(st.sampled_from(sorted(p for p, s in self.stories.items()
                                              if s["published"])))
        story_unpublish(story=Story.objects.get(pk=pk), by=None)
        story = self.stories[pk]
        story["published"] = False
        story["periods"][-1] = (story["periods"][-1][0], self.now)

    @precondition(lambda self: any(not s["published"] for s in self.stories.values()))
    @rule(data=st.data())
    def publish_again(self, data) -> None:
        pk = data.draw(st.sampled_from(sorted(p for p, s in self.stories.items()
                                              if not s["published"])))
        self._go_live(Story.objects.get(pk=pk))
        self.stories[pk]["published"] = True
        self.stories[pk]["periods"].append((self.now, None))

    @precondition(lambda self: self.stories)
    @rule(data=st.data(), hours_ago=st.integers(0, 300))
    def edit_date(self, data, hours_ago: int) -> None:
        pk = data.draw(st.sampled_from(sorted(self.stories)))
        story = Story.objects.get(pk=pk)
        story.published_at = self.now - timedelta(hours=hours_ago)
        story.save()

    # --- Time and the schedule ---------------------------------------------------------

    @rule(hours=st.integers(1, 11), minutes=st.sampled_from([0, 5, 15, 30, 45]))
    def time_passes_with_beat(self, hours: int, minutes: int) -> None:
        """Beat runs every few minutes: here, at the end of each hour that passes."""
        for _ in range(hours):
            self.now += timedelta(hours=1)
            self._beat()
        self.now += timedelta(minutes=minutes)
        self._beat()

    @rule(hours=st.sampled_from([1, 2, 3, 5, 8, 30]))
    def time_passes_without_beat(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule(hours=st.integers(1, 6), sent=st.integers(0, 3))
    def beat_then_cancel(self, hours: int, sent: int) -> None:
        """Time passes to a beat whose new digests an operator cancels after `sent`
        batches."""
        self.now += timedelta(hours=hours)
        for edition in scheduling.digests_schedule(now=self.now):
            dispatch.edition_dispatch(edition_id=edition.pk)
            for first, last in enqueue.batch_ranges(edition)[:sent]:
                batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
            steering.edition_cancel(edition=Edition.objects.get(pk=edition.pk))
        self._read_mail()

    @rule(hours=st.integers(1, 6), sent=st.integers(0, 3), how=st.sampled_from(["pause", "fail"]))
    def beat_then_stop(self, hours: int, sent: int, how: str) -> None:
        """Time passes to a beat whose new digests are paused, or fail (as a content
        error stops them), after `sent` batches; `carry_on` resumes or retries them."""
        self.now += timedelta(hours=hours)
        for edition in scheduling.digests_schedule(now=self.now):
            dispatch.edition_dispatch(edition_id=edition.pk)
            for first, last in enqueue.batch_ranges(edition)[:sent]:
                batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
            if how == "pause":
                steering.edition_pause(edition=Edition.objects.get(pk=edition.pk))
            else:
                steering.edition_fail(edition_id=edition.pk, reason="simulated content error")
        self._read_mail()

    @rule()
    def carry_on(self) -> None:
        """An editor resumes the paused digests and retries the failed ones."""
        for edition in Edition.objects.filter(kind=Edition.Kind.DIGEST,
                                              status=Edition.Status.PAUSED):
            steering.edition_resume(edition=edition)
        for edition in Edition.objects.filter(kind=Edition.Kind.DIGEST,
                                              status=Edition.Status.FAILED):
            steering.edition_retry_failed(edition=edition)
        self._beat()

    def _beat(self) -> None:
        scheduling.digests_schedule(now=self.now)
        for edition in Edition.objects.filter(kind=Edition.Kind.DIGEST,
                                              status=Edition.Status.PLANNED):
            dispatch.edition_dispatch(edition_id=edition.pk)
        for edition in Edition.objects.filter(kind=Edition.Kind.DIGEST,
                                              status=Edition.Status.SENDING):
            for first, last in enqueue.batch_ranges(edition):
                batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
        self._read_mail()

    # --- Checks ----------------------------------------------------------------------

    def _read_mail(self) -> None:
        for envelope in recording_transport.SENT:
            text = message_from_bytes(envelope.data, policy=policy.default).get_body(
                ("plain",)).get_content()
            for story_id in map(int, HEADLINE.findall(text)):
                story = self.stories[story_id]
                assert story["published"], f"story {story_id} was sent while taken down"
                self.got.setdefault((envelope.recipient, story_id), []).append(self.now)
        recording_transport.SENT.clear()

    @invariant()
    def nobody_gets_a_story_twice_in_one_live_period(self) -> None:
        for (email, story_id), times in self.got.items():
            periods = self.stories[story_id]["periods"]
            for start, end in periods:
                inside = [t for t in times if t >= start and (end is None or t <= end)]
                assert len(inside) <= 1, (email, story_id, inside, periods)

    def _flush_and_check(self) -> None:
        """Stopped digests carry on, and a day and more of normal beats pass: every
        window closes; then completeness."""
        self.carry_on()
        for _ in range(30):
            self.now += timedelta(hours=1)
            self._beat()
        self.nobody_gets_a_story_twice_in_one_live_period()
        for reader in self.readers.values():
            if not reader["active"]:
                continue
            for story_id, story in self.stories.items():
                start, end = story["periods"][-1]
                since = reader["since"].get(story["category"])
                if end is None and since is not None and since < start:
                    assert (reader["email"], story_id) in self.got, (
                        f"{reader['email']} followed story {story_id}'s category since "
                        f"{since} and it went live at {start}, but never got it")


NewsroomDays.TestCase.settings = settings(
    max_examples=int(os.environ.get("NEWSROOM_INVARIANT_EXAMPLES", "30")),
    stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)


def test_every_reader_gets_every_story_they_followed_exactly_once():
    NewsroomDays.TestCase().runTest()
