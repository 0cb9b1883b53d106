"""The edition selectors: the stalled rule on a fixed clock, and editions in words."""

from datetime import UTC, datetime, timedelta

import pytest

from subscriptions.models import Edition
from subscriptions.selectors import (
    duration_text,
    edition_audience_text,
    edition_is_stalled,
    edition_moved_at,
    edition_stalled_for,
    editions_stalled,
    eta_text,
    stalled_text,
)
from tests.subscriptions.factories import category

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
AFTER = 300


def _ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def _edition(status: str = "sending", **fields) -> Edition:
    fields.setdefault("created_at", _ago(3600))
    fields.setdefault("scheduled_at", _ago(3600))
    return Edition(status=status, kind=fields.pop("kind", "alert"), **fields)


# --- The stalled rule -------------------------------------------------------------------


@pytest.mark.parametrize(("idle", "stalled"), [(0, False), (299, False), (300, True),
                                               (3600, True)])
def test_a_sending_edition_stalls_after_the_limit_without_progress(idle, stalled):
    edition = _edition(started_at=_ago(7200), last_progress_at=_ago(idle))
    assert edition_is_stalled(edition, now=NOW, after=AFTER) is stalled


def test_progress_falls_back_to_the_start_then_to_when_it_was_planned():
    assert edition_moved_at(_edition(last_progress_at=_ago(5), started_at=_ago(50))) == _ago(5)
    assert edition_moved_at(_edition(started_at=_ago(50))) == _ago(50)
    planned = _edition("planned", created_at=_ago(600), scheduled_at=_ago(900))
    assert edition_moved_at(planned) == _ago(600)  # the later of the two
    assert edition_stalled_for(planned, now=NOW, after=AFTER) == timedelta(seconds=600)
    not_due = _edition("planned", created_at=_ago(600), scheduled_at=NOW + timedelta(hours=1))
    assert not edition_is_stalled(not_due, now=NOW, after=AFTER)
    assert not edition_is_stalled(_edition("planned", created_at=None, scheduled_at=None),
                                  now=NOW, after=AFTER)


@pytest.mark.parametrize("status", ["paused", "done", "cancelled", "failed", "expired"])
def test_only_planned_and_sending_editions_stall(status):
    edition = _edition(status, started_at=_ago(7200), last_progress_at=_ago(7200))
    assert edition_stalled_for(edition, now=NOW, after=AFTER) is None


def test_the_limit_is_the_setting_by_default(settings):
    settings.NEWSROOM_STALL_AFTER = 60
    edition = _edition(last_progress_at=_ago(61))
    assert edition_is_stalled(edition, now=NOW)
    settings.NEWSROOM_STALL_AFTER = 120
    assert not edition_is_stalled(edition, now=NOW)


@pytest.mark.django_db
def test_editions_stalled_applies_the_same_rule_to_the_active_rows(settings):
    settings.NEWSROOM_STALL_AFTER = AFTER

    def make(key: str, status: str, **fields) -> Edition:
        edition = Edition.objects.create(key=key, kind="alert", status=status,
                                         scheduled_at=_ago(4000), **fields)
        Edition.objects.filter(pk=edition.pk).update(created_at=_ago(4000))  # not auto_now
        return edition

    stuck = make("stuck", "sending", started_at=_ago(4000), last_progress_at=_ago(400))
    make("moving", "sending", started_at=_ago(4000), last_progress_at=_ago(10))
    make("paused", "paused", started_at=_ago(4000), last_progress_at=_ago(4000))
    make("done", "done", started_at=_ago(4000), last_progress_at=_ago(4000))
    lost = make("lost", "planned")  # its dispatch message never arrived
    assert {e.pk for e in editions_stalled(now=NOW)} == {stuck.pk, lost.pk}
    assert editions_stalled(now=_ago(3990)) == []  # just after they were planned: all well


# --- Words ------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (20.7, "20 s"), (59, "59 s"), (60, "1 min"), (125, "2 min 5 s"),
    (600, "10 min"), (659, "10 min"), (3700, "1 h 1 min"),
])
def test_durations_show_seconds_under_a_minute(seconds, text):
    assert duration_text(seconds) == text


def test_the_eta_is_honest_about_seconds_and_unknown_rates():
    assert eta_text(NOW + timedelta(seconds=20), now=NOW) == "in 20 s"
    assert eta_text(NOW + timedelta(minutes=4, seconds=5), now=NOW) == "in 4 min 5 s"
    assert eta_text(None, now=NOW) == "—"
    assert eta_text(NOW - timedelta(seconds=3), now=NOW) == "any moment now"
    assert stalled_text(timedelta(minutes=6, seconds=1)) == "Stalled: no progress for 6 min 1 s"


@pytest.mark.django_db
def test_an_alert_audience_names_its_category():
    policy = category("policy", name="Policy")
    alert = _edition(kind="alert", audience={"category_id": policy.pk})
    assert edition_audience_text(alert) == "Policy · readers who want alerts"
    assert edition_audience_text(alert, category_names={policy.pk: "Politik"}) == (
        "Politik · readers who want alerts")
    gone = _edition(kind="alert", audience={"category_id": 999_999})
    assert edition_audience_text(gone) == "category #999999 (deleted) · readers who want alerts"


def test_a_digest_audience_names_its_hours_and_time_zones():
    digest = _edition(kind="digest", frequency="daily",
                      audience={"frequency": "daily", "slots": [["Europe/Berlin", 7],
                                                                ["UTC", 18]]})
    assert edition_audience_text(digest) == (
        "Daily digest · readers due at 07:00 Europe/Berlin, 18:00 UTC")
    many = _edition(kind="digest", audience={"frequency": "weekly",
                                             "slots": [[f"Etc/GMT-{i}", 7] for i in range(9)]})
    text = edition_audience_text(many)
    assert text.startswith("Weekly digest · readers due at 07:00 Etc/GMT-0, ")
    assert text.endswith(" and 3 more time zones and hours")


def test_an_audience_of_unknown_shape_is_shown_as_stored():
    odd = _edition(kind="alert", audience={"segment": "vip"})
    assert edition_audience_text(odd) == '{"segment": "vip"}'


@pytest.mark.django_db
def test_an_alerts_sent_deliveries_are_counted_per_story_revision():
    from newsroom.models import Story
    from subscriptions.models import Delivery
    from subscriptions.selectors import edition_delivery_counts
    from tests.subscriptions.factories import category, subscriber

    cat = category("policy")
    story = Story.objects.create(headline="Vote", slug="vote", category=cat, body="Text.")
    story.save()  # revision 2
    edition = Edition.objects.create(
        key="alert:story:x", kind=Edition.Kind.ALERT, scheduled_at=datetime.now(UTC),
        audience={"category_id": cat.pk})
    edition.stories.set([story])
    for i, (status, revision) in enumerate([("sent", 1), ("sent", 1), ("sent", 2),
                                            ("queued", None), ("failed", None)]):
        Delivery.objects.create(edition=edition, subscriber=subscriber(f"r{i}@example.com"),
                                status=status, revision=revision)
    by_status, by_revision = edition_delivery_counts(edition)
    assert by_revision == [(1, 2, False), (2, 1, True)]
    assert by_status == {"queued": 1, "sending": 0, "sent": 3, "failed": 1, "skipped": 0}
