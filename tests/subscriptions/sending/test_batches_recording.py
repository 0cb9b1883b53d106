"""How a batch claims, skips and records its deliveries, and how many statements it takes.

Outcomes with an ESP's message id (one per API call, or an MTA's per message)
are recorded with one `UPDATE ... FROM (VALUES ...)`, whatever the number of
distinct ids; these tests check that it writes exactly what the per-row
updates wrote, on both databases, and count a digest batch's statements.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from django.core.mail import get_connection
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext

from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.sending import batches, dispatch, enqueue, scheduling
from subscriptions.sending.content import ViewKey
from subscriptions.sending.transports.base import Batch, Result
from subscriptions.sending.transports.esp import MailgunTransport
from tests.fake_esp import FakeMailgun, send_editions_through
from tests.subscriptions.factories import category, subscriber
from tests.subscriptions.sending.test_scheduling import publish
from tests.subscriptions.test_alerts import story

pytestmark = pytest.mark.django_db

DUE = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 7, 3, 4, 567_890, tzinfo=UTC)


@pytest.fixture
def no_enqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches run in this process, one call per range."""
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)


@pytest.fixture
def mailgun(settings, monkeypatch: pytest.MonkeyPatch, no_enqueue: None
            ) -> Iterator[FakeMailgun]:
    """Editions go out through anymail's real Mailgun backend, to the fake."""
    with FakeMailgun() as fake:
        send_editions_through(settings, fake)
        yield fake


def digest_readers() -> Edition:
    """A due digest whose readers follow every mix of four categories (15 contents),
    two readers each: one API call, and one message id, per content."""
    cats = [category(f"c{i}", name=f"Topic {i}", order=i) for i in range(4)]
    for cat in cats:
        publish(cat, f"News of {cat.name}", DUE - timedelta(hours=2))
    for n in range(1, 5):
        for combo in itertools.combinations(cats, n):
            subscriber(categories=combo, digest_hour=7)
            subscriber(categories=combo, digest_hour=7)
    [edition] = scheduling.digests_schedule(now=DUE + timedelta(minutes=1))
    dispatch.edition_dispatch(edition_id=edition.pk)
    return edition


def run_batches(edition: Edition) -> list[batches.BatchReport]:
    return [batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
            for first, last in enqueue.batch_ranges(edition)]


def test_an_esp_digest_records_each_readers_call_id_in_one_statement(mailgun, settings):
    settings.NEWSROOM_BATCH_SIZE = 1000
    edition = digest_readers()
    with CaptureQueriesContext(connection) as queries:
        [report] = run_batches(edition)

    assert (report.claimed, report.sent, report.failed, report.skipped) == (30, 30, 0, 0)
    assert mailgun.call_count == 15
    call_id = {got.to: got.message_id for got in mailgun.received}
    rows = Delivery.objects.filter(edition=edition).select_related("subscriber")
    assert len({d.message_id for d in rows}) == 15
    for d in rows:
        assert (d.status, d.claim, d.last_error, d.attempts) == ("sent", None, "", 1)
        assert d.message_id == call_id[d.subscriber.email]
        assert d.sent_at is not None
    assert len({d.sent_at for d in rows}) == 1

    sql = [q["sql"] for q in queries.captured_queries]
    assert sum("FROM (VALUES" in s for s in sql) == 1
    assert not any("CASE WHEN" in s for s in sql)
    # The edition; the claim; the claimed rows (with who left); follows; stories;
    # the readers' windows; the sent rows; progress; then edition_finish_if_complete:
    # "anything left?", done, the edition again to log it. Besides, the edition's
    # state before calls that come 50 ms or more after the last read (timing-bound).
    state_reads = [s for s in sql if s.startswith('SELECT "subscriptions_edition"."status"')]
    assert len(sql) - len(state_reads) == 11, "\n".join(sql)
    assert len(state_reads) <= mailgun.call_count


def test_a_digest_batch_needs_no_category_query(mailgun):
    """Sections take their category from the stories' join; a followed category
    without stories still names the "view in browser" variant."""
    world, quiet = category("world", order=1), category("quiet", order=2)
    reader = subscriber("r@example.com", categories=[world, quiet], digest_hour=7)
    publish(world, "Summit ends", DUE - timedelta(hours=2))
    [edition] = scheduling.digests_schedule(now=DUE + timedelta(minutes=1))
    dispatch.edition_dispatch(edition_id=edition.pk)
    with CaptureQueriesContext(connection) as queries:
        [report] = run_batches(edition)
    assert report.sent == 1
    assert not any('FROM "newsroom_category"' in q["sql"] for q in queries.captured_queries)

    [got] = mailgun.received
    token = got.text.split("/editions/", 1)[1].split("/", 1)[0]
    window = Delivery.objects.get(subscriber=reader).window_start
    assert ViewKey.from_token(token) == ViewKey(edition.pk, window, (world.pk, quiet.pk))


@pytest.fixture
def claimed() -> tuple[Edition, list[Delivery]]:
    """Ten deliveries held by a batch, with an earlier message id and error."""
    cat = category("policy")
    edition = Edition.objects.create(key="alert:test", kind=Edition.Kind.ALERT,
                                     scheduled_at=NOW, status=Edition.Status.SENDING)
    claim = uuid.uuid4()
    rows = [Delivery.objects.create(
        edition=edition, subscriber=subscriber(f"r{i}@example.com", categories=[cat]),
        status=Delivery.Status.SENDING, claim=claim, claimed_at=NOW, attempts=1,
        message_id=f"<earlier-{i}>", last_error="421 try later",
    ) for i in range(10)]
    return edition, rows


def test_recording_writes_each_outcome_exactly_as_before(claimed, monkeypatch):
    monkeypatch.setattr(batches.timezone, "now", lambda: NOW)
    edition, rows = claimed
    plain, shared1, shared2, own, retry, failed, untouched, mta, own3, own4 = rows
    report = batches.BatchReport()
    batches._record_results(edition, [
        Result(own3.pk, "sent", esp_message_id="<call-3@mg>"),
        Result(own4.pk, "sent", esp_message_id="<call-4@mg>"),
        Result(plain.pk, "sent"),
        Result(shared1.pk, "sent", esp_message_id="<call-1@mg>"),
        Result(shared2.pk, "sent", esp_message_id="<call-1@mg>"),
        Result(own.pk, "sent", esp_message_id="<call-2@mg>"),
        Result(mta.pk, "sent", esp_message_id="queued as 4XyZ; it's \"fine\""),
        Result(retry.pk, "retry", "451 busy"),
        Result(failed.pk, "failed", "550 no such user"),
    ], report)

    assert (report.sent, report.failed, report.retry) == (7, 1, [retry.pk])
    got = {d.pk: d for d in Delivery.objects.all()}
    sent_fields = ("sent", NOW, None, "")
    # Without an id of its own a sent row keeps the message id it had.
    for row, message_id in [(plain, "<earlier-0>"), (shared1, "<call-1@mg>"),
                            (shared2, "<call-1@mg>"), (own, "<call-2@mg>"),
                            (mta, "queued as 4XyZ; it's \"fine\""), (own3, "<call-3@mg>"),
                            (own4, "<call-4@mg>")]:
        d = got[row.pk]
        assert (d.status, d.sent_at, d.claim, d.last_error) == sent_fields
        assert (d.message_id, d.attempts, d.claimed_at) == (message_id, 1, NOW)
    assert (got[retry.pk].status, got[retry.pk].claim, got[retry.pk].last_error) == (
        "queued", None, "451 busy")
    assert (got[failed.pk].status, got[failed.pk].claim, got[failed.pk].last_error) == (
        "failed", None, "550 no such user")
    assert (got[untouched.pk].status, got[untouched.pk].claim, got[untouched.pk].sent_at,
            got[untouched.pk].message_id) == ("sending", untouched.claim, None, "<earlier-6>")


def test_many_ids_are_recorded_in_statements_of_bounded_size(claimed, monkeypatch):
    monkeypatch.setattr(batches, "_SENT_ROWS_PER_STATEMENT", 3)
    edition, rows = claimed
    results = [Result(d.pk, "sent", esp_message_id=f"<id-{d.pk}>") for d in rows]
    with CaptureQueriesContext(connection) as queries:
        batches._record_results(edition, results, batches.BatchReport())
    assert len(queries.captured_queries) == 4  # 3 + 3 + 3 + 1 rows
    assert {d.pk: d.message_id for d in Delivery.objects.all()} == {
        d.pk: f"<id-{d.pk}>" for d in rows}
    assert set(Delivery.objects.values_list("status", "claim", "last_error")) == {
        ("sent", None, "")}


def test_readers_who_left_since_the_dispatch_are_skipped_at_the_claim(smtp, no_enqueue):
    cat = category("policy")
    stays = subscriber("stays@example.com", categories=[cat])
    leaves = subscriber("leaves@example.com", categories=[cat])
    quiet = subscriber("quiet@example.com", categories=[cat])
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    Subscriber.objects.filter(pk=leaves.pk).update(status=Subscriber.Status.UNSUBSCRIBED)
    Subscriber.objects.filter(pk=quiet.pk).update(wants_alerts=False)

    [report] = run_batches(edition)
    assert (report.claimed, report.sent, report.skipped) == (1, 1, 2)
    assert [m.rcpt_to for m in smtp.handler.messages] == [stays.email]
    for sub in (leaves, quiet):
        d = Delivery.objects.get(subscriber=sub)
        assert (d.status, d.claim, d.last_error) == (
            "skipped", None, "subscriber no longer wants it")
    edition.refresh_from_db()
    assert (edition.status, edition.sent, edition.skipped) == ("done", 1, 2)


def test_message_ids_are_keyed_by_the_current_secret(settings):
    def expected(key: str, domain: str) -> str:
        mac = hmac.new(key.encode(), b"12.34", hashlib.sha256).hexdigest()[:12]
        return f"<e12.s34.{mac}@{domain}>"

    settings.DEFAULT_FROM_EMAIL = "Newsroom <news@news.example>"
    assert batches._message_id(12, 34) == expected(settings.SECRET_KEY, "news.example")
    assert batches._message_id(12, 34) == batches._message_id(12, 34)
    settings.SECRET_KEY = "a-rotated-secret-key-for-this-test-only"
    settings.DEFAULT_FROM_EMAIL = "news@other.example"
    assert batches._message_id(12, 34) == expected(settings.SECRET_KEY, "other.example")


def test_an_esp_without_ids_leaves_message_ids_alone(mailgun, monkeypatch):
    """Sent rows without an id take the plain update (as over SMTP)."""
    class MailgunWithoutIds(MailgunTransport):
        def send(self, batch: Batch) -> list[Result]:
            return [Result(r.delivery_id, r.status, r.detail) for r in super().send(batch)]

    monkeypatch.setattr(batches, "transport_get", lambda: MailgunWithoutIds(get_connection()))
    cat = category("policy")
    for i in range(3):
        subscriber(f"r{i}@example.com", categories=[cat])
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    with CaptureQueriesContext(connection) as queries:
        [report] = run_batches(edition)
    assert report.sent == 3
    assert not any("FROM (VALUES" in q["sql"] for q in queries.captured_queries)
    assert set(Delivery.objects.values_list("status", "message_id")) == {("sent", "")}


def test_a_batch_reads_its_claimed_rows_within_its_id_range(mailgun):
    """`claim` has no index: looked up alone, it would scan every delivery of every
    edition, once per batch."""
    edition = digest_readers()
    [(first, last)] = enqueue.batch_ranges(edition)
    with CaptureQueriesContext(connection) as queries:
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    by_claim = [q["sql"] for q in queries.captured_queries
                if q["sql"].startswith("SELECT") and '"claim" =' in q["sql"]]
    assert by_claim, "the claimed rows are read back by their claim"
    for sql in by_claim:
        assert '"id" >=' in sql and '"id" <=' in sql, sql


@contextmanager
def flaky_recording(failures: int) -> Iterator[None]:
    """The database refuses the first `failures` statements that record a delivery as
    sent, as across a PostgreSQL restart; the messages were handed over already."""
    left = [failures]

    def refuse(execute, sql, params, many, context):
        if left[0] and sql.startswith("UPDATE") and "sent_at" in sql:
            left[0] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        yield


@pytest.fixture
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "RECORD_RETRY_DELAYS", (0.0, 0.0, 0.0))


@pytest.mark.django_db(transaction=True)
def test_a_database_blip_after_the_hand_over_sends_nobody_twice(mailgun, no_pause):
    edition = digest_readers()
    with flaky_recording(failures=2):
        run_batches(edition)
    edition.refresh_from_db()
    assert set(Delivery.objects.filter(edition=edition).values_list("status", flat=True)) == {
        Delivery.Status.SENT}
    copies = [d.to for d in mailgun.received]
    assert len(copies) == len(set(copies)) == 30 == edition.sent


@pytest.mark.django_db(transaction=True)
def test_a_database_that_stays_down_fails_the_task_with_the_rows_held(mailgun, no_pause):
    """Then the task's retry finds them claimed, and editions_reconcile releases
    them after NEWSROOM_CLAIM_TIMEOUT: sent again, counted in `requeued`."""
    edition = digest_readers()
    with flaky_recording(failures=99), pytest.raises(OperationalError):
        run_batches(edition)
    assert set(Delivery.objects.filter(edition=edition).values_list("status", flat=True)) == {
        Delivery.Status.SENDING}
