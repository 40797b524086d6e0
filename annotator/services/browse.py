"""The dataset browser: search concepts, page through pairs or images (keyset, newest first),
and one image with its masks per concept, negatives and exhaustivity flags."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from annotator.db import browse as db
from annotator.db import repositories as repo
from annotator.db.models import PairState
from annotator.errors import InvalidInputError

__all__ = ["image_view", "page", "search_concepts"]

# Pairs whose masks are still proposals (not decided): the browser shows the proposals.
UNDECIDED = {"proposed", "verified", "in_review"}
MAX_MASKS = 1000


def search_concepts(session: Session, dataset: str, q: str, limit: int = 20) -> list[dict]:
    ds = repo.get_dataset(session, dataset)
    return [
        {"id": cid, "text": text, "pairs": n}
        for cid, text, n in db.search_concepts(session, ds.id, q.strip(), limit)
    ]


def page(
    session: Session,
    dataset: str,
    *,
    concept: str | None = None,
    state: str | None = None,
    before: int | None = None,
    limit: int = 48,
) -> dict[str, Any]:
    """One page of the browser: pairs when a concept or state is asked for, else images.

    ``next_before`` is the cursor of the next page (None on the last one). One query, and a
    second only when the page is empty (to tell an unknown dataset, a 404, from no rows).

    Raises:
        NotFoundError: no dataset ``dataset``.
        InvalidInputError: ``state`` is not a pair state.
    """
    if concept or state:
        try:
            wanted = PairState(state) if state else None
        except ValueError as exc:
            # The errors in their old order: an unknown dataset, then an unknown concept (an
            # empty page), then the state.
            repo.get_dataset(session, dataset)
            if concept and db.concept_id(session, concept.strip().lower()) is None:
                return {"kind": "pairs", "items": [], "next_before": None}
            choices = ", ".join(s.value for s in PairState)
            raise InvalidInputError(f"unknown state {state!r}: use one of {choices}") from exc
        cards = db.pair_page(
            session,
            dataset,
            concept=concept.strip().lower() if concept else None,
            state=wanted,
            before=before,
            limit=limit,
        )
        if not cards:
            repo.get_dataset(session, dataset)
        items: list[dict[str, Any]] = [
            {
                "pair_id": c.pair_id,
                "image_id": c.image_id,
                "file_name": c.file_name,
                "width": c.width,
                "height": c.height,
                "concept": c.concept,
                "state": c.state,
                "is_exhaustive": c.is_exhaustive,
                "masks": c.masks,
            }
            for c in cards
        ]
        last = cards[-1].pair_id if len(cards) == limit else None
        return {"kind": "pairs", "items": items, "next_before": last}
    images = db.image_page(session, dataset, before=before, limit=limit)
    if not images:
        repo.get_dataset(session, dataset)
    return {
        "kind": "images",
        "items": [
            {
                "image_id": c.image_id,
                "file_name": c.file_name,
                "width": c.width,
                "height": c.height,
                "status": c.status,
                "positives": c.positives,
                "negatives": c.negatives,
            }
            for c in images
        ],
        "next_before": images[-1].image_id if len(images) == limit else None,
    }


def image_view(session: Session, image_id: int) -> dict[str, Any]:
    """An image with every pair on it: ``positives`` (with masks: accepted annotations, or the
    proposals of pairs not decided yet), ``negatives`` (verified absent) and the others.
    Two or three queries.

    Raises:
        NotFoundError: no image ``image_id``.
    """
    image, pairs = db.image_pairs(session, image_id)
    rows = db.image_masks(
        session,
        image_id,
        annotations=any(p.state not in UNDECIDED for p in pairs),
        proposals=any(p.state in UNDECIDED for p in pairs),
        limit=MAX_MASKS,
    )
    by_pair: dict[int, list[dict[str, Any]]] = {}
    for m in rows:
        by_pair.setdefault(m.pair_id, []).append(
            {
                "kind": m.kind,
                "id": m.id,
                "counts": m.counts,
                "bbox": list(m.bbox),
                "area": m.area,
                "score": m.score,
                "source": m.source,
                "model_version": m.model_version,
                "reviewer": m.reviewer,
                "mv_p_accept": m.mv_p_accept,
            }
        )
    out_pairs = [
        {
            "pair_id": p.pair_id,
            "concept": p.concept,
            "origin": p.origin,
            "state": p.state,
            "is_exhaustive": p.is_exhaustive,
            "is_pixel_exhaustive": p.is_pixel_exhaustive,
            "reason": p.reason,
            "job_id": p.job_id,
            "masks": by_pair.get(p.pair_id, []),
        }
        for p in pairs
    ]
    return {
        "image": {
            "id": image.id,
            "dataset_id": image.dataset_id,
            "file_name": image.file_name,
            "width": image.width,
            "height": image.height,
            "status": image.status,
            "error": image.error,
        },
        "pairs": out_pairs,
        "truncated": len(rows) >= MAX_MASKS,
    }
