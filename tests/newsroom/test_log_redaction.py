"""No log line holds a working link: the token segment of every token-carrying
path is replaced by <token> in Django's logging and gunicorn's access log."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.test import Client, RequestFactory
from django.urls import reverse

from newsroom.logging import JsonFormatter, RedactTokens, redact_tokens
from subscriptions.tokens import Purpose, token_make
from tests.settings_helpers import free_port, process_env

ROOT = Path(__file__).resolve().parents[2]
TOKEN = token_make(subscriber_id=42, email="ann@example.com", purpose=Purpose.UNSUBSCRIBE)
SECRET_PART = TOKEN.split(":")[-1]  # the signature: what makes the link work


def token_routes() -> list[str]:
    """Every URL name in subscriptions/urls.py that takes a token."""
    from subscriptions import urls

    return [f"{urls.app_name}:{p.name}" for p in urls.urlpatterns
            if "<str:token>" in str(p.pattern)]


def test_every_token_route_is_redacted():
    routes = token_routes()
    assert {"subscriptions:unsubscribe", "subscriptions:confirm", "subscriptions:manage",
            "subscriptions:edition_view"} <= set(routes)
    for name in routes:
        path = reverse(name, args=[TOKEN])
        redacted = redact_tokens(f'GET {path}?x=1 HTTP/1.1 "https://news.example.com{path}"')
        assert SECRET_PART not in redacted, name
        assert "<token>" in redacted


def test_other_paths_are_left_alone():
    for text in ("/subscribe/", "/subscribe/check-your-inbox/", "/stories/unsubscribe-now/",
                 "/preferences/", "/admin/subscriptions/subscriber/?q=ann"):
        assert redact_tokens(text) == text


@pytest.fixture
def console():
    """The root handler settings.LOGGING configures, writing into a buffer."""
    [handler] = [h for h in logging.getLogger().handlers
                 if any(isinstance(f, RedactTokens) for f in h.filters)]
    buffer = io.StringIO()
    old = handler.setStream(buffer)
    yield buffer
    handler.setStream(old)


@pytest.mark.django_db
def test_django_request_log_lines_hold_no_token(console):
    Client().get(f"/unsubscribe/{TOKEN}x/")  # a 400 page: django.request logs the path
    Client().get(f"/preferences/{TOKEN}/no-such-page/")  # a 404
    text = console.getvalue()
    assert "Bad Request: /unsubscribe/<token>/" in text
    assert "Not Found: /preferences/<token>/no-such-page/" in text
    assert SECRET_PART not in text


def test_json_lines_hold_no_token_in_extras_either():
    request = RequestFactory().get(f"/unsubscribe/{TOKEN}/")
    record = logging.makeLogRecord({"name": "django.request", "levelno": logging.WARNING,
                                    "levelname": "WARNING", "msg": "Bad Request: %s",
                                    "args": (request.path,), "request": request,
                                    "url": f"https://news.example.com{request.path}"})
    assert RedactTokens().filter(record)
    line = JsonFormatter().format(record)
    assert SECRET_PART not in line
    entry = json.loads(line)
    assert entry["message"] == "Bad Request: /unsubscribe/<token>/"
    assert entry["url"] == "https://news.example.com/unsubscribe/<token>/"
    assert "/unsubscribe/<token>/" in entry["request"]  # str(request) names the path


def test_gunicorn_logger_redacts_its_access_and_error_logs():
    from gunicorn.config import Config

    from newsroom import gunicorn_conf

    logger = gunicorn_conf.RedactingLogger(Config())
    logger.setup(logger.cfg)  # a config reload: still one filter each
    for log in (logger.access_log, logger.error_log):
        assert sum(isinstance(f, RedactTokens) for f in log.filters) == 1


@pytest.mark.slow
def test_gunicorn_access_log_holds_no_token(tmp_path):
    port, access_log = free_port(), tmp_path / "access.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config=python:newsroom.gunicorn_conf",
         "newsroom.wsgi", f"--bind=127.0.0.1:{port}", "--workers=1",
         f"--access-logfile={access_log}"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=process_env(PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="newsroom.settings",
                        DJANGO_SECRET_KEY="s" * 60, SITE_URL=f"http://localhost:{port}",
                        NEWSROOM_DATA_DIR=str(tmp_path)))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/unsubscribe/{TOKEN}/", timeout=5,
                             headers={"Host": f"localhost:{port}",
                                      "Referer": f"http://localhost:{port}/preferences/{TOKEN}/"})
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "gunicorn died"
                time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not access_log.exists() or "unsubscribe" not in access_log.read_text():
            assert time.monotonic() < deadline, "no access line written"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = access_log.read_text()
    assert re.search(r'"GET /unsubscribe/<token>/ HTTP/1\.1"', text), text
    assert "/preferences/<token>/" in text  # the Referer
    assert SECRET_PART not in text
