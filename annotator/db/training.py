"""Queries of proposer training: a dataset's accepted labels per image.

Like :mod:`annotator.db.repositories`: functions take a ``Session`` and only read.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from annotator.db.models import Annotation, Concept, Image, Pair, PairState
from annotator.db.repositories import chunks

__all__ = [
    "LabelledImage",
    "LabelledPair",
    "ReviewedProposal",
    "labelled_images",
    "reviewed_pairs",
]


@dataclass
class LabelledPair:
    phrase: str
    positive: bool
    is_exhaustive: bool | None
    counts: list[str] = field(default_factory=list)  # RLE counts of current, non-crowd masks


@dataclass
class LabelledImage:
    id: int
    uri: str
    width: int
    height: int
    pairs: list[LabelledPair]


def labelled_images(session: Session, dataset_id: int) -> list[LabelledImage]:
    """Images of the dataset with positive or negative pairs, by id; per pair its phrase,
    state, exhaustivity and current (not superseded) non-crowd annotation masks."""
    rows = session.execute(
        select(Pair.id, Pair.image_id, Pair.state, Pair.is_exhaustive, Concept.text)
        .join(Concept, Concept.id == Pair.concept_id)
        .where(
            Pair.dataset_id == dataset_id,
            Pair.state.in_((PairState.POSITIVE, PairState.NEGATIVE)),
        )
        .order_by(Pair.image_id, Pair.id)
    ).all()
    counts: dict[int, list[str]] = defaultdict(list)
    for pair_id, rle in session.execute(
        select(Annotation.pair_id, Annotation.rle_counts)
        .where(
            Annotation.dataset_id == dataset_id,
            Annotation.superseded_at.is_(None),
            Annotation.iscrowd.is_(False),
        )
        .order_by(Annotation.pair_id, Annotation.id)
    ):
        counts[pair_id].append(rle)
    image_ids = sorted({r.image_id for r in rows})
    images: dict[int, Image] = {}
    for part in chunks(image_ids, 1000):
        images.update(
            {
                i.id: i
                for i in session.scalars(select(Image).where(Image.id.in_(part)))
                if i.width and i.height
            }
        )
    out: dict[int, LabelledImage] = {}
    for pair_id, image_id, state, exhaustive, text in rows:
        image = images.get(image_id)
        if image is None:
            continue
        assert image.width is not None and image.height is not None
        entry = out.setdefault(
            image_id, LabelledImage(image_id, image.uri, image.width, image.height, [])
        )
        entry.pairs.append(
            LabelledPair(
                phrase=text,
                positive=state == PairState.POSITIVE,
                is_exhaustive=exhaustive,
                counts=counts.get(pair_id, []),
            )
        )
    return [out[i] for i in sorted(out)]


@dataclass
class ReviewedProposal:
    id: int
    counts: str
    score: float
    presence: float | None
    rank: int
    accepted: bool | None  # the live review: accepted as is (True), rejected/fixed (False)


def reviewed_pairs(
    session: Session, dataset_id: int, model_version: str | None = None
) -> dict[int, tuple[int, int, list[ReviewedProposal]]]:
    """Pairs of the dataset with at least one reviewed proposal: ``pair id -> (image height,
    image width, every proposal of the pair (of ``model_version`` when given) by rank, each with
    its live review verdict or None)``."""
    from annotator.db.models import Proposal, Review, ReviewAction

    verdicts: dict[int, bool] = {}
    for proposal_id, action in session.execute(
        select(Review.proposal_id, Review.action)
        .join(Proposal, Proposal.id == Review.proposal_id)
        .join(Pair, Pair.id == Proposal.pair_id)
        .where(
            Pair.dataset_id == dataset_id,
            Review.superseded_at.is_(None),
            Review.action.in_((ReviewAction.ACCEPT, ReviewAction.REJECT, ReviewAction.FIX)),
        )
        .order_by(Review.id)
    ):
        if proposal_id is not None:
            verdicts[proposal_id] = action == ReviewAction.ACCEPT
    stmt = (
        select(Proposal, Image.height, Image.width)
        .join(Pair, Pair.id == Proposal.pair_id)
        .join(Image, Image.id == Pair.image_id)
        .where(Pair.dataset_id == dataset_id)
        .order_by(Proposal.pair_id, Proposal.rank, Proposal.id)
    )
    if model_version is not None:
        stmt = stmt.where(Proposal.model_version == model_version)
    out: dict[int, tuple[int, int, list[ReviewedProposal]]] = {}
    for proposal, height, width in session.execute(stmt):
        entry = out.setdefault(proposal.pair_id, (int(height or 0), int(width or 0), []))
        entry[2].append(
            ReviewedProposal(
                id=proposal.id,
                counts=proposal.rle_counts,
                score=proposal.score,
                presence=proposal.presence,
                rank=proposal.rank,
                accepted=verdicts.get(proposal.id),
            )
        )
    return {k: v for k, v in out.items() if any(p.accepted is not None for p in v[2])}
