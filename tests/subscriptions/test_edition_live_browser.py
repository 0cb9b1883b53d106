"""The edition page follows a send in a real browser: no reload while it runs,
none while someone types, one when the status changes."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from subscriptions.models import Edition
from tests.subscriptions.factories import category
from tests.subscriptions.test_browser import CHROMIUM, browser  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"{CHROMIUM} is missing (apt-get install chromium; CI installs it)"),
]


@pytest.mark.django_db(transaction=True)
def test_the_edition_page_follows_the_send_without_reloading(live_server, browser):  # noqa: F811
    # Permissions, not the Editors group: a transactional test's flush removes the
    # groups that data migrations made.
    user = get_user_model().objects.create_user("desk", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_edition"))
    now = timezone.now()
    edition = Edition.objects.create(
        key=f"alert:test:{uuid.uuid4().hex[:8]}", kind=Edition.Kind.ALERT,
        status=Edition.Status.SENDING, scheduled_at=now, started_at=now - timedelta(seconds=30),
        dispatched_at=now - timedelta(seconds=29), last_progress_at=now, targeted=100, sent=10,
        audience={"category_id": category("policy", name="Policy").pk},
    )
    page = browser.new_page()
    page.goto(f"{live_server.url}{reverse('admin:login')}")
    page.fill("#id_username", "desk")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.goto(live_server.url + reverse("admin:subscriptions_edition_change",
                                        args=[edition.pk]))
    panel = page.locator("#edition-live")
    expect(panel).to_contain_text("10 of 100 handled")
    expect(page.locator(".field-audience_text .readonly")).to_have_text(
        "Policy · readers who want alerts")
    page.evaluate("window.notReloaded = true")

    Edition.objects.filter(pk=edition.pk).update(sent=50, last_progress_at=timezone.now())
    expect(panel).to_contain_text("50 of 100 handled", timeout=10_000)
    expect(page.locator(".field-sent .readonly")).to_have_text("50")
    assert page.evaluate("window.notReloaded") is True  # swapped in place

    # Someone is typing: the status changes, the page must not reload under them.
    page.evaluate("""() => { const input = document.createElement('input');
                             input.id = 'typing'; document.body.prepend(input); input.focus(); }""")
    Edition.objects.filter(pk=edition.pk).update(status="done", sent=100,
                                                 finished_at=timezone.now())
    expect(panel).to_contain_text("100 of 100 handled", timeout=10_000)
    assert page.evaluate("window.notReloaded") is True

    page.evaluate("document.getElementById('typing').blur()")  # done typing: now it reloads
    # Polled from here: the page's CSP (no 'unsafe-eval') refuses wait_for_function.
    deadline = time.monotonic() + 10
    while True:
        try:
            if page.evaluate("window.notReloaded") is None:
                break
        except PlaywrightError:  # the page is being replaced: it reloads
            pass
        assert time.monotonic() < deadline, "the page did not reload when done"
        page.wait_for_timeout(100)
    page.wait_for_load_state()
    expect(page.locator(".field-status .readonly")).to_have_text("Done")
    assert page.locator("#edition-live[data-live-url]").count() == 0  # polling is over
