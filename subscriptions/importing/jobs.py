"""An import started from the admin: its state in the cache, polled by the page.

Upload → a dry run (the preview) → a person confirms → the import, each run by
a Celery task that writes its progress here after every chunk. The cache is the
right home: the state is only needed while someone watches, and it expires.
The uploaded file lies in DATA_DIR/imports/ until the import ends (workers and
web share DATA_DIR in this deployment).
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache

from subscriptions.importing.formats import Source
from subscriptions.importing.service import (
    ImportOptions,
    ImportRefused,
    ImportReport,
    subscribers_import,
)

JOB_TTL = 24 * 3600  # seconds a finished or abandoned job is kept
PREVIEW, IMPORT = "preview", "import"
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


def upload_folder() -> Path:
    folder = Path(getattr(settings, "NEWSROOM_IMPORT_DIR", settings.DATA_DIR / "imports"))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


@dataclass
class ImportJob:
    id: str
    path: str
    filename: str
    format: str
    mapping: dict[str, str] = field(default_factory=dict)
    source_list: str = ""
    require_confirmation: bool = False
    user_id: int | None = None
    phase: str = PREVIEW
    state: str = QUEUED
    done_bytes: int = 0
    total_bytes: int = 1
    rows: int = 0
    report: dict[str, Any] | None = None
    preview_report: dict[str, Any] | None = None
    error: str = ""

    @property
    def percent(self) -> int:
        if self.state == DONE:
            return 100
        return min(99, 100 * self.done_bytes // max(1, self.total_bytes))

    @property
    def running(self) -> bool:
        return self.state in (QUEUED, RUNNING)

    def options(self) -> ImportOptions:
        return ImportOptions(format=self.format, mapping=self.mapping,
                             source_list=self.source_list,
                             require_confirmation=self.require_confirmation,
                             dry_run=self.phase == PREVIEW)

    def get_report(self) -> ImportReport | None:
        return ImportReport.from_dict(self.report) if self.report else None

    def get_preview_report(self) -> ImportReport | None:
        return ImportReport.from_dict(self.preview_report) if self.preview_report else None


def _key(job_id: str) -> str:
    return f"subscriber-import:{job_id}"


def job_save(job: ImportJob) -> None:
    cache.set(_key(job.id), asdict(job), JOB_TTL)


def job_get(job_id: str) -> ImportJob | None:
    data = cache.get(_key(job_id))
    return ImportJob(**data) if data else None


def job_create(**fields: Any) -> ImportJob:
    job = ImportJob(id=secrets.token_urlsafe(12), **fields)
    job_save(job)
    return job


def job_claim_import(job: ImportJob) -> bool:
    """Move a previewed job to its import, once: a second click finds it claimed."""
    if job.phase != PREVIEW or job.state != DONE:
        return False
    if not cache.add(f"{_key(job.id)}:confirmed", 1, JOB_TTL):
        return False
    job.phase, job.state, job.done_bytes = IMPORT, QUEUED, 0
    job.preview_report, job.report = job.report, None
    job_save(job)
    return True


def job_run(job_id: str) -> str:
    """Run the job's current phase (the task's body); its final state."""
    job = job_get(job_id)
    # RUNNING too: a worker lost mid-run hands the message back (acks_late), and
    # both phases are safe to run again (a dry run; an idempotent import).
    if job is None or job.state not in (QUEUED, RUNNING):
        return "gone" if job is None else job.state
    job.state = RUNNING
    job_save(job)

    def progress(report: ImportReport, done: int, total: int) -> None:
        job.done_bytes, job.total_bytes, job.rows = done, total, report.rows
        job_save(job)

    try:
        report = subscribers_import(source=Source(Path(job.path), job.format),
                                    options=job.options(), progress=progress)
    except ImportRefused as exc:
        job.state, job.error = FAILED, str(exc)
    else:
        job.state, job.report = DONE, report.as_dict()
    job_save(job)
    if job.phase == IMPORT or job.state == FAILED:
        Path(job.path).unlink(missing_ok=True)
    return job.state
