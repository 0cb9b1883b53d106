"""The subscriber admin as support staff and the data-protection officer use it."""

import csv
import io
import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from subscriptions.models import ConsentRecord, Subscriber
from subscriptions.services.subscribers import Preferences as Prefs
from subscriptions.services.subscribers import RequestInfo, subscriber_confirm, subscriber_signup
from subscriptions.tokens import Purpose, token_make, token_matches, token_read
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:subscriptions_subscriber_changelist")
EXPORT_CSV = reverse("admin:subscriptions_subscriber_export_csv")
INFO = RequestInfo(ip_address="198.51.100.7", user_agent="Safari/18", page="http://testserver/")


def change_url(sub):
    return reverse("admin:subscriptions_subscriber_change", args=[sub.pk])


def export_json_url(sub):
    return reverse("admin:subscriptions_subscriber_export_json", args=[sub.pk])


def erase_url(sub):
    return reverse("admin:subscriptions_subscriber_erase", args=[sub.pk])


@pytest.fixture(autouse=True)
def emails(monkeypatch):
    """Subscription emails the services enqueue (none should come from the admin)."""
    from subscriptions import tasks

    sent = []
    monkeypatch.setattr(tasks.subscriber_email_send, "delay_on_commit",
                        lambda sid, kind: sent.append((sid, kind)))
    return sent


def _staff(username, *codenames):
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="subscriptions", codename__in=codenames,
    ))
    return user


@pytest.fixture
def support(client):
    """Support staff: may look subscribers up and unsubscribe them, not export or erase."""
    client.force_login(_staff("support", "view_subscriber", "change_subscriber"))
    return client


@pytest.fixture
def dpo(client):
    """The data-protection officer: may export and erase."""
    client.force_login(_staff("dpo", "view_subscriber", "export_subscriber", "erase_subscriber"))
    return client


@pytest.fixture
def topics():
    return category("politics", order=1), category("tech", order=2), category("sport", order=3)


@pytest.fixture
def people(topics):
    politics, tech, _sport = topics
    return {
        "ann": subscriber("ann@example.com", categories=[politics, tech]),
        "bob": subscriber("bob@example.org", categories=[tech], frequency="weekly"),
        "cat": subscriber("cat@example.com", categories=[politics], wants_alerts=False,
                          status=Subscriber.Status.BOUNCED),
        "dan": subscriber("dan@example.net", categories=[], status=Subscriber.Status.PENDING),
    }


def listed(response):
    assert response.status_code == 200
    return sorted(s.email.split("@")[0] for s in response.context["cl"].result_list)


def csv_rows(response):
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


# --- Change list ---------------------------------------------------------------------------

def test_filters_and_search(support, people, topics):
    tech = topics[1]
    assert listed(support.get(CHANGELIST)) == ["ann", "bob", "cat", "dan"]
    assert listed(support.get(CHANGELIST, {"status__exact": "bounced"})) == ["cat"]
    assert listed(support.get(CHANGELIST, {"frequency__exact": "weekly"})) == ["bob"]
    assert listed(support.get(CHANGELIST, {"wants_alerts__exact": "0"})) == ["cat"]
    assert listed(support.get(CHANGELIST, {"categories__id__exact": tech.pk})) == ["ann", "bob"]
    assert listed(support.get(CHANGELIST, {"q": "example.com"})) == ["ann", "cat"]


def test_change_list_shows_topics_without_a_query_per_row(support, topics):
    politics, tech, _ = topics

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert support.get(CHANGELIST).status_code == 200
        return len(captured)

    subscriber("first@example.com", categories=[politics, tech])
    few = queries()
    for n in range(20):
        subscriber(f"reader{n}@example.com", categories=[politics, tech])
    assert queries() == few
    assert b"Politics, Tech" in support.get(CHANGELIST).content


def test_active_subscribers_per_category_in_category_order(support, people):
    response = support.get(CHANGELIST)
    counts = [(c.slug, c.active) for c in response.context["category_counts"]]
    assert counts == [("politics", 1), ("tech", 2), ("sport", 0)]  # cat bounced, dan pending
    assert b'data-category="tech">2<' in response.content


def test_counts_take_one_query(people):
    from subscriptions.selectors import categories_with_active_counts

    with CaptureQueriesContext(connection) as captured:
        categories_with_active_counts()
    assert len(captured) == 1


def test_subscribers_are_read_only_in_the_form(support, people):
    ann = people["ann"]
    subscriber_confirm(subscriber=ann, info=INFO)
    response = support.get(change_url(ann))
    assert response.status_code == 200
    assert not response.context["adminform"].form.fields  # everything is shown read-only
    assert support.post(change_url(ann), {"email": "x@example.com"}).status_code == 403
    assert support.get(reverse("admin:subscriptions_subscriber_add")).status_code == 403
    ann.refresh_from_db()
    assert ann.email == "ann@example.com"


def test_consent_records_are_shown_and_cannot_be_changed(support):
    sub = subscriber_signup(email="eve@example.com", preferences=Prefs(categories=()),
                            info=INFO).subscriber
    response = support.get(change_url(sub))
    inline = next(f for f in response.context["inline_admin_formsets"]
                  if f.formset.model is ConsentRecord)
    assert (inline.has_add_permission, inline.has_change_permission,
            inline.has_delete_permission) == (False, False, False)
    assert b"198.51.100.7" in response.content and b"Signed up" in response.content


# --- Unsubscribe action ---------------------------------------------------------------------

def test_unsubscribe_action_confirms_then_unsubscribes_without_email(support, people, emails):
    ann, cat = people["ann"], people["cat"]
    data = {"action": "unsubscribe_selected", ACTION_CHECKBOX_NAME: [ann.pk, cat.pk]}
    response = support.post(CHANGELIST, data)
    assert response.status_code == 200
    assert "unsubscribe_confirmation" in response.templates[0].name
    html = response.content.decode()
    assert ann.email in html and cat.email in html
    assert '<input type="hidden" name="action" value="unsubscribe_selected">' in html
    assert "Yes, I\u2019m sure" in html
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.ACTIVE  # nothing changes before the confirmation

    response = support.post(CHANGELIST, {**data, "post": "yes"}, follow=True)
    assert b"Unsubscribed 2 subscribers." in response.content
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.UNSUBSCRIBED
    consent = ann.consents.get()
    assert (consent.action, consent.method) == (ConsentRecord.Action.WITHDRAW, "admin")
    assert emails == []  # no goodbye email for a staff action


def test_unsubscribe_action_leaves_the_unsubscribed_alone(support, people):
    ann = people["ann"]
    data = {"action": "unsubscribe_selected", ACTION_CHECKBOX_NAME: [ann.pk]}
    support.post(CHANGELIST, {**data, "post": "yes"})
    html = support.post(CHANGELIST, data).content.decode()
    assert "All the selected subscribers are already unsubscribed." in html
    assert "These are already unsubscribed and will be left as they are:" in html
    assert "Yes, I\u2019m sure" not in html  # nothing to confirm


def test_unsubscribe_action_needs_the_change_permission(client, people):
    client.force_login(_staff("viewer", "view_subscriber"))
    data = {"action": "unsubscribe_selected", ACTION_CHECKBOX_NAME: [people["ann"].pk],
            "post": "yes"}
    client.post(CHANGELIST, data)
    people["ann"].refresh_from_db()
    assert people["ann"].status == Subscriber.Status.ACTIVE


# --- CSV export ---------------------------------------------------------------------------------

def test_csv_export_follows_the_current_filter(dpo, people, topics):
    politics = topics[0]
    response = dpo.get(CHANGELIST, {"categories__id__exact": politics.pk, "q": "example"})
    export = response.context["export_csv_url"]
    assert export == f"{EXPORT_CSV}?categories__id__exact={politics.pk}&q=example"
    assert export.encode().replace(b"&", b"&amp;") in response.content

    response = dpo.get(export)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="subscribers-')
    rows = csv_rows(response)
    assert sorted(r["email"] for r in rows) == ["ann@example.com", "cat@example.com"]
    ann = next(r for r in rows if r["email"] == "ann@example.com")
    assert list(ann) == [
        "email", "status", "frequency", "wants_alerts", "categories", "timezone", "digest_hour",
        "created_at", "confirmed_at", "unsubscribed_at", "suppression_reason",
    ]
    assert (ann["status"], ann["categories"], ann["wants_alerts"]) == (
        "active", "politics tech", "True"
    )


def test_csv_export_defuses_spreadsheet_formulas(dpo):
    subscriber("ok@example.com", suppression_reason="=HYPERLINK(\"http://evil\")")
    [row] = csv_rows(dpo.get(EXPORT_CSV))
    assert row["suppression_reason"].startswith("'=")


def test_csv_export_with_a_bad_filter_goes_back_to_the_list(dpo):
    response = dpo.get(EXPORT_CSV, {"no_such_field": "1"})
    assert response.status_code == 302 and response["Location"].endswith("?e=1")


def test_csv_export_needs_the_export_permission(support, people):
    assert support.get(EXPORT_CSV).status_code == 403
    assert b"Export CSV" not in support.get(CHANGELIST).content


# --- Per-subscriber export and erasure ----------------------------------------------------------

def test_json_export_downloads_everything_held(dpo):
    sub = subscriber_signup(email="eve@example.com",
                            preferences=Prefs(categories=(category("tech"),)),
                            info=INFO).subscriber
    page = dpo.get(change_url(sub))
    assert export_json_url(sub).encode() in page.content
    response = dpo.get(export_json_url(sub))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="subscriber-{sub.pk}.json"'
    data = json.loads(response.content)
    assert data["subscriber"]["email"] == "eve@example.com"
    assert data["categories"] == [{"slug": "tech", "name": "Tech"}]
    assert data["consent_records"][0]["ip_address"] == "198.51.100.7"


def test_json_export_and_erase_need_their_permissions(support, people):
    ann = people["ann"]
    assert support.get(export_json_url(ann)).status_code == 403
    assert support.get(erase_url(ann)).status_code == 403
    assert support.post(erase_url(ann), {"post": "yes"}).status_code == 403
    page = support.get(change_url(ann)).content
    assert export_json_url(ann).encode() not in page and erase_url(ann).encode() not in page
    ann.refresh_from_db()
    assert ann.erased_at is None


def test_erase_asks_first_then_erases(dpo, topics):
    politics = topics[0]
    sub = subscriber_signup(email="eve@example.com", preferences=Prefs(categories=(politics,)),
                            info=INFO).subscriber
    subscriber_confirm(subscriber=sub, info=INFO)
    claim = token_read(
        token_make(subscriber_id=sub.pk, email=sub.email, purpose=Purpose.MANAGE),
        purpose=Purpose.MANAGE,
    )
    assert erase_url(sub).encode() in dpo.get(change_url(sub)).content

    confirm = dpo.get(erase_url(sub))
    assert confirm.status_code == 200
    assert b"eve@example.com" in confirm.content and b'name="post" value="yes"' in confirm.content
    dpo.post(erase_url(sub))  # a POST without the confirmation does nothing either
    sub.refresh_from_db()
    assert sub.erased_at is None

    response = dpo.post(erase_url(sub), {"post": "yes"}, follow=True)
    assert response.redirect_chain[-1][0] == change_url(sub)
    assert b"erased" in response.content
    sub.refresh_from_db()
    assert sub.email == f"erased-{sub.pk}@invalid.example" and sub.erased_at is not None
    assert not token_matches(claim, sub.email)  # links already sent stop working
    assert not sub.consents.exclude(ip_address=None).exists()
    assert sub.consents.last().method == "erasure"
    assert list(politics.subscribers.all()) == [sub]  # topic counts keep the anonymous row
    assert b"eve@example.com" not in dpo.get(reverse(
        "admin:subscriptions_subscriber_history", args=[sub.pk]
    )).content

    again = dpo.post(erase_url(sub), {"post": "yes"}, follow=True)
    assert b"already erased" in again.content
    assert sub.consents.filter(method="erasure").count() == 1


# --- Who may come in --------------------------------------------------------------------------

def test_non_staff_are_sent_to_the_login_page(client, people):
    ann = people["ann"]
    user = get_user_model().objects.create_user("reader", password="pw")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="subscriptions"))
    client.force_login(user)
    for url in (CHANGELIST, EXPORT_CSV, export_json_url(ann), erase_url(ann)):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    assert client.post(erase_url(ann), {"post": "yes"}).status_code == 302
    ann.refresh_from_db()
    assert ann.erased_at is None
