"""What a link gives away: format 2 tokens show no subscriber id and no
unkeyed digest of the address, and format 1 links already in inboxes keep
working until their own lifetime ends (subscriptions/tokens.py)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from django.core import signing
from django.test import Client, override_settings
from django.urls import reverse

from subscriptions.models import Subscriber
from subscriptions.services.privacy import subscriber_erase
from subscriptions.tokens import Purpose, TokenError, token_make, token_matches, token_read
from tests.subscriptions.factories import subscriber

OTHER_KEY = "another-secret-key-" + "k" * 40


def signed_value(token: str) -> str:
    """What anyone holding the link can read: Django signatures do not hide it."""
    return token.split(":", 1)[0]


def format_1(purpose: Purpose, subscriber_id: int, email: str) -> str:
    """A link as the release before format 2 made it (Django's stock signer)."""
    digest = hashlib.sha256(email.encode()).hexdigest()[:16]
    signer = signing.TimestampSigner(salt=f"newsroom.subscriptions.{purpose}")
    return signer.sign(f"{subscriber_id}.{digest}")


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_token_shows_no_id_and_no_digest_of_the_address(purpose):
    email = "ann@example.com"
    value = signed_value(token_make(subscriber_id=4242, email=email, purpose=purpose))
    raw = base64.urlsafe_b64decode(value + "=")
    assert len(raw) == 20
    assert "4242" not in value and (4242).to_bytes(8, "big") not in raw
    assert (4242).to_bytes(2, "big") not in raw  # not even the low bytes in clear
    # Hashing a guessed address finds nothing in the token, in any usual digest.
    for name in ("sha256", "sha1", "md5"):
        digest = hashlib.new(name, email.encode()).digest()
        assert digest[:4] not in raw and digest.hex()[:8] not in value


def test_neighbouring_ids_give_unrelated_tokens():
    """Sequential ids leave no trace: tokens of ids 1 and 2 share no bytes in place."""
    one, two = (base64.urlsafe_b64decode(signed_value(
        token_make(subscriber_id=pk, email="a@example.com", purpose=Purpose.UNSUBSCRIBE)) + "=")
        for pk in (1, 2))
    assert sum(a == b for a, b in zip(one, two, strict=True)) <= 3  # chance agreement only


def test_a_guessed_address_cannot_be_checked_without_the_key(settings):
    """The address is bound by an HMAC under the secret: the same (id, address)
    under another key gives other bytes, so nobody can compute it to compare."""
    token = token_make(subscriber_id=7, email="ann@example.com", purpose=Purpose.MANAGE)
    with override_settings(SECRET_KEY=OTHER_KEY):
        guess = token_make(subscriber_id=7, email="ann@example.com", purpose=Purpose.MANAGE)
    assert signed_value(token)[:16] != signed_value(guess)[:16]
    claim = token_read(token, purpose=Purpose.MANAGE)
    assert token_matches(claim, "ann@example.com")
    assert not token_matches(claim, "bob@example.com")


def test_the_sealed_id_is_bound_to_the_signature():
    """Flipping a byte of the sealed value breaks the signature: ids cannot be walked."""
    token = token_make(subscriber_id=7, email="a@example.com", purpose=Purpose.UNSUBSCRIBE)
    value, rest = token.split(":", 1)
    flipped = ("B" if value[0] == "A" else "A") + value[1:]
    with pytest.raises(TokenError):
        token_read(f"{flipped}:{rest}", purpose=Purpose.UNSUBSCRIBE)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_format_1_links_still_read(purpose):
    claim = token_read(format_1(purpose, 42, "a@example.com"), purpose=purpose)
    assert claim.subscriber_id == 42
    assert token_matches(claim, "a@example.com") and not token_matches(claim, "b@example.com")


def test_format_1_links_survive_a_key_rotation(settings):
    token = format_1(Purpose.UNSUBSCRIBE, 9, "a@example.com")
    with override_settings(SECRET_KEY=OTHER_KEY, SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]):
        assert token_read(token, purpose=Purpose.UNSUBSCRIBE).subscriber_id == 9


@pytest.mark.parametrize("value", ["42", "42.", "x.0123456789abcdef", "١٢.0123456789abcdef",
                                   "4" * 20 + ".0123456789abcdef", "42.0123456789ABCDEF"])
def test_odd_signed_values_are_refused(value):
    token = signing.TimestampSigner(salt="newsroom.subscriptions.unsubscribe").sign(value)
    with pytest.raises(TokenError):
        token_read(token, purpose=Purpose.UNSUBSCRIBE)


@pytest.mark.django_db
def test_a_format_1_unsubscribe_link_in_an_inbox_still_unsubscribes():
    ann = subscriber("ann@example.com")
    path = reverse("subscriptions:unsubscribe",
                   args=[format_1(Purpose.UNSUBSCRIBE, ann.pk, ann.email)])
    response = Client().post(path, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.UNSUBSCRIBED


@pytest.mark.django_db
def test_format_1_links_of_an_erased_subscriber_are_void():
    ann = subscriber("ann@example.com")
    token = format_1(Purpose.UNSUBSCRIBE, ann.pk, ann.email)
    subscriber_erase(subscriber=ann, by=None)
    response = Client().post(reverse("subscriptions:unsubscribe", args=[token]))
    assert response.status_code == 400


@pytest.mark.django_db
def test_an_unsubscribe_page_holds_no_preferences_link():
    ann = subscriber("ann@example.com")
    token = token_make(subscriber_id=ann.pk, email=ann.email, purpose=Purpose.UNSUBSCRIBE)
    client = Client()
    for response in (client.get(reverse("subscriptions:unsubscribe", args=[token])),
                     client.post(reverse("subscriptions:unsubscribe", args=[token]))):
        page = response.content.decode()
        assert response.status_code == 200
        assert not re.search(r"/preferences/", page)
        assert "Email me a link to my preferences" in page


@pytest.fixture
def enqueued(monkeypatch):
    from subscriptions import tasks

    sent = []
    monkeypatch.setattr(tasks.subscriber_email_send, "delay_on_commit",
                        lambda sid, kind: sent.append((sid, kind)))
    return sent


def ask_for_link(subscriber_, client=None):
    token = token_make(subscriber_id=subscriber_.pk, email=subscriber_.email,
                       purpose=Purpose.UNSUBSCRIBE)
    path = reverse("subscriptions:unsubscribe_manage_link", args=[token])
    # Like the unsubscribe button: no cookies, no CSRF token.
    return (client or Client(enforce_csrf_checks=True)).post(path)


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Subscriber.Status.ACTIVE, Subscriber.Status.UNSUBSCRIBED])
def test_the_unsubscribe_page_mails_the_preferences_link(enqueued, status):
    ann = subscriber("ann@example.com", status=status)
    response = ask_for_link(ann)
    assert response.status_code == 200
    page = response.content.decode()
    assert "We have emailed you a link to your preferences" in page
    assert "ann@example.com" not in page and "/preferences/" not in page
    assert enqueued == [(ann.pk, "manage")]


@pytest.mark.django_db
def test_the_manage_email_to_an_unsubscribed_reader_links_their_preferences(mailoutbox):
    from subscriptions.emails import subscriber_email_send

    ann = subscriber("ann@example.com", status=Subscriber.Status.UNSUBSCRIBED)
    assert subscriber_email_send(subscriber_id=ann.pk, kind="manage")
    body = mailoutbox[0].body
    assert "asked for on our unsubscribe page" in body and "/preferences/" in body


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Subscriber.Status.BOUNCED, Subscriber.Status.COMPLAINED])
def test_no_link_is_mailed_to_a_bounced_or_complaining_address(enqueued, status):
    ann = subscriber("ann@example.com", status=status)
    response = ask_for_link(ann)
    assert response.status_code == 200
    assert "We cannot email this address any more" in response.content.decode()
    assert enqueued == []


@pytest.mark.django_db
def test_asking_for_the_link_is_rate_limited(enqueued, settings):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_EMAIL = 2
    ann = subscriber("ann@example.com")
    assert [ask_for_link(ann).status_code for _ in range(3)] == [200, 200, 429]
    assert len(enqueued) == 2


@pytest.mark.django_db
def test_asking_for_the_link_needs_a_good_unsubscribe_token(enqueued):
    ann = subscriber("ann@example.com")
    manage = token_make(subscriber_id=ann.pk, email=ann.email, purpose=Purpose.MANAGE)
    client = Client()
    for token in (manage, "garbage"):
        path = reverse("subscriptions:unsubscribe_manage_link", args=[token])
        assert client.post(path).status_code == 400
    ok = reverse("subscriptions:unsubscribe_manage_link", args=[
        token_make(subscriber_id=ann.pk, email=ann.email, purpose=Purpose.UNSUBSCRIBE)])
    assert client.get(ok).status_code == 405  # a GET (a link scanner) sends nothing
    assert enqueued == []
