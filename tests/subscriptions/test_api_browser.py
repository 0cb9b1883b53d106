"""Sign-up from another site in a real browser: a partner page on a second origin
(its own HTTP server and port) embeds our form and script; its fetch to the API
crosses origins through CORS, and the sign-up lands (a pending subscriber, its
consent record, the confirmation mail from the real worker). Without script the
same form posts across and lands the reader on our "check your inbox" page."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, expect

from newsroom.models import Category
from subscriptions.models import ConsentRecord, Subscriber
from tests.subscriptions.test_browser import CHROMIUM, browser  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing"),
]

PARTNER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Partner</title></head><body>
<h1>A partner's page</h1>
<form action="{news}/subscribe/embedded/" method="post" data-newsroom-signup>
  <label>Email address <input type="email" name="email" required></label>
  <label><input type="checkbox" name="topic" value="world"> World</label>
  <label><input type="checkbox" name="topic" value="sport"> Sport</label>
  <input type="hidden" name="frequency" value="weekly">
  <input type="hidden" name="digest_hour" value="7">
  <input type="hidden" name="timezone" value="UTC">
  <input type="hidden" name="wants_alerts" value="yes">
  <button type="submit">Subscribe</button>
  <p data-newsroom-status role="status"></p>
</form>
<script src="{news}/static/subscriptions/embed.js" defer></script>
</body></html>
"""


@pytest.fixture
def partner_site(live_server) -> Iterator[str]:
    """A second origin: 127.0.0.1 on a port of its own (the live server is localhost)."""
    page = PARTNER_PAGE.format(news=live_server.url).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db(transaction=True)
def test_a_partner_page_signs_up_through_the_api(
    live_server, partner_site, celery_worker, outbox, browser: Browser, settings,  # noqa: F811
):
    settings.NEWSROOM_API_ALLOWED_ORIGINS = settings.CORS_ALLOWED_ORIGINS = [partner_site]
    Category.objects.create(name="World", slug="world", order=1)
    Category.objects.create(name="Sport", slug="sport", order=2)
    api_calls: list[str] = []

    # With script: embed.js sends the form to the API across origins.
    context = browser.new_context(timezone_id="Europe/Berlin")
    page = context.new_page()
    page.on("request", lambda r: api_calls.append(f"{r.method} {r.url}")
            if "/api/v1/" in r.url else None)
    page.goto(partner_site)
    page.get_by_label("Email address").fill("partner-reader@example.com")
    page.get_by_label("World").check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("status")).to_contain_text("Check your inbox")
    assert page.url.startswith(partner_site)  # answered in place
    assert f"POST {live_server.url}/api/v1/signups" in api_calls
    reader = Subscriber.objects.get(email="partner-reader@example.com")
    assert (reader.status, reader.frequency, reader.timezone) == (
        Subscriber.Status.PENDING, "weekly", "Europe/Berlin")  # the browser's zone
    consent = ConsentRecord.objects.get(subscriber=reader)
    assert (consent.method, consent.page) == ("api", partner_site)
    assert outbox.wait_for("partner-reader@example.com"), "no confirmation mail"
    context.close()

    # Without script: the plain form posts across and lands on our page.
    plain = browser.new_context(java_script_enabled=False)
    page = plain.new_page()
    page.goto(partner_site)
    page.get_by_label("Email address").fill("plain-reader@example.com")
    page.get_by_label("Sport").check()
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    assert page.url == f"{live_server.url}/subscribe/check-your-inbox/"
    reader = Subscriber.objects.get(email="plain-reader@example.com")
    assert list(reader.categories.values_list("slug", flat=True)) == ["sport"]
    assert outbox.wait_for("plain-reader@example.com"), "no confirmation mail"
    plain.close()

    # A page on an origin not in the list cannot sign anyone up from the browser.
    settings.NEWSROOM_API_ALLOWED_ORIGINS = settings.CORS_ALLOWED_ORIGINS = []
    other = browser.new_context()
    page = other.new_page()
    page.goto(partner_site)
    page.get_by_label("Email address").fill("blocked-reader@example.com")
    page.get_by_label("World").check()
    page.get_by_role("button", name="Subscribe").click()  # CORS fails: the plain post, refused
    expect(page.get_by_role("heading", name="Sign up here instead")).to_be_visible()
    # JSON needs a preflight, which got no CORS headers: the POST itself never went out.
    assert not Subscriber.objects.filter(email="blocked-reader@example.com").exists()
    other.close()
