"""The embedded runner: a job's stages in this process, one transaction per stage item.

With no ``ANNOTATOR_BROKER_URL`` this is how ``annotator mine`` runs a job, on SQLite or
PostgreSQL: the same stage functions the Celery tasks wrap, **depth first**, as the workers run
them (docs/workers.md): a batch of up to ``batch_size`` images goes through its next stages
(ingest, caption, parse, propose, verify, route) before the next batch starts, so results come
out while the job runs and the per-process image caches (the decoded image, its model-sized
copy) still hold a batch's images when propose and verify need them. Hard negatives still see
the whole job's vocabulary: every ``parse`` finishes before any ``propose`` (the barrier of
:func:`~annotator.services.jobs.next_items`). Each batch of one stage commits on its own (an
unexpected error rolls the batch back and its images run one by one); a crash loses at most
the batch in flight, and ``annotator jobs resume`` picks up the rest.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections.abc import Callable, Iterator

from sqlalchemy import Engine

from annotator.config import get_settings
from annotator.db import mining
from annotator.db.models import JobStatus
from annotator.db.session import session_scope
from annotator.errors import ConfigError, ModelLoadError, NotFoundError
from annotator.pipeline.config import MiningConfig
from annotator.pipeline.stages import run_stage, run_stage_batch
from annotator.services import jobs

__all__ = ["ProgressCallback", "launch_job", "relaunch_job", "run_job_inline", "watch_job"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[jobs.JobProgress], None]
# Errors that no retry of one item can fix: the whole job stops.
SYSTEMIC = (ModelLoadError, ConfigError, NotFoundError, ImportError)
_PROGRESS_EVERY_S = 0.5


def run_job_inline(
    engine: Engine,
    job_id: int,
    *,
    progress: ProgressCallback | None = None,
    batch: int = 256,
) -> JobStatus:
    """Run every ready item of a job in this process until none is left; return the final
    status (``done``, ``cancelled`` or ``failed``).

    A transient error in an item is recorded (:func:`~annotator.services.jobs.record_failure`)
    and the item is tried again later, up to the job's ``max_attempts``; a model that cannot be
    loaded fails the job. Cancelling (from another process) stops it after the batch in flight.
    """
    with session_scope(engine) as session:
        jobs.start_job(session, job_id)
    last_report = 0.0

    def report(force: bool = False) -> None:
        nonlocal last_report
        if progress is None:
            return
        now = time.monotonic()
        if force or now - last_report >= _PROGRESS_EVERY_S:
            last_report = now
            with session_scope(engine) as s:
                progress(jobs.job_progress(s, job_id))

    report(force=True)
    with session_scope(engine) as session:
        size = jobs.batch_size(session, job_id)
    while True:
        with session_scope(engine) as session:
            # The images furthest along first (a resumed job finishes what it had started).
            ready = jobs.next_items(session, job_id, limit=batch, latest_first=True)
        if not ready:
            break
        stopped = False
        # Depth first: a stack of batches; what a batch makes ready (its images' next stage)
        # runs before the batches below it.
        todo = list(_batches(ready, size))[::-1]
        while todo:
            stage, images = todo.pop()
            following: list[tuple[int, str]] = []
            try:
                with session_scope(engine) as session:
                    # Checked in the batch's own transaction: a cancel stops the next batch.
                    stopped = mining.job_status(session, job_id) not in jobs.ACTIVE
                    if not stopped:
                        # Images whose attempt failed are pending again: next_items offers
                        # them on a later round, up to the job's max_attempts.
                        run_stage_batch(session, job_id, images, stage)
                        following = jobs.ready_after_many(session, job_id, images, stage)
            except SYSTEMIC as exc:
                _fail(engine, job_id, stage, images[0], exc)
                report(force=True)
                return JobStatus.FAILED
            except Exception as exc:
                if len(images) == 1:
                    _record(engine, job_id, stage, images[0], exc)
                elif not _run_each(engine, job_id, stage, images):
                    report(force=True)
                    return JobStatus.FAILED
            if stopped:
                break
            todo += list(_batches(following, size))[::-1]
            report()
        if stopped:
            break
    with session_scope(engine) as session:
        jobs.finish_if_done(session, job_id)
        status = mining.job_status(session, job_id)
    report(force=True)
    return status


def _batches(ready: list[tuple[int, str]], size: int) -> Iterator[tuple[str, list[int]]]:
    """(stage, up to ``size`` image ids) in the order of ``ready`` (items of one stage
    together)."""
    for stage, group in itertools.groupby(ready, key=lambda item: item[1]):
        images = [image_id for image_id, _ in group]
        for start in range(0, len(images), size):
            yield stage, images[start : start + size]


def _run_each(engine: Engine, job_id: int, stage: str, images: list[int]) -> bool:
    """A batch that failed as a whole (rolled back), image by image, each in its own
    transaction, to isolate the image at fault. False when the job failed."""
    for image_id in images:
        try:
            with session_scope(engine) as session:
                run_stage(session, job_id, image_id, stage)
        except SYSTEMIC as exc:
            _fail(engine, job_id, stage, image_id, exc)
            return False
        except Exception as exc:
            _record(engine, job_id, stage, image_id, exc)
    return True


def _fail(engine: Engine, job_id: int, stage: str, image_id: int, exc: BaseException) -> None:
    with session_scope(engine) as session:
        jobs.fail_job(session, job_id, f"{stage} of image {image_id}: {exc}")


def _record(engine: Engine, job_id: int, stage: str, image_id: int, exc: BaseException) -> None:
    log.warning("job %s: %s of image %s failed: %s", job_id, stage, image_id, exc)
    detail = "".join(traceback.format_exception_only(exc)).strip()
    with session_scope(engine) as session:
        jobs.record_failure(session, job_id, image_id, stage, detail)


def _dispatch(engine: Engine, job_id: int, progress: ProgressCallback | None) -> JobStatus:
    if get_settings().broker_url:
        # The Celery path: enqueue the ready items (after commit) and return; workers run them.
        from workers.tasks import enqueue_job

        enqueue_job(job_id, engine)
        with session_scope(engine) as session:
            return mining.job_status(session, job_id)
    return run_job_inline(engine, job_id, progress=progress)


def launch_job(
    engine: Engine,
    dataset_name: str,
    config: MiningConfig,
    *,
    progress: ProgressCallback | None = None,
    on_created: Callable[[int], None] | None = None,
) -> tuple[int, JobStatus]:
    """Create a mining job (committed) and run it: in this process when no broker is
    configured (returns when it finished), else on the Celery workers (returns once enqueued).

    Returns the job id and its status when this call returns.
    """
    with session_scope(engine) as session:
        job_id = jobs.create_mining_job(session, dataset_name, config).id
    if on_created is not None:
        on_created(job_id)
    return job_id, _dispatch(engine, job_id, progress)


def relaunch_job(
    engine: Engine,
    job_id: int,
    *,
    retry_failed: bool = False,
    progress: ProgressCallback | None = None,
) -> JobStatus:
    """Resume a job (only unfinished items run) the same way :func:`launch_job` runs one."""
    with session_scope(engine) as session:
        status = jobs.resume_job(session, job_id, retry_failed=retry_failed).status
    if status in jobs.FINAL:  # a stranded job was settled: nothing to run
        return status
    return _dispatch(engine, job_id, progress)


def watch_job(
    engine: Engine,
    job_id: int,
    progress: ProgressCallback | None = None,
    *,
    interval_s: float = 1.0,
    timeout_s: float | None = None,
) -> JobStatus:
    """Poll a job run elsewhere (Celery workers) until it is done, cancelled or failed (or
    ``timeout_s`` passed); return its status then."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        with session_scope(engine) as session:
            state = jobs.job_progress(session, job_id)
        if progress is not None:
            progress(state)
        if state.status in jobs.FINAL:
            return state.status
        if deadline is not None and time.monotonic() >= deadline:
            return state.status
        time.sleep(interval_s)
