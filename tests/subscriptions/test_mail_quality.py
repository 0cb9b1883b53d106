"""Every kind of mail we build, checked as a mailbox provider and a reader would.

The confirmation, an alert and a digest are built as they are sent, then: each
parses without defects, its HTML is under the 100 KB clipping limit, the text
part comes first, list mail offers https and mailto unsubscribes, and
SpamAssassin's local tests score it at most 0.0 (where Debian's `spamassassin`
is installed). Screenshots at 375 and 600 px, light and dark, are written to
var/test/artifacts/mail/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import pytest
from django.conf import settings

from newsroom.models import Story
from subscriptions.emails import Kind, subscriber_email_build
from subscriptions.mail_look import NIGHT_INK, NIGHT_PAPER, NIGHT_TINT, contrast
from subscriptions.models import Subscriber
from subscriptions.sending.content import (
    _HOLES,
    Content,
    alert_content,
    digest_content,
    fill_generic,
)
from subscriptions.sending.mime import (
    MessageTemplate,
    list_headers_personal,
    list_headers_shared,
    manage_url,
    unsubscribe_url,
)
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
SPAMASSASSIN = shutil.which("spamassassin")
CHROMIUM = Path("/usr/bin/chromium")
LOGO = "https://img.news.example.com/masthead.svg"
_LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="72" viewBox="0 0 400 72">'
    '<rect width="400" height="72" fill="#ffffff"/>'
    '<text x="0" y="54" font-family="Georgia, serif" font-size="52" font-weight="bold" '
    'fill="#1b1b1b">The Ledger</text><rect x="372" y="14" width="20" height="44" '
    'fill="#b00020"/></svg>'
)


@pytest.fixture
def newsroom_settings(settings):
    settings.SITE_URL = "https://news.example.com"
    settings.DEFAULT_FROM_EMAIL = "The Ledger <news@news.example.com>"
    settings.NEWSROOM_NAME = "The Ledger"
    settings.NEWSROOM_POSTAL_ADDRESS = "The Ledger, 14 Harbour Street, Bristol BS1 4RN"
    settings.NEWSROOM_UNSUBSCRIBE_MAILTO = "unsubscribe@news.example.com"
    settings.NEWSROOM_MAIL_IMAGE_HOSTS = ["img.news.example.com"]
    settings.NEWSROOM_DIGEST_MAX_PER_CATEGORY = 4
    return settings


def _story(cat, n: int, headline: str, dek: str = "", body: str = "") -> Story:
    return Story.objects.create(
        headline=headline, slug=f"story-{cat.slug}-{n}", category=cat, dek=dek,
        body=body or f"{headline}. The council met on Thursday evening.\n\nMore to follow.",
        status=Story.Status.PUBLISHED, published_at=NOW - timedelta(hours=n),
    )


@pytest.fixture
def news(newsroom_settings):
    politics = category("politics", name="Politics", order=1)
    city = category("city", name="City", order=2)
    culture = category("culture", name="Culture", order=3)
    alert = _story(politics, 1, "River Avon bursts its banks as storm moves east",
                   dek="Residents of six streets near the harbour were told to leave by midnight.",
                   body=(
                       "Water rose above the flood wall at Bathurst Basin shortly after 9pm, "
                       "the Environment Agency said.\n\n"
                       "![The flooded quay at dusk](https://img.news.example.com/quay.jpg)\n\n"
                       "## What we know\n\n- Six streets evacuated\n- Two rest centres open\n\n"
                       "> We have never seen it this high, said a harbour master.\n\n"
                       "![](https://tracker.example.net/pixel.gif)\n\n"
                       "Updates on [our live page](https://news.example.com/live/flood/)."))
    stories = [alert]
    headlines = ["Council approves harbour budget after six-hour meeting",
                 "Mayor names new transport chief", "Opposition calls for flood inquiry",
                 "By-election date set for February", "Parish councils merge in the north",
                 "Cabinet reshuffle: who is in and who is out"]
    stories += [_story(politics, n + 2, h, dek="What it means for the city, in short.")
                for n, h in enumerate(headlines)]
    stories += [_story(city, 3, "New cycle lane opens on Baldwin Street",
                       dek="Two years late, it links the station to the centre."),
                _story(city, 9, "Library hours extended over winter")]
    stories += [_story(culture, 5, "Harbour festival returns in July with a longer programme")]
    reader = subscriber("reader@example.org", categories=[politics, city, culture])
    return {"alert": alert, "stories": stories, "categories": [politics, city, culture],
            "reader": reader}


def _list_message(content: Content, reader: Subscriber) -> bytes:
    """A list message as batches builds it for one reader."""
    unsubscribe = unsubscribe_url(subscriber_id=reader.pk, email=reader.email)
    template = MessageTemplate(
        subject=content.subject, from_email=settings.DEFAULT_FROM_EMAIL, text=content.text,
        html=content.html, headers=list_headers_shared(list_key=content.list_key))
    return template.render(
        to=reader.email, message_id=f"<e1.s{reader.pk}@news.example.com>",
        date=formatdate(NOW.timestamp(), usegmt=True),
        values={"email": reader.email, "unsubscribe_url": unsubscribe,
                "manage_url": manage_url(subscriber_id=reader.pk, email=reader.email)},
        headers=list_headers_personal(unsubscribe_url=unsubscribe))


def _contents(news) -> dict[str, Content]:
    return {
        "alert": alert_content(1, news["alert"]),
        "digest": digest_content(2, NOW - timedelta(days=1), "daily", news["stories"],
                                 news["categories"], issue_date=date(2026, 11, 27)),
    }


@pytest.fixture
def messages(news) -> dict[str, bytes]:
    reader = news["reader"]
    built = {kind: _list_message(content, reader) for kind, content in _contents(news).items()}
    pending = subscriber("new@example.org", status=Subscriber.Status.PENDING,
                         categories=news["categories"][:2])
    built["confirm"] = subscriber_email_build(subscriber=pending, kind=Kind.CONFIRM).message(
    ).as_bytes(linesep="\r\n")
    return built


def parse(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=policy.default)


@pytest.mark.parametrize("kind", ["confirm", "alert", "digest"])
def test_every_message_parses_cleanly_text_first_html_under_the_clip(messages, kind):
    message = parse(messages[kind])
    assert [part.defects for part in message.walk()] == [[] for _ in message.walk()]
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_payload()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert len(html.get_content().encode()) < 100_000
    assert all(len(line) <= 998 for line in messages[kind].split(b"\r\n"))
    body = html.get_content()
    assert '<html lang="en"' in body and 'role="article"' in body
    assert 'name="color-scheme" content="light dark"' in body
    assert "prefers-color-scheme: dark" in body
    assert "The Ledger" in body and "14 Harbour Street" in body and "14 Harbour Street" in (
        text.get_content())
    for tag in re.findall(r"<img\b[^>]*>", body):
        assert re.search(r'\salt="[^"]+"', tag), tag
    assert "tracker.example.net" not in body


@pytest.mark.parametrize("kind", ["alert", "digest"])
def test_list_mail_offers_one_click_and_mailto_unsubscribes(messages, kind):
    message = parse(messages[kind])
    https, mailto = (uri.strip(" <>") for uri in str(message["List-Unsubscribe"]).split(","))
    assert https.startswith("https://news.example.com/unsubscribe/")
    assert mailto == "mailto:unsubscribe@news.example.com?subject=unsubscribe"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The same link is visible in both parts (Gmail's and Yahoo's bulk-sender rules).
    for part in message.get_payload():
        assert https in part.get_content()


def test_digest_has_its_date_contents_and_says_what_it_left_out(messages):
    message = parse(messages["digest"])
    text, html = (part.get_content() for part in message.get_payload())
    for body in (text, html):
        assert "Friday 27 November 2026" in body
        assert "In this issue" in body
    assert 'href="#section-politics"' in html and 'id="section-politics"' in html
    assert "Politics</a> · 7 stories" in html  # 4 shown + 3 more
    assert "And 3 more in Politics" in html and "And 3 more in Politics" in text
    assert 'href="https://news.example.com/categories/politics/"' in html
    assert "City</a> · 2 stories" in html and "more in City" not in html


def test_every_colour_pair_in_the_layout_reads_at_4_5_to_1(news):
    """Text colours of the layout on the papers they sit on, light and dark."""
    html = _contents(news)["alert"].html
    light = set(re.findall(r"(?<![-\w])color:\s*(#[0-9a-f]{6})", html.split("</head>")[1]))
    assert light, "no text colours found"
    for colour in light:
        assert contrast(colour, "#ffffff") >= 4.5 or colour == "#ffffff", colour  # white: buttons
        assert colour == "#ffffff" or contrast(colour, "#f4f4f1") >= 4.5, colour
    assert contrast("#ffffff", settings.NEWSROOM_BRAND_COLOR) >= 4.5  # button text
    dark_rules = html.split("prefers-color-scheme: dark")[1].split("@media")[0]
    for colour in set(re.findall(r"(?<![-\w])color:\s*(#[0-9a-f]{6})", dark_rules)):
        assert contrast(colour, NIGHT_PAPER) >= 4.5, colour
        assert contrast(colour, NIGHT_TINT) >= 4.5, colour  # the "in this issue" box
    assert contrast(NIGHT_INK, NIGHT_PAPER) >= 4.5


@pytest.mark.slow
@pytest.mark.skipif(SPAMASSASSIN is None, reason="spamassassin is not installed "
                    "(apt-get install spamassassin; CI installs it)")
@pytest.mark.parametrize("kind", ["confirm", "alert", "digest"])
def test_spamassassin_local_tests_score_at_most_zero(messages, kind):
    result = subprocess.run([SPAMASSASSIN, "--local", "--test-mode"], input=messages[kind],
                            capture_output=True, timeout=120, check=False)
    report = result.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: \w+, score=(-?[0-9.]+)", report, re.MULTILINE)
    assert status, report[-2000:]
    rules = re.findall(r"^\s*(-?[0-9.]+) (\w+)", report.split("Content analysis details")[-1],
                       re.MULTILINE)
    assert float(status.group(1)) <= 0.0, f"{kind}: score {status.group(1)}, rules {rules}"


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason=f"{CHROMIUM} is missing (apt-get install chromium; CI installs it)")
def test_screenshots_at_375_and_600_px_light_and_dark(news, newsroom_settings, monkeypatch):
    """Writes var/test/artifacts/mail/<kind>-<width>-<scheme>.png, and checks that
    nothing is wider than the window and that dark mode really is dark."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    newsroom_settings.NEWSROOM_LOGO_URL = LOGO
    pages = {kind: fill_generic(content.html) for kind, content in _contents(news).items()}
    pending = subscriber("new@example.org", status=Subscriber.Status.PENDING)
    confirm = subscriber_email_build(subscriber=pending, kind=Kind.CONFIRM)
    pages["confirm"] = confirm.alternatives[0][0]
    assert all(hole not in page for page in pages.values() for hole in _HOLES.values())
    folder = Path(settings.DATA_DIR) / "artifacts" / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            for scheme in ("light", "dark"):
                for width in (375, 600):
                    context = browser.new_context(
                        viewport={"width": width, "height": 800}, color_scheme=scheme)
                    page = context.new_page()
                    page.route("**/*", _serve_images)
                    for kind, html in pages.items():
                        page.set_content(html, wait_until="load")
                        overflow = page.evaluate(
                            "document.documentElement.scrollWidth - window.innerWidth")
                        assert overflow <= 0, f"{kind} at {width}px is {overflow}px too wide"
                        background = page.evaluate(
                            "getComputedStyle(document.querySelector('.sheet')).backgroundColor")
                        assert (background == "rgb(255, 255, 255)") == (scheme == "light")
                        page.screenshot(path=str(folder / f"{kind}-{width}-{scheme}.png"),
                                        full_page=True)
                    context.close()
        finally:
            browser.close()


def _serve_images(route) -> None:
    """The logo and the story's photo, served locally (the test has no network)."""
    url = route.request.url
    if url == LOGO:
        route.fulfill(status=200, content_type="image/svg+xml", body=_LOGO_SVG)
    elif url.startswith("https://img.news.example.com/"):
        route.fulfill(status=200, content_type="image/svg+xml", body=(
            '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="675">'
            '<rect width="1200" height="675" fill="#5d7386"/><rect y="420" width="1200" '
            'height="255" fill="#2f4558"/><circle cx="950" cy="160" r="70" fill="#e8c26a"/>'
            '</svg>'))
    elif url.startswith(("about:", "data:")):
        route.continue_()
    else:
        route.abort()
