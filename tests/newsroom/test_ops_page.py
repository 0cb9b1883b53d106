"""The Operations page as the person on call uses it: who may see it, what it
shows from the real broker and a real worker, its charts, and that it stays cheap."""

import re
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from newsroom.celery import app
from newsroom.ops import broker, charts, samples, workers
from newsroom.ops.tasks import ops_sample
from newsroom.ops.views import recent_failures
from subscriptions.models import Delivery, Edition, Subscriber
from tests.subscriptions.factories import subscriber

pytestmark = pytest.mark.django_db

OPS_URL = reverse("admin:newsroom_operations_changelist")
SVG = "{http://www.w3.org/2000/svg}"


def _staff(username: str, *perms: str):
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(
            content_type__app_label=app_label, codename=codename))
    return user


@pytest.fixture
def oncall(client):
    client.force_login(_staff("oncall", "newsroom.view_operations",
                              "subscriptions.view_edition"))
    return client


def _edition(**fields) -> Edition:
    fields.setdefault("key", f"alert:test:{uuid.uuid4().hex[:8]}")
    fields.setdefault("kind", Edition.Kind.ALERT)
    fields.setdefault("status", Edition.Status.SENDING)
    fields.setdefault("scheduled_at", timezone.now())
    return Edition.objects.create(**fields)


def _parse(svg: str) -> ET.Element:
    """Parse as XML: a chart must be well-formed SVG, not just look like it."""
    return ET.fromstring(svg)  # noqa: S314 - our own markup, in a test


def _points(svg: str) -> int:
    polyline = _parse(svg).find(f"{SVG}polyline")
    return 0 if polyline is None else len(polyline.get("points").split())


def _svgs(html: str) -> dict[str, str]:
    """Each inline chart on a page, by the id of its title."""
    found = re.findall(r"<svg [^>]*class=\"ops-chart\".*?</svg>", html, flags=re.S)
    return {_parse(svg).find(f"{SVG}title").get("id"): svg for svg in found}


# --- Who may see it ------------------------------------------------------------------


def test_anonymous_is_sent_to_the_login(client):
    response = client.get(OPS_URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_permission_are_refused(client):
    client.force_login(_staff("desk", "subscriptions.view_edition"))
    assert client.get(OPS_URL).status_code == 403
    assert OPS_URL not in client.get(reverse("admin:index")).content.decode()


def test_the_admin_index_links_to_it(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{OPS_URL}"' in index and "Operations" in index
    assert admin_client.get(OPS_URL).status_code == 200


def test_without_a_snapshot_the_page_says_so_and_refreshes(oncall):
    response = oncall.get(OPS_URL)
    page = response.content.decode()
    assert response.status_code == 200
    assert '<meta http-equiv="refresh" content="15">' in page
    assert "No worker snapshot yet" in page
    assert "<script" not in page.split('id="content-main"')[1]  # no JavaScript needed


# --- Queues, from the real broker ------------------------------------------------------


@pytest.fixture
def test_queue(settings):
    """A queue of our own on the real broker, known to the page, deleted afterwards."""
    name = f"ops-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_ROUTES = {**settings.CELERY_TASK_ROUTES, "ops.test": {"queue": name}}
    yield name
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(
            name, f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}")


def test_a_filled_queue_shows_its_depth_and_oldest_age(oncall, test_queue):
    # The first message says it was published 90 s ago (the header the page reads).
    app.send_task("ops.test", queue=test_queue, headers={"published_at": time.time() - 90})
    app.send_task("ops.test", queue=test_queue)
    app.send_task("ops.test", queue=test_queue)

    [stat] = broker.queue_stats([test_queue])
    assert stat.depth == 3 and 90 <= stat.oldest_age < 120
    response = oncall.get(OPS_URL)
    [row] = [q for q in response.context["queues"] if q.name == test_queue]
    assert row.depth == 3 and row.oldest.startswith("1 min")
    assert re.search(rf"<th scope=\"row\">{test_queue}</th><td class=\"num\">3</td>"
                     r"<td>1 min \d+ s</td>", response.content.decode())


def test_an_unreachable_broker_is_reported_not_a_crash(oncall, monkeypatch):
    def down(*args, **kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(broker, "queue_stats", down)
    response = oncall.get(OPS_URL)
    assert response.status_code == 200
    assert "The broker did not answer: Connection refused" in response.content.decode()


# --- Workers, through a real worker ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_sampler_run_by_a_worker_records_it_and_the_page_lists_it(celery_worker, client):
    ops_sample.apply_async()  # through the broker: the worker knows the task by name
    deadline = time.monotonic() + 30
    while not samples.history():  # written last, after the workers' snapshot
        assert time.monotonic() < deadline, "the sampler did not run; see the worker log"
        time.sleep(0.2)
    snapshot = workers.snapshot_get()

    [me] = [w for w in snapshot.workers if w.name == celery_worker.name]
    assert me.queues == tuple(sorted(celery_worker.queues.split(",")))
    assert me.concurrency == celery_worker.concurrency
    assert me.active >= 1  # the sampler itself was running on it when it asked
    assert snapshot.answered(me) and snapshot.age() < 30
    [sample] = samples.history()
    assert set(broker.known_queues()) <= set(sample.depth)

    client.force_login(_staff("oncall", "newsroom.view_operations"))
    page = client.get(OPS_URL).content.decode()
    assert celery_worker.name in page and "As of " in page
    assert "alerts, default, digests, priority" in page


def test_a_worker_that_stops_answering_stays_listed_as_silent():
    seen = workers.WorkerInfo(name="w1@host", queues=("alerts",), concurrency=4, active=3,
                              oldest_task_started=1000.0, processed=10, pid=1, uptime=5,
                              last_seen=1000.0)
    later = workers.snapshot_merge(workers.Snapshot(1000.0, (seen,)), [], now=1100.0)
    [silent] = later.workers
    assert not later.answered(silent) and silent.last_seen == 1000.0 and silent.active == 0
    forgotten = workers.snapshot_merge(later, [], now=1000.0 + workers.FORGET_AFTER + 1)
    assert forgotten.workers == ()


def test_the_page_shows_the_stored_snapshot_with_its_age(oncall, settings):
    now = time.time()
    answering = workers.WorkerInfo(name="alerts-1@host", queues=("alerts",), concurrency=8,
                                   active=2, oldest_task_started=now - 75, processed=40,
                                   pid=10, uptime=600, last_seen=now - 12)
    silent = workers.WorkerInfo(name="digests-1@host", queues=("digests",), concurrency=4,
                                active=0, oldest_task_started=None, processed=3, pid=11,
                                uptime=60, last_seen=now - 300)
    cache.set(workers.SNAPSHOT_KEY, workers.Snapshot(now - 12, (answering, silent)).to_dict())
    page = oncall.get(OPS_URL).content.decode()
    assert re.search(r"As of 1[2-4] s ago", page)
    assert "alerts-1@host" in page and "1 min 1" in page  # its oldest task's run time
    assert re.search(r"not answering; last answered 5 min( \d+ s)? ago", page)

    settings.NEWSROOM_OPS_SAMPLE_INTERVAL = 3  # 12 s is four missed ticks
    assert "the sampler has not run since" in oncall.get(OPS_URL).content.decode()


# --- Editions -----------------------------------------------------------------------------


def _record(at: float, **fields) -> None:
    fields.setdefault("depth", {"alerts": 0})
    fields.setdefault("unacked", 0)
    samples.sample_record(samples.Sample(at=at, **fields))


def test_a_running_edition_shows_progress_rate_and_eta(oncall):
    edition = _edition(targeted=1000, sent=400, failed=5,
                       started_at=timezone.now() - timedelta(seconds=400))
    now = time.time()
    _record(now - 60, sent=100, editions={edition.pk: (100, 105)})
    _record(now - 1, sent=395, editions={edition.pk: (395, 400)})
    _edition(status=Edition.Status.DONE, targeted=5, sent=5)  # finished: not listed

    response = oncall.get(OPS_URL)
    [row] = response.context["editions"]
    assert row.edition == edition and row.rate_is_recent
    assert row.rate == pytest.approx(5.0, rel=0.05)
    left = 1000 - 405
    assert abs((row.eta - timezone.now()).total_seconds() - left / 5) < 10
    page = response.content.decode()
    assert '<progress value="405" max="1000"' in page and "40%" in page
    assert "400 / 1000" in page and "5.0/s (last 5 min)" in page and "(in " in page
    assert reverse("admin:subscriptions_edition_change", args=[edition.pk]) in page


def test_without_samples_the_rate_is_the_mean_since_start(oncall):
    _edition(targeted=100, sent=50, started_at=timezone.now() - timedelta(seconds=100))
    [row] = oncall.get(OPS_URL).context["editions"]
    assert not row.rate_is_recent and row.rate == pytest.approx(0.5, rel=0.05)


def test_the_page_reads_counters_never_the_delivery_table(oncall):
    edition = _edition(targeted=2000, sent=10,
                       started_at=timezone.now() - timedelta(seconds=60))
    failed = subscriber("gone@example.com")
    Delivery.objects.create(edition=edition, subscriber=failed, status=Delivery.Status.FAILED,
                            claimed_at=timezone.now(), last_error="550 5.1.1 No such user")

    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert oncall.get(OPS_URL).status_code == 200
        return [query["sql"] for query in captured.captured_queries]

    before = queries()
    readers = Subscriber.objects.bulk_create(
        Subscriber(email=f"bulk{i}@example.com", status="active") for i in range(3000))
    Delivery.objects.bulk_create(Delivery(edition=edition, subscriber=reader)
                                 for reader in readers)
    after = queries()

    assert len(after) == len(before) <= 12
    on_deliveries = [sql for sql in after if "subscriptions_delivery" in sql]
    assert len(on_deliveries) == 1 and "LIMIT 20" in on_deliveries[0]
    assert "COUNT(" not in " ".join(after).upper()
    page = oncall.get(OPS_URL).content.decode()
    assert "gone@example.com" in page and "550 5.1.1 No such user" in page


def test_recent_failures_read_an_index_not_the_table():
    plan = recent_failures().explain()
    if connection.vendor == "sqlite":
        assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, plan
    else:  # PostgreSQL: a tiny table may be scanned whole; the index must be usable
        assert "subscriptions_delivery" in plan


# --- Charts --------------------------------------------------------------------------------


def test_a_chart_is_valid_accessible_svg_with_one_point_per_sample():
    points = [(1_700_000_000.0 + 30 * i, float(v)) for i, v in enumerate([0, 3, 7, 2, 5])]
    svg = charts.line_chart(points, title="Messages waiting in alerts", unit="messages")
    root = _parse(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    assert title.text == "Messages waiting in alerts"
    assert desc.text.startswith("5 samples from") and "latest 5 messages" in desc.text
    assert _points(svg) == 5
    labels = [text.text for text in root.iter(f"{SVG}text")]
    assert "7" in labels and "0" in labels and "messages" in labels  # value axis
    assert charts.clock(points[0][0]) in labels and charts.clock(points[-1][0]) in labels
    ys = [float(p.split(",")[1]) for p in root.find(f"{SVG}polyline").get("points").split()]
    assert ys[2] == min(ys) and ys[0] == max(ys)  # the highest value is drawn highest


def test_a_chart_escapes_every_text():
    nasty = '</title><script>alert("x")</script> & co'
    svg = charts.line_chart([(0.0, 1.0), (60.0, 2.0)], title=nasty, unit="<b>",
                            ident="x")
    assert "<script>" not in svg and "<b>" not in svg
    root = _parse(svg)
    assert root.find(f"{SVG}title").text == nasty


@pytest.mark.parametrize("points", [[], [(100.0, 4.0)], [(100.0, 0.0), (130.0, 0.0)]])
def test_a_chart_of_little_or_nothing_still_renders(points):
    svg = charts.line_chart(points, title="Rate", unit="msg/s")
    root = _parse(svg)
    assert _points(svg) == len(points)
    if not points:
        assert "No data yet" in svg and root.find(f"{SVG}desc").text == "No data yet."


def test_rates_are_differences_between_consecutive_samples():
    assert samples.rates([(0.0, 0.0), (10.0, 50.0), (20.0, 50.0), (30.0, 10.0),
                          (30.0, 99.0)]) == [(10.0, 5.0), (20.0, 0.0), (30.0, 0.0)]
    assert samples.recent_rate([(0.0, 0.0), (200.0, 100.0), (300.0, 300.0)], over=100) == 2.0
    assert samples.recent_rate([(0.0, 0.0)]) is None


def test_the_history_is_capped_and_the_page_charts_it(oncall, settings):
    settings.NEWSROOM_OPS_SAMPLE_INTERVAL = 600  # an hour is 6 ticks: 7 samples kept
    now = time.time()
    for i in range(10):
        _record(now - 50 * (9 - i), depth={"alerts": i, "digests": 2 * i}, sent=100 * i)
    kept = samples.history()
    assert len(kept) == 7 and [s.depth["alerts"] for s in kept] == [3, 4, 5, 6, 7, 8, 9]
    assert samples.history(now=now + 3600 - 75) == kept[-2:]  # older ones age out

    found = _svgs(oncall.get(OPS_URL).content.decode())
    assert _points(found["depth-alerts-title"]) == 7
    assert _points(found["depth-digests-title"]) == 7
    assert _points(found["send-rate-title"]) == 6  # rates: one fewer than samples


def test_the_sampler_records_depths_and_counters(settings):
    edition = _edition(targeted=10, sent=4, failed=1, skipped=2)
    _edition(status=Edition.Status.DONE, targeted=3, sent=3,
             finished_at=timezone.now() - timedelta(hours=1))
    sample = samples.sample_take(queues=["alerts", "digests"])
    assert set(sample.depth) == {"alerts", "digests"}
    assert sample.sent == 7 and sample.editions == {edition.pk: (4, 7)}


def test_an_edition_page_shows_its_send_rate_chart(admin_client):
    edition = _edition(targeted=100, sent=60, started_at=timezone.now())
    change = reverse("admin:subscriptions_edition_change", args=[edition.pk])
    assert "No samples in the last hour" in admin_client.get(change).content.decode()

    now = time.time()
    for i, sent in enumerate([0, 20, 45, 60]):
        _record(now - 30 * (3 - i), sent=sent, editions={edition.pk: (sent, sent)})
    svg = _svgs(admin_client.get(change).content.decode())[f"edition-{edition.pk}-rate-title"]
    assert _points(svg) == 3
    assert _parse(svg).find(f"{SVG}desc").text.startswith("3 samples")


def test_a_short_alert_between_two_ticks_still_has_a_chart(admin_client):
    """The sampler saw it once (or never): its page drew "No samples" while the
    Operations chart showed the spike. Before its start it had sent nothing, and
    after its end its final count: the chart fills those in."""
    now = time.time()
    started = timezone.now() - timedelta(seconds=50)
    edition = _edition(status=Edition.Status.DONE, targeted=800, sent=800, started_at=started,
                       finished_at=started + timedelta(seconds=8))
    _record(now - 90, sent=0)  # before it started: not in the sample
    _record(now - 60, sent=0)
    _record(now - 30, sent=800, editions={edition.pk: (800, 800)})  # just after it finished
    _record(now, sent=800)  # it has dropped out of the samples
    change = reverse("admin:subscriptions_edition_change", args=[edition.pk])
    page = admin_client.get(change).content.decode()
    assert "No samples in the last hour" not in page
    svg = _svgs(page)[f"edition-{edition.pk}-rate-title"]
    assert _points(svg) == 4  # 5 totals (its start included), 4 rates
    series = samples.edition_sent_series(samples.history(), edition)
    assert [v for _, v in series] == [0, 0, 0, 800, 800]
    assert series[2][0] == pytest.approx(started.timestamp())
    assert max(rate for _, rate in samples.rates(series)) == pytest.approx(800 / 20, rel=0.05)


def test_an_edition_running_across_ticks_keeps_its_recorded_series():
    now = time.time()
    edition = _edition(targeted=100, sent=60, started_at=timezone.now() - timedelta(seconds=200))
    _record(now - 250, sent=0)
    for i, sent in enumerate([10, 40, 60]):
        _record(now - 30 * (2 - i), sent=sent, editions={edition.pk: (sent, sent)})
    series = samples.edition_sent_series(samples.history(), edition)
    assert [v for _, v in series] == [0, 0, 10, 40, 60]  # a sample before, its start, its ticks


def test_a_stalled_edition_is_flagged_and_a_moving_one_is_not(oncall, settings):
    settings.NEWSROOM_STALL_AFTER = 300
    stuck = _edition(targeted=10, sent=2, started_at=timezone.now() - timedelta(minutes=20),
                     last_progress_at=timezone.now() - timedelta(minutes=7))
    moving = _edition(targeted=10, sent=2, started_at=timezone.now() - timedelta(minutes=20),
                      last_progress_at=timezone.now() - timedelta(seconds=20))
    response = oncall.get(OPS_URL)
    rows = {row.edition.pk: row for row in response.context["editions"]}
    assert rows[stuck.pk].stalled == "Stalled: no progress for 7 min"
    assert rows[moving.pk].stalled == ""
    page = response.content.decode()
    assert ('<strong class="ops-warning edition-stalled">Stalled: no progress for 7 min'
            '</strong>') in page
    assert "1 stalled: planned or sending with no progress for 5 min or more" in page


def test_the_eta_shows_seconds_under_a_minute(oncall):
    _edition(targeted=100, sent=67, started_at=timezone.now() - timedelta(seconds=40),
             last_progress_at=timezone.now())
    [row] = oncall.get(OPS_URL).context["editions"]
    assert re.fullmatch(r"in (19|20) s", row.eta_text)


@pytest.mark.django_db
def test_failed_editions_and_caught_up_digests_need_attention(admin_client):
    from django.utils import timezone

    from subscriptions.models import Edition

    failed = Edition.objects.create(key="alert:story:f", kind="alert", status="failed",
                                    scheduled_at=timezone.now(),
                                    note="the HTML is 300 KB, over the 100 KB limit")
    caught = Edition.objects.create(
        key="digest:daily:c", kind="digest", frequency="daily", status="done",
        scheduled_at=timezone.now() - timedelta(hours=8),
        note="caught up: due 2026-12-01 07:00 UTC, created 7.0 h late")
    page = admin_client.get(OPS_URL).content.decode()
    assert 'id="ops-failed"' in page and failed.note in page
    assert 'id="ops-caught-up"' in page and caught.note in page
