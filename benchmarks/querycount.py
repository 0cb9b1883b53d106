"""SQL query counting for Celery worker processes (benchmarks only).

Benchmark workers run the app of benchmarks/counting_worker.py, which calls
`connect()`: every SQL statement a task runs through Django's connection
(execute and executemany, raw cursors included) is counted, and at the end of
each task the count is added to the Redis hash KEY with the fields `queries`,
`tasks`, `queries:<task name>` and `tasks:<task name>`. benchmarks/run.py reads
and resets it around each scenario. No product module imports this one.

Not counted: transaction control (BEGIN/COMMIT issued by the driver itself),
connection set-up (SQLite PRAGMAs, PostgreSQL's health-check ping) and anything
outside a task.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

KEY = "newsroom:querycount"

_count = 0
_client = None


def _counting_wrapper(execute, sql, params, many, context):
    global _count
    _count += 1
    return execute(sql, params, many, context)


def _install(**_kwargs) -> None:
    """Put the wrapper on this process's (this thread's) default connection, once."""
    from django.db import connections

    wrappers = connections["default"].execute_wrappers
    if _counting_wrapper not in wrappers:
        wrappers.insert(0, _counting_wrapper)


def _task_prerun(**_kwargs) -> None:
    global _count
    _install()
    _count = 0


def _redis():
    global _client
    if _client is None:
        import redis
        from django.conf import settings

        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    return _client


def _task_postrun(task=None, **_kwargs) -> None:
    global _count
    queries, _count = _count, 0
    name = getattr(task, "name", "?")
    try:
        pipe = _redis().pipeline(transaction=False)
        pipe.hincrby(KEY, "queries", queries)
        pipe.hincrby(KEY, "tasks", 1)
        pipe.hincrby(KEY, f"queries:{name}", queries)
        pipe.hincrby(KEY, f"tasks:{name}", 1)
        pipe.execute()
    except Exception as exc:
        logger.warning("query count not recorded: %s", exc)


def connect() -> None:
    """Count in every pool process: the wrapper goes on each new process's
    connection, and each task's count is recorded when it ends."""
    from celery import signals

    signals.worker_process_init.connect(_install, weak=False)
    signals.task_prerun.connect(_task_prerun, weak=False)
    signals.task_postrun.connect(_task_postrun, weak=False)
