"""Mining jobs: launch (with backends and routing), list, progress, cancel, resume."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotator.db import mining
from annotator.db.models import Dataset, Job, JobKind, JobStatus
from annotator.db.session import without_parallel_workers
from annotator.errors import InvalidInputError
from annotator.pipeline.config import BackendSpec, MiningConfig
from annotator.services import insights, jobs
from web.api.schemas import (
    JobIn,
    JobItemError,
    JobOut,
    ProgressOut,
    ResumeIn,
)
from web.deps import EngineerDep, ReaderDep, RunnerDep, SessionDep, SettingsDep

router = APIRouter(tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=2**62, description="Job id.")]
# Progress is cached this long: many dashboards polling one job cost one count of its items
# per interval and process. Past it, the cached answer is served while one refresh runs, up to
# PROGRESS_STALE_S.
PROGRESS_TTL_S = 1.0
PROGRESS_STALE_S = 10.0


def job_out(job: Job, names: dict[int, str]) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind.value,
        dataset=names.get(job.dataset_id or -1),
        status=job.status.value,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        error=job.error,
        counters=dict(job.counters or {}),
        config=dict(job.config or {}),
    )


def _names(session: SessionDep, jobs_: list[Job]) -> dict[int, str]:
    ids = {j.dataset_id for j in jobs_ if j.dataset_id is not None}
    if not ids:
        return {}
    return dict(session.execute(select(Dataset.id, Dataset.name).where(Dataset.id.in_(ids))).all())


def _mining_config(body: JobIn, settings: SettingsDep) -> MiningConfig:
    overrides: dict[str, Any] = {
        "device": body.device,
        "hard_negatives": body.hard_negatives,
        "max_concepts": body.max_concepts,
        "images": body.images,
    }
    for kind in ("proposer", "captioner", "parser", "verifier"):
        spec = getattr(body, kind)
        if spec is not None:
            overrides[kind] = spec.name
            overrides[f"{kind}_model"] = spec.model
            overrides[f"{kind}_options"] = spec.options or None
    if body.pair_verifier is not None:
        overrides["pair_verifier"] = BackendSpec(**body.pair_verifier.model_dump())
    if body.routing is not None:
        overrides.update(body.routing.model_dump(exclude_none=True))
    try:
        return MiningConfig.from_settings(settings, **overrides)
    except ValueError as exc:
        raise InvalidInputError(f"invalid job settings: {exc}") from exc


@router.post(
    "/jobs",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Launch a mining job (engineer)",
)
def launch(
    body: JobIn,
    session: SessionDep,
    settings: SettingsDep,
    runner: RunnerDep,
    background: BackgroundTasks,
    _user: EngineerDep,
) -> JobOut:
    """Create the job and start it: in the server process without a broker, on the Celery
    workers with one. Answers at once; follow it with ``GET /jobs/{id}/progress``."""
    job = jobs.create_mining_job(session, body.dataset, _mining_config(body, settings))
    # Runs after the response, so after this request's transaction committed the job.
    background.add_task(runner.run_mining, job.id)
    return job_out(job, {job.dataset_id or -1: body.dataset})


@router.get("/jobs", response_model=list[JobOut], summary="List jobs, newest first")
def list_jobs(
    session: SessionDep,
    kind: Literal["mine", "export", "train"] | None = None,
    active: Annotated[bool, Query(description="Only queued, running or cancelling.")] = False,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[JobOut]:
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(Job.kind == JobKind(kind))
    if active:
        stmt = stmt.where(
            Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING))
        )
    if before is not None:
        stmt = stmt.where(Job.id < before)
    rows = list(session.scalars(stmt))
    names = _names(session, rows)
    return [job_out(j, names) for j in rows]


@router.get("/jobs/{job_id}", response_model=JobOut, summary="One job")
def get_job(job_id: JobId, session: SessionDep) -> JobOut:
    job = mining.get_job(session, job_id)
    return job_out(job, _names(session, [job]))


class ProgressCache:
    """Progress answers per job (as JSON), shared by the requests of one process.

    An answer younger than :data:`PROGRESS_TTL_S` is served as it is. An older one is still
    served while one refresh runs in the background (so no request waits for the count of a
    large job's items), unless it is older than :data:`PROGRESS_STALE_S`: then the request
    waits for the refresh. One refresh per job at a time: requests that need it share it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[float, bytes]] = {}
        self._refreshing: dict[int, asyncio.Task[bytes]] = {}

    def put(self, job_id: int, value: ProgressOut, *, at: float | None = None) -> bytes:
        """Remember ``value`` as the answer of ``at`` (default: now), unless a newer one is
        already remembered; its JSON."""
        body = value.model_dump_json().encode()
        at = self.clock() if at is None else at
        with self._lock:
            if len(self._entries) > 1000:
                self._entries.clear()
            known = self._entries.get(job_id)
            if known is None or known[0] <= at:
                self._entries[job_id] = (at, body)
        return body

    def _refresh(
        self, job_id: int, compute: Callable[[], Awaitable[ProgressOut]]
    ) -> asyncio.Task[bytes]:
        task = self._refreshing.get(job_id)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            started = self.clock()

            async def run() -> bytes:
                try:
                    return self.put(job_id, await compute(), at=started)
                finally:
                    if self._refreshing.get(job_id) is asyncio.current_task():
                        del self._refreshing[job_id]

            task = asyncio.get_running_loop().create_task(run())
            # Nobody may await a background refresh: its error (say, the job is gone) is
            # retrieved here; the next request that has to wait computes again and gets it.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._refreshing[job_id] = task
        return task

    async def get_or_compute(
        self, job_id: int, compute: Callable[[], Awaitable[ProgressOut]]
    ) -> bytes:
        """The JSON of the job's progress (see the class doc); ``compute`` makes a fresh one."""
        entry = self._entries.get(job_id)
        if entry is not None:
            age = self.clock() - entry[0]
            if age < PROGRESS_TTL_S:
                return entry[1]
            if age < PROGRESS_STALE_S:
                self._refresh(job_id, compute)
                return entry[1]
        return await asyncio.shield(self._refresh(job_id, compute))


def progress_out(p: jobs.JobProgress) -> ProgressOut:
    return ProgressOut(
        job_id=p.job_id,
        status=p.status.value,
        images=p.images,
        images_finished=p.images_finished,
        total=p.total,
        finished=p.finished,
        elapsed_s=p.elapsed_s,
        rate=p.rate,
        eta_s=p.eta_s,
        error=p.error,
        stages=[
            {
                "stage": s.stage,
                "total": s.total,
                "done": s.done,
                "failed": s.failed,
                "skipped": s.skipped,
                "pending": s.pending,
            }
            for s in p.stages
        ],
    )


@router.get(
    "/jobs/{job_id}/progress",
    response_model=ProgressOut,
    summary="Progress per stage, rate and ETA (mining jobs)",
)
async def progress(job_id: JobId, request: Request, reader: ReaderDep) -> Response:
    """About a second old at most: answers are cached for a second per server process, and a
    request that finds an older one gets it while a refresh (one count of the job's items)
    runs."""
    cache: ProgressCache = request.app.state.progress_cache
    body = await cache.get_or_compute(job_id, lambda: reader.in_transaction(_progress, job_id))
    return Response(body, media_type="application/json")


def _progress(session: Session, job_id: int) -> ProgressOut:
    without_parallel_workers(session)  # a refresh nobody waits for: the cheaper plan in CPU
    job = mining.get_job(session, job_id)
    if job.kind != JobKind.MINE:
        raise InvalidInputError(f"job {job_id} is a {job.kind.value} job: progress is for mining")
    return progress_out(jobs.job_progress(session, job_id))


@router.get(
    "/jobs/{job_id}/errors", response_model=list[JobItemError], summary="Failed items of a job"
)
def job_errors(
    job_id: JobId, session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[JobItemError]:
    mining.get_job(session, job_id)
    return [
        JobItemError(image_id=i, file_name=f, stage=s, error=e)
        for i, f, s, e in mining.item_errors(session, job_id, limit)
    ]


@router.get("/jobs/{job_id}/throughput", summary="Items done per minute and stage")
def job_throughput(
    job_id: JobId,
    session: SessionDep,
    unit: Literal["minute", "hour", "day"] = "minute",
) -> dict[str, Any]:
    mining.get_job(session, job_id)
    return insights.throughput(session, unit, job_id=job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel a job (engineer)")
def cancel(
    job_id: JobId, request: Request, session: SessionDep, settings: SettingsDep, _u: EngineerDep
) -> JobOut:
    """A queued job is cancelled at once; a running one stops after the item in flight."""
    job = mining.get_job(session, job_id)
    if job.kind != JobKind.MINE:
        raise InvalidInputError(f"job {job_id} is a {job.kind.value} job: only mining jobs cancel")
    if settings.broker_url and job.status not in jobs.FINAL:
        from workers.tasks import cancel_job as cancel_on_workers

        session.commit()  # the workers' cancel takes its own transaction
        cancel_on_workers(job_id, request.app.state.engine)
        session.expire_all()
        job = mining.get_job(session, job_id)
    else:
        job = jobs.cancel_job(session, job_id)
    request.app.state.progress_cache.put(job_id, progress_out(jobs.job_progress(session, job_id)))
    return job_out(job, _names(session, [job]))


@router.post(
    "/jobs/{job_id}/resume",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Resume a job (engineer)",
)
def resume(
    job_id: JobId,
    session: SessionDep,
    runner: RunnerDep,
    background: BackgroundTasks,
    _u: EngineerDep,
    body: ResumeIn | None = None,
) -> JobOut:
    """Queue the unfinished items again (with ``retry_failed``, the failed images too)."""
    job = mining.get_job(session, job_id)
    if job.kind != JobKind.MINE:
        raise InvalidInputError(f"job {job_id} is a {job.kind.value} job: only mining jobs resume")
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        from annotator.errors import ConflictError

        raise ConflictError(f"job {job_id} is {job.status.value}: nothing to resume")
    job = jobs.resume_job(session, job_id, retry_failed=bool(body and body.retry_failed))
    background.add_task(runner.run_mining, job.id)
    return job_out(job, _names(session, [job]))
