"""Subscription emails: their content, when they are skipped, and a real send."""

import re

import pytest

from subscriptions.emails import Kind, subscriber_email_build, subscriber_email_send
from subscriptions.services.subscribers import Preferences, RequestInfo, subscriber_signup
from subscriptions.tokens import Purpose, token_read
from tests.mailbox import html_body, text_body
from tests.subscriptions.factories import category, subscriber

LINK = re.compile(r"http://testserver/[\w/:.\-]+")


def token_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[1]


@pytest.mark.django_db
def test_confirmation_email_has_both_parts_a_working_link_and_the_footer(settings):
    settings.NEWSROOM_REPLY_TO = "desk@example.com"
    sub = subscriber("ann@example.com", status="pending", categories=[category("policy")])
    message = subscriber_email_build(subscriber=sub, kind=Kind.CONFIRM)
    assert message.to == ["ann@example.com"] and message.reply_to == ["desk@example.com"]
    assert message.subject == "Confirm your subscription to Newsroom"
    html = message.alternatives[0][0]
    confirm = [u for u in LINK.findall(message.body) if "/subscribe/confirm/" in u]
    assert len(confirm) == 1 and confirm[0] in html
    assert token_read(token_of(confirm[0]), purpose=Purpose.CONFIRM).subscriber_id == sub.pk
    assert "Policy" in message.body
    for part in (message.body, html):
        assert settings.NEWSROOM_POSTAL_ADDRESS in part
    assert "{{" not in message.body + html and "{%" not in message.body + html


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [Kind.MANAGE, Kind.GOODBYE])
def test_manage_and_goodbye_emails_link_to_the_preferences_page(kind):
    sub = subscriber("ann@example.com", status="active" if kind == Kind.MANAGE else "unsubscribed")
    message = subscriber_email_build(subscriber=sub, kind=kind)
    links = [u for u in LINK.findall(message.body) if "/preferences/" in u]
    assert links and links[0] in message.alternatives[0][0]
    assert token_read(token_of(links[0]), purpose=Purpose.MANAGE).subscriber_id == sub.pk


@pytest.mark.django_db
@pytest.mark.parametrize("kind", list(Kind))
def test_account_mail_message_ids_are_in_the_senders_domain_like_list_mail(settings, kind):
    """Not this machine's host name (Django's default): receivers compare the
    Message-ID's domain with the From domain."""
    from subscriptions.sending.batches import _message_id

    settings.DEFAULT_FROM_EMAIL = "Rédaction <desk@news.example.org>"
    status = {Kind.CONFIRM: "pending", Kind.MANAGE: "active", Kind.GOODBYE: "unsubscribed"}[kind]
    built = subscriber_email_build(subscriber=subscriber(status=status), kind=kind).message()
    other = subscriber_email_build(subscriber=subscriber(status=status), kind=kind).message()
    assert built["Message-ID"].endswith("@news.example.org>")
    assert _message_id(1, 2).endswith("@news.example.org>")  # the list mail rule
    assert built["Message-ID"] != other["Message-ID"]
    assert len(built.get_all("Message-ID")) == 1


@pytest.mark.django_db
def test_emails_whose_moment_has_passed_are_not_sent(mailoutbox):
    pending = subscriber(status="pending")
    active = subscriber(status="active")
    assert subscriber_email_send(subscriber_id=active.pk, kind="confirm") is False
    assert subscriber_email_send(subscriber_id=pending.pk, kind="manage") is False
    assert subscriber_email_send(subscriber_id=pending.pk, kind="goodbye") is False
    assert subscriber_email_send(subscriber_id=999_999, kind="confirm") is False
    assert mailoutbox == []
    assert subscriber_email_send(subscriber_id=pending.pk, kind="confirm") is True
    assert len(mailoutbox) == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_signup_sends_the_confirmation_through_a_real_worker(celery_worker, outbox):
    subscriber_signup(
        email="worker-test@example.com",
        preferences=Preferences(categories=(category("policy"),)),
        info=RequestInfo(ip_address="127.0.0.1"),
    )
    [message] = outbox.wait_for("worker-test@example.com")
    assert message["Subject"] == "Confirm your subscription to Newsroom"
    assert "/subscribe/confirm/" in text_body(message)
    assert "/subscribe/confirm/" in html_body(message)
