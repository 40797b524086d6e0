"""Queries of the dataset browser: concept search, keyset pages of pairs and images, and one
image with every pair, mask and proposal on it. Read-only.

Pages are keyset pages, newest first: ``before`` is the smallest id of the previous page, so a
page costs the same at the millionth row as at the first (an index range scan of ``limit``
rows; see migration 0004 for the indexes).

The pages and the image view are the web service's hottest reads, so they are plain SQL
written once (:func:`~sqlalchemy.text`, portable between PostgreSQL and SQLite) and run on the
session's connection: one statement per page, which names the dataset (and concept) itself, and
no ORM objects. A statement built per call with the ORM cost several times the query itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import TextualSelect, case, column, func, select, text
from sqlalchemy.orm import Session

from annotator.db.models import (
    Concept,
    Pair,
    PairState,
)
from annotator.errors import NotFoundError


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


@dataclass(frozen=True)
class PairCard:
    pair_id: int
    image_id: int
    file_name: str
    width: int | None
    height: int | None
    concept: str
    state: str  # a PairState value
    is_exhaustive: bool | None
    masks: int


def _sql(statement: str, *names: str) -> TextualSelect:
    """A read statement written once. Naming its result columns lets SQLAlchemy cache how it
    reads the rows (a bare ``text()`` matches them by name on every execution)."""
    return text(statement).columns(*(column(n) for n in names))


# Past every id: the first page.
_NO_CURSOR = 2**63 - 1
_UNDECIDED_SQL = "('proposed', 'verified', 'in_review')"


@lru_cache(maxsize=4)
def _pair_page_sql(by_concept: bool, by_state: bool) -> TextualSelect:
    return _sql(
        "SELECT p.id, p.image_id, i.file_name, i.width, i.height, c.text, p.state,"
        " p.is_exhaustive,"
        " (SELECT count(*) FROM annotations a"
        "  WHERE a.pair_id = p.id AND a.superseded_at IS NULL)"
        " FROM pairs p"
        " JOIN images i ON i.id = p.image_id"
        " JOIN concepts c ON c.id = p.concept_id"
        " WHERE p.dataset_id = (SELECT d.id FROM datasets d WHERE d.name = :dataset)"
        + (" AND p.concept_id = (SELECT k.id FROM concepts k WHERE k.text = :concept)"
           if by_concept else "")
        + (" AND p.state = :state" if by_state else "")
        + " AND p.id < :before ORDER BY p.id DESC LIMIT :limit",
        "id", "image_id", "file_name", "width", "height", "text", "state", "is_exhaustive",
        "masks",
    )  # fmt: skip


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)  # SQLite answers 0/1


def pair_page(
    session: Session,
    dataset: str,
    *,
    concept: str | None = None,
    state: PairState | None = None,
    before: int | None = None,
    limit: int = 48,
) -> list[PairCard]:
    """Pairs of dataset ``dataset`` (a name), newest first, ``limit`` of them with ids below
    ``before``; only those of concept ``concept`` (its exact, normalised text) and in ``state``
    when given. Empty for an unknown dataset or concept (one query either way)."""
    params: dict[str, Any] = {
        "dataset": dataset,
        "before": _NO_CURSOR if before is None else before,
        "limit": limit,
    }
    if concept is not None:
        params["concept"] = concept
    if state is not None:
        params["state"] = state.value
    rows = session.connection().execute(
        _pair_page_sql(concept is not None, state is not None), params
    )
    return [
        PairCard(pid, iid, f, w, h, t, str(s), _bool(e), int(n or 0))
        for pid, iid, f, w, h, t, s, e, n in rows.all()
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


_IMAGE_PAGE = _sql(
    "SELECT i.id, i.file_name, i.width, i.height, i.status,"
    " (SELECT count(*) FROM pairs p WHERE p.image_id = i.id AND p.state = 'positive'),"
    " (SELECT count(*) FROM pairs p WHERE p.image_id = i.id AND p.state = 'negative')"
    " FROM images i"
    " WHERE i.dataset_id = (SELECT d.id FROM datasets d WHERE d.name = :dataset)"
    " AND i.id < :before ORDER BY i.id DESC LIMIT :limit",
    *("id", "file_name", "width", "height", "status", "positives", "negatives"),
)


def image_page(
    session: Session, dataset: str, *, before: int | None = None, limit: int = 48
) -> list[ImageCard]:
    """Images of dataset ``dataset`` (a name), newest first, with their positive and negative
    pair counts. Empty for an unknown dataset."""
    rows = session.connection().execute(
        _IMAGE_PAGE,
        {"dataset": dataset, "before": _NO_CURSOR if before is None else before, "limit": limit},
    )
    return [
        ImageCard(iid, f, w, h, str(st), int(pos or 0), int(neg or 0))
        for iid, f, w, h, st, pos, neg in rows.all()
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


@dataclass(frozen=True)
class ImageRow:
    id: int
    dataset_id: int
    file_name: str
    width: int | None
    height: int | None
    status: str
    error: str | None


_IMAGE_PAIRS = _sql(
    "SELECT i.id, i.dataset_id, i.file_name, i.width, i.height, i.status, i.error,"
    " p.id, c.text, p.origin, p.state, p.is_exhaustive, p.is_pixel_exhaustive,"
    " p.state_reason, p.job_id"
    " FROM images i"
    " LEFT JOIN pairs p ON p.image_id = i.id"
    " LEFT JOIN concepts c ON c.id = p.concept_id"
    " WHERE i.id = :image_id ORDER BY c.text",
    *("id", "dataset_id", "file_name", "width", "height", "status", "error"),
    *("pair_id", "concept", "origin", "state", "is_exhaustive", "is_pixel_exhaustive"),
    *("state_reason", "job_id"),
)


def image_pairs(session: Session, image_id: int) -> tuple[ImageRow, list[PairRow]]:
    """The image and every pair on it, by concept text, in one query.

    Raises:
        NotFoundError: no image ``image_id``.
    """
    rows = session.connection().execute(_IMAGE_PAIRS, {"image_id": image_id}).all()
    if not rows:
        raise NotFoundError(f"no image {image_id}")
    first = rows[0]
    image = ImageRow(first[0], first[1], first[2], first[3], first[4], str(first[5]), first[6])
    pairs = [
        PairRow(r[7], r[8], str(r[9]), str(r[10]), _bool(r[11]), _bool(r[12]), r[13], r[14])
        for r in rows
        if r[7] is not None
    ]
    return image, pairs


_IMAGE_ANNOTATIONS = _sql(
    "SELECT a.id, a.pair_id, a.rle_counts, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, a.area,"
    " a.score, a.source, a.model_version, r.reviewer"
    " FROM annotations a"
    " JOIN pairs p ON p.id = a.pair_id"
    " LEFT JOIN reviews r ON r.id = a.review_id"
    f" WHERE p.image_id = :image_id AND p.state NOT IN {_UNDECIDED_SQL}"
    " AND a.superseded_at IS NULL"
    " ORDER BY a.pair_id, a.score DESC, a.id LIMIT :limit",
    *("id", "pair_id", "rle_counts", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "area", "score"),
    *("source", "model_version", "reviewer"),
)
_IMAGE_PROPOSALS = _sql(
    "SELECT pr.id, pr.pair_id, pr.rle_counts, pr.bbox_x, pr.bbox_y, pr.bbox_w, pr.bbox_h,"
    " pr.area, pr.score, pr.model_version,"
    " (SELECT v.p_accept FROM verifications v"
    "  WHERE v.proposal_id = pr.id AND v.kind = 'mv' ORDER BY v.id DESC LIMIT 1)"
    " FROM proposals pr"
    " JOIN pairs p ON p.id = pr.pair_id"
    f" WHERE p.image_id = :image_id AND p.state IN {_UNDECIDED_SQL}"
    " ORDER BY pr.pair_id, pr.rank, pr.id LIMIT :limit",
    *("id", "pair_id", "rle_counts", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "area", "score"),
    *("model_version", "mv_p_accept"),
)


def image_masks(
    session: Session,
    image_id: int,
    *,
    annotations: bool = True,
    proposals: bool = True,
    limit: int,
) -> list[MaskRow]:
    """The masks drawn on image ``image_id``: live annotations of its decided pairs, then the
    proposals of its pairs not decided yet (proposed, verified, in review), at most ``limit``
    in all (annotations first; by pair, then best score / rank first). ``annotations`` /
    ``proposals``: False skips that query (no such pairs)."""
    conn = session.connection()
    out: list[MaskRow] = []
    if annotations:
        for aid, pid, counts, x, y, w, h, area, score, source, version, reviewer in conn.execute(
            _IMAGE_ANNOTATIONS, {"image_id": image_id, "limit": limit}
        ).all():
            box = (x, y, w, h)
            out.append(
                MaskRow(
                    "annotation",
                    aid,
                    pid,
                    counts,
                    box,
                    area,
                    score,
                    str(source),
                    version,
                    reviewer,
                    None,
                )
            )
    if proposals and len(out) < limit:
        for rid, pid, counts, x, y, w, h, area, score, version, mv in conn.execute(
            _IMAGE_PROPOSALS, {"image_id": image_id, "limit": limit - len(out)}
        ).all():
            box = (x, y, w, h)
            out.append(
                MaskRow(
                    "proposal", rid, pid, counts, box, area, score, "proposal", version, None, mv
                )
            )
    return out
