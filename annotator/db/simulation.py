"""Queries of the demo: open review tasks, a job's pairs and their outcomes.

Like :mod:`annotator.db.repositories`: functions take a ``Session`` and only flush.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Concept,
    Image,
    Pair,
    PairOrigin,
    PairState,
    Proposal,
    ReviewTask,
    ReviewTaskStatus,
)

__all__ = ["JobPair", "image_ids", "image_names", "job_pairs", "open_review_tasks"]


def open_review_tasks(session: Session, dataset_id: int) -> list[ReviewTask]:
    """Review tasks of the dataset nobody has answered yet (open or sent), by id."""
    return list(
        session.scalars(
            select(ReviewTask)
            .join(Pair, Pair.id == ReviewTask.pair_id)
            .where(
                Pair.dataset_id == dataset_id,
                ReviewTask.status.in_((ReviewTaskStatus.OPEN, ReviewTaskStatus.PUSHED)),
            )
            .order_by(ReviewTask.id)
        )
    )


@dataclass
class JobPair:
    """One pair a job mined, with what the machines and people made of it."""

    id: int
    image_id: int
    file_name: str
    height: int
    width: int
    phrase: str
    origin: PairOrigin
    state: PairState
    reviewed: bool  # a review task exists for it
    proposals: list[tuple[str, float]]  # (RLE counts, score) of the job's proposals, by rank
    auto: list[str]  # RLE counts of the automatic annotations made by routing
    final: list[str]  # RLE counts of the current annotations (auto or human)


def job_pairs(session: Session, job_id: int) -> list[JobPair]:
    """Every pair of a job, by id."""
    rows = session.execute(
        select(Pair, Concept.text, Image.file_name, Image.height, Image.width)
        .join(Concept, Concept.id == Pair.concept_id)
        .join(Image, Image.id == Pair.image_id)
        .where(Pair.job_id == job_id)
        .order_by(Pair.id)
    ).all()
    ids = [r[0].id for r in rows]
    proposals: dict[int, list[tuple[str, float]]] = defaultdict(list)
    auto: dict[int, list[str]] = defaultdict(list)
    final: dict[int, list[str]] = defaultdict(list)
    reviewed: set[int] = set()
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        for p in session.scalars(
            select(Proposal)
            .where(Proposal.pair_id.in_(part), Proposal.job_id == job_id)
            .order_by(Proposal.pair_id, Proposal.rank)
        ):
            proposals[p.pair_id].append((p.rle_counts, p.score))
        for a in session.scalars(
            select(Annotation).where(Annotation.pair_id.in_(part)).order_by(Annotation.id)
        ):
            if a.source == AnnotationSource.AUTO:
                auto[a.pair_id].append(a.rle_counts)
            if a.superseded_at is None:
                final[a.pair_id].append(a.rle_counts)
        reviewed |= set(
            session.scalars(select(ReviewTask.pair_id).where(ReviewTask.pair_id.in_(part)))
        )
    return [
        JobPair(
            id=pair.id,
            image_id=pair.image_id,
            file_name=file_name,
            height=height or 0,
            width=width or 0,
            phrase=text,
            origin=pair.origin,
            state=pair.state,
            reviewed=pair.id in reviewed,
            proposals=proposals[pair.id],
            auto=auto[pair.id],
            final=final[pair.id],
        )
        for pair, text, file_name, height, width in rows
    ]


def image_names(session: Session, image_ids: list[int]) -> dict[int, str]:
    """``image id -> file_name``."""
    out: dict[int, str] = {}
    ids = sorted(set(image_ids))
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        rows = session.execute(select(Image.id, Image.file_name).where(Image.id.in_(part)))
        out.update({image_id: name for image_id, name in rows})
    return out


def image_ids(session: Session, dataset: str, file_names: list[str]) -> list[int]:
    """Ids of the dataset's images named ``file_names``, in that order."""
    from annotator.db.models import Dataset

    found: dict[str, int] = {}
    for start in range(0, len(file_names), 500):
        part = file_names[start : start + 500]
        found.update(
            {
                name: image_id
                for image_id, name in session.execute(
                    select(Image.id, Image.file_name)
                    .join(Dataset, Dataset.id == Image.dataset_id)
                    .where(Dataset.name == dataset, Image.file_name.in_(part))
                )
            }
        )
    return [found[n] for n in file_names if n in found]
