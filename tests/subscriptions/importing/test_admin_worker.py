"""The admin's import through a real Celery worker: preview, confirm, progress, report."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from subscriptions.models import ConsentRecord, Subscriber
from tests.subscriptions import factories as f
from tests.subscriptions.importing.test_admin import audience_zip

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def wait_for(client, job_id: str, phase: str, timeout: float = 60) -> dict:
    url = reverse("admin:subscriptions_subscriber_import_status", args=[job_id])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(url).json()
        if status["phase"] == phase and status["state"] in ("done", "failed"):
            return status
        time.sleep(0.3)
    raise AssertionError(f"the {phase} did not finish: {status}")


def test_import_runs_on_the_worker(client, celery_worker):
    for slug in ("policy", "morning", "sport"):
        f.category(slug)
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_subscriber", "import_subscriber"]))
    client.force_login(user)

    response = client.post(reverse("admin:subscriptions_subscriber_import"), {
        "file": audience_zip(), "format": "mailchimp",
        "mapping": "Policy Watchers=policy\nMorning Brief=morning\nSports Desk=sport"})
    job_id = response["Location"].rstrip("/").rsplit("/", 1)[1]
    assert wait_for(client, job_id, "preview")["state"] == "done"
    assert Subscriber.objects.count() == 0
    assert "Nothing has been saved yet." in client.get(response["Location"]).content.decode()

    client.post(reverse("admin:subscriptions_subscriber_import_confirm", args=[job_id]))
    status = wait_for(client, job_id, "import")
    assert (status["state"], status["percent"]) == ("done", 100)
    assert Subscriber.objects.filter(status="active").count() == 3
    assert ConsentRecord.objects.filter(method="import").count() == 8
    assert "Import finished." in client.get(response["Location"]).content.decode()
