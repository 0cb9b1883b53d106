"""Subscription emails refused for good are recorded, not retried; refusals a
retry may get through still are. Through the real SMTP listener (tests/smtp_sink.py)."""

from __future__ import annotations

import logging
import smtplib

import pytest

from subscriptions import tasks
from subscriptions.emails import permanent_refusal, subscriber_email_send
from subscriptions.models import ConsentRecord, Subscriber
from tests.subscriptions.factories import subscriber

pytestmark = pytest.mark.django_db

NO_SUCH_USER = "550 5.1.1 <ann@example.com>: Recipient address rejected: User unknown"
MAILBOX_FULL = "452 4.2.2 Mailbox full, try again later"


def test_a_refused_recipient_is_recorded_once_and_not_retried(smtp, caplog):
    ann = subscriber("ann@example.com", status=Subscriber.Status.PENDING)
    smtp.handler.reject["ann@example.com"] = NO_SUCH_USER
    with caplog.at_level(logging.WARNING, "subscriptions.emails"):
        result = tasks.subscriber_email_send.apply(args=(ann.pk, "confirm"), throw=False)
    assert result.successful() and result.result is False
    assert result.traceback is None
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.BOUNCED  # like a hard-bounce webhook
    assert ann.suppression_reason.startswith("confirm email refused: 550 5.1.1")
    assert "ann@example.com" not in ann.suppression_reason + caplog.text  # scrubbed
    [record] = [r for r in caplog.records if "refused permanently" in r.getMessage()]
    assert record.subscriber_id == ann.pk and record.kind == "confirm"
    assert smtp.handler.messages == []
    assert len(smtp.handler.refused) == 1  # tried once, not ten times
    # Bounced is no status a confirmation goes to: a second task sends nothing.
    assert subscriber_email_send(subscriber_id=ann.pk, kind="confirm") is False


def test_a_temporary_refusal_is_retried(smtp):
    """apply() runs the retries at once (no backoff): every one of them is tried."""
    ann = subscriber("ann@example.com", status=Subscriber.Status.PENDING)
    smtp.handler.reject["ann@example.com"] = MAILBOX_FULL
    result = tasks.subscriber_email_send.apply(args=(ann.pk, "confirm"), throw=False)
    assert isinstance(result.result, smtplib.SMTPRecipientsRefused)
    assert len(smtp.handler.refused) == 1 + tasks.subscriber_email_send.max_retries
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.PENDING and not ann.suppression_reason
    smtp.handler.reject.clear()  # the mailbox has room again
    assert tasks.subscriber_email_send.apply(args=(ann.pk, "confirm")).result is True
    assert [m.rcpt_to for m in smtp.handler.messages] == ["ann@example.com"]


def test_a_temporary_refusal_raises_for_the_task_to_retry(smtp):
    ann = subscriber("ann@example.com", status=Subscriber.Status.PENDING)
    smtp.handler.reject["ann@example.com"] = MAILBOX_FULL
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        subscriber_email_send(subscriber_id=ann.pk, kind="confirm")
    assert Subscriber.objects.get(pk=ann.pk).status == Subscriber.Status.PENDING


def test_an_active_readers_refused_manage_email_suppresses_without_a_consent_record(smtp):
    ann = subscriber("ann@example.com")
    smtp.handler.reject["ann@example.com"] = NO_SUCH_USER
    assert subscriber_email_send(subscriber_id=ann.pk, kind="manage") is False
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.BOUNCED
    assert not ConsentRecord.objects.filter(subscriber=ann).exists()  # a bounce is no withdrawal


def test_other_permanent_refusals_are_logged_for_a_person_and_leave_the_reader(smtp, caplog):
    ann = subscriber("ann@example.com", status=Subscriber.Status.PENDING)
    smtp.handler.reject_data = "554 5.7.1 Message rejected as spam"
    with caplog.at_level(logging.ERROR, "subscriptions.emails"):
        result = tasks.subscriber_email_send.apply(args=(ann.pk, "confirm"), throw=False)
    assert result.successful() and result.result is False  # not retried
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "confirm email refused permanently (not retried): 554 5.7.1" in record.getMessage()
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.PENDING and not ann.suppression_reason


@pytest.mark.parametrize(("exc", "expected"), [
    (smtplib.SMTPRecipientsRefused({"a@x.com": (550, b"5.1.1 unknown")}),
     (True, "550 5.1.1 unknown")),
    (smtplib.SMTPRecipientsRefused({"a@x.com": (421, b"4.7.0 later")}), None),
    (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"),
     (False, "535 5.7.8 bad credentials")),
    (smtplib.SMTPSenderRefused(553, b"5.7.1 Sender not allowed", "news@x.com"),
     (False, "553 5.7.1 Sender not allowed")),
    (smtplib.SMTPDataError(451, b"4.3.0 try later"), None),
    (smtplib.SMTPServerDisconnected("gone"), None),
    (smtplib.SMTPRecipientsRefused({"a@x.com": (550, b"no"), "b@x.com": (450, b"later")}),
     None),
    (ConnectionRefusedError(111, "refused"), None),
])
def test_what_counts_as_permanent(exc, expected):
    assert permanent_refusal(exc) == expected
