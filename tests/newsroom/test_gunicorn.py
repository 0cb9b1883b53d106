"""gunicorn believes X-Forwarded-Proto only when a proxy is configured."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.settings_helpers import free_port, process_env

ROOT = Path(__file__).resolve().parents[2]


def https_redirect_for_forwarded_https(tmp_path, *, config: bool, **env: str) -> bool:
    """Whether a plain-http request from 127.0.0.1 claiming X-Forwarded-Proto: https
    is still redirected to https, i.e. the claim was not believed."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "newsroom.wsgi", f"--bind=127.0.0.1:{port}",
            "--workers=1"]
    if config:
        argv.insert(3, "--config=python:newsroom.gunicorn_conf")
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL,  # no ./gunicorn.conf.py
                            stderr=subprocess.DEVNULL, env=process_env(
        PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="newsroom.settings",
        DJANGO_SECRET_KEY="s" * 60, SITE_URL=f"http://localhost:{port}",
        NEWSROOM_DATA_DIR=str(tmp_path), DJANGO_SECURE_SSL_REDIRECT="1", **env))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5,
                                        allow_redirects=False,
                                        headers={"X-Forwarded-Proto": "https",
                                                 "Host": f"localhost:{port}"})
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "gunicorn died"
                time.sleep(0.2)
        assert response.status_code in {301, 404}, response.status_code  # 404: metrics off
        return response.status_code == 301
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_gunicorn_believes_no_forwarded_proto_unless_a_proxy_is_configured(tmp_path):
    assert not https_redirect_for_forwarded_https(tmp_path, config=False)  # gunicorn's default
    assert https_redirect_for_forwarded_https(tmp_path, config=True)
    # Configured: Django's switch, or gunicorn's own list of proxies.
    assert not https_redirect_for_forwarded_https(tmp_path, config=True,
                                                  DJANGO_BEHIND_TLS_PROXY="1")
    assert not https_redirect_for_forwarded_https(tmp_path, config=True,
                                                  FORWARDED_ALLOW_IPS="127.0.0.1")


def test_runall_starts_gunicorn_with_that_configuration():
    from newsroom.management.commands.runall import procfile

    web = procfile(host="127.0.0.1", port=8000, flower_port=5555, concurrency=1)["web"]
    assert "--config=python:newsroom.gunicorn_conf" in web
