"""The quick-start command really runs web, worker, beat and Flower, and stops them."""

import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from celery import Celery

from newsroom import embedded_redis
from tests.settings_helpers import free_port, process_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_runall_serves_and_stops_cleanly(tmp_path):
    data = tmp_path / "data"
    port, flower_port = free_port(), free_port()
    env = process_env(NEWSROOM_DATA_DIR=str(data))
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runall", "--port", str(port),
         "--flower-port", str(flower_port), "--concurrency", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    log = lambda: "".join(output)  # noqa: E731
    try:
        site = f"http://localhost:{port}"

        def index():
            try:
                response = requests.get(site + "/", timeout=10)
            except requests.ConnectionError:
                assert proc.poll() is None, log()
                return None
            return response if response.status_code == 200 else None

        page = wait_for(index, 120, "the web server")
        assert "US and China Weigh First Official AI Risk Talks" in page.text  # seeds imported
        # SITE_URL is unset: absolute links follow --port, in pages and in mail.
        assert f'<link rel="canonical" href="{site}/">' in page.text
        assert "Links in mail point at" not in log()

        login = re.search(r"user: editor\s+password: (\S+)", log())
        assert login, log()
        session = requests.Session()
        session.get(f"{site}/admin/login/", timeout=5)
        response = session.post(
            f"{site}/admin/login/?next=/admin/",
            data={"username": "editor", "password": login.group(1),
                  "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            headers={"Referer": f"{site}/admin/login/"}, timeout=5,
        )
        assert response.url.endswith("/admin/") and "Stories" in response.text

        app = Celery(broker=embedded_redis.kombu_url(embedded_redis.url(data)))
        replies = wait_for(lambda: app.control.ping(timeout=1), 60, "a worker to answer ping")
        wait_for(lambda: len(app.control.ping(timeout=1)) >= 2, 60, "both workers")
        names = {name.split("@")[0] for reply in app.control.ping(timeout=1) for name in reply}
        assert {"worker", "alerts"} <= names, replies

        flower = f"http://127.0.0.1:{flower_port}/"
        credentials = (data / "flower-credentials").read_text().strip().split(":", 1)
        wait_for(lambda: _get(flower, credentials), 60, "Flower")
        assert requests.get(flower, timeout=5).status_code == 401  # auth is on
        # The password is on no command line (`ps` shows those to every local user).
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert credentials[1].encode() not in cmdline.read_bytes(), cmdline
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # gone meanwhile
        signup_mail_check(site, data / "outbox")
        for name in ("web", "alerts", "worker", "beat", "flower"):
            assert f"{name} started" in log()
        assert " stopped (rc=" not in log(), log()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    reader.join(timeout=5)
    assert proc.returncode == 0, log()
    assert not embedded_redis.is_running(data)
    with pytest.raises(requests.ConnectionError):
        requests.get(site + "/", timeout=2)


def _get(url, credentials):
    try:
        return requests.get(url, auth=tuple(credentials), timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def signup_mail_check(site: str, outbox: Path) -> None:
    """A sign-up through the web server gets its confirmation from a worker, and
    the link in it points where runall serves."""
    session = requests.Session()
    form = session.get(f"{site}/subscribe/", timeout=10).text
    topic = re.search(r'name="categories" value="(\d+)"', form).group(1)
    response = session.post(f"{site}/subscribe/", timeout=10, headers={"Referer": site}, data={
        "csrfmiddlewaretoken": session.cookies["csrftoken"], "email": "reader@example.com",
        "categories": topic, "frequency": "daily", "digest_hour": "7", "timezone": "UTC",
        "wants_alerts": "yes",
    })
    assert response.status_code == 200, response.text[:500]
    [eml] = wait_for(lambda: list(outbox.glob("*.eml")), 60, "the confirmation in the outbox")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    assert re.search(re.escape(site) + r"/subscribe/confirm/\S+", text), text
    assert "localhost:8000" not in text
