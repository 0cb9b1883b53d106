"""An edition's admin page as a live view: what it says at each stage of a send,
the JSON its script polls, and who may read it."""

import html as html_lib
import json
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from subscriptions.models import Edition
from tests.subscriptions.factories import category

pytestmark = pytest.mark.django_db


def url(name: str, edition: Edition) -> str:
    return reverse(f"admin:subscriptions_edition_{name}", args=[edition.pk])


@pytest.fixture
def policy():
    return category("policy", name="Policy")


@pytest.fixture
def desk(client):
    """Someone in the Editors group: sees editions, not readers."""
    user = get_user_model().objects.create_user("desk", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Editors"))
    client.force_login(user)
    return client


def _edition(policy, **fields) -> Edition:
    fields.setdefault("key", f"alert:test:{uuid.uuid4().hex[:8]}")
    fields.setdefault("kind", Edition.Kind.ALERT)
    fields.setdefault("status", Edition.Status.SENDING)
    fields.setdefault("scheduled_at", timezone.now())
    fields.setdefault("audience", {"category_id": policy.pk})
    return Edition.objects.create(**fields)


def _ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", html)))


# --- What the page says -------------------------------------------------------------------


def test_the_audience_is_in_words(desk, policy):
    page = desk.get(url("change", _edition(policy))).content.decode()
    assert "Policy · readers who want alerts" in page
    assert "category_id" not in page


def test_right_after_the_confirm_it_says_what_is_happening(desk, policy):
    planned = _edition(policy, status=Edition.Status.PLANNED)
    text = _text(desk.get(url("change", planned)).content.decode())
    assert "waiting for a worker to take it" in text and "Not started" not in text

    # The dispatch has taken it and is writing the first rows: targeted is still 0.
    Edition.objects.filter(pk=planned.pk).update(status="sending", started_at=_ago(1),
                                                 last_progress_at=_ago(1), sent=12)
    text = _text(desk.get(url("change", planned)).content.decode())
    assert "Sending" in text and "choosing its recipients" in text and "12 sent so far" in text
    assert "Not started" not in text and "Planned" not in text.split("Timing")[0]


def test_the_eta_shows_seconds_under_a_minute(desk, policy):
    # 67 handled in 40 s, 33 left: about 20 s to go.
    edition = _edition(policy, started_at=_ago(40), last_progress_at=_ago(1), targeted=100,
                       sent=67, dispatched_at=_ago(39))
    text = _text(desk.get(url("change", edition)).content.decode())
    assert re.search(r"ETA: (in (19|20) s)", text), text
    assert "0 minutes" not in text and "67% — 67 of 100 handled" in text


def test_the_eta_is_a_dash_while_the_rate_is_unknown(desk, policy):
    edition = _edition(policy, started_at=_ago(5), targeted=100)  # nothing handled yet
    text = _text(desk.get(url("change", edition)).content.decode())
    assert "Rate: 0.0 messages/s · ETA: —" in text


def test_why_it_stopped_is_shown_first(desk, policy):
    edition = _edition(policy, status=Edition.Status.FAILED, started_at=_ago(60),
                       finished_at=_ago(30),
                       note="the story's HTML is 217 KB, over the 100 KB limit")
    html = desk.get(url("change", edition)).content.decode()
    note = html.index('class="errornote edition-note"')
    assert note < html.index('class="form-row field-key"')  # above the read-only fields
    assert "Why it stopped:</strong> the story&#x27;s HTML is 217 KB" in html


def test_a_stalled_edition_is_flagged(desk, policy, settings):
    settings.NEWSROOM_STALL_AFTER = 300
    stuck = _edition(policy, started_at=_ago(900), last_progress_at=_ago(600), targeted=5)
    html = desk.get(url("change", stuck)).content.decode()
    assert '<p class="errornote edition-stalled"><strong>Stalled: no progress for 10 min' in html

    moving = _edition(policy, started_at=_ago(900), last_progress_at=_ago(5), targeted=5)
    assert "edition-stalled" not in desk.get(url("change", moving)).content.decode()


def test_a_running_edition_page_polls_and_a_finished_one_does_not(desk, policy):
    running = _edition(policy, started_at=_ago(10))
    html = desk.get(url("change", running)).content.decode()
    assert f'data-live-url="{url("live", running)}"' in html
    assert 'data-poll-seconds="3"' in html
    assert "subscriptions/edition_live.js" in html
    assert '<noscript><meta http-equiv="refresh" content="15"></noscript>' in html

    paused = _edition(policy, status=Edition.Status.PAUSED, started_at=_ago(10))
    assert 'data-poll-seconds="15"' in desk.get(url("change", paused)).content.decode()

    done = _edition(policy, status=Edition.Status.DONE, started_at=_ago(10),
                    finished_at=_ago(1))
    html = desk.get(url("change", done)).content.decode()
    assert "data-live-url" not in html and "edition_live.js" not in html
    assert 'http-equiv="refresh"' not in html


# --- The JSON the script polls ------------------------------------------------------------


def test_the_live_json_carries_the_panel_and_the_changing_fields(desk, policy):
    edition = _edition(policy, started_at=_ago(40), last_progress_at=_ago(1), targeted=100,
                       sent=60, failed=7, dispatched_at=_ago(39))
    with CaptureQueriesContext(connection) as captured:
        response = desk.get(url("live", edition))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    data = json.loads(response.content)
    assert (data["status"], data["live"], data["poll_seconds"]) == ("sending", True, 3)
    assert data["stalled"] == "" and data["note"] == ""
    assert '<progress value="67" max="100"></progress>' in data["html"]
    assert data["fields"]["sent"] == "60" and data["fields"]["status"] == "Sending"
    assert data["fields"]["progress"].startswith('<progress value="67" max="100"')
    assert re.match(r'<time datetime="[^"]+" title="[^"]+">in (19|20) s</time>',
                    data["fields"]["eta"])
    assert not any("subscriptions_delivery" in q["sql"] for q in captured)  # counters only

    Edition.objects.filter(pk=edition.pk).update(status="done", finished_at=timezone.now(),
                                                 sent=93)
    data = desk.get(url("live", edition)).json()
    assert (data["status"], data["live"]) == ("done", False)
    assert data["fields"]["sent"] == "93"


def test_the_live_json_escapes_what_it_shows(desk, policy):
    edition = _edition(policy, status=Edition.Status.FAILED, note="<script>alert(1)</script>")
    data = desk.get(url("live", edition)).json()
    assert "<script>" not in data["html"] and "<script>" not in data["fields"]["note"]
    assert "&lt;script&gt;" in data["fields"]["note"]


def test_the_live_json_needs_the_view_permission(client, policy):
    edition = _edition(policy)
    nobody = get_user_model().objects.create_user("nobody", password="pw", is_staff=True)
    client.force_login(nobody)
    assert client.get(url("live", edition)).status_code == 403
    nobody.user_permissions.add(Permission.objects.get(codename="view_edition"))
    assert client.get(url("live", edition)).status_code == 200

    client.force_login(get_user_model().objects.create_user("reader", password="pw"))
    response = client.get(url("live", edition))
    assert response.status_code == 302 and response["Location"].startswith(
        reverse("admin:login"))
