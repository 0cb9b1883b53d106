"""The "view in browser" page of an edition."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from subscriptions.sending import batches, dispatch, enqueue, scheduling
from subscriptions.sending.content import ViewKey
from tests.subscriptions.factories import category, subscriber
from tests.subscriptions.sending.test_scheduling import publish, run
from tests.subscriptions.test_alerts import story

pytestmark = pytest.mark.django_db

VIEW = re.compile(r"http://testserver(/editions/[^/\s\"]+/)")


@pytest.fixture
def no_enqueue(monkeypatch):
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)


def view_path(raw: bytes) -> str:
    import email
    from email import policy

    text = email.message_from_bytes(raw, policy=policy.default).get_body(("plain",)).get_content()
    return VIEW.search(text).group(1)


def test_an_alert_can_be_read_in_a_browser_without_personal_links(client, no_enqueue):
    cat = category("policy")
    reader = subscriber("ann@example.com", categories=[cat])
    edition = dispatch.edition_create_alert(story=story(cat, headline="Dam bursts"), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    raw = batches.edition_render_for(edition=edition, subscriber=reader)
    response = client.get(view_path(raw))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Dam bursts" in page and "ann@example.com" not in page
    assert "/unsubscribe/" not in page and "@@" not in page
    assert response["X-Robots-Tag"] == "noindex"
    policy = response["Content-Security-Policy"]  # inline CSS of a mail, never scripts
    assert "style-src 'self' 'unsafe-inline'" in policy and "script-src 'self';" in policy


def test_a_digest_variant_can_be_read_in_a_browser(client, no_enqueue):
    world = category("world", order=1)
    reader = subscriber("r@example.com", categories=[world], digest_hour=7)
    due = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    publish(world, "Summit ends", due - timedelta(hours=2))
    edition = run(scheduling.digests_schedule(now=due + timedelta(minutes=1))[0])
    reader.refresh_from_db()
    raw = batches.edition_render_for(edition=edition, subscriber=reader)
    response = client.get(view_path(raw))
    assert response.status_code == 200 and "Summit ends" in response.content.decode()


def test_forged_or_unknown_view_links_are_404(client, no_enqueue):
    assert client.get("/editions/not-a-token/").status_code == 404
    assert client.get(f"/editions/{ViewKey(999_999).token()}/").status_code == 404
    token = ViewKey(1).token()
    assert client.get(f"/editions/{token[:-2]}xx/").status_code == 404
