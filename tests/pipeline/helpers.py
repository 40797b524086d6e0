"""Reading a database back as plain data, to compare runs of the same job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from annotator.db.models import (
    Annotation,
    Caption,
    Concept,
    Image,
    JobItem,
    Pair,
    Proposal,
    ReviewTask,
    Verification,
)
from annotator.db.session import session_scope

COUNTED = (Image, Caption, Concept, Pair, Proposal, Verification, Annotation, ReviewTask, JobItem)


def table_counts(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as session:
        return {
            m.__tablename__: session.scalar(select(func.count()).select_from(m)) or 0
            for m in COUNTED
        }


def dataset_rows(engine: Engine, dataset_id: int) -> list[tuple[Any, ...]]:
    """Every pair of the dataset with what the pipeline attached to it, keyed by names (not
    ids), sorted: two runs of the same job on the same images compare equal."""
    out: list[tuple[Any, ...]] = []
    with session_scope(engine) as session:
        pairs = session.execute(
            select(Pair, Image.file_name, Concept.text)
            .join(Image, Image.id == Pair.image_id)
            .join(Concept, Concept.id == Pair.concept_id)
            .where(Pair.dataset_id == dataset_id)
        ).all()
        for pair, file_name, phrase in pairs:
            proposals = session.scalars(
                select(Proposal).where(Proposal.pair_id == pair.id).order_by(Proposal.rank)
            ).all()
            verdicts = sorted(
                (v.kind.value, v.label, round(v.p_accept, 6), v.proposal_id is not None)
                for v in session.scalars(
                    select(Verification).where(Verification.pair_id == pair.id)
                )
            )
            anns = sorted(
                (a.rle_counts, a.source.value, round(a.score or 0, 6))
                for a in session.scalars(select(Annotation).where(Annotation.pair_id == pair.id))
            )
            tasks = session.scalar(select(func.count()).where(ReviewTask.pair_id == pair.id))
            out.append(
                (
                    file_name,
                    phrase,
                    pair.origin.value,
                    pair.state.value,
                    pair.is_exhaustive,
                    pair.state_reason,
                    tuple((p.rank, p.rle_counts, round(p.score, 6)) for p in proposals),
                    tuple(verdicts),
                    tuple(anns),
                    tasks,
                )
            )
    return sorted(out, key=repr)
