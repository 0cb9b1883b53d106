"""A reader's whole journey in a real browser, against a real web server and worker.

Sign up, get the confirmation email from the real Celery worker, confirm,
change topics, unsubscribe; the database is checked after every step and a
screenshot of each step is kept in the test data folder, by default
var/test/artifacts/browser/ (var/ is not in git). A second test walks the
public site: the sign-up time zone taken from the browser, the 404 page, a
story's sign-up box and the admin's story page at 1280 px.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections
from playwright.sync_api import Browser, Page, expect, sync_playwright

from newsroom.models import Category, Story
from subscriptions.models import Subscriber
from tests.mailbox import text_body

CHROMIUM = Path("/usr/bin/chromium")
EMAIL = "browser-reader@example.com"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"{CHROMIUM} is missing (apt-get install chromium; CI installs it)"),
]


@pytest.fixture
def browser(monkeypatch) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread, which makes Django
    # refuse ORM calls "from an async context"; the test's own queries are safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()
        # While that loop runs, Django keys connections by context, so the test
        # got a connection of its own; left open, it blocks dropping the
        # PostgreSQL test database at the end of the session.
        connections.close_all()


@pytest.fixture
def shots(settings) -> Path:
    folder = Path(settings.DATA_DIR) / "artifacts" / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def snap(page: Page, folder: Path, step: str) -> None:
    page.screenshot(path=str(folder / f"{step}.png"), full_page=True)


def subscriber() -> Subscriber:
    return Subscriber.objects.get(email=EMAIL)


def topics() -> set[str]:
    return set(subscriber().categories.values_list("slug", flat=True))


@pytest.mark.django_db(transaction=True)
def test_sign_up_confirm_change_and_leave_in_a_browser(
    live_server, celery_worker, outbox, browser, shots
):
    Category.objects.create(name="World", slug="world", order=1,
                            description="News from everywhere.")
    Category.objects.create(name="Sport", slug="sport", order=2)
    Category.objects.create(name="Science", slug="science", order=3)
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    # 1. The sign-up form.
    page.goto(f"{live_server.url}/subscribe/?tz=Europe/Berlin")
    expect(page.get_by_role("heading", name="Subscribe to Newsroom")).to_be_visible()
    expect(page.get_by_label("Time zone")).to_have_value("Europe/Berlin")
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_role("button", name="Subscribe").click()  # no topic chosen yet
    expect(page.get_by_role("alert")).to_contain_text("Choose at least one topic.")
    expect(page.get_by_label("Email address")).to_have_value(EMAIL)  # input kept
    expect(page.get_by_role("group", name="Topics")).to_have_accessible_description(
        "Choose at least one topic.")
    snap(page, shots, "00-signup-error")
    assert not Subscriber.objects.exists()
    page.get_by_label("World").check()
    page.get_by_label("Sport").check()
    page.get_by_label("Weekly").check()
    page.get_by_label("Digest time").select_option("18")
    page.get_by_label("No alerts").check()
    snap(page, shots, "01-signup-filled")
    page.get_by_role("button", name="Subscribe").click()

    # 2. Check your inbox; a pending subscriber with what was chosen.
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    snap(page, shots, "02-check-your-inbox")
    assert subscriber().status == Subscriber.Status.PENDING
    assert topics() == {"world", "sport"}
    assert (subscriber().frequency, subscriber().digest_hour, subscriber().timezone,
            subscriber().wants_alerts) == ("weekly", 18, "Europe/Berlin", False)

    # 3. The worker mails the confirmation; its link opens a page with a button.
    [message] = outbox.wait_for(EMAIL)
    link = re.search(r"http://testserver(/subscribe/confirm/\S+/)", text_body(message)).group(1)
    page.goto(live_server.url + link)  # SITE_URL in tests is http://testserver
    expect(page.get_by_role("heading", name="Confirm your subscription")).to_be_visible()
    snap(page, shots, "03-confirm-page")
    assert subscriber().status == Subscriber.Status.PENDING  # opening the link is not enough

    # 4. Confirm.
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", name="You're subscribed")).to_be_visible()
    snap(page, shots, "04-subscribed")
    assert subscriber().status == Subscriber.Status.ACTIVE

    # 5. Preferences: follow Science instead of Sport, and save.
    page.get_by_role("link", name="your preferences page").click()
    expect(page.get_by_role("heading", name="Your preferences")).to_be_visible()
    expect(page.get_by_label("Sport")).to_be_checked()
    page.get_by_label("Sport").uncheck()
    page.get_by_label("Science").check()
    page.get_by_role("button", name="Save my preferences").click()
    expect(page.get_by_text("Your preferences are saved.")).to_be_visible()
    snap(page, shots, "05-preferences-saved")
    assert topics() == {"world", "science"}
    page.reload()
    expect(page.get_by_label("Science")).to_be_checked()
    expect(page.get_by_label("Sport")).not_to_be_checked()

    # 6. Leave everything.
    page.get_by_role("button", name="Unsubscribe from everything").click()
    expect(page.get_by_text("You are unsubscribed from everything.")).to_be_visible()
    expect(page.get_by_role("button", name="Subscribe again")).to_be_visible()
    snap(page, shots, "06-unsubscribed")
    assert subscriber().status == Subscriber.Status.UNSUBSCRIBED
    goodbye = outbox.wait_for(EMAIL, count=2)[-1]
    assert "You have left" in goodbye["Subject"]

    assert failed == []  # no missing stylesheet, no error along the way

    # 7. The sign-up page fits a phone screen.
    phone = browser.new_page(viewport={"width": 360, "height": 740})
    phone.goto(f"{live_server.url}/subscribe/")
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    snap(phone, shots, "07-signup-phone")


def _story_with_date_only() -> Story:
    world = Category.objects.create(name="World", slug="world", order=1)
    return Story.objects.create(
        category=world, slug="date-only", headline="A story dated by its day",
        body="## A heading\n\nA paragraph of the story.\n\n> A quote.",
        status=Story.Status.PUBLISHED,
        published_at=dt.datetime(2026, 5, 8, tzinfo=zoneinfo.ZoneInfo(settings.TIME_ZONE)),
    )


@pytest.mark.django_db(transaction=True)
def test_the_public_site_in_a_browser(live_server, browser, shots):
    """Issue 12, "The public site": the time zone from the browser, the styled 404,
    the footer in line with the content, the story's sign-up box, the admin at 1280 px."""
    story = _story_with_date_only()

    # The sign-up page takes the browser's zone; Chrome may report an alias
    # (America/Buenos_Aires), which the page maps to the listed name.
    for zone, expected in [("Asia/Kolkata", "Asia/Kolkata"),
                           ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
                           ("Europe/Oslo", "Europe/Oslo")]:
        context = browser.new_context(timezone_id=zone, viewport={"width": 1000, "height": 900})
        page = context.new_page()
        page.goto(f"{live_server.url}/subscribe/")
        expect(page.get_by_label("Time zone")).to_have_value(expected)
        if zone == "Asia/Kolkata":
            snap(page, shots, "10-signup-timezone-from-browser")
            page.goto(f"{live_server.url}/subscribe/?tz=Europe/Berlin")  # a link's choice wins
            expect(page.get_by_label("Time zone")).to_have_value("Europe/Berlin")
        context.close()
    without_script = browser.new_context(timezone_id="Asia/Tokyo", java_script_enabled=False)
    page = without_script.new_page()
    page.goto(f"{live_server.url}/subscribe/")
    expect(page.get_by_label("Time zone")).to_have_value("UTC")  # and the form still posts
    without_script.close()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    # The 404 page is drawn in the site's frame, its footer in the content's column.
    response = page.goto(f"{live_server.url}/no/such/page/")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_role("link", name="World")).to_be_visible()  # the site's navigation
    assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("system-ui")
    main_left = page.locator("main h1").bounding_box()["x"]
    assert page.locator(".site-footer p").first.bounding_box()["x"] == main_left
    snap(page, shots, "11-not-found")
    assert failed == [f"404 {live_server.url}/no/such/page/"]  # its stylesheet and icon load
    failed.clear()

    # A story: its date alone, and a sign-up box that ticks the story's topic.
    page.goto(live_server.url + story.get_absolute_url())
    expect(page.locator(".story-header .meta")).to_have_text("8 May 2026")
    box = page.get_by_role("complementary", name="Get World stories by email")
    expect(box).to_be_visible()
    box.scroll_into_view_if_needed()
    snap(page, shots, "12-story-signup-prompt")
    box.get_by_role("link", name="Subscribe to World").click()
    expect(page.get_by_label("World")).to_be_checked()

    # The admin's story page fits 1280 px, and its preview has the site's headings.
    User.objects.create_superuser("editor", "editor@example.com", "editor-password")
    page.goto(f"{live_server.url}/admin/login/")
    page.get_by_label("Username").fill("editor")
    page.get_by_label("Password").fill("editor-password")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/admin/newsroom/story/{story.pk}/change/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    heading = page.locator(".story-preview h2")
    assert heading.evaluate("h => getComputedStyle(h).backgroundColor") == "rgba(0, 0, 0, 0)"
    page.locator(".story-preview").scroll_into_view_if_needed()
    snap(page, shots, "13-admin-story-preview")
    assert failed == []
