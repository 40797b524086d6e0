"""Celery tasks: thin wrappers around the pipeline stages, declared with one decorator.

Each stage of a mining job is one task, ``annotator.stage.<stage>(job_id, *image_ids)``, routed
to the ``gpu`` or ``cpu`` queue (:data:`STAGE_QUEUES`), carrying a batch of up to the job's
``batch_size`` images. A task owns its transaction: it runs the stage for its images in one
session (:func:`~annotator.pipeline.stages.run_stage_batch`), commits, and only then sends the
tasks that became ready, batched the same way (enqueue after commit, :mod:`workers.outbox`), so
one message, one COMMIT, one publish and one acknowledgement serve a whole batch. Stages are
idempotent (a stage whose work is recorded returns early), so stage tasks acknowledge late: a
message whose worker died is delivered again and the rerun completes the work of the whole
batch without duplicating rows. An unexpected error in a batch rolls it back and the images
are run one by one, each in its own transaction, so one bad image cannot hold the others back.

A task for a cancelled job returns without work (``run_stage`` checks the job's status), which
is how cancelling revokes the messages already queued: they are consumed and dropped.

``annotator.review.sync(*dataset_ids)``, sent by ``annotator beat`` every
``ANNOTATOR_REVIEW_SYNC_INTERVAL_S`` (:func:`workers.app.beat_schedule`), brings home the review
decisions that Label Studio's webhooks missed, one dataset per transaction (:func:`sync_reviews`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from annotator.config import get_settings
from annotator.db import mining
from annotator.db import reviews as review_rows
from annotator.db.models import JobItemStatus, JobStatus
from annotator.integrations import label_studio as ls
from annotator.pipeline.runner import SYSTEMIC
from annotator.pipeline.stages import STAGES, run_stage, run_stage_batch
from annotator.services import jobs, review
from workers.app import (
    CPU_QUEUE,
    GPU_QUEUE,
    PRIORITY_STEPS,
    REVIEW_SYNC_TASK,
    TASK_PRIORITIES,
    TASK_QUEUES,
    app,
)
from workers.outbox import Outbox, transaction

log = logging.getLogger(__name__)

# Worth retrying: the database or the broker was unreachable, a deadlock or serialization
# failure (OperationalError on PostgreSQL), a pool timeout. Never bad input: an IntegrityError,
# a DataError, a ValueError from a corrupt image are the same on every attempt.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)

DEFAULT_MAX_RETRIES = 5
BACKOFF_FACTOR_S = 2
BACKOFF_MAX_S = 300

GiveUp = Callable[..., None]


def task(
    name: str,
    *,
    queue: str,
    idempotent: bool,
    max_retries: int = DEFAULT_MAX_RETRIES,
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    on_give_up: GiveUp | None = None,
    priority: int | None = None,
) -> Callable[[Callable[..., None]], Task]:
    """Declare a Celery task; every task of the engine is declared with this decorator.

    - ``name``: dotted, stable (it is what travels in messages), e.g. ``annotator.stage.propose``.
    - ``queue``: ``gpu`` or ``cpu``; the app routes the task there.
    - ``idempotent``: the task may run twice with the same arguments without harm. Only then is
      its message acknowledged after it finishes (``acks_late``), so a worker that dies
      mid-task leaves it to be delivered again; otherwise it is acknowledged on receipt.
    - Arguments are integer ids only (rows are read inside the task, in its own transaction).
    - Transient errors (``retry_on``, default :data:`TRANSIENT_ERRORS`) are retried
      ``max_retries`` times with exponential backoff and full jitter; then
      ``on_give_up(*ids, exc)`` records the failure and the error propagates. Any other error
      propagates at once: bad input is never retried.
    - ``priority``: every message of the task is sent with it (0 is taken first, 9 last;
      default none, which the broker takes as 0).
    """
    if queue not in (GPU_QUEUE, CPU_QUEUE):
        raise ValueError(f"unknown queue {queue!r}")
    if priority is not None and priority not in PRIORITY_STEPS:
        raise ValueError(f"priority {priority!r} is not one of {PRIORITY_STEPS}")

    def decorate(fn: Callable[..., None]) -> Task:
        TASK_QUEUES[name] = queue
        if priority is not None:
            TASK_PRIORITIES[name] = priority

        @functools.wraps(fn)
        def run(self: Task, *ids: Any) -> None:
            bad = [i for i in ids if type(i) is not int]
            if bad:
                raise TypeError(f"{name} takes integer ids only, got {bad!r}")
            try:
                fn(*ids)
            except retry_on as exc:
                retries = self.request.retries
                if retries >= max_retries:
                    log.error("%s%r: giving up after %d retries: %s", name, ids, retries, exc)
                    if on_give_up is not None:
                        on_give_up(*ids, exc)
                    raise
                countdown = get_exponential_backoff_interval(
                    BACKOFF_FACTOR_S, retries, BACKOFF_MAX_S, full_jitter=True
                )
                log.warning("%s%r: %s; retry %d in %ss", name, ids, exc, retries + 1, countdown)
                raise self.retry(exc=exc, countdown=countdown, max_retries=max_retries) from exc

        return app.task(
            run,
            name=name,
            bind=True,
            acks_late=idempotent,
            # A pool process killed under a task (OOM, segfault) fails the task instead of
            # requeueing it: an image that kills its worker would otherwise loop forever. The
            # item stays unfinished and ``annotator jobs resume`` sends it again. (A whole
            # worker that dies leaves its message unacknowledged: Redis delivers it again.)
            reject_on_worker_lost=False,
            max_retries=max_retries,
            ignore_result=True,
            typing=True,
        )

    return decorate


# ---------------------------------------------------------------------------------- stages

# Model forwards on the GPU; decoding, parsing and routing on the CPU (DESIGN "Pipeline").
STAGE_QUEUES: dict[str, str] = {
    "ingest": CPU_QUEUE,
    "caption": GPU_QUEUE,
    "parse": CPU_QUEUE,
    "propose": GPU_QUEUE,
    "verify": GPU_QUEUE,
    "route": CPU_QUEUE,
}
if set(STAGE_QUEUES) != set(STAGES):  # pragma: no cover - caught by the import in any test
    raise RuntimeError(f"STAGE_QUEUES {sorted(STAGE_QUEUES)} != STAGES {sorted(STAGES)}")


# Depth first: a later stage's message is taken before an earlier stage's, on one queue and
# across the queues a worker consumes, so a batch goes through caption, parse, propose, verify
# and route before the next batch is ingested. The images a batch's stages share stay in the
# per-process caches (decoded image, model-sized copy) between its stages, and results come out
# while the job runs. Within a stage, messages are taken in the order they were sent.
STAGE_PRIORITIES: dict[str, int] = {
    stage: len(STAGES) - 1 - index for index, stage in enumerate(STAGES)
}


def stage_task_name(stage: str) -> str:
    return f"annotator.stage.{stage}"


class AttemptFailed(Exception):
    """A stage item failed with an unexpected error and the job allows another attempt
    (``max_attempts``, counted on the item): the task is retried with backoff."""


def _run_item(stage: str, job_id: int, image_id: int) -> None:
    """One stage item: run it in its own transaction, then send what became ready."""
    try:
        with transaction() as (session, outbox):
            # Returns early when the item is finished or the job is no longer active
            # (cancelled): that is how queued messages of a cancelled job are dropped.
            run_stage(session, job_id, image_id, stage)
            # Usually the image's next stage, seen in this transaction; sent after COMMIT.
            ready = jobs.ready_after(session, job_id, image_id, stage)
            _add_stage_messages(outbox, job_id, ready, jobs.batch_size(session, job_id))
            followed = len(outbox) > 0
    except TRANSIENT_ERRORS as exc:
        _count_attempt(stage, job_id, image_id, exc, best_effort=True)
        raise
    except SYSTEMIC as exc:
        # No retry of one item can fix a model that does not load: the job stops.
        log.error("job %d failed in %s of image %d: %s", job_id, stage, image_id, exc)
        with transaction() as (session, _):
            jobs.fail_job(session, job_id, f"{stage} of image {image_id}: {exc}")
        return
    except Exception as exc:
        # Bad images are recorded by run_stage itself; this is anything else (CUDA out of
        # memory, a bug): counted on the item, retried while the job's max_attempts allow.
        log.exception("job %d: %s of image %d failed", job_id, stage, image_id)
        if _count_attempt(stage, job_id, image_id, exc) == JobItemStatus.PENDING:
            raise AttemptFailed(_describe(exc)) from exc
        followed = False
    if not followed:
        _advance(stage, job_id, image_id)


def _advance(stage: str, job_id: int, image_id: int) -> None:
    """After the item's COMMIT: send what became ready, or settle the job when nothing did.

    Needed when the item's own transaction saw nothing to follow: the image left the pipeline
    (last stage, failed, job cancelled), or its next stage waits for other images (every parse
    before propose, for hard negatives). In a new transaction, of two items finishing at once
    the later one sees both finished, so nothing waits forever and the job is settled once.
    """
    _advance_many(stage, job_id, [image_id])


def _count_attempt(
    stage: str, job_id: int, image_id: int, exc: BaseException, *, best_effort: bool = False
) -> JobItemStatus | None:
    """Record a failed attempt on the item (its status afterwards). With ``best_effort`` an
    unreachable database is only logged: the error being handled may be exactly that."""
    try:
        with transaction() as (session, _):
            return jobs.record_failure(session, job_id, image_id, stage, _describe(exc))
    except TRANSIENT_ERRORS:
        if not best_effort:
            raise
        log.warning("could not record the failed attempt of %s/%d/%d", stage, job_id, image_id)
        return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _run_batch(stage: str, job_id: int, image_ids: list[int]) -> None:
    """Several images' stage in one transaction, then what became ready, in batches."""
    if len(image_ids) == 1:
        _run_item(stage, job_id, image_ids[0])
        return
    try:
        with transaction() as (session, outbox):
            retry = run_stage_batch(session, job_id, image_ids, stage)
            ready = jobs.ready_after_many(session, job_id, image_ids, stage)
            _add_stage_messages(outbox, job_id, ready, jobs.batch_size(session, job_id))
            followed = {image_id for image_id, _ in ready}
    except TRANSIENT_ERRORS as exc:
        for image_id in image_ids:
            _count_attempt(stage, job_id, image_id, exc, best_effort=True)
        raise
    except SYSTEMIC as exc:
        log.error("job %d failed in %s of images %s: %s", job_id, stage, image_ids, exc)
        with transaction() as (session, _):
            jobs.fail_job(session, job_id, f"{stage} of image {image_ids[0]}: {exc}")
        return
    except Exception:
        # Something other than a bad image (recorded by the stage itself) broke the batch: it
        # was rolled back; each image now runs alone, with its own failure accounting.
        log.warning(
            "job %d: %s of images %s failed as a batch; running them one by one",
            job_id, stage, image_ids, exc_info=True,
        )  # fmt: skip
        failed: AttemptFailed | None = None
        for image_id in image_ids:
            try:
                _run_item(stage, job_id, image_id)
            except AttemptFailed as exc:
                failed = failed or exc
        if failed is not None:
            # The message is retried; its finished images return early then.
            raise failed from None
        return
    waiting = [i for i in image_ids if i not in followed and i not in retry]
    if waiting:
        _advance_many(stage, job_id, waiting)
    if retry:
        # Their attempts failed and were counted (the others' work is committed): the message
        # is retried with backoff, and its finished images return early then.
        raise AttemptFailed(f"{stage} of images {retry} failed; see their job items")


def _advance_many(stage: str, job_id: int, image_ids: list[int]) -> None:
    """:func:`_advance` for the images of a batch whose transaction saw nothing to follow."""
    with transaction() as (session, outbox):
        ready = jobs.ready_after_many(session, job_id, image_ids, stage)
        _add_stage_messages(outbox, job_id, ready, jobs.batch_size(session, job_id))
        if not ready:
            jobs.finish_if_done(session, job_id)


def _stage_task(stage: str) -> Task:
    def body(job_id: int, *image_ids: int) -> None:
        if image_ids:
            _run_batch(stage, job_id, list(image_ids))

    def give_up(*args: Any) -> None:
        job_id, *image_ids, exc = args
        for image_id in image_ids:
            with transaction() as (session, _):
                jobs.record_failure(session, job_id, image_id, stage, _describe(exc), final=True)
        _advance_many(stage, job_id, image_ids)

    body.__name__ = body.__qualname__ = f"stage_{stage}"
    body.__doc__ = f"Run the {stage!r} stage of a batch of images of a mining job."
    declare = task(
        stage_task_name(stage),
        queue=STAGE_QUEUES[stage],
        idempotent=True,
        retry_on=(*TRANSIENT_ERRORS, AttemptFailed),
        on_give_up=give_up,
        priority=STAGE_PRIORITIES[stage],
    )
    return declare(body)


STAGE_TASKS: dict[str, Task] = {stage: _stage_task(stage) for stage in STAGES}


def _add_stage_messages(
    outbox: Outbox, job_id: int, items: Iterable[tuple[int, str]], batch_size: int = 1
) -> None:
    """One message per stage and batch of up to ``batch_size`` images, in the items' order."""
    by_stage: dict[str, list[int]] = {}
    for image_id, stage in items:
        by_stage.setdefault(stage, []).append(image_id)
    for stage, image_ids in by_stage.items():
        for start in range(0, len(image_ids), batch_size):
            outbox.add(stage_task_name(stage), job_id, *image_ids[start : start + batch_size])


# ------------------------------------------------------------------------- job lifecycle


def enqueue_job(job_id: int, engine: Engine | None = None) -> int:
    """Start a queued job (created, or resumed) on the workers: mark it running and send every
    item that is ready now, after the commit. Returns the number of messages sent.

    Resuming sends only unfinished items; one whose message is still queued runs twice, which
    is harmless (the second run returns early).
    """
    with transaction(engine) as (session, outbox):
        jobs.start_job(session, job_id)
        ready = jobs.next_items(session, job_id)
        _add_stage_messages(outbox, job_id, ready, jobs.batch_size(session, job_id))
        count = len(outbox)
    if count == 0:
        with transaction(engine) as (session, _):
            jobs.finish_if_done(session, job_id)
    return count


def cancel_job(job_id: int, engine: Engine | None = None) -> JobStatus:
    """Cancel a job that runs on the workers; returns its status (``cancelled``).

    Workers keep no state about a job, so there is nothing to wait for: the job is settled as
    cancelled at once. Its queued messages are revoked in effect (each is consumed and dropped
    by the job-status check), an item in flight finishes and sends nothing further, and
    ``annotator jobs resume`` continues from the unfinished items.
    """
    with transaction(engine) as (session, _):
        jobs.cancel_job(session, job_id)
        jobs.finish_if_done(session, job_id)
        return JobStatus(mining.job_status(session, job_id))


# ------------------------------------------------------------------------------ review sync


@dataclass
class DatasetSync:
    """What one run of :func:`sync_reviews` did for one dataset."""

    dataset_id: int
    name: str
    result: review.SyncResult | None = None
    error: str | None = None  # why it failed (the next run tries again)
    busy: bool = False  # another sync of this dataset was running: skipped

    @property
    def ok(self) -> bool:
        return self.result is not None


def sync_reviews(
    dataset_ids: Sequence[int] = (),
    *,
    engine: Engine | None = None,
    client: ls.LabelStudioAPI | None = None,
) -> list[DatasetSync]:
    """Sync the reviews of every dataset that has a Label Studio project (only those of
    ``dataset_ids`` when given), each in its own transaction, in dataset id order.

    A dataset that fails (Label Studio down or answering errors, an annotation that cannot be
    read) is rolled back, logged and reported; the others go on, and the next run catches up
    (a sync applies whatever is not recorded yet). A dataset whose sync is already running
    elsewhere is skipped. Transient database or broker errors are raised after the other
    datasets had their turn, so the task retries them. ``client`` defaults to the configured
    Label Studio server.
    """
    with transaction(engine) as (session, _):
        targets = review_rows.projects_to_sync(session, review.BACKEND, dataset_ids)
    outcomes = [DatasetSync(dataset_id, name) for dataset_id, name in targets]
    if not outcomes:
        return outcomes
    if client is None:
        settings = get_settings()
        try:
            client = ls.make_client(settings.label_studio_url, settings.label_studio_token)
        except Exception as exc:
            log.error("review sync: %s", exc)
            for outcome in outcomes:
                outcome.error = _describe(exc)
            return outcomes
    transient: BaseException | None = None
    for outcome in outcomes:
        try:
            with transaction(engine) as (session, _):
                if not review_rows.try_lock_sync(session, outcome.dataset_id):
                    outcome.busy = True
                    log.info("review sync of %r: already running elsewhere", outcome.name)
                    continue
                outcome.result = review.sync_dataset(session, outcome.name, client)
        except TRANSIENT_ERRORS as exc:
            log.warning("review sync of %r: %s (retried)", outcome.name, exc)
            outcome.error = _describe(exc)
            transient = transient or exc
            continue
        except Exception as exc:
            log.error("review sync of %r failed, nothing of it was kept: %s", outcome.name, exc)
            outcome.error = _describe(exc)
            continue
        result = outcome.result
        if result is None:
            continue
        log_at = (
            logging.INFO if result.applied or result.deleted or result.missing else logging.DEBUG
        )
        log.log(
            log_at,
            "review sync of %r: %d tasks read, %d annotations applied, %d unchanged, "
            "%d deletions, %d restored, %d sent tasks missing in Label Studio",
            outcome.name,
            result.tasks,
            result.applied,
            result.unchanged,
            result.deleted,
            result.restored,
            len(result.missing),
        )
    if transient is not None:
        raise transient
    return outcomes


@task(REVIEW_SYNC_TASK, queue=CPU_QUEUE, idempotent=True)
def sync_reviews_task(*dataset_ids: int) -> None:
    """Sync the reviews of every dataset with a Label Studio project (or of ``dataset_ids``)."""
    sync_reviews(dataset_ids)
