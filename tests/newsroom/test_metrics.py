"""/metrics: bearer-token access, and figures read from the broker, Redis and the database."""

import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from newsroom.celery import app
from newsroom.ops import broker, canary
from newsroom.ops.health import redis_client
from subscriptions.models import Delivery, Edition, TrackingEvent
from subscriptions.reconcile_counters import reconcile_totals
from subscriptions.sending import reconcile
from tests.settings_helpers import free_port
from tests.subscriptions.factories import subscriber

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def token(settings):
    settings.NEWSROOM_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one authorised scrape."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def edition(**fields) -> Edition:
    fields.setdefault("key", f"test:{uuid.uuid4().hex}")
    fields.setdefault("kind", Edition.Kind.ALERT)
    fields.setdefault("scheduled_at", timezone.now())
    return Edition.objects.create(**fields)


# --- Access ---------------------------------------------------------------------------------

def test_metrics_is_off_without_a_configured_token(client, settings):
    settings.NEWSROOM_METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN,
                                    f"Bearer {TOKEN}x"])
def test_metrics_refuses_a_missing_or_wrong_token(client, token, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"newsroom_" not in response.content


@pytest.mark.django_db
def test_metrics_answers_the_right_token_with_every_section(client, token):
    samples = scrape(client)
    for section in ("queues", "canary", "reconcile", "editions", "webhooks"):
        assert value(samples, "newsroom_scrape_section_ok", section=section) == 1
    for queue in broker.known_queues():
        assert ("newsroom_canary_age_seconds", (("queue", queue),)) in samples


# --- Figures --------------------------------------------------------------------------------

@pytest.fixture
def filled_queue(settings):
    """A queue of its own (no test worker consumes it) holding three canary messages."""
    name = f"metrics-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_ROUTES = {**settings.CELERY_TASK_ROUTES,
                                   "tests.unrouted": {"queue": name}}
    for _ in range(3):
        app.send_task("newsroom.canary", queue=name)
    yield name
    client = redis_client(settings.REDIS_URL, 2)
    client.delete(name, f"_kombu.binding.{name}")


@pytest.mark.django_db
def test_queue_depth_and_age_of_a_filled_queue(client, token, filled_queue):
    time.sleep(0.05)
    samples = scrape(client)
    assert value(samples, "newsroom_queue_depth", queue=filled_queue) == 3
    assert 0 < value(samples, "newsroom_queue_oldest_age_seconds", queue=filled_queue) < 60
    assert ("newsroom_queue_unacked", ()) in samples


@pytest.mark.django_db
def test_deliveries_by_kind_and_transport_from_edition_counters(client, token):
    edition(kind=Edition.Kind.ALERT, transport="smtp", targeted=10, sent=7, failed=2, skipped=1)
    edition(kind=Edition.Kind.ALERT, transport="smtp", targeted=5, sent=5, requeued=2)
    edition(kind=Edition.Kind.DIGEST, transport="mailgun", targeted=4, sent=3, failed=1)
    edition(kind=Edition.Kind.DIGEST, transport="", targeted=1, skipped=1)
    samples = scrape(client)
    total = "newsroom_deliveries_total"
    assert value(samples, total, kind="alert", transport="smtp", status="sent") == 12
    assert value(samples, total, kind="alert", transport="smtp", status="failed") == 2
    assert value(samples, total, kind="alert", transport="smtp", status="skipped") == 1
    assert value(samples, total, kind="digest", transport="mailgun", status="failed") == 1
    assert value(samples, total, kind="digest", transport="unknown", status="skipped") == 1
    assert value(samples, "newsroom_deliveries_targeted_total", kind="alert",
                 transport="smtp") == 15
    assert value(samples, "newsroom_deliveries_requeued_total", kind="alert",
                 transport="smtp") == 2
    assert value(samples, "newsroom_editions", kind="alert", status="planned") == 2
    assert value(samples, "newsroom_editions", kind="digest", status="done") == 0


@pytest.mark.django_db
def test_a_failed_edition_is_exported_with_its_reason(client, token):
    stopped = edition(status=Edition.Status.FAILED,
                      note="the message's HTML is 300 KB, over the 100 KB …")
    edition(status=Edition.Status.DONE, note="")
    samples = scrape(client)
    assert value(samples, "newsroom_edition_failed_info", edition=str(stopped.pk), kind="alert",
                 reason=stopped.note) == 1
    assert sum(1 for name, _labels in samples if name == "newsroom_edition_failed_info") == 1


@pytest.mark.django_db
def test_caught_up_digests_are_counted(client, token):
    edition(kind=Edition.Kind.DIGEST, note="caught up: due 2026-12-01 07:00 UTC, 7.0 h late")
    edition(kind=Edition.Kind.DIGEST, note="")
    assert value(scrape(client), "newsroom_digests_caught_up_total") == 1


@pytest.mark.django_db
def test_edition_durations(client, token):
    now = timezone.now()
    edition(status=Edition.Status.DONE, started_at=now - timedelta(minutes=10),
            finished_at=now - timedelta(minutes=10) + timedelta(seconds=5))
    edition(status=Edition.Status.DONE, started_at=now - timedelta(minutes=3),
            finished_at=now - timedelta(minutes=3) + timedelta(seconds=100))
    edition(status=Edition.Status.SENDING, started_at=now - timedelta(seconds=90))
    samples = scrape(client)
    hist = "newsroom_edition_duration_seconds"
    assert value(samples, f"{hist}_bucket", kind="alert", le="10.0") == 1
    assert value(samples, f"{hist}_bucket", kind="alert", le="60.0") == 1
    assert value(samples, f"{hist}_bucket", kind="alert", le="120.0") == 2
    assert value(samples, f"{hist}_bucket", kind="alert", le="+Inf") == 2
    assert value(samples, f"{hist}_count", kind="alert") == 2
    assert value(samples, f"{hist}_sum", kind="alert") == pytest.approx(105)
    assert value(samples, "newsroom_edition_last_duration_seconds", kind="alert") == 100
    assert 89 < value(samples, "newsroom_edition_oldest_sending_age_seconds", kind="alert") < 120
    assert value(samples, "newsroom_edition_oldest_sending_age_seconds", kind="digest") == 0


@pytest.mark.django_db
def test_webhook_events_by_type(client, token):
    for i, event_type in enumerate(["bounced", "bounced", "complained"]):
        TrackingEvent.objects.create(esp="mailgun", event_id=f"ev-{i}", event_type=event_type,
                                     recipient=f"r{i}@example.com")
    samples = scrape(client)
    assert value(samples, "newsroom_webhook_events_total", event_type="bounced") == 2
    assert value(samples, "newsroom_webhook_events_total", event_type="complained") == 1


@pytest.mark.django_db
def test_reconcile_actions_count_what_a_reconcile_did(client, token):
    before = scrape(client)
    sending = edition(status=Edition.Status.SENDING, started_at=timezone.now(),
                      last_progress_at=timezone.now(), targeted=1)
    Delivery.objects.create(edition=sending, subscriber=subscriber(),
                            status=Delivery.Status.SENDING, claim=uuid.uuid4(),
                            claimed_at=timezone.now() - timedelta(hours=2))
    assert reconcile.editions_reconcile().released == 1
    after = scrape(client)
    name = "newsroom_reconcile_actions_total"
    assert value(after, name, action="released") == value(before, name, action="released") + 1
    assert value(after, name, action="redispatched") == value(before, name,
                                                               action="redispatched")
    assert value(after, "newsroom_reconcile_runs_total") == value(
        before, "newsroom_reconcile_runs_total") + 1
    assert value(after, "newsroom_reconcile_last_run_timestamp_seconds") > time.time() - 60


@pytest.mark.django_db
def test_reconcile_counts_the_alerts_it_expires(client, token, settings):
    before = scrape(client)
    late = timezone.now() - timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER + 60)
    stale_alert = edition(status=Edition.Status.PLANNED, scheduled_at=late)
    assert reconcile.editions_reconcile().expired == [stale_alert.pk]
    name = "newsroom_reconcile_actions_total"
    assert value(scrape(client), name, action="expired") == value(
        before, name, action="expired") + 1


@pytest.mark.django_db
def test_a_dry_run_reconcile_counts_nothing(client, token):
    before = reconcile_totals()
    reconcile.editions_reconcile(dry_run=True)
    assert reconcile_totals() == before


@pytest.mark.django_db
def test_a_dead_broker_blanks_only_its_own_section(client, token, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    edition(transport="smtp", sent=1)
    samples = scrape(client)
    assert value(samples, "newsroom_scrape_section_ok", section="queues") == 0
    assert value(samples, "newsroom_scrape_section_ok", section="editions") == 1
    assert value(samples, "newsroom_deliveries_total", kind="alert", transport="smtp",
                 status="sent") == 1
    assert not any(name == "newsroom_queue_depth" for name, _ in samples)


# --- The canary -------------------------------------------------------------------------------

def test_beat_sends_a_canary_to_every_queue():
    entries = {entry["options"]["queue"]: entry
               for entry in django_settings.CELERY_BEAT_SCHEDULE.values()
               if entry["task"] == "newsroom.canary"}
    assert sorted(entries) == broker.known_queues()
    assert all(entry["schedule"] == django_settings.NEWSROOM_CANARY_INTERVAL
               for entry in entries.values())


def test_a_canary_run_outside_a_worker_vouches_for_no_queue():
    before = canary.canary_states()
    canary.canary.apply()  # eager: no delivery info, so no queue
    assert canary.canary_states() == before


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_canary_advances_for_every_queue_the_worker_consumes(celery_worker, client, token):
    queues = broker.known_queues()
    before = canary.canary_states()
    for queue in queues:
        canary.canary.apply_async(queue=queue)

    def advanced() -> dict:
        states = canary.canary_states()
        return {q: states[q] for q in queues
                if q in states and (q not in before
                                    or states[q].completed_at > before[q].completed_at)}

    deadline = time.monotonic() + 30
    while len(advanced()) < len(queues) and time.monotonic() < deadline:
        time.sleep(0.2)
    done = advanced()
    assert sorted(done) == queues, f"no canary completed on {set(queues) - set(done)}"
    assert all(state.waited is not None and state.waited < 30 for state in done.values())

    samples = scrape(client)
    for queue in queues:
        stamp = value(samples, "newsroom_canary_last_completed_timestamp_seconds", queue=queue)
        assert stamp == pytest.approx(done[queue].completed_at, abs=1)
        assert value(samples, "newsroom_canary_age_seconds", queue=queue) < 60


@pytest.mark.django_db
def test_stalled_editions_by_kind(client, token, settings):
    settings.NEWSROOM_STALL_AFTER = 300
    now = timezone.now()
    edition(status=Edition.Status.SENDING, started_at=now - timedelta(hours=1),
            last_progress_at=now - timedelta(minutes=10))
    edition(status=Edition.Status.SENDING, started_at=now - timedelta(hours=1),
            last_progress_at=now - timedelta(seconds=10))
    edition(status=Edition.Status.PAUSED, started_at=now - timedelta(hours=1),
            last_progress_at=now - timedelta(hours=1))  # paused on purpose: not stalled
    samples = scrape(client)
    assert value(samples, "newsroom_editions_stalled", kind="alert") == 1
    assert value(samples, "newsroom_editions_stalled", kind="digest") == 0
