"""Queries behind the dashboard and the statistics API: routing, throughput, growth, review,
verifier-vs-human agreement and ground truth for cgF1. Read-only.

Time series are bucketed in the database (``date_trunc`` on PostgreSQL, ``strftime`` on SQLite)
and come back as ``(bucket start as ISO text, ...)`` rows in time order.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, exists, func, select
from sqlalchemy.orm import Session

from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Image,
    Job,
    JobItem,
    JobItemStatus,
    Pair,
    PairState,
    Proposal,
    Review,
    ReviewAction,
    ReviewTask,
    Verification,
    VerificationKind,
)
from annotator.db.repositories import chunks

Bucket = Literal["minute", "hour", "day"]
BUCKETS: tuple[Bucket, ...] = ("minute", "hour", "day")
_SQLITE_FORMATS = {"minute": "%Y-%m-%dT%H:%M:00", "hour": "%Y-%m-%dT%H:00:00", "day": "%Y-%m-%d"}


def bucket_of(session: Session, column: Any, unit: Bucket) -> ColumnElement[Any]:
    """The start of the ``unit`` that ``column`` (a timestamp) falls in."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc(unit, column)
    return func.strftime(_SQLITE_FORMATS[unit], column)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(timespec="minutes")
    text = str(value)
    return text if len(text) > 10 else text + "T00:00"


# ------------------------------------------------------------------------------------- routing


def routing_breakdown(
    session: Session, dataset_id: int | None = None, job_id: int | None = None
) -> dict[str, int]:
    """Pairs by where routing (and review) sent them: ``auto_accepted`` (positive, never sent to
    a person), ``auto_negative`` (negative, never sent), ``to_review`` (a review task, still
    open), ``reviewed`` (a review task, done), ``ungroundable`` and ``in_progress`` (pending,
    proposed, verified)."""
    has_task = exists(select(ReviewTask.id).where(ReviewTask.pair_id == Pair.id))
    open_task = exists(
        select(ReviewTask.id).where(ReviewTask.pair_id == Pair.id, ReviewTask.status != "done")
    )
    where = []
    if dataset_id is not None:
        where.append(Pair.dataset_id == dataset_id)
    if job_id is not None:
        where.append(Pair.job_id == job_id)
    kind = case(
        (open_task, "to_review"),
        (has_task, "reviewed"),
        (Pair.state == PairState.POSITIVE, "auto_accepted"),
        (Pair.state == PairState.NEGATIVE, "auto_negative"),
        (Pair.state == PairState.UNGROUNDABLE, "ungroundable"),
        else_="in_progress",
    ).label("kind")
    out = dict.fromkeys(
        ("auto_accepted", "auto_negative", "to_review", "reviewed", "ungroundable", "in_progress"),
        0,
    )
    for k, n in session.execute(select(kind, func.count()).where(*where).group_by(kind)):
        out[k] = int(n)
    return out


def masks_by_source(session: Session, dataset_id: int | None = None) -> dict[str, int]:
    """Live (not superseded) annotations by source: auto, human, import."""
    stmt = select(Annotation.source, func.count()).where(Annotation.superseded_at.is_(None))
    if dataset_id is not None:
        stmt = stmt.where(Annotation.dataset_id == dataset_id)
    out = {s.value: 0 for s in AnnotationSource}
    for source, n in session.execute(stmt.group_by(Annotation.source)):
        out[AnnotationSource(source).value] = int(n)
    return out


# ---------------------------------------------------------------------------------- throughput


def throughput(
    session: Session,
    unit: Bucket,
    *,
    job_id: int | None = None,
    dataset_id: int | None = None,
    since: datetime | None = None,
) -> list[tuple[str, str, int]]:
    """(bucket, stage, items finished as done) of mining jobs, in time order."""
    bucket = bucket_of(session, JobItem.updated_at, unit).label("bucket")
    stmt = select(bucket, JobItem.stage, func.count()).where(JobItem.status == JobItemStatus.DONE)
    if job_id is not None:
        stmt = stmt.where(JobItem.job_id == job_id)
    if dataset_id is not None:
        stmt = stmt.join(Job, Job.id == JobItem.job_id).where(Job.dataset_id == dataset_id)
    if since is not None:
        stmt = stmt.where(JobItem.updated_at >= since)
    rows = session.execute(stmt.group_by(bucket, JobItem.stage).order_by(bucket))
    return [(_iso(b), stage, int(n)) for b, stage, n in rows]


# -------------------------------------------------------------------------------------- growth


@dataclass
class Growth:
    """Per bucket: pairs created, pairs that became positive / negative (by their last
    change), masks added and masks superseded."""

    buckets: list[str] = field(default_factory=list)
    series: dict[str, list[int]] = field(default_factory=dict)


def growth(session: Session, dataset_id: int, unit: Bucket) -> Growth:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def collect(name: str, column: Any, *where: Any, model: Any) -> None:
        b = bucket_of(session, column, unit).label("b")
        stmt = select(b, func.count()).select_from(model).where(*where).group_by(b)
        for bucket, n in session.execute(stmt):
            counts[_iso(bucket)][name] += int(n)

    collect("pairs", Pair.created_at, Pair.dataset_id == dataset_id, model=Pair)
    collect(
        "positives",
        Pair.updated_at,
        Pair.dataset_id == dataset_id,
        Pair.state == PairState.POSITIVE,
        model=Pair,
    )
    collect(
        "negatives",
        Pair.updated_at,
        Pair.dataset_id == dataset_id,
        Pair.state == PairState.NEGATIVE,
        model=Pair,
    )
    collect(
        "masks_added", Annotation.created_at, Annotation.dataset_id == dataset_id, model=Annotation
    )
    collect(
        "masks_superseded",
        Annotation.superseded_at,
        Annotation.dataset_id == dataset_id,
        Annotation.superseded_at.is_not(None),
        model=Annotation,
    )
    names = ("pairs", "positives", "negatives", "masks_added", "masks_superseded")
    buckets = sorted(counts)
    return Growth(buckets, {n: [counts[b][n] for b in buckets] for n in names})


# -------------------------------------------------------------------------------------- review


def _review_scope(dataset_id: int | None) -> list[Any]:
    if dataset_id is None:
        return []
    return [
        exists(
            select(Pair.id)
            .join(ReviewTask, ReviewTask.pair_id == Pair.id)
            .where(ReviewTask.id == Review.task_id, Pair.dataset_id == dataset_id)
        )
    ]


# A reviewer's submission is the pair-level row of an annotation (no proposal, no region).
def _submissions() -> list[Any]:
    return [
        Review.proposal_id.is_(None),
        Review.region_id.is_(None),
        Review.action != ReviewAction.DELETE,
    ]


def review_tasks_by_status(session: Session, dataset_id: int | None = None) -> dict[str, int]:
    stmt = select(ReviewTask.status, func.count()).group_by(ReviewTask.status)
    if dataset_id is not None:
        stmt = stmt.join(Pair, Pair.id == ReviewTask.pair_id).where(Pair.dataset_id == dataset_id)
    return {str(getattr(s, "value", s)): int(n) for s, n in session.execute(stmt)}


def reviews_by_action(session: Session, dataset_id: int | None = None) -> dict[str, int]:
    """Live mask decisions (rows on a proposal or a hand-drawn region) by action."""
    stmt = (
        select(Review.action, func.count())
        .where(
            Review.superseded_at.is_(None),
            Review.proposal_id.is_not(None) | Review.region_id.is_not(None),
            *_review_scope(dataset_id),
        )
        .group_by(Review.action)
    )
    return {str(getattr(a, "value", a)): int(n) for a, n in session.execute(stmt)}


def submissions_per_reviewer(
    session: Session, unit: Bucket, dataset_id: int | None = None
) -> list[tuple[str, str, int]]:
    """(bucket, reviewer, submissions) in time order."""
    b = bucket_of(session, Review.created_at, unit).label("b")
    who = func.coalesce(Review.reviewer, "unknown").label("who")
    stmt = (
        select(b, who, func.count())
        .where(*_submissions(), *_review_scope(dataset_id))
        .group_by(b, who)
        .order_by(b)
    )
    return [(_iso(x), str(r), int(n)) for x, r, n in session.execute(stmt)]


def lead_times(
    session: Session, dataset_id: int | None = None, limit: int = 5000
) -> list[tuple[str, float]]:
    """(reviewer, lead time s) of the newest ``limit`` submissions that report one."""
    stmt = (
        select(func.coalesce(Review.reviewer, "unknown"), Review.lead_time_s)
        .where(*_submissions(), Review.lead_time_s.is_not(None), *_review_scope(dataset_id))
        .order_by(Review.id.desc())
        .limit(limit)
    )
    return [(str(r), float(t)) for r, t in session.execute(stmt) if t is not None]


# ------------------------------------------------------------------------------- agreement


@dataclass(frozen=True)
class ReviewedMask:
    """A proposal that both the verifier (MV) and a person judged."""

    proposal_id: int
    p_accept: float
    verifier_label: str
    human: ReviewAction  # accept, reject or fix (fix: not acceptable as it was)
    auto_accepted: bool  # routing had accepted it before the person looked
    job_id: int | None


def reviewed_masks(
    session: Session, dataset_id: int | None = None, limit: int = 20000
) -> list[ReviewedMask]:
    """The newest ``limit`` proposals with an MV verdict and a live human mask decision."""
    auto = exists(
        select(Annotation.id).where(
            Annotation.proposal_id == Verification.proposal_id,
            Annotation.source == AnnotationSource.AUTO,
        )
    )
    stmt = (
        select(
            Verification.proposal_id,
            Verification.p_accept,
            Verification.label,
            Review.action,
            auto,
            Verification.job_id,
        )
        .join(Review, Review.proposal_id == Verification.proposal_id)
        .where(
            Verification.kind == VerificationKind.MV,
            Review.superseded_at.is_(None),
            Review.action.in_((ReviewAction.ACCEPT, ReviewAction.REJECT, ReviewAction.FIX)),
        )
        .order_by(Review.id.desc())
        .limit(limit)
    )
    if dataset_id is not None:
        stmt = stmt.join(Pair, Pair.id == Verification.pair_id).where(Pair.dataset_id == dataset_id)
    seen: set[int] = set()
    out: list[ReviewedMask] = []
    for pid, p, label, action, was_auto, job in session.execute(stmt):
        if pid is None or pid in seen:  # several MV versions: the newest review counts once
            continue
        seen.add(pid)
        out.append(
            ReviewedMask(pid, float(p), str(label), ReviewAction(action), bool(was_auto), job)
        )
    return out


def job_thresholds(session: Session, job_ids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """(accept_above, reject_below) of each mining job's routing config; accept_above is
    ``inf`` where the job's MV auto-accept was off (``routing.auto_accept`` false)."""
    out: dict[int, tuple[float, float]] = {}
    for part in chunks(sorted(set(job_ids)), 1000):
        for jid, config in session.execute(select(Job.id, Job.config).where(Job.id.in_(part))):
            routing = (config or {}).get("routing", {})
            accept_above = float(routing.get("accept_above", 0.9))
            out[jid] = (
                accept_above if routing.get("auto_accept", True) else math.inf,
                float(routing.get("reject_below", 0.1)),
            )
    return out


# ------------------------------------------------------------------------------ ground truth


@dataclass
class GroundTruthPair:
    pair_id: int
    job_id: int
    height: int
    width: int
    gt: list[str] = field(default_factory=list)  # RLE counts
    gt_crowd: list[bool] = field(default_factory=list)
    # model_version -> [(counts, score)]
    predictions: dict[str, list[tuple[str, float]]] = field(default_factory=dict)


def ground_truth_pairs(
    session: Session, dataset_id: int, limit: int = 1000
) -> list[GroundTruthPair]:
    """The newest ``limit`` pairs that can serve as ground truth for the proposer: negative, or
    positive and instance-exhaustive with masks made by people or imported (never the proposer's
    own auto-accepted masks) of pairs a mining job proposed masks for; each with its live masks
    and every proposal on it (none when the proposer found nothing)."""
    machine_only = exists(
        select(Annotation.id).where(
            Annotation.pair_id == Pair.id,
            Annotation.superseded_at.is_(None),
            Annotation.source == AnnotationSource.AUTO,
        )
    )
    stmt = (
        select(Pair.id, Pair.job_id, Image.height, Image.width)
        .join(Image, Image.id == Pair.image_id)
        .where(
            Pair.dataset_id == dataset_id,
            (Pair.state == PairState.NEGATIVE)
            | and_(Pair.state == PairState.POSITIVE, Pair.is_exhaustive.is_(True)),
            ~machine_only,
            Pair.job_id.is_not(None),
            Image.height.is_not(None),
        )
        .order_by(Pair.id.desc())
        .limit(limit)
    )
    pairs = {
        pid: GroundTruthPair(pid, j, h, w)
        for pid, j, h, w in session.execute(stmt)
        if j is not None and h is not None and w is not None
    }
    ids = sorted(pairs)
    for part in chunks(ids, 1000):
        for pid, counts, crowd in session.execute(
            select(Annotation.pair_id, Annotation.rle_counts, Annotation.iscrowd).where(
                Annotation.pair_id.in_(part), Annotation.superseded_at.is_(None)
            )
        ):
            pairs[pid].gt.append(counts)
            pairs[pid].gt_crowd.append(bool(crowd))
        for pid, counts, score, version in session.execute(
            select(Proposal.pair_id, Proposal.rle_counts, Proposal.score, Proposal.model_version)
            .where(Proposal.pair_id.in_(part))
            .order_by(Proposal.rank)
        ):
            pairs[pid].predictions.setdefault(version, []).append((counts, float(score)))
    return [pairs[i] for i in ids]


def proposer_versions(session: Session, job_ids: Sequence[int]) -> dict[int, set[str]]:
    """The proposal model versions each job produced."""
    out: dict[int, set[str]] = defaultdict(set)
    for part in chunks(sorted(set(job_ids)), 1000):
        for job_id, version in session.execute(
            select(Proposal.job_id, Proposal.model_version)
            .where(Proposal.job_id.in_(part))
            .distinct()
        ):
            if job_id is not None:
                out[job_id].add(version)
    return out
