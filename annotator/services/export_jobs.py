"""Export jobs: an export of a dataset (or a version) written in the background to
``ANNOTATOR_MEDIA_ROOT/exports/<job id>.<format>.json``, then downloaded.

A job row (``kind=export``) records the request (format, version), its status and, when done,
the counters (masks, pairs, bytes, sha256). The file appears under its final name only when
complete (written to ``.partial`` and renamed), so a download never sees half a file.
"""

from __future__ import annotations

import logging
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from annotator.db import mining
from annotator.db import repositories as repo
from annotator.db.models import Job, JobKind, JobStatus
from annotator.db.session import session_scope
from annotator.errors import ConflictError, InvalidInputError, NotFoundError
from annotator.services.exporting import FORMATS, export_dataset

__all__ = ["create_export_job", "export_path", "get_export_job", "list_export_jobs", "run_export"]

log = logging.getLogger(__name__)


def export_dir(media_root: Path) -> Path:
    return media_root / "exports"


def export_path(media_root: Path, job: Job) -> Path:
    """Where the file of export job ``job`` is (built from its id and format only)."""
    fmt = str((job.config or {}).get("format", "coco"))
    if fmt not in FORMATS:
        raise InvalidInputError(f"export job {job.id} has an unknown format {fmt!r}")
    return export_dir(media_root) / f"{int(job.id)}.{fmt}.json"


def create_export_job(
    session: Session, dataset_name: str, fmt: str, version: str | None = None
) -> Job:
    """A queued export job (checked: the dataset, the format and the version exist)."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}: use coco or saco")
    dataset = repo.get_dataset(session, dataset_name)
    if version is not None:
        repo.get_version(session, dataset.id, version)
    job = Job(
        kind=JobKind.EXPORT,
        dataset_id=dataset.id,
        config={"format": fmt, "version": version, "dataset": dataset.name},
        status=JobStatus.QUEUED,
        counters={},
    )
    session.add(job)
    session.flush()
    return job


def get_export_job(session: Session, job_id: int) -> Job:
    job = mining.get_job(session, job_id)
    if job.kind != JobKind.EXPORT:
        raise NotFoundError(f"job {job_id} is a {job.kind.value} job, not an export")
    return job


def list_export_jobs(session: Session, limit: int = 50) -> list[Job]:
    return list(
        session.scalars(
            select(Job).where(Job.kind == JobKind.EXPORT).order_by(Job.id.desc()).limit(limit)
        )
    )


def _settle(engine: Engine, job_id: int, status: JobStatus, **fields: Any) -> None:
    with session_scope(engine) as session:
        job = mining.get_job(session, job_id, for_update=True)
        job.status = status
        job.finished_at = datetime.now(UTC)
        for key, value in fields.items():
            setattr(job, key, value)


def run_export(engine: Engine, job_id: int, media_root: Path) -> JobStatus:
    """Run a queued export job to its end (done or failed); returns the final status."""
    with session_scope(engine) as session:
        job = mining.get_job(session, job_id, for_update=True)
        if job.kind != JobKind.EXPORT:
            raise ConflictError(f"job {job_id} is not an export job")
        if job.status != JobStatus.QUEUED:
            return JobStatus(job.status)
        job.status = JobStatus.RUNNING
        job.started_at = datetime.now(UTC)
        config = dict(job.config or {})
        target = export_path(media_root, job)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with session_scope(engine, snapshot=True) as session, partial.open("wb") as fh:
            result = export_dataset(
                session, config["dataset"], config["format"], fh, version=config.get("version")
            )
        partial.replace(target)
    except Exception as exc:
        log.warning("export job %s failed: %s", job_id, exc)
        partial.unlink(missing_ok=True)
        detail = "".join(traceback.format_exception_only(exc)).strip()
        _settle(engine, job_id, JobStatus.FAILED, error=detail[:4000])
        return JobStatus.FAILED
    counters = {
        **result.counts,
        "bytes": result.bytes_written,
        "sha256": result.sha256,
        "matches_version": result.matches_version,
    }
    _settle(engine, job_id, JobStatus.DONE, counters=counters)
    return JobStatus.DONE
