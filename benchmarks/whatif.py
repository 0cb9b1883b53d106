# ruff: noqa: S608
"""What-if experiments: proposed engine changes, tried on the benchmark's workers only.

The engine is owned by other engineers; the benchmark does not change it. To
put a number on a proposed change before anyone makes it, run

    .venv/bin/python benchmarks/run.py ... --whatif esp-session,record-values

and the worker processes (only they, only in that run) get the patches below
applied at start (worker_process_init, from benchmarks/settings.py). Each patch
is the smallest stand-in for the proposal in benchmarks/README.md, not
production code: the numbers say what the change is worth.

Four earlier experiments (SSL context per session, one SMTP session per batch,
contents kept across batches, deliveries ordered by content) were adopted by the
engine in commits ab4a47d and 1ad827b and are no longer here.

  esp-session    one HTTP session per batch for the ESP calls (today anymail opens and
                 closes a requests session per message.send(), i.e. per API call)
  record-values  record a batch's per-message ids (an ESP's id per call, an MTA's queue
                 id per message) with one UPDATE ... FROM (VALUES ...) instead of
                 Django's bulk_update, which builds a CASE WHEN per row in Python
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)
PATCHES = ("esp-session", "record-values")


def _esp_session() -> None:
    from subscriptions import transports

    original = transports._send_esp_batches

    def patched(connection, *args, **kwargs):
        if getattr(connection, "session", None) is None:
            connection.open()  # send() then leaves it open for the next call
        return original(connection, *args, **kwargs)

    transports._send_esp_batches = patched


def _record_values() -> None:
    from django.db import connection
    from django.db.models.query import QuerySet

    from subscriptions.models import Delivery

    original = QuerySet.bulk_update
    fields_sent = {"status", "sent_at", "claim", "last_error", "message_id"}

    def bulk_update(self, objs, fields, batch_size=None):
        objs = list(objs)
        if self.model is not Delivery or set(fields) != fields_sent or not objs:
            return original(self, objs, fields, batch_size=batch_size)
        table = Delivery._meta.db_table
        rows = ", ".join(["(%s, %s)"] * len(objs))
        params = [Delivery.Status.SENT,
                  connection.ops.adapt_datetimefield_value(objs[0].sent_at)]
        for obj in objs:
            params += [obj.id, obj.message_id]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET status = %s, sent_at = %s, claim = NULL, "
                "last_error = '', message_id = v.mid FROM (SELECT column1 AS did, "
                f"column2 AS mid FROM (VALUES {rows}) AS t) AS v WHERE {table}.id = v.did",
                params)
            return cursor.rowcount

    QuerySet.bulk_update = bulk_update


_APPLY = {"esp-session": _esp_session, "record-values": _record_values}


_applied: set[str] = set()


def apply(**_kwargs) -> None:
    names = [n for n in os.environ.get("NEWSROOM_BENCH_WHATIF", "").split(",")
             if n and n not in _applied]
    for name in names:
        _APPLY[name]()
        _applied.add(name)
    if names:
        logger.warning("benchmark what-if patches applied: %s", ", ".join(names))


def connect() -> None:
    """Apply in every prefork pool process as it starts."""
    from celery import signals

    signals.worker_process_init.connect(apply, weak=False)
