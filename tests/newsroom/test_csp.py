"""A Content-Security-Policy on every page, strict wherever no email HTML is shown."""

import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from newsroom.middleware import CONTENT_SECURITY_POLICY
from tests.newsroom.test_ops_page import OPS_URL
from tests.subscriptions.factories import subscriber

ROOT = Path(__file__).resolve().parents[2]
STRICT = "; ".join(f"{name} {value}" for name, value in CONTENT_SECURITY_POLICY.items())


def test_the_strict_policy_allows_no_inline_script_or_style():
    assert "unsafe" not in STRICT
    assert CONTENT_SECURITY_POLICY["script-src"] == "'self'"
    assert CONTENT_SECURITY_POLICY["frame-ancestors"] == "'none'"


@pytest.mark.django_db
def test_the_signup_page_renders_with_the_strict_policy(client):
    response = client.get(reverse("subscriptions:signup"))
    assert response.status_code == 200
    assert response["Content-Security-Policy"] == STRICT
    assert b'<link rel="stylesheet"' in response.content


@pytest.mark.django_db
def test_the_admin_changelist_renders_with_the_strict_policy(client):
    subscriber("ann@example.com")
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    for path in (reverse("admin:subscriptions_subscriber_changelist"),
                 reverse("admin:newsroom_story_add"), reverse("admin:index"), OPS_URL):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response["Content-Security-Policy"] == STRICT, path


def test_probes_and_errors_carry_it_too(client):
    assert client.get("/healthz")["Content-Security-Policy"] == STRICT


@pytest.mark.django_db
def test_a_404_carries_it(client):
    assert client.get("/no-such-page/")["Content-Security-Policy"] == STRICT


INLINE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.I)


def test_our_page_templates_have_no_inline_script_or_style():
    """Email templates excepted (mail needs inline CSS; they are shown only under the
    relaxed policy); everything else keeps its CSS and JS in static files."""
    offenders = []
    for path in ROOT.glob("*/templates/**/*.html"):
        relative = path.relative_to(ROOT).as_posix()
        if "/subscriptions/emails/" in relative or "/subscriptions/editions/" in relative:
            continue
        offenders += [f"{relative}: {m.group(0)}" for m in INLINE.finditer(path.read_text())]
    assert not offenders
