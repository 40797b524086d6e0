"""Queries of human review: review projects, review tasks, reviews and the annotations they make.

Like :mod:`annotator.db.repositories`: functions take a ``Session`` and only flush; the caller
commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Concept,
    Dataset,
    Image,
    Pair,
    Proposal,
    Review,
    ReviewAction,
    ReviewProject,
    ReviewTask,
    ReviewTaskStatus,
    Verification,
    VerificationKind,
)
from annotator.db.repositories import chunks

# --------------------------------------------------------------------------------- projects


def get_project(session: Session, dataset_id: int, backend: str) -> ReviewProject | None:
    return session.scalar(
        select(ReviewProject).where(
            ReviewProject.dataset_id == dataset_id, ReviewProject.backend == backend
        )
    )


def add_project(
    session: Session, dataset_id: int, backend: str, external_id: str, webhook_id: str | None
) -> ReviewProject:
    project = ReviewProject(
        dataset_id=dataset_id, backend=backend, external_id=external_id, webhook_id=webhook_id
    )
    session.add(project)
    session.flush()
    return project


def projects_to_sync(
    session: Session, backend: str, dataset_ids: Sequence[int] = ()
) -> list[tuple[int, str]]:
    """(dataset id, name) of every dataset with a project of ``backend``, by id; only those of
    ``dataset_ids`` when given."""
    query = (
        select(Dataset.id, Dataset.name)
        .join(ReviewProject, ReviewProject.dataset_id == Dataset.id)
        .where(ReviewProject.backend == backend)
        .order_by(Dataset.id)
    )
    if dataset_ids:
        query = query.where(Dataset.id.in_(list(dataset_ids)))
    return [(int(i), str(n)) for i, n in session.execute(query)]


# pg_try_advisory_xact_lock(namespace, dataset id): the review sync's lock of one dataset.
_SYNC_LOCK_NAMESPACE = 0x5EC0


def try_lock_sync(session: Session, dataset_id: int) -> bool:
    """Take the dataset's review-sync lock until the end of the transaction; False when another
    transaction holds it. PostgreSQL advisory lock; always True elsewhere (SQLite has a single
    writer anyway)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    key = dataset_id % (1 << 31)
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(_SYNC_LOCK_NAMESPACE, key))))


# ------------------------------------------------------------------------------------ tasks


def claim_open_tasks(
    session: Session, dataset_id: int, backend: str, limit: int
) -> list[ReviewTask]:
    """Up to ``limit`` open, never-sent tasks of the dataset, by id, locked (PostgreSQL:
    ``FOR UPDATE SKIP LOCKED``, so two pushes at once take different tasks)."""
    stmt = (
        select(ReviewTask)
        .join(Pair, Pair.id == ReviewTask.pair_id)
        .where(
            Pair.dataset_id == dataset_id,
            ReviewTask.backend == backend,
            ReviewTask.status == ReviewTaskStatus.OPEN,
            ReviewTask.external_id.is_(None),
            ReviewTask.push_token.is_(None),
        )
        .order_by(ReviewTask.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=ReviewTask)
    )
    return list(session.scalars(stmt))


def in_doubt_tasks(session: Session, dataset_id: int, backend: str) -> list[ReviewTask]:
    """Tasks whose push began (token written) but whose backend id was never recorded."""
    return list(
        session.scalars(
            select(ReviewTask)
            .join(Pair, Pair.id == ReviewTask.pair_id)
            .where(
                Pair.dataset_id == dataset_id,
                ReviewTask.backend == backend,
                ReviewTask.status == ReviewTaskStatus.OPEN,
                ReviewTask.external_id.is_(None),
                ReviewTask.push_token.is_not(None),
            )
            .order_by(ReviewTask.id)
            .with_for_update(of=ReviewTask)
        )
    )


def forget_sent_tasks(session: Session, dataset_id: int, backend: str) -> int:
    """The dataset's project in ``backend`` is gone: its tasks are no longer there. Tasks that
    waited for a review (or whose push was in doubt) are open again, never sent; reviewed tasks
    keep their status and decisions and lose their backend id. Returns how many were reopened."""
    tasks = list(
        session.scalars(
            select(ReviewTask)
            .join(Pair, Pair.id == ReviewTask.pair_id)
            .where(
                Pair.dataset_id == dataset_id,
                ReviewTask.backend == backend,
                or_(ReviewTask.external_id.is_not(None), ReviewTask.push_token.is_not(None)),
                ReviewTask.status != ReviewTaskStatus.CANCELLED,
            )
            .with_for_update(of=ReviewTask)
        )
    )
    reopened = 0
    for task in tasks:
        if task.status != ReviewTaskStatus.DONE:
            task.status = ReviewTaskStatus.OPEN
            reopened += 1
        task.external_id = None
        task.push_token = None
        task.url_expires_at = None
    session.flush()
    return reopened


def tasks_by_id(session: Session, ids: Sequence[int]) -> list[ReviewTask]:
    found: list[ReviewTask] = []
    for part in chunks(sorted(set(ids)), 1000):
        found.extend(session.scalars(select(ReviewTask).where(ReviewTask.id.in_(part))))
    return sorted(found, key=lambda t: t.id)


def sent_tasks(session: Session, dataset_id: int, backend: str) -> dict[str, ReviewTask]:
    """The dataset's tasks that exist in the backend, by backend id."""
    rows = session.scalars(
        select(ReviewTask)
        .join(Pair, Pair.id == ReviewTask.pair_id)
        .where(
            Pair.dataset_id == dataset_id,
            ReviewTask.backend == backend,
            ReviewTask.external_id.is_not(None),
        )
    )
    return {t.external_id: t for t in rows if t.external_id is not None}


def task_by_external_id(session: Session, backend: str, external_id: str) -> ReviewTask | None:
    return session.scalar(
        select(ReviewTask).where(
            ReviewTask.backend == backend, ReviewTask.external_id == external_id
        )
    )


def lock_task(session: Session, task_id: int) -> ReviewTask:
    """The task, locked for the rest of the transaction (PostgreSQL ``FOR UPDATE``), so the
    webhook and a sync applying the same annotation at once take turns."""
    task = session.scalar(
        select(ReviewTask)
        .where(ReviewTask.id == task_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert task is not None
    return task


def tasks_with_expiring_urls(
    session: Session, dataset_id: int, backend: str, before: datetime
) -> list[ReviewTask]:
    return list(
        session.scalars(
            select(ReviewTask)
            .join(Pair, Pair.id == ReviewTask.pair_id)
            .where(
                Pair.dataset_id == dataset_id,
                ReviewTask.backend == backend,
                ReviewTask.external_id.is_not(None),
                ReviewTask.status.in_((ReviewTaskStatus.PUSHED, ReviewTaskStatus.DONE)),
                # None: adopted after an interrupted push, expiry unknown.
                or_(ReviewTask.url_expires_at.is_(None), ReviewTask.url_expires_at < before),
            )
            .order_by(ReviewTask.id)
        )
    )


# ----------------------------------------------------------------------- what a task shows


@dataclass(frozen=True)
class ProposalRow:
    id: int
    counts: str
    score: float
    model_version: str
    rank: int
    bbox: tuple[float, float, float, float]
    area: int
    mv_p_accept: float | None


@dataclass(frozen=True)
class TaskContent:
    """What a review task shows: the pair, its image, every proposal, the EV score."""

    task_id: int
    pair_id: int
    image_id: int
    width: int
    height: int
    phrase: str
    proposals: list[ProposalRow]
    ev_label: str | None
    ev_p_accept: float | None


def task_contents(session: Session, task_ids: Sequence[int]) -> dict[int, TaskContent]:
    """The content of each task (by task id), in a few queries whatever the number of tasks.

    Proposals are ordered by rank (then id); of several verifications of one proposal or pair,
    the newest counts.
    """
    heads: dict[int, tuple[int, int, int | None, int | None, str, int]] = {}
    for part in chunks(sorted(set(task_ids)), 1000):
        for tid, pid, iid, w, h, text in session.execute(
            select(ReviewTask.id, Pair.id, Image.id, Image.width, Image.height, Concept.text)
            .join(Pair, Pair.id == ReviewTask.pair_id)
            .join(Image, Image.id == Pair.image_id)
            .join(Concept, Concept.id == Pair.concept_id)
            .where(ReviewTask.id.in_(part))
        ):
            heads[tid] = (pid, iid, w, h, text, tid)
    pair_ids = sorted({h[0] for h in heads.values()})
    proposals: dict[int, list[Proposal]] = defaultdict(list)
    mv: dict[int, float] = {}
    ev: dict[int, tuple[str, float]] = {}
    for part in chunks(pair_ids, 1000):
        for p in session.scalars(
            select(Proposal).where(Proposal.pair_id.in_(part)).order_by(Proposal.rank, Proposal.id)
        ):
            proposals[p.pair_id].append(p)
        for v in session.scalars(
            select(Verification)
            .where(Verification.pair_id.in_(part))
            .order_by(Verification.created_at, Verification.id)
        ):
            if v.kind == VerificationKind.MV and v.proposal_id is not None:
                mv[v.proposal_id] = v.p_accept
            elif v.kind == VerificationKind.EV:
                ev[v.pair_id] = (v.label, v.p_accept)
    contents: dict[int, TaskContent] = {}
    for tid, (pid, iid, w, h, text, _) in heads.items():
        if w is None or h is None:
            continue  # an image never decoded cannot be reviewed; the caller reports it
        label, p_ev = ev.get(pid, (None, None))
        contents[tid] = TaskContent(
            task_id=tid,
            pair_id=pid,
            image_id=iid,
            width=w,
            height=h,
            phrase=text,
            proposals=[
                ProposalRow(
                    id=p.id,
                    counts=p.rle_counts,
                    score=p.score,
                    model_version=p.model_version,
                    rank=p.rank,
                    bbox=(p.bbox_x, p.bbox_y, p.bbox_w, p.bbox_h),
                    area=p.area,
                    mv_p_accept=mv.get(p.id),
                )
                for p in proposals.get(pid, [])
            ],
            ev_label=label,
            ev_p_accept=p_ev,
        )
    return contents


# ---------------------------------------------------------------------------------- reviews


def reviews_of_external(session: Session, task_id: int, external_id: str) -> list[Review]:
    """Every row (live or superseded) made from one external annotation on one task."""
    return list(
        session.scalars(
            select(Review)
            .where(Review.task_id == task_id, Review.external_id == external_id)
            .order_by(Review.id)
        )
    )


def tasks_of_external(session: Session, external_id: str, backend: str) -> list[int]:
    """Ids of the tasks of ``backend`` that hold rows of external annotation ``external_id``."""
    return sorted(
        set(
            session.scalars(
                select(Review.task_id)
                .join(ReviewTask, ReviewTask.id == Review.task_id)
                .where(Review.external_id == external_id, ReviewTask.backend == backend)
            )
        )
    )


def live_groups(session: Session, task_id: int) -> dict[str, str]:
    """External annotation id -> version of the live (not superseded) rows of a task."""
    return {
        ext: version or ""
        for ext, version in session.execute(
            select(Review.external_id, Review.external_version)
            .where(
                Review.task_id == task_id,
                Review.superseded_at.is_(None),
                Review.action != ReviewAction.DELETE,
                Review.external_id.is_not(None),
            )
            .distinct()
        )
        if ext is not None
    }


@dataclass
class ExternalState:
    """What one task's rows say about its external annotations."""

    versions: dict[str, str] = field(default_factory=dict)  # id -> newest version recorded
    deleted: set[str] = field(default_factory=set)  # ids recorded deleted
    live: dict[str, str] = field(default_factory=dict)  # id -> version of the live rows


def external_states(session: Session, task_ids: Sequence[int]) -> dict[int, ExternalState]:
    """Per task (only those with rows of external annotations): see :class:`ExternalState`."""
    states: dict[int, ExternalState] = defaultdict(ExternalState)
    for part in chunks(sorted(set(task_ids)), 1000):
        for tid, ext, action, version, is_live in session.execute(
            select(
                Review.task_id,
                Review.external_id,
                Review.action,
                Review.external_version,
                Review.superseded_at.is_(None),
            )
            .where(Review.task_id.in_(part), Review.external_id.is_not(None))
            .distinct()
        ):
            if ext is None:
                continue
            state = states[tid]
            if action == ReviewAction.DELETE:
                state.deleted.add(ext)
                continue
            version = version or ""
            state.versions[ext] = max(state.versions.get(ext, ""), version)
            if is_live:
                state.live[ext] = version
    return dict(states)


def live_review_ids(session: Session, task_id: int, external_ids: Sequence[str]) -> list[int]:
    if not external_ids:
        return []
    return list(
        session.scalars(
            select(Review.id).where(
                Review.task_id == task_id,
                Review.external_id.in_(list(external_ids)),
                Review.superseded_at.is_(None),
            )
        )
    )


def supersede_reviews(session: Session, review_ids: Sequence[int], when: datetime) -> None:
    """Mark reviews, and the annotations they made, superseded at ``when``."""
    for part in chunks(list(review_ids), 1000):
        session.execute(
            update(Review)
            .where(Review.id.in_(part), Review.superseded_at.is_(None))
            .values(superseded_at=when)
        )
        session.execute(
            update(Annotation)
            .where(Annotation.review_id.in_(part), Annotation.superseded_at.is_(None))
            .values(superseded_at=when)
        )


def supersede_machine_annotations(session: Session, pair_id: int, when: datetime) -> int:
    """A person's review replaces the pair's automatic annotations; how many were live."""
    result = session.execute(
        update(Annotation)
        .where(
            Annotation.pair_id == pair_id,
            Annotation.source == AnnotationSource.AUTO,
            Annotation.superseded_at.is_(None),
        )
        .values(superseded_at=when)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def add_reviews(session: Session, reviews: Sequence[Review]) -> None:
    session.add_all(reviews)
    session.flush()


def add_annotations(session: Session, annotations: Sequence[Annotation]) -> None:
    session.add_all(annotations)
    session.flush()


def get_pair(session: Session, pair_id: int) -> Pair:
    pair = session.get(Pair, pair_id)
    assert pair is not None
    return pair
