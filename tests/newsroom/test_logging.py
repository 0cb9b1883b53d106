"""Edition state changes and failed deliveries log one line each, with their ids,
readable as JSON (LOG_FORMAT=json) and as text."""

import json
import logging
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from subscriptions.models import Delivery, Edition
from subscriptions.sending import batches, dispatch, steering
from subscriptions.sending.transports.base import Result
from tests.subscriptions.factories import subscriber

pytestmark = pytest.mark.django_db

EDITIONS_LOGGER = "subscriptions.sending"


def as_json(record: logging.LogRecord) -> dict:
    formatter = import_string(settings.LOGGING["formatters"]["json"]["()"])()
    return json.loads(formatter.format(record))


def as_text(record: logging.LogRecord) -> str:
    return logging.Formatter(settings.LOGGING["formatters"]["text"]["format"]).format(record)


def edition(**fields) -> Edition:
    fields.setdefault("key", f"test:{uuid.uuid4().hex[:12]}")
    fields.setdefault("kind", Edition.Kind.ALERT)
    fields.setdefault("scheduled_at", timezone.now())
    return Edition.objects.create(**fields)


def state_records(caplog, state: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "state", None) == state]


def test_a_state_change_is_one_json_line_with_the_edition_id(caplog):
    sending = edition(status=Edition.Status.SENDING, started_at=timezone.now())
    with caplog.at_level(logging.INFO, logger=EDITIONS_LOGGER):
        steering.edition_pause(edition=sending)
    [record] = state_records(caplog, "paused")
    line = as_json(record)
    assert line["edition_id"] == sending.pk
    assert line["edition_key"] == sending.key
    assert line["state"] == "paused"
    assert line["level"] == "INFO"
    assert f"edition #{sending.pk} paused" in as_text(record)


def test_cancel_logs_how_many_were_skipped(caplog):
    planned = edition()
    with caplog.at_level(logging.INFO, logger=EDITIONS_LOGGER):
        steering.edition_cancel(edition=planned)
    [record] = state_records(caplog, "cancelled")
    line = as_json(record)
    assert (line["edition_id"], line["skipped"]) == (planned.pk, 0)


def test_an_expired_alert_logs_an_error_with_its_id(caplog):
    stale = edition(scheduled_at=timezone.now() - timedelta(
        seconds=settings.NEWSROOM_ALERT_STALE_AFTER + 60))
    with caplog.at_level(logging.INFO, logger=EDITIONS_LOGGER):
        assert dispatch.edition_dispatch(edition_id=stale.pk) == 0
    [record] = state_records(caplog, "expired")
    assert record.levelno == logging.ERROR
    assert as_json(record)["edition_id"] == stale.pk
    assert f"edition #{stale.pk} expired" in as_text(record)


def test_failed_deliveries_log_the_edition_and_delivery_ids(caplog):
    sending = edition(status=Edition.Status.SENDING, started_at=timezone.now())
    rows = [Delivery.objects.create(edition=sending, subscriber=subscriber(),
                                    status=Delivery.Status.SENDING) for _ in range(2)]
    results = [Result(row.pk, "failed", "550 5.1.1 no such user") for row in rows]
    with caplog.at_level(logging.WARNING, logger="subscriptions.sending.batches"):
        batches._record_results(sending, results, batches.BatchReport())
    [record] = [r for r in caplog.records if hasattr(r, "delivery_ids")]
    line = as_json(record)
    assert line["edition_id"] == sending.pk
    assert sorted(line["delivery_ids"]) == sorted(row.pk for row in rows)
    assert line["error"] == "550 5.1.1 no such user"
    assert f"edition #{sending.pk}: 2 deliveries failed" in as_text(record)
