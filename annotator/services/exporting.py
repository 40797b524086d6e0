"""Stream a dataset (or a frozen version of it) to COCO or SA-Co JSON.

Rows are read through server-side cursors in batches and written as they arrive, so memory
does not grow with the dataset. Output depends only on database content (no timestamps), so
exporting a version twice gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

from sqlalchemy import Select
from sqlalchemy.orm import Session

from annotator.db import repositories as repo
from annotator.db.models import PairState
from annotator.errors import InvalidInputError
from annotator.formats import coco, saco
from annotator.formats.common import HashingWriter

ExportFormat = Literal["coco", "saco"]
FORMATS: tuple[ExportFormat, ...] = ("coco", "saco")
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ExportResult:
    format: str
    counts: dict[str, int]
    sha256: str
    bytes_written: int
    # The checksum recorded when the version was frozen (None for live exports).
    expected_sha256: str | None = None

    @property
    def matches_version(self) -> bool | None:
        if self.expected_sha256 is None:
            return None
        return self.expected_sha256 == self.sha256


def _stream(session: Session, stmt: Select, batch: int) -> Iterator[Any]:
    result = session.execute(stmt.execution_options(yield_per=batch))
    yield from result


def _counted(rows: Iterator[Any], progress: Progress | None, every: int = 10_000) -> Iterator[Any]:
    if progress is None:
        yield from rows
        return
    n = 0
    for row in rows:
        yield row
        n += 1
        if n % every == 0:
            progress(every)
    progress(n % every)


def _bool(value: bool | None) -> bool | None:
    return None if value is None else bool(value)


def _coco_images(session: Session, scope: repo.ExportScope, batch: int) -> Iterator[dict[str, Any]]:
    flagged = _stream(session, repo.export_pairs(scope, flagged_only=True), batch)
    pending = next(flagged, None)
    for image_id, file_name, width, height in _stream(session, repo.export_images(scope), batch):
        neg: list[int] = []
        not_exhaustive: list[int] = []
        # Merge join: both streams are ordered by image id.
        while pending is not None and pending[1] <= image_id:
            if pending[1] == image_id:
                (neg if pending[3] == PairState.NEGATIVE else not_exhaustive).append(pending[2])
            pending = next(flagged, None)
        yield {
            "id": image_id,
            "file_name": file_name,
            "width": width,
            "height": height,
            "neg_category_ids": neg,
            "not_exhaustive_category_ids": not_exhaustive,
        }


def _coco_annotations(rows: Iterator[Any]) -> Iterator[dict[str, Any]]:
    for (
        ann_id, _pair_id, image_id, concept_id, counts, height, width, area,
        x, y, w, h, iscrowd, source, score, model_version, proposal_id, review_id,
    ) in rows:  # fmt: skip
        ann = {
            "id": ann_id,
            "image_id": image_id,
            "category_id": concept_id,
            "segmentation": {"size": [height, width], "counts": counts},
            "area": area,
            "bbox": [x, y, w, h],
            "iscrowd": 1 if iscrowd else 0,
            "source": source,
        }
        if score is not None:
            ann["score"] = score
        if model_version is not None:
            ann["model_version"] = model_version
        if proposal_id is not None:
            ann["proposal_id"] = proposal_id
        if review_id is not None:
            ann["review_id"] = review_id
        yield ann


def _saco_pairs(rows: Iterator[Any]) -> Iterator[dict[str, Any]]:
    for pair_id, _img, concept_id, _state, exh, pix, file_name, width, height, text in rows:
        yield {
            "id": pair_id,
            "file_name": file_name,
            "text_input": text,
            "height": height,
            "width": width,
            "queried_category": str(concept_id),
            "is_instance_exhaustive": _bool(exh),
            "is_pixel_exhaustive": _bool(pix),
        }


def _saco_annotations(rows: Iterator[Any]) -> Iterator[dict[str, Any]]:
    for (
        ann_id, pair_id, _image_id, _concept_id, counts, height, width, area,
        x, y, w, h, iscrowd, source, score, _mv, _prop, _rev,
    ) in rows:  # fmt: skip
        ann = {
            "id": ann_id,
            "image_id": pair_id,
            "category_id": 1,
            "segmentation": {"size": [height, width], "counts": counts},
            "bbox": [x / width, y / height, w / width, h / height],
            "area": area / (width * height),
            "iscrowd": 1 if iscrowd else 0,
            "source": source,
        }
        if score is not None:
            ann["score"] = score
        yield ann


def write_export(
    session: Session,
    scope: repo.ExportScope,
    fmt: str,
    out: IO[bytes] | None,
    *,
    info: dict[str, Any],
    batch: int = 5000,
    progress: Progress | None = None,
) -> tuple[dict[str, int], HashingWriter]:
    """Write one export of ``scope`` to ``out`` (``None``: only hash it)."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}: use coco or saco")
    sink = HashingWriter(out)
    annotations = _counted(_stream(session, repo.export_annotations(scope), batch), progress)
    if fmt == "coco":
        counts = coco.write(
            sink,
            info={**info, "format": "coco"},
            images=_coco_images(session, scope, batch),
            categories=(
                {"id": cid, "name": text}
                for cid, text in _stream(session, repo.export_categories(scope), batch)
            ),
            annotations=_coco_annotations(annotations),
        )
    else:
        counts = saco.write(
            sink,
            info={**info, "format": "saco"},
            pairs=_saco_pairs(_stream(session, repo.export_pairs(scope), batch)),
            annotations=_saco_annotations(annotations),
        )
    return counts, sink


def export_dataset(
    session: Session,
    dataset_name: str,
    fmt: str,
    out: IO[bytes],
    *,
    version: str | None = None,
    batch: int = 5000,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a dataset, or its frozen ``version``, as ``fmt`` into the binary stream ``out``."""
    dataset = repo.get_dataset(session, dataset_name)
    expected = None
    scope = repo.ExportScope(dataset.id)
    if version is not None:
        frozen = repo.get_version(session, dataset.id, version)
        scope = repo.ExportScope(dataset.id, frozen.id)
        expected = frozen.checksums.get(fmt)
    counts, sink = write_export(
        session,
        scope,
        fmt,
        out,
        info={"dataset": dataset.name, "version": version},
        batch=batch,
        progress=progress,
    )
    return ExportResult(fmt, counts, sink.hexdigest(), sink.bytes_written, expected)


def count_annotations(session: Session, dataset_name: str, version: str | None = None) -> int:
    """How many annotations an export will write (for progress bars)."""
    dataset = repo.get_dataset(session, dataset_name)
    scope = repo.ExportScope(dataset.id)
    if version is not None:
        scope = repo.ExportScope(dataset.id, repo.get_version(session, dataset.id, version).id)
    return repo.count_rows(session, repo.export_annotations(scope))
