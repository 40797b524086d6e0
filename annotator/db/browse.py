"""Queries of the dataset browser: concept search, keyset pages of pairs and images, and one
image with every pair, mask and proposal on it. Read-only.

Pages are keyset pages, newest first: ``before`` is the smallest id of the previous page, so a
page costs the same at the millionth row as at the first (an index range scan of ``limit``
rows; see migration 0004 for the indexes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from annotator.db.models import (
    Annotation,
    Concept,
    Image,
    Pair,
    PairState,
    Proposal,
    Review,
    Verification,
    VerificationKind,
)
from annotator.db.repositories import chunks


def _like(q: str) -> str:
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_concepts(
    session: Session, dataset_id: int, q: str, limit: int = 20
) -> list[tuple[int, str, int]]:
    """(concept id, text, pairs in the dataset) of concepts containing ``q`` that the dataset
    uses; exact and prefix matches first, then by text."""
    used = select(Pair.id).where(Pair.dataset_id == dataset_id, Pair.concept_id == Concept.id)
    text = func.lower(Concept.text)
    stmt = select(Concept.id, Concept.text).where(used.exists())
    if q:
        stmt = stmt.where(text.like(_like(q), escape="\\"))
    prefix = _like(q)[1:]  # "q%": starts with q
    rank = case((text == q.lower(), 0), (text.like(prefix, escape="\\"), 1), else_=2)
    rows = list(session.execute(stmt.order_by(rank, Concept.text).limit(limit)))
    counts = pair_counts(session, dataset_id, [cid for cid, _ in rows])
    return [(cid, t, counts.get(cid, 0)) for cid, t in rows]


def pair_counts(session: Session, dataset_id: int, concept_ids: Sequence[int]) -> dict[int, int]:
    if not concept_ids:
        return {}
    rows = session.execute(
        select(Pair.concept_id, func.count())
        .where(Pair.dataset_id == dataset_id, Pair.concept_id.in_(list(concept_ids)))
        .group_by(Pair.concept_id)
    )
    return {cid: int(n) for cid, n in rows}


def concept_id(session: Session, text: str) -> int | None:
    return session.scalar(select(Concept.id).where(Concept.text == text))


def _live_masks(pair_id: Any) -> Any:
    return (
        select(func.count())
        .where(Annotation.pair_id == pair_id, Annotation.superseded_at.is_(None))
        .correlate_except(Annotation)
        .scalar_subquery()
    )


@dataclass(frozen=True)
class PairCard:
    pair_id: int
    image_id: int
    file_name: str
    width: int | None
    height: int | None
    concept: str
    state: PairState
    is_exhaustive: bool | None
    masks: int


def pair_page(
    session: Session,
    dataset_id: int,
    *,
    concept_id: int | None = None,
    state: PairState | None = None,
    before: int | None = None,
    limit: int = 48,
) -> list[PairCard]:
    """Pairs of the dataset, newest first, ``limit`` of them with ids below ``before``."""
    page = select(Pair.id).where(Pair.dataset_id == dataset_id)
    if concept_id is not None:
        page = page.where(Pair.concept_id == concept_id)
    if state is not None:
        page = page.where(Pair.state == state)
    if before is not None:
        page = page.where(Pair.id < before)
    ids = page.order_by(Pair.id.desc()).limit(limit).subquery()
    stmt = (
        select(
            Pair.id,
            Pair.image_id,
            Image.file_name,
            Image.width,
            Image.height,
            Concept.text,
            Pair.state,
            Pair.is_exhaustive,
            _live_masks(Pair.id),
        )
        .join(ids, ids.c.id == Pair.id)
        .join(Image, Image.id == Pair.image_id)
        .join(Concept, Concept.id == Pair.concept_id)
        .order_by(Pair.id.desc())
    )
    return [
        PairCard(pid, iid, f, w, h, t, PairState(s), e, int(n or 0))
        for pid, iid, f, w, h, t, s, e, n in session.execute(stmt)
    ]


@dataclass(frozen=True)
class ImageCard:
    image_id: int
    file_name: str
    width: int | None
    height: int | None
    status: str
    positives: int
    negatives: int


def image_page(
    session: Session, dataset_id: int, *, before: int | None = None, limit: int = 48
) -> list[ImageCard]:
    """Images of the dataset, newest first, with their positive and negative pair counts."""
    page = select(Image.id).where(Image.dataset_id == dataset_id)
    if before is not None:
        page = page.where(Image.id < before)
    ids = page.order_by(Image.id.desc()).limit(limit).subquery()
    rows = list(
        session.execute(
            select(Image.id, Image.file_name, Image.width, Image.height, Image.status)
            .join(ids, ids.c.id == Image.id)
            .order_by(Image.id.desc())
        )
    )
    counts: dict[tuple[int, str], int] = {}
    image_ids = [r[0] for r in rows]
    if image_ids:
        for iid, st, n in session.execute(
            select(Pair.image_id, Pair.state, func.count())
            .where(
                Pair.image_id.in_(image_ids),
                Pair.state.in_((PairState.POSITIVE, PairState.NEGATIVE)),
            )
            .group_by(Pair.image_id, Pair.state)
        ):
            counts[(iid, PairState(st).value)] = int(n)
    return [
        ImageCard(
            iid,
            f,
            w,
            h,
            str(getattr(st, "value", st)),
            counts.get((iid, "positive"), 0),
            counts.get((iid, "negative"), 0),
        )
        for iid, f, w, h, st in rows
    ]


# ---------------------------------------------------------------------------- one image


@dataclass(frozen=True)
class MaskRow:
    """One mask drawn on an image: an accepted annotation, or a proposal still under review."""

    kind: str  # "annotation" | "proposal"
    id: int
    pair_id: int
    counts: str
    bbox: tuple[float, float, float, float]
    area: int
    score: float | None
    source: str  # auto / human / import, or the proposer for a proposal
    model_version: str | None
    reviewer: str | None
    mv_p_accept: float | None


@dataclass(frozen=True)
class PairRow:
    pair_id: int
    concept: str
    origin: str
    state: str
    is_exhaustive: bool | None
    is_pixel_exhaustive: bool | None
    reason: str | None
    job_id: int | None


def image_pairs(session: Session, image_id: int) -> list[PairRow]:
    rows = session.execute(
        select(
            Pair.id,
            Concept.text,
            Pair.origin,
            Pair.state,
            Pair.is_exhaustive,
            Pair.is_pixel_exhaustive,
            Pair.state_reason,
            Pair.job_id,
        )
        .join(Concept, Concept.id == Pair.concept_id)
        .where(Pair.image_id == image_id)
        .order_by(Concept.text)
    )
    return [
        PairRow(i, t, str(getattr(o, "value", o)), str(getattr(s, "value", s)), e, p, r, j)
        for i, t, o, s, e, p, r, j in rows
    ]


def image_masks(
    session: Session, pair_ids: Sequence[int], *, proposals_for: Sequence[int], limit: int
) -> list[MaskRow]:
    """Live annotations of ``pair_ids`` and proposals of ``proposals_for`` (pairs not decided
    yet), at most ``limit`` in all (annotations first, best score first)."""
    out: list[MaskRow] = []
    for part in chunks(sorted(pair_ids), 1000):
        for a, reviewer in session.execute(
            select(Annotation, Review.reviewer)
            .outerjoin(Review, Review.id == Annotation.review_id)
            .where(Annotation.pair_id.in_(part), Annotation.superseded_at.is_(None))
            .order_by(Annotation.pair_id, Annotation.score.desc(), Annotation.id)
        ):
            out.append(
                MaskRow(
                    "annotation",
                    a.id,
                    a.pair_id,
                    a.rle_counts,
                    (a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h),
                    a.area,
                    a.score,
                    str(getattr(a.source, "value", a.source)),
                    a.model_version,
                    reviewer,
                    None,
                )
            )
            if len(out) >= limit:
                return out
    for part in chunks(sorted(proposals_for), 1000):
        mv = {
            pid: p
            for pid, p in session.execute(
                select(Verification.proposal_id, Verification.p_accept).where(
                    Verification.pair_id.in_(part), Verification.kind == VerificationKind.MV
                )
            )
        }
        for p in session.scalars(
            select(Proposal)
            .where(Proposal.pair_id.in_(part))
            .order_by(Proposal.pair_id, Proposal.rank)
        ):
            out.append(
                MaskRow(
                    "proposal",
                    p.id,
                    p.pair_id,
                    p.rle_counts,
                    (p.bbox_x, p.bbox_y, p.bbox_w, p.bbox_h),
                    p.area,
                    p.score,
                    "proposal",
                    p.model_version,
                    None,
                    mv.get(p.id),
                )
            )
            if len(out) >= limit:
                return out
    return out
