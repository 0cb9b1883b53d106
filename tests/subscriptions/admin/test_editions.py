"""The edition admin as the send desk uses it: watch a send, steer it, test it, preview it."""

import email
import re
from datetime import timedelta
from email import policy
from html.parser import HTMLParser

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from newsroom.models import Story
from subscriptions.models import Delivery, Edition
from subscriptions.selectors import edition_progress
from subscriptions.sending import batches, dispatch, enqueue, steering
from subscriptions.sending.mime import unsubscribe_url
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:subscriptions_edition_changelist")
SENDER_PERMS = ["view_edition", "send_edition", "view_subscriber", "view_delivery"]


def url(name: str, edition: Edition) -> str:
    return reverse(f"admin:subscriptions_edition_{name}", args=[edition.pk])


def _staff(username: str, *codenames: str, email: str = ""):
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True,
                                                email=email)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="subscriptions", codename__in=codenames,
    ))
    return user


def _messages(client, response) -> list[str]:
    return [str(m) for m in client.get(response["Location"]).context["messages"]]


@pytest.fixture
def no_enqueue(monkeypatch):
    """Keep the broker out: batches run in this process when a test needs them."""
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)


@pytest.fixture
def sender(client):
    """The send desk: sees editions and readers, steers sends."""
    client.force_login(_staff("desk", *SENDER_PERMS, email="desk@newsroom.example"))
    return client


@pytest.fixture
def viewer(client):
    """Staff who may look at editions, not steer them or see a reader's copy."""
    client.force_login(_staff("viewer", "view_edition"))
    return client


@pytest.fixture
def politics():
    return category("politics")


@pytest.fixture
def readers(politics):
    return [subscriber(f"r{i}@example.com", categories=[politics]) for i in range(3)]


def _story(cat, **fields) -> Story:
    fields.setdefault("headline", "Dam bursts upstream")
    fields.setdefault("slug", f"story-{Story.objects.count() + 1}")
    fields.setdefault("body", "First paragraph.\n\n## What we know\n\nMore.")
    fields.setdefault("breaking", True)
    return Story.objects.create(category=cat, status=Story.Status.PUBLISHED,
                                published_at=timezone.now() - timedelta(minutes=5), **fields)


@pytest.fixture
def alert(politics, readers, no_enqueue) -> Edition:
    """A breaking alert dispatched (its deliveries written), nothing sent yet."""
    edition = dispatch.edition_create_alert(story=_story(politics), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    edition.refresh_from_db()
    assert edition.status == "sending" and edition.targeted == 3
    return edition


def _send_batches(edition: Edition) -> None:
    for first, last in enqueue.batch_ranges(edition):
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    edition.refresh_from_db()


@pytest.fixture
def digest(politics) -> Edition:
    """A daily digest due now, not dispatched: its content depends on the reader."""
    now = timezone.now()
    return Edition.objects.create(
        key=f"digest:daily:{now:%Y-%m-%dT%H:%MZ}", kind=Edition.Kind.DIGEST, frequency="daily",
        scheduled_at=now, window_end=now, audience={"frequency": "daily", "slots": [["UTC", 7]]},
    )


# --- Progress ---------------------------------------------------------------------------


def test_progress_rate_and_eta_come_from_the_counters():
    now = timezone.now()
    edition = Edition(status="sending", started_at=now - timedelta(seconds=100), targeted=400,
                      sent=80, failed=10, skipped=10)
    progress = edition_progress(edition, now=now)
    assert (progress.done, progress.percent, progress.rate) == (100, 25, 0.8)
    assert progress.eta == now + timedelta(seconds=300)  # 300 left at 1 handled per second

    edition.status, edition.finished_at = "done", now - timedelta(seconds=50)
    assert edition_progress(edition, now=now).rate == 80 / 50  # up to the finish, not now
    assert edition_progress(edition, now=now).eta is None
    assert edition_progress(Edition(status="planned"), now=now).rate is None


# --- Lists and pages --------------------------------------------------------------------


def test_the_list_shows_counts_progress_rate_and_eta(sender, alert, smtp):
    batches.deliveries_send(edition_id=alert.pk, first_id=0,
                               last_id=Delivery.objects.order_by("id").first().pk)
    Edition.objects.filter(pk=alert.pk).update(started_at=timezone.now() - timedelta(seconds=10))
    response = sender.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert f"alert:story:{alert.stories.get().pk}" in html
    assert '<td class="field-targeted">3</td>' in html
    assert '<td class="field-sent">1</td>' in html
    assert '<progress value="1" max="3" title="1 of 3"></progress> 33%' in html
    assert re.search(r'<td class="field-rate">0\.\d/s</td>', html)
    assert re.search(r'<td class="field-eta"><time datetime="[^"]+" title="[^"]+">in ', html)
    for column in ("kind", "status", "scheduled_at", "started_at", "finished_at", "failed",
                   "skipped", "requeued"):
        assert f"column-{column}" in html, column
    assert "Add edition" not in html


@pytest.mark.parametrize("query", [{}, {"kind__exact": "alert"}, {"status__exact": "sending"},
                                   {"q": "alert:"}])
def test_the_list_filters(sender, alert, query):
    assert sender.get(CHANGELIST, query).status_code == 200


def test_the_list_makes_no_query_per_row(sender, politics, no_enqueue):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert sender.get(CHANGELIST).status_code == 200
        return len(captured)

    dispatch.edition_create_alert(story=_story(politics), by=None)
    one = queries()
    for _ in range(5):
        dispatch.edition_create_alert(story=_story(politics), by=None)
    assert queries() == one


def test_the_change_page_shows_progress_status_counts_and_failures(sender, alert, smtp):
    smtp.handler.reject["r1@example.com"] = "550 5.1.1 No such user"
    _send_batches(alert)
    with CaptureQueriesContext(connection) as captured:
        response = sender.get(url("change", alert))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<progress value="3" max="3"></progress>' in html
    assert dict(response.context["status_counts"]) == {
        "Queued": 0, "Sending": 0, "Sent": 2, "Failed": 1, "Skipped": 0,
    }
    assert sum('"subscriptions_delivery"' in q["sql"] and "COUNT" in q["sql"].upper()
               for q in captured) == 1  # the per-status counts are one aggregate
    [failed] = response.context["recent_failed"]
    assert failed.subscriber.email == "r1@example.com" and failed.attempts == 1
    assert "<td>r1@example.com</td><td>1</td><td>550 5.1.1 No such user</td>" in html
    assert "edition__id__exact" in html  # the link to all failed deliveries
    for tool in ("steer-retry", "send-test", "preview"):
        assert f'class="{tool}' in html, tool
    assert "steer-resume" not in html  # it is not paused
    assert 'name="_save"' not in html  # nothing to edit


def test_editions_cannot_be_added_changed_or_deleted(sender, alert):
    assert sender.get(reverse("admin:subscriptions_edition_add")).status_code == 403
    assert sender.get(url("delete", alert)).status_code == 403
    response = sender.post(url("change", alert), {"key": "changed", "status": "done"})
    assert response.status_code == 403
    alert.refresh_from_db()
    assert alert.status == "sending" and alert.key.startswith("alert:story:")


def test_the_delivery_list_is_read_only(sender, alert):
    response = sender.get(reverse("admin:subscriptions_delivery_changelist"),
                          {"edition__id__exact": alert.pk, "status__exact": "queued"})
    assert response.status_code == 200
    assert "r0@example.com" in response.content.decode()
    assert sender.get(reverse("admin:subscriptions_delivery_add")).status_code == 403


# --- Steering from the edition's page --------------------------------------------------


def test_pause_then_resume_confirm_first(sender, alert):
    page = sender.get(url("pause", alert))
    assert page.status_code == 200
    html = page.content.decode()
    assert '<input type="hidden" name="post" value="yes">' in html
    assert 'name="action"' not in html  # the page's own form, not a list action
    assert f'<a href="{url("change", alert)}">{alert}</a>' in html  # in the breadcrumbs
    assert "steer-confirmation" in html
    assert sender.post(url("pause", alert), {}).status_code == 200  # not confirmed
    alert.refresh_from_db()
    assert alert.status == "sending"

    response = sender.post(url("pause", alert), {"post": "yes"})
    assert response["Location"] == url("change", alert)
    alert.refresh_from_db()
    assert alert.status == "paused"
    assert _messages(sender, response) == [f"{alert}: paused."]

    assert sender.get(url("resume", alert)).status_code == 200
    alert.refresh_from_db()
    assert alert.status == "paused"
    sender.post(url("resume", alert), {"post": "yes"})
    alert.refresh_from_db()
    assert alert.status == "sending"


def test_cancel_confirms_then_skips_what_is_left(sender, alert):
    assert sender.get(url("cancel", alert)).status_code == 200
    alert.refresh_from_db()
    assert alert.status == "sending" and not Delivery.objects.filter(status="skipped").exists()

    response = sender.post(url("cancel", alert), {"post": "yes"})
    alert.refresh_from_db()
    assert (alert.status, alert.skipped) == ("cancelled", 3)
    assert _messages(sender, response) == [
        f"{alert}: cancelled; 3 deliveries not sent yet were skipped."
    ]
    # Cancelled for good: no resume, no second cancel, and the page offers neither.
    refused = sender.post(url("resume", alert), {"post": "yes"})
    assert _messages(sender, refused) == [
        f"Resume is not possible for {alert}: it is cancelled."
    ]
    alert.refresh_from_db()
    assert alert.status == "cancelled"
    assert "steer-" not in sender.get(url("change", alert)).content.decode()


def test_retry_failed_confirms_then_queues_them_again(sender, alert, smtp):
    smtp.handler.reject["r2@example.com"] = "550 5.1.1 No such user"
    _send_batches(alert)
    assert (alert.status, alert.failed) == ("done", 1)

    assert sender.get(url("retry", alert)).status_code == 200
    assert Delivery.objects.get(subscriber__email="r2@example.com").status == "failed"

    response = sender.post(url("retry", alert), {"post": "yes"})
    assert _messages(sender, response) == [f"{alert}: 1 failed deliveries queued again."]
    retried = Delivery.objects.get(subscriber__email="r2@example.com")
    assert (retried.status, retried.attempts, retried.last_error) == ("queued", 0, "")
    alert.refresh_from_db()
    assert (alert.status, alert.failed) == ("sending", 0)


def test_retry_is_refused_for_a_cancelled_edition(sender, alert):
    Delivery.objects.filter(subscriber__email="r0@example.com").update(status="failed")
    Edition.objects.filter(pk=alert.pk).update(failed=1)
    steering.edition_cancel(edition=alert)
    response = sender.post(url("retry", alert), {"post": "yes"})
    assert "it is cancelled" in _messages(sender, response)[0]
    alert.refresh_from_db()
    assert alert.status == "cancelled"
    assert Delivery.objects.get(subscriber__email="r0@example.com").status == "failed"


# --- Steering from the list ---------------------------------------------------------------


def test_list_actions_confirm_then_act_on_the_ones_that_apply(sender, alert, digest):
    data = {"action": "pause_selected", ACTION_CHECKBOX_NAME: [alert.pk, digest.pk]}
    page = sender.post(CHANGELIST, data)
    assert page.status_code == 200
    assert set(page.context["to_change"]) == {alert, digest}
    html = page.content.decode()
    assert '<input type="hidden" name="action" value="pause_selected">' in html
    for edition in (alert, digest):
        assert f'value="{edition.pk}"' in html and f"{edition.sent} of {edition.targeted}" in html
    assert set(Edition.objects.values_list("status", flat=True)) == {"sending", "planned"}

    sender.post(CHANGELIST, {**data, "post": "yes"})
    assert set(Edition.objects.values_list("status", flat=True)) == {"paused"}

    page = sender.post(CHANGELIST, {"action": "cancel_selected",
                                    ACTION_CHECKBOX_NAME: [alert.pk]})
    assert page.status_code == 200 and page.context["to_change"] == [alert]
    alert.refresh_from_db()
    assert alert.status == "paused"
    sender.post(CHANGELIST, {"action": "cancel_selected", "post": "yes",
                             ACTION_CHECKBOX_NAME: [alert.pk]})
    alert.refresh_from_db()
    assert alert.status == "cancelled"


# --- Test sends ---------------------------------------------------------------------------


def test_send_a_test_of_an_alert_to_me(sender, alert, smtp, readers):
    page = sender.get(url("send_test", alert))
    assert page.status_code == 200 and not smtp.handler.messages  # a GET sends nothing

    response = sender.post(url("send_test", alert), {"email": ""})
    assert _messages(sender, response) == ["Test sent to desk@newsroom.example."]
    [received] = smtp.handler.messages
    assert received.rcpt_to == "desk@newsroom.example"
    message = email.message_from_bytes(received.data, policy=policy.default)
    assert message["To"] == "desk@newsroom.example"
    assert message["Subject"] == "[TEST] Breaking: Dam bursts upstream"
    assert message["List-Unsubscribe"] is None
    raw = received.data.decode("utf-8", "replace")
    body = message.get_body(("plain",)).get_content() + message.get_body(("html",)).get_content()
    for reader in readers:
        assert unsubscribe_url(subscriber_id=reader.pk, email=reader.email) not in raw + body
    # No personal link at all: unsubscribe and preferences lead to the sign-up page.
    assert "/unsubscribe/" not in raw + body and "/preferences/" not in raw + body
    assert "http://testserver/subscribe/" in body
    assert not Delivery.objects.filter(status="sent").exists()  # the ledger is untouched


def test_send_a_test_of_a_digest_as_a_named_reader(sender, digest, politics, smtp):
    reader = subscriber("ann@example.com", categories=[politics],
                        last_digest_due_at=timezone.now() - timedelta(days=1))
    _story(politics, headline="Budget passes", breaking=False)

    refused = sender.post(url("send_test", digest), {"email": ""})
    assert refused.status_code == 200 and "This field is required." in refused.content.decode()
    unknown = sender.post(url("send_test", digest), {"email": "who@example.com"})
    assert "No subscriber has this address." in unknown.content.decode()
    assert not smtp.handler.messages

    response = sender.post(url("send_test", digest), {"email": "ANN@example.com"})
    assert _messages(sender, response) == [
        "Test sent to desk@newsroom.example as ann@example.com would get it."
    ]
    [received] = smtp.handler.messages
    message = email.message_from_bytes(received.data, policy=policy.default)
    assert received.rcpt_to == "desk@newsroom.example"
    assert message["Subject"].startswith("[TEST] ")
    assert "Budget passes" in message.get_body(("plain",)).get_content()
    assert unsubscribe_url(subscriber_id=reader.pk, email=reader.email) not in (
        received.data.decode("utf-8", "replace"))


def test_a_digest_test_for_a_reader_with_nothing_new_is_refused(sender, digest, politics, smtp):
    subscriber("quiet@example.com", categories=[category("tech")])
    response = sender.post(url("send_test", digest), {"email": "quiet@example.com"})
    assert "gets nothing from this edition" in response.content.decode()
    assert not smtp.handler.messages


def test_send_test_needs_an_email_on_the_account(client, alert, smtp):
    client.force_login(_staff("noaddress", *SENDER_PERMS))
    response = client.post(url("send_test", alert), {"email": ""})
    assert response["Location"] == url("change", alert)
    assert _messages(client, response) == [
        "Your user account has no email address: add one to receive test sends."
    ]
    assert not smtp.handler.messages


# --- Preview -------------------------------------------------------------------------------


class _Frames(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "iframe":
            self.frames.append(dict(attrs))


def test_preview_shows_exactly_what_the_subscriber_gets(sender, politics, readers, no_enqueue,
                                                       settings):
    edition = dispatch.edition_create_alert(
        story=_story(politics, dek='Towns "evacuated" <script>alert(1)</script>'), by=None)
    reader = readers[0]
    response = sender.get(url("preview", edition), {"email": reader.email})
    assert response.status_code == 200
    html = response.content.decode()
    assert response.context["subject"] == "Breaking: Dam bursts upstream"
    assert '<h2 class="preview-subject">Breaking: Dam bursts upstream</h2>' in html
    headers = dict(response.context["headers"])
    assert headers["To"] == reader.email
    assert headers["List-Unsubscribe"] == (
        f"<{unsubscribe_url(subscriber_id=reader.pk, email=reader.email)}>, "
        f"<mailto:{settings.NEWSROOM_UNSUBSCRIBE_MAILTO}?subject=unsubscribe>")
    assert headers["List-Id"] == "Newsroom <alerts.politics.lists.testserver>"
    assert "From" in headers
    assert "<script>alert(1)</script>" not in html  # escaped everywhere on the page
    # The srcdoc frame inherits the page's policy: the mail's inline CSS, no scripts.
    policy = response["Content-Security-Policy"]
    assert "style-src 'self' 'unsafe-inline'" in policy and "script-src 'self';" in policy

    parser = _Frames()
    parser.feed(html)
    [frame] = parser.frames
    assert frame["sandbox"] == ""  # every restriction: no scripts, no same origin
    assert frame["srcdoc"] == response.context["html"]  # the whole part, intact once unescaped
    assert "What we know" in frame["srcdoc"]
    assert "What we know" in response.context["text"]
    assert "<script>alert(1)</script>" in response.context["text"]  # the text part is raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html.split('class="preview-text"')[1]


def test_preview_explains_who_gets_nothing(sender, alert, digest, politics):
    unknown = sender.get(url("preview", alert), {"email": "nobody@example.com"})
    assert "No subscriber has this address." in unknown.content.decode()

    outsider = subscriber("outsider@example.com", categories=[category("tech")])
    page = sender.get(url("preview", alert), {"email": outsider.email}).content.decode()
    assert "outsider@example.com is not among this edition" in page

    quiet = sender.get(url("preview", digest), {"email": outsider.email}).content.decode()
    assert "outsider@example.com gets nothing from this digest" in quiet
    assert "<iframe" not in quiet


def test_preview_of_an_alert_not_dispatched_checks_the_audience(sender, politics, no_enqueue):
    edition = dispatch.edition_create_alert(story=_story(politics), by=None)
    off = subscriber("off@example.com", categories=[politics], wants_alerts=False)
    page = sender.get(url("preview", edition), {"email": off.email}).content.decode()
    assert "off@example.com is not in this alert" in page


# --- Permissions ----------------------------------------------------------------------------


def test_viewers_see_but_cannot_steer_test_or_preview(viewer, alert, smtp):
    assert viewer.get(CHANGELIST).status_code == 200
    page = viewer.get(url("change", alert))
    assert page.status_code == 200
    html = page.content.decode()
    assert "steer-" not in html and "send-test" not in html and 'class="preview"' not in html
    assert viewer.get(CHANGELIST).context["action_form"] is None  # no actions at all

    for name in ("pause", "cancel", "send_test"):
        assert viewer.get(url(name, alert)).status_code == 403, name
        assert viewer.post(url(name, alert), {"post": "yes"}).status_code == 403, name
    assert viewer.get(url("preview", alert), {"email": "r0@example.com"}).status_code == 403
    viewer.post(CHANGELIST, {"action": "cancel_selected", "post": "yes",
                             ACTION_CHECKBOX_NAME: [alert.pk]})
    alert.refresh_from_db()
    assert alert.status == "sending" and not smtp.handler.messages


def test_send_permission_alone_is_not_enough(client, alert):
    """Steering needs to see the edition too."""
    client.force_login(_staff("blind", "send_edition"))
    assert client.get(CHANGELIST).status_code == 403
    assert client.post(url("pause", alert), {"post": "yes"}).status_code == 403
    alert.refresh_from_db()
    assert alert.status == "sending"


def test_non_staff_are_sent_to_the_login(client, alert):
    client.force_login(get_user_model().objects.create_user("reader", password="pw"))
    response = client.post(url("pause", alert), {"post": "yes"})
    assert response.status_code == 302 and response["Location"].startswith(
        reverse("admin:login"))
    alert.refresh_from_db()
    assert alert.status == "sending"


def test_steering_is_csrf_protected(alert):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(_staff("desk2", *SENDER_PERMS))
    assert csrf_client.post(url("pause", alert), {"post": "yes"}).status_code == 403
    alert.refresh_from_db()
    assert alert.status == "sending"
