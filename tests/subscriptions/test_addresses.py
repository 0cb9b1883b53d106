"""One spelling per mailbox: look-alike addresses are one subscriber, invisible
characters and undeliverable domains are refused with a reason, and stored
rows are normalised without merging anyone (subscriptions/addresses.py)."""

from __future__ import annotations

import importlib
import logging
from io import StringIO

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from subscriptions.addresses import AddressError, normalise_email, search_term
from subscriptions.models import Subscriber
from subscriptions.services.tracking import Outcome, tracking_event_process
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

FULLWIDTH_EXAMPLE = "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45"  # "example", fullwidth
FULLWIDTH = f"user@{FULLWIDTH_EXAMPLE}.com"
ZWSP = "\u200b"
IDN, IDN_ASCII = "ann@b\u00fccher.de", "ann@xn--bcher-kva.de"


# --- The rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "stored"), [
    (FULLWIDTH, "user@example.com"),
    ("  Ann@Example.COM ", "ann@example.com"),
    (IDN, IDN_ASCII),
    ("ann@B\u00dcCHER.de", IDN_ASCII),
    (IDN_ASCII, IDN_ASCII),
    ("ann@example\u3002com", "ann@example.com"),  # ideographic full stop
    ("ann@example.com.", "ann@example.com"),
])
def test_look_alikes_have_one_spelling(typed, stored):
    assert normalise_email(typed) == stored


@pytest.mark.parametrize(("typed", "reason"), [
    (f"user@exa{ZWSP}mple.com", "U+200B ZERO WIDTH SPACE"),
    (f"us{ZWSP}er@example.com", "U+200B ZERO WIDTH SPACE"),
    (f"{ZWSP}user@example.com", "U+200B ZERO WIDTH SPACE"),
    ("user@\ufeffexample.com", "U+FEFF"),
    ("user\u00ad@example.com", "U+00AD SOFT HYPHEN"),
    ("user@exa\u202emple.com", "U+202E"),
    ("user\x07@example.com", "U+0007"),
    ("user@exa\u3164mple.com", "U+3164 HANGUL FILLER"),
    ("user@[192.0.2.1]", "IP address"),
    ("user@[IPv6:2001:db8::1]", "IP address"),
    ("user@192.0.2.1", "IP address"),
    ("user@localhost", "localhost"),
    ("user@mail.localhost", "localhost"),
    ("user@intranet", "needs a dot"),
    ("user@exa_mple.com", "not a valid domain"),
    ("user@-example.com", "not a valid domain"),
    ("no-at-sign", "valid email address"),
    ("a" * 250 + "@b\u00fccher.de", "at most 254"),
])
def test_what_is_no_mailbox_is_refused_with_the_reason(typed, reason):
    with pytest.raises(AddressError, match=reason.replace("[", r"\[").replace("+", r"\+")):
        normalise_email(typed)


def test_new_rows_are_stored_normalised_and_bad_ones_refused():
    assert subscriber(FULLWIDTH).email == "user@example.com"
    with pytest.raises(AddressError):
        subscriber("user@localhost")
    assert not Subscriber.objects.filter(email="user@localhost").exists()


# --- Sign-up ------------------------------------------------------------------------------


@pytest.fixture
def enqueued(monkeypatch):
    from subscriptions import tasks

    sent = []
    monkeypatch.setattr(tasks.subscriber_email_send, "delay_on_commit",
                        lambda sid, kind: sent.append((sid, kind)))
    return sent


def sign_up(email):
    topic = category("world")
    return Client(REMOTE_ADDR="203.0.113.9").post(reverse("subscriptions:signup"), {
        "email": email, "categories": [topic.pk], "frequency": "daily", "digest_hour": "7",
        "timezone": "UTC", "wants_alerts": "yes",
    })


def test_fullwidth_sign_up_reaches_the_existing_subscriber(enqueued):
    ann = subscriber("user@example.com")
    response = sign_up(FULLWIDTH)
    assert response.status_code == 302
    assert list(Subscriber.objects.values_list("email", flat=True)) == ["user@example.com"]
    assert enqueued == [(ann.pk, "manage")]  # the known reader is nudged, not duplicated


def test_idn_sign_up_is_stored_in_ascii(enqueued):
    assert sign_up(IDN).status_code == 302
    assert Subscriber.objects.get().email == IDN_ASCII


@pytest.mark.parametrize(("typed", "message"), [
    (f"user@exa{ZWSP}mple.com", "invisible character (U+200B ZERO WIDTH SPACE)"),
    ("user@[192.0.2.1]", "IP address"),
    ("user@localhost", "localhost"),
    ("user@intranet", "needs a dot"),
])
def test_sign_up_form_says_what_is_wrong_and_stores_nothing(enqueued, typed, message):
    response = sign_up(typed)
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors["email"])
    assert not Subscriber.objects.exists() and not enqueued


# --- Tracking events ---------------------------------------------------------------------


@pytest.mark.parametrize("reported", [IDN_ASCII, IDN, "ANN@XN--BCHER-KVA.DE"])
def test_complaint_in_any_spelling_suppresses_the_idn_subscriber(reported):
    ann = subscriber(IDN)
    outcome = tracking_event_process(esp_name="Postmark", event_type="complained",
                                     recipient=reported, event_id="c-1",
                                     description=f"complaint from {reported}")
    assert outcome == Outcome.SUPPRESSED
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.COMPLAINED
    assert reported.lower() not in ann.suppression_reason.lower()  # scrubbed in either spelling


def test_fullwidth_bounce_reaches_the_ascii_row():
    ann = subscriber("user@example.com")
    assert tracking_event_process(esp_name="Mailgun", event_type="bounced",
                                  recipient=FULLWIDTH, event_id="b-1") == Outcome.SUPPRESSED
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.BOUNCED


def test_event_for_an_address_that_is_no_mailbox_is_malformed(caplog):
    subscriber("user@example.com")
    with caplog.at_level(logging.WARNING, "subscriptions.services.tracking"):
        outcome = tracking_event_process(esp_name="Mailgun", event_type="bounced",
                                         recipient=f"user@exa{ZWSP}mple.com", event_id="b-2")
    assert outcome == Outcome.MALFORMED
    assert Subscriber.objects.get().status == Subscriber.Status.ACTIVE


# --- The admin ------------------------------------------------------------------------------


@pytest.fixture
def support(client):
    user = get_user_model().objects.create_user("support", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="subscriptions", codename__in=["view_subscriber"]))
    client.force_login(user)
    return client


def test_admin_search_finds_the_stored_spelling(support):
    subscriber(IDN)
    subscriber("user@example.com")
    changelist = reverse("admin:subscriptions_subscriber_changelist")
    for term, expected in [("b\u00fccher.de", [IDN_ASCII]),
                           (FULLWIDTH_EXAMPLE, ["user@example.com"]), (IDN, [IDN_ASCII])]:
        response = support.get(changelist, {"q": term})
        assert [s.email for s in response.context["cl"].result_list] == expected, term


def test_search_term_keeps_what_it_cannot_encode():
    assert search_term("b\u00fccher") == "xn--bcher-kva"
    assert search_term("ann@") == "ann@"
    assert search_term("\U0001f600") == "\U0001f600"


# --- Stored rows --------------------------------------------------------------------------


def _stored(email: str) -> Subscriber:
    """A row as an older release stored it: trimmed and lower-cased only."""
    row = subscriber(f"placeholder-{Subscriber.objects.count()}@example.com")
    Subscriber.objects.filter(pk=row.pk).update(email=email)
    return row


@pytest.fixture
def legacy_rows():
    return {
        "idn": _stored(IDN.lower()),
        "ascii": _stored("user@example.com"),
        "twin": _stored(FULLWIDTH.lower()),  # same mailbox as "ascii"
        "pair_a": _stored("bob@\uff42\u00fccher.de"),
        "pair_b": _stored("bob@b\u00fccher.de"),  # both become bob@xn--bcher-kva.de
        "zwsp": _stored(f"eve@exa{ZWSP}mple.com"),
        "local": _stored("root@localhost"),
    }


def _emails(rows):
    return {name: Subscriber.objects.get(pk=row.pk).email for name, row in rows.items()}


def test_migration_normalises_what_it_safely_can_and_keeps_every_row(legacy_rows, caplog):
    before = _emails(legacy_rows)
    migration = importlib.import_module("subscriptions.migrations.0008_normalise_stored_addresses")
    with caplog.at_level(logging.WARNING, "subscriptions.migrations"):
        migration.normalise_stored(apps, None)
    after = _emails(legacy_rows)
    assert after["idn"] == IDN_ASCII
    # Collisions and refusals stay exactly as they were: nobody merged, nobody deleted.
    for name in ("ascii", "twin", "pair_a", "pair_b", "zwsp", "local"):
        assert after[name] == before[name], name
    assert Subscriber.objects.count() == len(legacy_rows)
    log = caplog.text
    ids = sorted([legacy_rows["ascii"].pk, legacy_rows["twin"].pk])
    assert f"subscribers {ids} are one mailbox (user@example.com)" in log
    assert "bob@xn--bcher-kva.de" in log
    assert f"subscriber {legacy_rows['zwsp'].pk} has an address" in log
    assert "manage.py subscriber_addresses" in log


def test_command_lists_collisions_until_a_person_resolves_them(legacy_rows):
    out = StringIO()
    with pytest.raises(CommandError, match="6 subscriber"):
        call_command("subscriber_addresses", stdout=out)
    text = out.getvalue()
    assert f"#{legacy_rows['ascii'].pk}, #{legacy_rows['twin'].pk}" in text
    assert f"subscriber #{legacy_rows['idn'].pk}: to rename (--apply)" in text
    assert "U+200B" in text and "localhost" in text
    assert Subscriber.objects.get(pk=legacy_rows["idn"].pk).email == IDN.lower()  # read-only

    with pytest.raises(CommandError):
        call_command("subscriber_addresses", "--apply", stdout=StringIO())
    assert Subscriber.objects.get(pk=legacy_rows["idn"].pk).email == IDN_ASCII

    # The operator erases the duplicates and the odd rows; then all is well.
    Subscriber.objects.filter(pk__in=[legacy_rows[n].pk for n in
                                      ("twin", "pair_a", "zwsp", "local")]).delete()
    call_command("subscriber_addresses", "--apply", stdout=(out := StringIO()))
    assert Subscriber.objects.get(pk=legacy_rows["pair_b"].pk).email == "bob@xn--bcher-kva.de"
    assert "All stored addresses are in their normal spelling." in out.getvalue()
