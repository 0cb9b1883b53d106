"""`manage.py editions` and `manage.py requeue_stuck`."""

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from newsroom.ops.management.commands.editions import duration_or_eta, format_seconds
from subscriptions.models import Delivery, Edition
from tests.subscriptions.factories import subscriber

pytestmark = pytest.mark.django_db


def edition(**fields) -> Edition:
    fields.setdefault("key", f"test:{uuid.uuid4().hex[:12]}")
    fields.setdefault("kind", Edition.Kind.ALERT)
    fields.setdefault("scheduled_at", timezone.now())
    return Edition.objects.create(**fields)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def stuck_delivery() -> Delivery:
    """A delivery a batch run claimed two hours ago and never finished (the run died)."""
    now = timezone.now()
    sending = edition(status=Edition.Status.SENDING, started_at=now - timedelta(hours=2),
                      last_progress_at=now, targeted=1)
    return Delivery.objects.create(
        edition=sending, subscriber=subscriber(), status=Delivery.Status.SENDING,
        claim=uuid.uuid4(), claimed_at=now - timedelta(hours=2), attempts=1,
    )


# --- editions ---------------------------------------------------------------------------------

def test_editions_lists_recent_editions_with_counts_and_timing():
    now = timezone.now()
    done = edition(key="alert:story:1", status=Edition.Status.DONE, targeted=10, sent=9,
                   failed=1, started_at=now - timedelta(minutes=5),
                   finished_at=now - timedelta(minutes=5) + timedelta(seconds=75))
    sending = edition(key="digest:daily:2030-01-01T07:00Z", kind=Edition.Kind.DIGEST,
                      status=Edition.Status.SENDING, targeted=100, sent=25, skipped=5,
                      requeued=3, started_at=now - timedelta(seconds=60))
    lines = run("editions").splitlines()
    assert lines[0].split() == ["ID", "KIND", "KEY", "STATUS", "TARGETED", "SENT", "FAILED",
                                "SKIPPED", "REQUEUED", "STARTED", "DURATION/ETA"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert by_id[str(done.pk)].split()[1:9] == ["alert", "alert:story:1", "done", "10", "9",
                                                "1", "0", "0"]
    assert by_id[str(done.pk)].endswith("1m15s")
    assert by_id[str(sending.pk)].split()[3:9] == ["sending", "100", "25", "0", "5", "3"]
    assert "eta 2m" in by_id[str(sending.pk)]  # 70 left at 30 a minute: 2m20s


def test_editions_filters_by_status_and_limits():
    edition(status=Edition.Status.DONE)
    planned = [edition() for _ in range(3)]
    out = run("editions", "--status", "planned", "--limit", "2")
    ids = [line.split()[0] for line in out.splitlines()[1:]]
    assert ids == [str(planned[2].pk), str(planned[1].pk)]
    assert "No editions." in run("editions", "--status", "cancelled")


def test_duration_and_eta_wording():
    now = timezone.now()
    assert format_seconds(3725) == "1h02m"
    assert duration_or_eta(Edition(status=Edition.Status.PLANNED), now) == "-"
    fresh = Edition(status=Edition.Status.SENDING, targeted=5,
                    started_at=now - timedelta(seconds=8))
    assert duration_or_eta(fresh, now) == "eta ? (8s in)"
    going = Edition(status=Edition.Status.SENDING, targeted=100, sent=25, skipped=5,
                    started_at=now - timedelta(seconds=60))
    assert duration_or_eta(going, now) == "eta 2m20s"


# --- requeue_stuck ----------------------------------------------------------------------------

def test_requeue_stuck_dry_run_reports_and_changes_nothing():
    delivery = stuck_delivery()
    out = run("requeue_stuck", "--dry-run")
    assert "Would release 1 deliveries held by dead batch runs" in out
    assert "Dry run: nothing was changed." in out
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENDING and delivery.claim is not None
    assert Edition.objects.get(pk=delivery.edition_id).requeued == 0


def test_requeue_stuck_releases_a_delivery_held_by_a_dead_batch_run():
    delivery = stuck_delivery()
    out = run("requeue_stuck")
    assert "Released 1 deliveries held by dead batch runs" in out
    assert "Dry run" not in out
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.QUEUED and delivery.claim is None
    assert Edition.objects.get(pk=delivery.edition_id).requeued == 1
    assert run("requeue_stuck").strip() == "Nothing is stuck."


def test_requeue_stuck_dry_run_names_a_lost_dispatch():
    lost = edition(scheduled_at=timezone.now() - timedelta(hours=1))
    out = run("requeue_stuck", "--dry-run")
    assert f"Would dispatch again (planned, dispatch message lost): editions #{lost.pk}" in out
    assert Edition.objects.get(pk=lost.pk).status == Edition.Status.PLANNED


def test_requeue_stuck_dry_run_names_a_dispatch_stopped_halfway():
    long_ago = timezone.now() - timedelta(hours=2)
    halfway = edition(status=Edition.Status.SENDING, started_at=long_ago,
                      last_progress_at=long_ago)  # never dispatched_at: step 2 never ran
    out = run("requeue_stuck", "--dry-run")
    assert (f"Would complete the dispatch of editions #{halfway.pk} "
            "(stopped between their first batches and the rest)") in out
    assert Edition.objects.get(pk=halfway.pk).dispatched_at is None
