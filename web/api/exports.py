"""Exports: start one (runs in the background), follow it, download the file (streamed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, HTTPException, Path, Query, Request, status
from fastapi.responses import FileResponse

from annotator.db.models import Job, JobStatus
from annotator.services.export_jobs import (
    create_export_job,
    export_path,
    get_export_job,
    list_export_jobs,
)
from web.api.schemas import ExportIn, ExportOut
from web.deps import EngineerDep, RunnerDep, SessionDep, SettingsDep

router = APIRouter(tags=["exports"])

ExportId = Annotated[int, Path(ge=1, le=2**62, description="Export job id.")]


def export_out(job: Job, request: Request) -> ExportOut:
    config: dict[str, Any] = dict(job.config or {})
    done = job.status == JobStatus.DONE
    return ExportOut(
        id=job.id,
        dataset=config.get("dataset"),
        format=str(config.get("format")),
        version=config.get("version"),
        status=job.status.value,
        created_at=job.created_at,
        finished_at=job.finished_at,
        error=job.error,
        counters=dict(job.counters or {}),
        download_url=str(request.url_for("download_export", job_id=job.id)) if done else None,
    )


@router.post(
    "/exports",
    response_model=ExportOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Start an export (engineer)",
)
def start_export(
    body: ExportIn,
    request: Request,
    session: SessionDep,
    runner: RunnerDep,
    background: BackgroundTasks,
    _user: EngineerDep,
) -> ExportOut:
    """COCO or SA-Co, of the live dataset or a frozen version; written under
    ``ANNOTATOR_MEDIA_ROOT/exports``. Poll ``GET /exports/{id}`` until ``done``."""
    job = create_export_job(session, body.dataset, body.format, body.version)
    background.add_task(runner.run_export, job.id)
    return export_out(job, request)


@router.get("/exports", response_model=list[ExportOut], summary="List exports, newest first")
def list_exports(
    request: Request, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[ExportOut]:
    return [export_out(j, request) for j in list_export_jobs(session, limit)]


@router.get("/exports/{job_id}", response_model=ExportOut, summary="Status of an export")
def get_export(job_id: ExportId, request: Request, session: SessionDep) -> ExportOut:
    return export_out(get_export_job(session, job_id), request)


@router.get(
    "/exports/{job_id}/download",
    response_class=FileResponse,
    name="download_export",
    summary="Download a finished export (streamed)",
    responses={200: {"content": {"application/json": {}}}, 409: {"description": "Not done."}},
)
def download_export(job_id: ExportId, session: SessionDep, settings: SettingsDep) -> FileResponse:
    job = get_export_job(session, job_id)
    if job.status != JobStatus.DONE:
        raise HTTPException(409, f"export {job_id} is {job.status.value}, not done")
    path = export_path(settings.media_root, job)
    if not path.is_file():
        raise HTTPException(404, f"the file of export {job_id} is gone")
    config = dict(job.config or {})
    fmt = config.get("format", "coco")
    name = f"{config.get('dataset', 'dataset')}-{config.get('version') or 'live'}.{fmt}.json"
    return FileResponse(path, media_type="application/json", filename=name)
