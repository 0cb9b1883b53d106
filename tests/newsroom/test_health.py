"""/healthz answers without touching anything; /readyz says pass or fail to anyone and
names the dependency that is down only to a caller with the metrics token."""

import pytest

from newsroom import embedded_redis
from newsroom.ops import health
from tests.settings_helpers import free_port

TOKEN = "metrics-token-for-tests-0123456789"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


@pytest.fixture
def token(settings):
    settings.NEWSROOM_METRICS_TOKEN = TOKEN


def test_healthz_answers_without_database_or_broker(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # would fail if touched
    response = client.get("/healthz")  # no django_db mark: a query would raise
    assert response.status_code == 200
    assert response.content == b"ok\n"
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_ok_when_database_and_broker_answer(client, token):
    response = client.get("/readyz", **BEARER)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_it_is_unreachable(client, settings, token):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    response = client.get("/readyz", **BEARER)
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"]
    assert body["checks"]["database"]["ok"] is True
    assert "Connect" in body["checks"]["broker"]["error"]  # redis ConnectionError, refused


@pytest.mark.django_db
def test_readyz_is_503_naming_the_database_when_it_is_unreachable(client, monkeypatch, tmp_path,
                                                                   token):
    real = health.database_params

    def unreachable(timeout: int) -> dict:
        params = real(timeout)
        if params["ENGINE"].endswith("sqlite3"):
            params["NAME"] = str(tmp_path / "missing-folder" / "db.sqlite3")
        else:
            params["HOST"], params["PORT"] = "127.0.0.1", str(free_port())
        return params

    monkeypatch.setattr(health, "database_params", unreachable)
    response = client.get("/readyz", **BEARER)
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["database"]
    assert "OperationalError" in body["checks"]["database"]["error"]
    assert body["checks"]["broker"]["ok"] is True


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [
    {}, {"HTTP_AUTHORIZATION": "Bearer wrong-token"}, {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"},
])
def test_readyz_tells_anyone_else_pass_or_fail_only(client, settings, token, headers):
    port = free_port()
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
    failing = client.get("/readyz", **headers)
    assert failing.status_code == 503
    assert failing.json() == {"status": "unavailable"}
    assert str(port).encode() not in failing.content

    settings.CELERY_BROKER_URL = embedded_redis.kombu_url(settings.REDIS_URL)
    assert client.get("/readyz", **headers).json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_gives_no_details_while_no_token_is_configured(client, settings):
    settings.NEWSROOM_METRICS_TOKEN = ""
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    assert client.get("/readyz", HTTP_AUTHORIZATION="Bearer ").json() == {
        "status": "unavailable"}


def test_probes_accept_only_get_and_head(client):
    assert client.post("/healthz").status_code == 405
    assert client.head("/healthz").status_code == 200


def test_probes_are_not_redirected_to_https(client, settings):
    """A load balancer probing over http must reach the check, not a redirect."""
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 301
