"""The Celery entry point of an admin import: a job id in, `job_run`, nothing else."""

from __future__ import annotations

from celery import shared_task

from subscriptions.importing.jobs import job_run

IMPORT_TIME_LIMIT = 3600  # seconds; a million rows take about two minutes on PostgreSQL


@shared_task(name="subscriptions.subscribers_import_run",  # queue "default"
             time_limit=IMPORT_TIME_LIMIT, soft_time_limit=IMPORT_TIME_LIMIT - 60)
def subscribers_import_run(job_id: str) -> str:
    return job_run(job_id)
