"""The time-zone list: canonical names only, aliases still understood, and the
sign-up page's hand-over to the browser (subscriptions/timezone.js)."""

from __future__ import annotations

import json
import re
import zoneinfo
from pathlib import Path

import pytest
from django.urls import reverse

from subscriptions.forms import (
    ManageForm,
    SignupForm,
    timezone_choices,
    timezone_names,
    timezone_or_default,
)
from subscriptions.tz_aliases import ALIASES
from tests.subscriptions.factories import category, subscriber

TZDATA_ZI = Path("/usr/share/zoneinfo/tzdata.zi")
LISTED = {name for _region, zones in timezone_choices() for name, _label in zones}


def test_the_list_has_canonical_names_only():
    for alias in ("Africa/Asmera", "America/Buenos_Aires", "Asia/Calcutta", "Europe/Kiev",
                  "Etc/UTC", "US/Eastern", "GMT"):
        assert alias not in LISTED
    for zone in ("UTC", "Africa/Asmara", "America/Argentina/Buenos_Aires", "Asia/Kolkata",
                 "Europe/Kyiv", "Europe/Oslo", "America/New_York"):
        assert zone in LISTED
    assert timezone_names() == LISTED


def test_every_alias_points_at_a_listed_zone():
    available = zoneinfo.available_timezones()
    for alias, zone in ALIASES.items():
        assert zone in LISTED, (alias, zone)
        assert alias in available or alias not in LISTED


@pytest.mark.skipif(not TZDATA_ZI.exists(), reason="no tzdata.zi on this system")
def test_the_alias_table_knows_every_link_of_this_systems_tzdata():
    """A rename in a newer tzdata (Europe/Kiev to Europe/Kyiv) fails here, not in the list."""
    links = dict(
        reversed(line.split()[1:3]) for line in TZDATA_ZI.read_text().splitlines()
        if line.startswith("L ")
    )
    if "Europe/Oslo" in links:
        pytest.skip("tzdata built without backzone: its links include real places")
    assert set(links) - {"UTC"} <= set(ALIASES)


@pytest.mark.parametrize(("given", "expected"), [
    ("Asia/Calcutta", "Asia/Kolkata"), ("America/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ("Etc/UTC", "UTC"), ("Europe/Berlin", "Europe/Berlin"), ("Mars/Base", "UTC"), ("", "UTC"),
])
def test_aliases_from_links_and_cookies_become_their_zone(given, expected):
    assert timezone_or_default(given) == expected


@pytest.mark.django_db
def test_forms_take_an_alias_and_store_its_zone():
    world = category("world")
    form = SignupForm(data={"email": "a@example.com", "categories": [world.pk],
                            "frequency": "daily", "digest_hour": "7",
                            "timezone": "Asia/Calcutta", "wants_alerts": "yes"})
    assert form.is_valid(), form.errors
    assert form.preferences().timezone == "Asia/Kolkata"
    reader = subscriber("old@example.com", categories=[world], timezone="Europe/Kiev")
    rendered = str(ManageForm(initial=ManageForm.initial_for(reader))["timezone"])
    assert '<option value="Europe/Kyiv" selected>' in rendered


@pytest.mark.django_db
def test_an_untouched_signup_page_hands_the_zone_to_the_browser(client):
    page = client.get(reverse("subscriptions:signup")).content.decode()
    assert re.search(r"<form [^>]*data-timezone-from-browser", page)
    assert '<script src="/static/subscriptions/timezone.js" defer></script>' in page
    data = re.search(r'<script id="timezone-aliases" type="application/json">(.*?)</script>',
                     page).group(1)
    assert json.loads(data)["Asia/Calcutta"] == "Asia/Kolkata"
    assert '<option value="UTC" selected>' in page  # what a browser without script submits


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["?tz=Asia/Calcutta", "?tz=UTC"])
def test_a_zone_from_the_link_is_not_overridden(client, query):
    page = client.get(reverse("subscriptions:signup") + query).content.decode()
    assert "data-timezone-from-browser" not in page and "timezone.js" not in page
    zone = timezone_or_default(query.removeprefix("?tz="))
    assert f'<option value="{zone}" selected>' in page


@pytest.mark.django_db
def test_a_page_with_errors_keeps_the_readers_zone(client):
    page = client.post(reverse("subscriptions:signup"), {"timezone": "Asia/Tokyo"}).content
    assert b"data-timezone-from-browser" not in page
    assert b'<option value="Asia/Tokyo" selected>' in page


@pytest.mark.django_db
def test_a_category_in_the_link_is_ticked(client):
    world, sport = category("world"), category("sport")
    page = client.get(reverse("subscriptions:signup") + "?category=world&category=nope")
    checked = re.findall(r'<input [^>]*name="categories" value="(\d+)"[^>]*checked',
                         page.content.decode())
    assert checked == [str(world.pk)] and str(sport.pk) not in checked
