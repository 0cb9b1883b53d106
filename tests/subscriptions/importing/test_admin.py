"""The admin's import: upload, preview (nothing saved), confirm, report."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from subscriptions.importing import jobs
from subscriptions.models import Subscriber
from tests.subscriptions import factories as f

SAMPLES = Path(__file__).parent / "samples"
pytestmark = pytest.mark.django_db


@pytest.fixture
def eager():
    from newsroom.celery import app

    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = False, False


@pytest.fixture
def importer(client):
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_subscriber", "import_subscriber"]))
    client.force_login(user)
    return client


def audience_zip() -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member in sorted((SAMPLES / "mailchimp").iterdir()):
            archive.write(member, member.name)
    buffer.seek(0)
    buffer.name = "audience.zip"
    return buffer


def test_upload_preview_confirm(importer, eager, settings, tmp_path):
    settings.NEWSROOM_IMPORT_DIR = tmp_path
    for slug in ("policy", "morning", "sport"):
        f.category(slug)
    changelist = importer.get(reverse("admin:subscriptions_subscriber_changelist"))
    assert b"Import a list" in changelist.content

    response = importer.post(reverse("admin:subscriptions_subscriber_import"), {
        "file": audience_zip(), "format": "mailchimp",
        "mapping": "Policy Watchers=policy\nMorning Brief=morning",
    })
    assert response.status_code == 302
    page = importer.get(response["Location"])
    text = page.content.decode()
    assert "Nothing has been saved yet." in text
    assert "Sports Desk" in text  # unmapped, shown
    assert "bob@example.org appears on an earlier line" in text
    assert 'data-count="new">3<' in text
    assert Subscriber.objects.count() == 0

    job_id = response["Location"].rstrip("/").rsplit("/", 1)[1]
    status = importer.get(reverse("admin:subscriptions_subscriber_import_status", args=[job_id]))
    assert status.json()["state"] == "done" and status.json()["percent"] == 100

    confirm = reverse("admin:subscriptions_subscriber_import_confirm", args=[job_id])
    assert importer.post(confirm).status_code == 302
    assert importer.post(confirm).status_code == 302  # a second click imports nothing more
    page = importer.get(response["Location"]).content.decode()
    assert "Import finished." in page
    assert Subscriber.objects.filter(status="active").count() == 3
    assert Subscriber.objects.count() == 6
    assert not list(tmp_path.iterdir())  # the upload is gone once imported


def test_unknown_topic_in_the_mapping_is_a_form_error(importer, settings, tmp_path):
    settings.NEWSROOM_IMPORT_DIR = tmp_path
    response = importer.post(reverse("admin:subscriptions_subscriber_import"), {
        "file": audience_zip(), "format": "mailchimp", "mapping": "Policy Watchers=nope"})
    assert response.status_code == 200
    assert "No topic with the slug" in response.content.decode()


def test_running_page_polls_and_refreshes_without_script(importer, settings, tmp_path):
    settings.NEWSROOM_IMPORT_DIR = tmp_path
    user = User.objects.get(username="ops")
    job = jobs.job_create(path=str(tmp_path / "x.csv"), filename="x.csv", format="csv",
                          user_id=user.pk)
    page = importer.get(reverse("admin:subscriptions_subscriber_import_job", args=[job.id]))
    text = page.content.decode()
    assert 'http-equiv="refresh"' in text and "import_progress.js" in text
    assert "<progress" in text and "waiting for a worker" in text


def test_needs_the_import_permission(client, settings):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_subscriber"))
    client.force_login(user)
    assert client.get(reverse("admin:subscriptions_subscriber_import")).status_code == 403
    changelist = client.get(reverse("admin:subscriptions_subscriber_changelist"))
    assert b"Import a list" not in changelist.content


def test_someone_elses_import_is_not_found(importer):
    job = jobs.job_create(path="/nonexistent", filename="x.csv", format="csv", user_id=None)
    url = reverse("admin:subscriptions_subscriber_import_job", args=[job.id])
    assert importer.get(url).status_code == 404
