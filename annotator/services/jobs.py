"""Mining jobs: create, what is ready to run, failures, progress, cancel, resume, finish.

Status transitions (``jobs.status``)::

    queued ──start──> running ──(no unfinished items)──> done
      │                  │
      │                  ├──cancel──> cancelling ──(the edge stops)──> cancelled
      │                  └──(systemic error: a model cannot load)──> failed
      └──cancel──> cancelled
    cancelled / failed / running (after a crash) ──resume──> queued

Items (``job_items``, one per image and stage) go pending -> done | failed | skipped. A bad image
fails its item and skips the image's later items; it never fails the job. A transient error
(the database went away, CUDA ran out of memory) leaves the item pending for another attempt,
up to ``max_attempts``.

Functions take a ``Session`` and only flush; the edge commits. Call :func:`ready_after` and
:func:`finish_if_done` after the transaction that finished an item has committed, so that what
they see includes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from annotator.db import mining
from annotator.db import repositories as repo
from annotator.db.models import Job, JobItemStatus, JobKind, JobStatus
from annotator.errors import ConflictError, InvalidInputError
from annotator.pipeline.config import MiningConfig, RoutingConfig
from annotator.pipeline.stages import STAGES, job_config
from annotator.routing import (
    EvQuestion,
    Thresholds,
    ev_question,
    fitted_absence,
    fitted_thresholds,
)

__all__ = [
    "JobProgress",
    "StageProgress",
    "batch_size",
    "cancel_job",
    "create_mining_job",
    "fail_job",
    "finish_if_done",
    "job_progress",
    "list_jobs",
    "next_items",
    "ready_after",
    "ready_after_many",
    "record_failure",
    "resume_job",
    "start_job",
]

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL = (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes (stored in UTC).
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


# -------------------------------------------------------------------------------------- create


def fit_routing(session: Session, config: MiningConfig) -> MiningConfig:
    """With ``routing.target_precision``: the MV thresholds for it, from the calibrated
    verifier's own fit when it was fitted for that precision, else fitted on the reviewed
    proposals this verifier scored. When neither shows an accept threshold that reaches the
    target, MV auto-accept is off (``routing.auto_accept``: a person sees every mask MV does not
    reject); the reject threshold keeps its default. Then EV's absence threshold for the same
    target, fitted on the reviewed pairs this EV asked the absence question
    (:func:`fit_absence`). The result says how in ``routing.threshold_source``."""
    if config.routing.target_precision is None:
        return config
    return fit_absence(session, _fit_mv(session, config))


def _ev_absence_answers(
    session: Session, ev_version: str, *, named: bool
) -> tuple[list[float], list[bool]]:
    """EV's absent p and what the person found, for every reviewed pair ``ev_version`` was
    asked the absence question (the question its job's routing gave it); hard negatives only
    unless ``named`` (the pairs routing may declare absent)."""
    thresholds: dict[int, Thresholds | None] = {}
    scores: list[float] = []
    absent: list[bool] = []
    for answer in mining.reviewed_ev(session, ev_version):
        if not (named or answer.hard_negative):
            continue
        if answer.job_id not in thresholds:
            routing = answer.job_config.get("routing") or {}
            try:
                thresholds[answer.job_id] = RoutingConfig.model_validate(routing).thresholds()
            except ValueError:
                thresholds[answer.job_id] = None  # a config this version cannot read: skipped
        t = thresholds[answer.job_id]
        if t is None:
            continue
        shown = [] if answer.best_mv is None else [answer.best_mv]
        if ev_question(shown, t, hard_negative=answer.hard_negative) == EvQuestion.ABSENCE:
            scores.append(answer.p_accept)
            absent.append(answer.absent)
    return scores, absent


def fit_absence(session: Session, config: MiningConfig) -> MiningConfig:
    """``routing.ev_absent_above`` for ``routing.target_precision``, fitted on the reviewed
    pairs this EV version asked the absence question, of the kinds routing may declare absent
    (hard negatives; every pair with ``routing.auto_negative_named``), by
    :func:`annotator.routing.fitted_absence`: with too few of them the configured threshold
    stays; with enough and none reaching the target, EV auto-negative is off. The note is
    added to ``routing.threshold_source``."""
    routing = config.routing
    target = routing.target_precision
    if target is None:
        return config
    from annotator.pipeline.backends import get_backends

    version = get_backends(config).model_version("ev")
    scores, absent = _ev_absence_answers(session, version, named=routing.auto_negative_named)
    fitted, note = fitted_absence(scores, absent, target, default=routing.thresholds())
    updated = routing.model_copy(
        update={
            "ev_absent_above": fitted.ev_absent_above,
            "auto_negative": fitted.auto_negative,
            "threshold_source": f"{routing.threshold_source}; {note} (EV {version})",
        }
    )
    return config.model_copy(update={"routing": updated})


def _fit_mv(session: Session, config: MiningConfig) -> MiningConfig:
    """The MV half of :func:`fit_routing`."""
    routing = config.routing
    target = routing.target_precision
    assert target is not None
    why = ""
    if config.verifier.name == "calibrated" and config.verifier.model:
        from annotator.verifiers.calibrated import CalibratedVerifier

        calibrated = CalibratedVerifier(config.verifier.model)
        calibrated.load()
        report = calibrated.report
        if (
            report is not None
            and report.reached
            and abs(report.target_precision - target) < 1e-9
            and calibrated.threshold > routing.reject_below
        ):
            fitted = routing.model_copy(
                update={
                    "accept_above": float(calibrated.threshold),
                    "threshold_source": (
                        f"calibrated verifier: precision {report.expected_precision:.3f} "
                        f"(target {target:.3f}) on {report.n_holdout} held-out reviews"
                    ),
                }
            )
            return config.model_copy(update={"routing": fitted})
        if report is not None and not report.reached:
            # Say first why the verifier's own threshold is not used (its reviews were scored by
            # other verifier versions, so the fit below usually has none).
            why = (
                f"calibrated verifier: target precision {report.target_precision:.3f} not "
                f"reached on {report.n_holdout} held-out reviews; "
            )
    from annotator.pipeline.backends import get_backends

    version = get_backends(config).model_version("verifier")
    scores, labels = mining.reviewed_mask_scores(session, version)
    thresholds, note = fitted_thresholds(scores, labels, target, default=routing.thresholds())
    fitted_routing = RoutingConfig(
        **{
            **routing.model_dump(),
            "accept_above": thresholds.accept_above,
            "reject_below": thresholds.reject_below,
            "auto_accept": thresholds.auto_accept,
            "threshold_source": f"{why}{note} (verifier {version})",
        }
    )
    return config.model_copy(update={"routing": fitted_routing})


def create_mining_job(
    session: Session, dataset_name: str, config: MiningConfig | dict[str, Any]
) -> Job:
    """A queued mining job over the dataset's selected images, with one pending item per
    (image, stage). Thresholds for a target precision are fitted now, once, and stored.

    Raises:
        NotFoundError: no such dataset (or image ids not in it).
        InvalidInputError: no images to mine.
    """
    dataset = repo.get_dataset(session, dataset_name)
    cfg = config if isinstance(config, MiningConfig) else MiningConfig.model_validate(config)
    image_ids = mining.select_images(session, dataset.id, cfg.images)
    if not image_ids:
        if cfg.images == "new":
            raise InvalidInputError(
                f"dataset {dataset_name!r} has no new images: every image is in an earlier "
                "mining job (mine them again with --images all) or there are none yet "
                f"(annotator images add {dataset_name} PATH...)"
            )
        raise InvalidInputError(f"dataset {dataset_name!r} has no images to mine")
    cfg = fit_routing(session, cfg)
    job = Job(
        kind=JobKind.MINE,
        dataset_id=dataset.id,
        config=cfg.model_dump(mode="json"),
        status=JobStatus.QUEUED,
        counters={"images": len(image_ids)},
    )
    session.add(job)
    session.flush()
    mining.add_job_items(session, job.id, image_ids, cfg.stages)
    return job


def list_jobs(session: Session, limit: int = 50) -> list[Job]:
    return mining.list_jobs(session, limit)


# --------------------------------------------------------------------------------- what to run


def _config(job: Job | mining.JobRow) -> MiningConfig:
    return job_config(job.config, job.id)


def _barrier(config: MiningConfig, stage: str) -> bool:
    # Hard negatives come from the dataset's vocabulary: propose waits until every image of the
    # job is parsed, so the candidates do not depend on the order images happen to run in.
    return config.hard_negatives and stage == "propose"


def next_items(
    session: Session, job_id: int, limit: int | None = None, *, latest_first: bool = False
) -> list[tuple[int, str]]:
    """Every (image id, stage) ready to run now: pending, with the image's previous stage done
    or skipped as not needed. Earlier stages first (``latest_first``: later stages first, so
    that under ``limit`` the images furthest along are offered), then by image id. Empty unless
    the job is queued or running."""
    job = mining.get_job(session, job_id)
    if job.status not in ACTIVE:
        return []
    config = _config(job)
    stages = config.stages
    out: list[tuple[int, str]] = []
    order = range(len(stages) - 1, -1, -1) if latest_first else range(len(stages))
    for i in order:
        stage = stages[i]
        if _barrier(config, stage) and mining.unfinished_count(session, job_id, "parse"):
            continue
        room = None if limit is None else limit - len(out)
        if room is not None and room <= 0:
            break
        previous = stages[i - 1] if i else None
        out += [
            (img, stage) for img in mining.ready_items(session, job_id, stage, previous, limit=room)
        ]
    return out


def ready_after(session: Session, job_id: int, image_id: int, stage: str) -> list[tuple[int, str]]:
    """The items that became ready because (``image_id``, ``stage``) finished (done, failed or
    skipped): usually the image's next stage; all images' ``propose`` when this was the last
    ``parse`` of a job with hard negatives. Call after the finishing transaction committed; an
    item may be returned twice to two callers (running it twice is harmless)."""
    return ready_after_many(session, job_id, [image_id], stage)


def batch_size(session: Session, job_id: int) -> int:
    """Images per stage task of the job (``MiningConfig.batch_size``)."""
    return _config(mining.job_row(session, job_id)).batch_size


def ready_after_many(
    session: Session, job_id: int, image_ids: list[int], stage: str
) -> list[tuple[int, str]]:
    """:func:`ready_after` for several images that finished ``stage`` (one query)."""
    job = mining.job_row(session, job_id)
    if job.status not in ACTIVE:
        return []
    config = _config(job)
    stages = config.stages
    if stage not in stages or stage == stages[-1]:
        return []
    following = stages[stages.index(stage) + 1]
    if _barrier(config, following):
        if mining.unfinished_count(session, job_id, "parse"):
            return []
        return [(img, following) for img in mining.ready_items(session, job_id, following, stage)]
    return [
        (img, following)
        for img in mining.ready_items_of(session, job_id, following, stage, image_ids)
    ]


def record_failure(
    session: Session, job_id: int, image_id: int, stage: str, error: str, *, final: bool = False
) -> JobItemStatus:
    """Record a failed attempt of an item, in a new transaction after the stage's rolled back.

    The item stays ``pending`` (to be tried again) until ``max_attempts`` attempts failed, or at
    once with ``final``; a failed item skips the image's later stages. Returns its new status.
    """
    job = mining.get_job(session, job_id)
    config = _config(job)
    status = mining.count_failure(
        session, job_id, image_id, stage, error[:2000],
        max_attempts=1 if final else config.max_attempts,
    )  # fmt: skip
    if status == JobItemStatus.FAILED and stage in config.stages:
        later = config.stages[config.stages.index(stage) + 1 :]
        mining.skip_later(session, job_id, image_id, later, f"skipped: {stage} failed")
    return status


# ---------------------------------------------------------------------------------- transitions


def start_job(session: Session, job_id: int) -> Job:
    """queued -> running (``started_at`` set once). Other statuses are left as they are."""
    job = mining.get_job(session, job_id, for_update=True)
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.RUNNING
        job.started_at = job.started_at or _now()
        session.flush()
    return job


def cancel_job(session: Session, job_id: int) -> Job:
    """Stop a job: a queued one is cancelled at once; a running one becomes ``cancelling`` (no
    new item starts; the edge that runs it settles it as ``cancelled``).

    Raises:
        ConflictError: the job already finished.
    """
    job = mining.get_job(session, job_id, for_update=True)
    if job.status in FINAL:
        raise ConflictError(f"job {job_id} is already {job.status.value}")
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.CANCELLED
        job.finished_at = _now()
    elif job.status == JobStatus.RUNNING:
        job.status = JobStatus.CANCELLING
    session.flush()
    return job


def resume_job(session: Session, job_id: int, *, retry_failed: bool = False) -> Job:
    """Queue a cancelled, failed or interrupted job again: only unfinished items run (items
    caught mid-run by a crash included); with ``retry_failed``, failed images too.

    A ``cancelling`` job whose runner is gone (it crashed before settling it) can be resumed too.
    A job left ``queued``/``running``/``cancelling`` with nothing unfinished (its last task
    committed its work, then the worker died before the job was settled) is settled instead:
    it comes back ``done`` (or ``cancelled``) with its outcome counters, and nothing runs.

    Raises:
        ConflictError: nothing is left to run (and the job was already settled).
    """
    job = mining.get_job(session, job_id, for_update=True)
    remaining = mining.reset_items(session, job_id, failed=retry_failed)
    if remaining == 0 and job.status in (*ACTIVE, JobStatus.CANCELLING):
        finish_if_done(session, job_id)
        return job
    if remaining == 0:
        hint = "" if retry_failed else " (--retry-failed runs its failed images again)"
        raise ConflictError(f"job {job_id} has nothing left to run{hint}")
    job.status = JobStatus.QUEUED
    job.finished_at = None
    job.error = None
    session.flush()
    return job


def fail_job(session: Session, job_id: int, error: str) -> Job:
    """A systemic failure (a model that cannot load, a broken configuration): the job stops."""
    job = mining.get_job(session, job_id, for_update=True)
    job.status = JobStatus.FAILED
    job.error = error[:4000]
    job.finished_at = _now()
    job.counters = {**(job.counters or {}), **mining.job_outcome_counts(session, job_id)}
    session.flush()
    return job


def finish_if_done(session: Session, job_id: int) -> bool:
    """Settle a job whose work has stopped: ``cancelling`` -> ``cancelled``; queued/running with
    no unfinished item -> ``done``. Records the outcome counters. True when it settled the job."""
    # Called after every last-stage task, it mostly finds items left: that is read without
    # locking the job (and without loading it); what is settled is decided under the lock.
    status, unfinished = mining.status_and_unfinished(session, job_id)
    if status in ACTIVE and unfinished:
        return False
    job = mining.get_job(session, job_id, for_update=True)
    if job.status == JobStatus.CANCELLING:
        job.status = JobStatus.CANCELLED
    elif job.status in ACTIVE and mining.unfinished_count(session, job_id) == 0:
        job.status = JobStatus.DONE
    else:
        return False
    job.finished_at = _now()
    job.counters = {**(job.counters or {}), **mining.job_outcome_counts(session, job_id)}
    session.flush()
    return True


# ------------------------------------------------------------------------------------ progress


@dataclass(frozen=True)
class StageProgress:
    stage: str
    total: int
    done: int
    failed: int
    skipped: int

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def pending(self) -> int:
        return self.total - self.finished


@dataclass(frozen=True)
class JobProgress:
    """Where a job stands. ``rate`` is finished items per second since the job started, and
    ``eta_s`` the time the unfinished items take at that rate (``None`` before anything
    finished)."""

    job_id: int
    status: JobStatus
    images: int
    stages: list[StageProgress]
    elapsed_s: float
    rate: float | None
    eta_s: float | None
    error: str | None

    @property
    def total(self) -> int:
        return sum(s.total for s in self.stages)

    @property
    def finished(self) -> int:
        return sum(s.finished for s in self.stages)

    @property
    def images_finished(self) -> int:
        """Images whose last stage finished (done, failed or skipped)."""
        return self.stages[-1].finished if self.stages else 0


def job_progress(session: Session, job_id: int) -> JobProgress:
    job = mining.get_job(session, job_id)
    counts = mining.item_counts(session, job_id)
    config = _config(job)
    stages: list[StageProgress] = []
    for stage in [s for s in STAGES if s in config.stages]:
        c = counts.get(stage, {})
        stages.append(
            StageProgress(
                stage=stage,
                total=sum(c.values()),
                done=c.get("done", 0),
                failed=c.get("failed", 0),
                skipped=c.get("skipped", 0),
            )
        )
    started = _aware(job.started_at)
    end = _aware(job.finished_at) or (
        _now() if job.status in ACTIVE or job.status == JobStatus.CANCELLING
        else _aware(mining.last_item_update(session, job_id)) or _now()
    )  # fmt: skip
    elapsed = max((end - started).total_seconds(), 0.0) if started else 0.0
    finished = sum(s.finished for s in stages)
    total = sum(s.total for s in stages)
    rate = finished / elapsed if elapsed > 0 and finished else None
    eta = (total - finished) / rate if rate and job.status in ACTIVE else None
    return JobProgress(
        job_id=job.id,
        status=JobStatus(job.status),
        images=int((job.counters or {}).get("images", stages[0].total if stages else 0)),
        stages=stages,
        elapsed_s=elapsed,
        rate=rate,
        eta_s=eta,
        error=job.error,
    )
