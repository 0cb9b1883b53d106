"""Bounces delivered by SMTP into `bounce_server`, as a relay would deliver them:
real Postfix and Exim DSNs and an ARF complaint, sent with smtplib to the
endpoint listening on a free port, applied by the ESP webhooks' service."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError

from subscriptions.bounces import process, server
from subscriptions.models import ConsentRecord, Subscriber, TrackingEvent
from subscriptions.sending import dispatch
from subscriptions.sending.verp import bounce_address
from subscriptions.services.tracking import Outcome
from tests.settings_helpers import free_port
from tests.subscriptions.factories import breaking_story, category, subscriber

# The endpoint answers from its own thread, which must see this test's rows.
pytestmark = pytest.mark.django_db(transaction=True)

DOMAIN = "bounce.example.com"
SAMPLES = Path(__file__).parent


def sample(name: str, *, verp: str, rcpt: str) -> bytes:
    text = (SAMPLES / name).read_text()
    return text.replace("@@VERP@@", verp).replace("@@RCPT@@", rcpt).replace(
        "@@DOMAIN@@", DOMAIN).replace("\n", "\r\n").encode()  # as SMTP carries it


@pytest.fixture
def endpoint(settings) -> Iterator[tuple[str, int]]:
    settings.NEWSROOM_BOUNCE_DOMAIN = DOMAIN
    settings.NEWSROOM_SOFT_BOUNCE_LIMIT = 3
    port = free_port()
    controller = server.bounce_server_start(host="127.0.0.1", port=port)
    yield "127.0.0.1", port
    controller.stop()


def deliver(endpoint: tuple[str, int], data: bytes, to: str) -> dict:
    """Deliver as an MTA returns a bounce: the null sender, to the VERP address."""
    with smtplib.SMTP(*endpoint, timeout=10) as smtp:
        return smtp.sendmail("", [to], data)


def verp(sub: Subscriber, edition_id: int = 7) -> str:
    return bounce_address(edition_id=edition_id, subscriber_id=sub.pk)


@pytest.mark.parametrize("name", ["postfix_hard.eml", "exim_hard.eml"])
def test_a_hard_bounce_suppresses_once(endpoint, name):
    ann = subscriber("ann@example.net")
    data = sample(name, verp=verp(ann), rcpt=ann.email)
    assert deliver(endpoint, data, verp(ann)) == {}
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.BOUNCED
    assert ann.suppression_reason.startswith("hard bounce (bounce-mail bounced): 5.")
    assert "ann@example.net" not in ann.suppression_reason
    assert not ann.consents.exists()  # as with the webhooks: a bounce withdraws nothing
    deliver(endpoint, data, verp(ann))  # the MTA delivers the same DSN again
    event = TrackingEvent.objects.get()
    assert (event.esp, event.event_type, event.subscriber, event.outcome) == (
        "bounce-mail", "bounced", ann, Outcome.SUPPRESSED)


def test_a_soft_bounce_counts_once_per_message_and_suppresses_at_the_limit(endpoint):
    ann = subscriber("ann@example.net")
    data = sample("postfix_soft.eml", verp=verp(ann), rcpt=ann.email)
    deliver(endpoint, data, verp(ann))
    deliver(endpoint, data, verp(ann))  # the same DSN twice
    ann.refresh_from_db()
    assert (ann.status, ann.soft_bounces) == (Subscriber.Status.ACTIVE, 1)
    # Two more mailbox-full DSNs for two other messages (Postfix ids differ).
    for n in (2, 3):
        other = data.replace(b"91D2A1C0B8", f"91D2A1C0B{n}".encode()).replace(
            b"0a1b2c3d4e5f", f"0a1b2c3d4e5{n}".encode())
        deliver(endpoint, other, verp(ann))
    ann.refresh_from_db()
    assert (ann.status, ann.soft_bounces) == (Subscriber.Status.BOUNCED, 3)
    assert ann.suppression_reason == "3 soft bounces in a row"


def test_an_arf_complaint_suppresses_and_records_the_withdrawal(endpoint):
    ann = subscriber("ann@example.net")
    data = sample("arf_complaint.eml", verp=verp(ann), rcpt=ann.email)
    deliver(endpoint, data, f"bounces+fbl@{DOMAIN}")
    deliver(endpoint, data, f"bounces+fbl@{DOMAIN}")
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.COMPLAINED
    assert ann.suppression_reason.startswith("spam complaint (bounce-mail)")
    consent = ann.consents.get()  # once, though delivered twice
    assert (consent.action, consent.method) == (ConsentRecord.Action.WITHDRAW, "bounce-mail")


def test_the_token_finds_the_reader_the_report_does_not_name(endpoint):
    """A forward or alias: the DSN names another address; the token names ann."""
    ann = subscriber("ann@example.net")
    data = sample("postfix_hard.eml", verp=verp(ann), rcpt="ann.forwarded@example.org")
    deliver(endpoint, data, verp(ann))
    assert Subscriber.objects.get(pk=ann.pk).status == Subscriber.Status.BOUNCED


def test_without_a_token_nobody_is_suppressed(endpoint):
    """Anyone can mail the bounce address: a report that only names an address
    proves nothing, so it is taken (250) and dropped."""
    ann = subscriber("ann@example.net")
    data = sample("exim_hard.eml", verp=f"news@{DOMAIN}", rcpt="ANN@example.net")
    assert deliver(endpoint, data, f"bounces+unsigned@{DOMAIN}") == {}
    assert Subscriber.objects.get(pk=ann.pk).status == Subscriber.Status.ACTIVE
    assert not TrackingEvent.objects.exists()


def test_a_forged_token_suppresses_nobody(endpoint):
    ann, bob = subscriber("ann@example.net"), subscriber("bob@example.net")
    forged = verp(ann).replace(".", ".1", 1)  # another subscriber id, ann's signature
    data = sample("postfix_hard.eml", verp=forged, rcpt=bob.email)
    assert deliver(endpoint, data, forged) == {}  # taken, and dropped
    assert set(Subscriber.objects.values_list("status", flat=True)) == {"active"}
    assert not TrackingEvent.objects.exists()


def test_the_bounce_domain_only(endpoint):
    with smtplib.SMTP(*endpoint, timeout=10) as smtp, pytest.raises(
            smtplib.SMTPRecipientsRefused) as refused:
        smtp.sendmail("", ["news@example.com", f"postmaster@{DOMAIN}"], b"Subject: x\r\n\r\n")
    assert {code for code, _ in refused.value.recipients.values()} == {550}


def test_mail_that_is_no_bounce_is_taken_and_dropped(endpoint):
    subscriber("ann@example.net")
    auto_reply = (b"From: ann@example.net\r\nSubject: Out of office\r\n"
                  b"Content-Type: text/plain\r\n\r\nBack on Monday.\r\n")
    assert deliver(endpoint, auto_reply, f"bounces+x@{DOMAIN}") == {}
    assert not TrackingEvent.objects.exists()


def test_a_database_failure_is_451_so_the_mta_retries(endpoint, monkeypatch):
    ann = subscriber("ann@example.net")

    def down(**kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(process, "tracking_event_process", down)
    data = sample("postfix_hard.eml", verp=verp(ann), rcpt=ann.email)
    with pytest.raises(smtplib.SMTPDataError) as error:
        deliver(endpoint, data, verp(ann))
    assert error.value.smtp_code == 451
    monkeypatch.undo()
    deliver(endpoint, data, verp(ann))  # the MTA's retry
    assert Subscriber.objects.get(pk=ann.pk).status == Subscriber.Status.BOUNCED


def test_an_alert_sent_by_smtp_bounces_back_to_its_reader(endpoint, smtp, monkeypatch):
    """The whole loop: the batch puts ann's token on the envelope, the relay's
    DSN comes back to it, ann is suppressed."""
    from subscriptions.sending import enqueue
    from tests.subscriptions.sending.test_batches_recording import run_batches

    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)
    cat = category("policy")
    ann = subscriber("ann@example.net", categories=[cat])
    edition = dispatch.edition_create_alert(story=breaking_story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    run_batches(edition)
    [sent] = smtp.handler.messages
    assert sent.mail_from == bounce_address(edition_id=edition.pk, subscriber_id=ann.pk)

    deliver(endpoint, sample("postfix_hard.eml", verp=sent.mail_from, rcpt=ann.email),
            sent.mail_from)
    assert Subscriber.objects.get(pk=ann.pk).status == Subscriber.Status.BOUNCED


def test_the_command_wants_a_bounce_domain(settings):
    settings.NEWSROOM_BOUNCE_DOMAIN = ""
    with pytest.raises(CommandError, match="NEWSROOM_BOUNCE_DOMAIN"):
        call_command("bounce_server", "--port", str(free_port()))
