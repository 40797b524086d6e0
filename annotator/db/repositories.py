"""All queries live here. Functions take a ``Session`` and only flush; the caller commits."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, insert, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from annotator.db.models import (
    Annotation,
    Base,
    Concept,
    Dataset,
    DatasetVersion,
    Image,
    ImageStatus,
    Pair,
    PairState,
    VersionAnnotation,
    VersionImage,
    VersionPair,
)
from annotator.errors import ConflictError, NotFoundError

FINAL_STATES = (PairState.POSITIVE, PairState.NEGATIVE)


# ---------------------------------------------------------------------------- generic helpers


def insert_ignore(
    session: Session, model: type[Base], rows: Sequence[dict[str, Any]], conflict: Sequence[str]
) -> None:
    """INSERT ... ON CONFLICT (conflict) DO NOTHING, on PostgreSQL and SQLite."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = maker(model).on_conflict_do_nothing(index_elements=list(conflict))
    session.execute(stmt, list(rows))


def chunks(items: Sequence[Any], size: int = 5000) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ----------------------------------------------------------------------------------- datasets


def get_dataset(session: Session, name: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        known = session.scalars(select(Dataset.name).order_by(Dataset.name).limit(20)).all()
        hint = f" (datasets: {', '.join(known)})" if known else " (there are no datasets yet)"
        raise NotFoundError(f"no dataset named {name!r}{hint}")
    return dataset


def create_dataset(session: Session, name: str, description: str | None = None) -> Dataset:
    name = name.strip()
    if not name:
        raise ConflictError("a dataset needs a non-empty name")
    if session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None:
        raise ConflictError(f"a dataset named {name!r} already exists")
    dataset = Dataset(name=name, description=description)
    session.add(dataset)
    session.flush()
    return dataset


def get_or_create_dataset(session: Session, name: str) -> tuple[Dataset, bool]:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is not None:
        return dataset, False
    return create_dataset(session, name), True


@dataclass(frozen=True)
class DatasetSummary:
    name: str
    images: int
    positives: int
    negatives: int
    annotations: int
    versions: int


def list_datasets(session: Session) -> list[DatasetSummary]:
    def counts(stmt: Select) -> dict[int, int]:
        return {row[0]: row[1] for row in session.execute(stmt)}

    images = counts(select(Image.dataset_id, func.count()).group_by(Image.dataset_id))
    pos = counts(
        select(Pair.dataset_id, func.count())
        .where(Pair.state == PairState.POSITIVE)
        .group_by(Pair.dataset_id)
    )
    neg = counts(
        select(Pair.dataset_id, func.count())
        .where(Pair.state == PairState.NEGATIVE)
        .group_by(Pair.dataset_id)
    )
    anns = counts(
        select(Annotation.dataset_id, func.count())
        .where(Annotation.superseded_at.is_(None))
        .group_by(Annotation.dataset_id)
    )
    versions = counts(
        select(DatasetVersion.dataset_id, func.count()).group_by(DatasetVersion.dataset_id)
    )
    return [
        DatasetSummary(
            name=d.name,
            images=images.get(d.id, 0),
            positives=pos.get(d.id, 0),
            negatives=neg.get(d.id, 0),
            annotations=anns.get(d.id, 0),
            versions=versions.get(d.id, 0),
        )
        for d in session.scalars(select(Dataset).order_by(Dataset.name))
    ]


# ----------------------------------------------------------------------------- concepts/images


def ensure_concepts(session: Session, phrases: Iterable[str]) -> dict[str, int]:
    """Concept ids for ``phrases``, creating the missing ones."""
    wanted = sorted(set(phrases))
    ids: dict[str, int] = {}
    for part in chunks(wanted, 1000):
        insert_ignore(session, Concept, [{"text": p} for p in part], ["text"])
        rows = session.execute(select(Concept.text, Concept.id).where(Concept.text.in_(part)))
        ids.update({text: cid for text, cid in rows})
    return ids


def images_by_file_name(
    session: Session, dataset_id: int, names: Sequence[str]
) -> dict[str, Image]:
    found: dict[str, Image] = {}
    for part in chunks(names, 1000):
        for image in session.scalars(
            select(Image).where(Image.dataset_id == dataset_id, Image.file_name.in_(part))
        ):
            found[image.file_name] = image
    return found


def images_by_sha256(session: Session, dataset_id: int, digests: Sequence[str]) -> dict[str, Image]:
    found: dict[str, Image] = {}
    for part in chunks(digests, 1000):
        for image in session.scalars(
            select(Image).where(Image.dataset_id == dataset_id, Image.sha256.in_(part))
        ):
            assert image.sha256 is not None
            found[image.sha256] = image
    return found


def existing_pairs(session: Session, keys: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which (image_id, concept_id) of ``keys`` already exist."""
    found: set[tuple[int, int]] = set()
    image_ids = sorted({k[0] for k in keys})
    wanted = set(keys)
    for part in chunks(image_ids, 1000):
        for image_id, concept_id in session.execute(
            select(Pair.image_id, Pair.concept_id).where(Pair.image_id.in_(part))
        ):
            if (image_id, concept_id) in wanted:
                found.add((image_id, concept_id))
    return found


def pair_ids(
    session: Session, dataset_id: int, image_ids: Sequence[int]
) -> dict[tuple[int, int], int]:
    ids: dict[tuple[int, int], int] = {}
    for part in chunks(sorted(set(image_ids)), 1000):
        for pid, image_id, concept_id in session.execute(
            select(Pair.id, Pair.image_id, Pair.concept_id).where(
                Pair.dataset_id == dataset_id, Pair.image_id.in_(part)
            )
        ):
            ids[(image_id, concept_id)] = pid
    return ids


def bulk_insert(session: Session, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    for part in chunks(rows, 5000):
        session.execute(insert(model), list(part))


# ----------------------------------------------------------------------------------- versions


def get_version(session: Session, dataset_id: int, tag: str) -> DatasetVersion:
    version = session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.tag == tag
        )
    )
    if version is None:
        tags = session.scalars(
            select(DatasetVersion.tag).where(DatasetVersion.dataset_id == dataset_id)
        ).all()
        hint = f" (versions: {', '.join(tags)})" if tags else " (it has no versions yet)"
        raise NotFoundError(f"dataset has no version {tag!r}{hint}")
    return version


def list_versions(session: Session, dataset_id: int) -> list[DatasetVersion]:
    return list(
        session.scalars(
            select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset_id)
            .order_by(DatasetVersion.created_at, DatasetVersion.id)
        )
    )


def freeze_version(session: Session, dataset_id: int, tag: str, note: str | None) -> DatasetVersion:
    """Record the dataset's current exportable content as version ``tag`` (INSERT ... SELECT)."""
    if session.scalar(
        select(DatasetVersion.id).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.tag == tag
        )
    ):
        raise ConflictError(f"version {tag!r} already exists")
    version = DatasetVersion(dataset_id=dataset_id, tag=tag, note=note, checksums={})
    session.add(version)
    session.flush()
    vid = literal(version.id)
    session.execute(
        insert(VersionImage).from_select(
            ["version_id", "image_id"], live_images(dataset_id).with_only_columns(vid, Image.id)
        )
    )
    session.execute(
        insert(VersionPair).from_select(
            ["version_id", "pair_id", "state", "is_exhaustive", "is_pixel_exhaustive"],
            select(vid, Pair.id, Pair.state, Pair.is_exhaustive, Pair.is_pixel_exhaustive).where(
                Pair.dataset_id == dataset_id, Pair.state.in_(FINAL_STATES)
            ),
        )
    )
    session.execute(
        insert(VersionAnnotation).from_select(
            ["version_id", "annotation_id"],
            select(vid, Annotation.id)
            .join(Pair, Pair.id == Annotation.pair_id)
            .where(
                Annotation.dataset_id == dataset_id,
                Annotation.superseded_at.is_(None),
                Pair.state == PairState.POSITIVE,
            ),
        )
    )
    version.num_pairs = (
        session.scalar(select(func.count()).where(VersionPair.version_id == version.id)) or 0
    )
    version.num_annotations = (
        session.scalar(select(func.count()).where(VersionAnnotation.version_id == version.id)) or 0
    )
    session.flush()
    return version


# ------------------------------------------------------------------------ export (streaming)


def live_images(dataset_id: int) -> Select:
    return select(Image).where(Image.dataset_id == dataset_id, Image.status != ImageStatus.FAILED)


@dataclass(frozen=True)
class ExportScope:
    """What an export reads: the live dataset, or a frozen version of it."""

    dataset_id: int
    version_id: int | None = None


def export_images(scope: ExportScope) -> Select:
    """(id, file_name, width, height) by id."""
    stmt = select(Image.id, Image.file_name, Image.width, Image.height)
    if scope.version_id is None:
        stmt = stmt.where(Image.dataset_id == scope.dataset_id, Image.status != ImageStatus.FAILED)
    else:
        stmt = stmt.join(VersionImage, VersionImage.image_id == Image.id).where(
            VersionImage.version_id == scope.version_id
        )
    return stmt.order_by(Image.id)


def export_pairs(scope: ExportScope, *, flagged_only: bool = False) -> Select:
    """(pair id, image id, concept id, state, is_exhaustive, is_pixel_exhaustive, file_name,
    width, height, phrase) of the exported pairs, by (image id, concept id) when
    ``flagged_only`` (for the COCO per-image lists), else by pair id.

    ``flagged_only`` keeps the pairs that a COCO image lists: negatives and positives that are
    not known to be exhaustive.
    """
    if scope.version_id is None:
        state, exh, pix = Pair.state, Pair.is_exhaustive, Pair.is_pixel_exhaustive
        stmt = select(Pair.id).where(
            Pair.dataset_id == scope.dataset_id, Pair.state.in_(FINAL_STATES)
        )
    else:
        state, exh, pix = (
            VersionPair.state,
            VersionPair.is_exhaustive,
            VersionPair.is_pixel_exhaustive,
        )
        stmt = (
            select(Pair.id)
            .join(VersionPair, VersionPair.pair_id == Pair.id)
            .where(VersionPair.version_id == scope.version_id)
        )
    stmt = (
        stmt.add_columns(
            Pair.image_id,
            Pair.concept_id,
            state,
            exh,
            pix,
            Image.file_name,
            Image.width,
            Image.height,
            Concept.text,
        )
        .join(Image, Image.id == Pair.image_id)
        .join(Concept, Concept.id == Pair.concept_id)
    )
    if flagged_only:
        stmt = stmt.where(
            (state == PairState.NEGATIVE) | and_(state == PairState.POSITIVE, exh.is_not(True))
        ).order_by(Pair.image_id, Pair.concept_id)
    else:
        stmt = stmt.order_by(Pair.id)
    return stmt


def export_categories(scope: ExportScope) -> Select:
    """(concept id, text) of the concepts that exported pairs use, by id."""
    pairs = export_pairs(scope).with_only_columns(Pair.concept_id).order_by(None).distinct()
    return (
        select(Concept.id, Concept.text)
        .where(Concept.id.in_(pairs.scalar_subquery()))
        .order_by(Concept.id)
    )


def export_annotations(scope: ExportScope) -> Select:
    """Exported annotations with what a writer needs, by annotation id:
    (id, pair id, image id, concept id, counts, height, width, area, x, y, w, h, iscrowd,
    source, score, model_version, proposal_id, review_id)."""
    stmt = (
        select(
            Annotation.id,
            Annotation.pair_id,
            Pair.image_id,
            Pair.concept_id,
            Annotation.rle_counts,
            Image.height,
            Image.width,
            Annotation.area,
            Annotation.bbox_x,
            Annotation.bbox_y,
            Annotation.bbox_w,
            Annotation.bbox_h,
            Annotation.iscrowd,
            Annotation.source,
            Annotation.score,
            Annotation.model_version,
            Annotation.proposal_id,
            Annotation.review_id,
        )
        .join(Pair, Pair.id == Annotation.pair_id)
        .join(Image, Image.id == Pair.image_id)
    )
    if scope.version_id is None:
        stmt = stmt.where(
            Annotation.dataset_id == scope.dataset_id,
            Annotation.superseded_at.is_(None),
            Pair.state == PairState.POSITIVE,
        )
    else:
        stmt = stmt.join(VersionAnnotation, VersionAnnotation.annotation_id == Annotation.id).where(
            VersionAnnotation.version_id == scope.version_id
        )
    return stmt.order_by(Annotation.id)


def count_rows(session: Session, stmt: Select) -> int:
    return session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
