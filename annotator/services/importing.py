"""Import a COCO or SA-Co file into a dataset: validate everything, then write in one go.

Nothing is written unless the whole file is valid: parsing and image checks happen before the
first INSERT, and the caller's transaction wraps every write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image as PILImage
from sqlalchemy.orm import Session

from annotator.db import repositories as repo
from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Image,
    ImageStatus,
    Pair,
    PairOrigin,
    PairState,
)
from annotator.errors import ConflictError, InvalidInputError
from annotator.formats import coco, saco
from annotator.formats.common import ImportBundle, load_json

ImportFormat = Literal["coco", "saco"]
PARSERS: dict[str, Callable[[object], ImportBundle]] = {"coco": coco.parse, "saco": saco.parse}


@dataclass(frozen=True)
class ImportResult:
    dataset: str
    dataset_created: bool
    images_added: int
    images_reused: int
    positives: int
    negatives: int
    annotations: int


def read_bundle(path: Path, fmt: str) -> ImportBundle:
    """Parse and validate ``path`` as ``fmt``; every problem names its entry."""
    parser = PARSERS.get(fmt)
    if parser is None:
        raise InvalidInputError(f"unknown import format {fmt!r}: use coco or saco")
    try:
        return parser(load_json(path))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class LocatedImage:
    uri: str
    sha256: str


def locate_images(bundle: ImportBundle, images_dir: Path) -> dict[str, LocatedImage]:
    """Find every image of the bundle under ``images_dir``, hash it, check its size."""
    root = images_dir.resolve()
    if not root.is_dir():
        raise InvalidInputError(f"--images {images_dir}: not a directory")
    located: dict[str, LocatedImage] = {}
    by_digest: dict[str, str] = {}
    for name, image in bundle.images.items():
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise InvalidInputError(f"image {name!r}: file_name points outside {images_dir}")
        if not path.is_file():
            raise InvalidInputError(f"image {name!r}: not found under {images_dir}")
        data = path.read_bytes()
        try:
            with PILImage.open(path) as im:
                size = im.size
        except Exception as exc:  # PIL raises many types for undecodable files
            raise InvalidInputError(f"image {name!r}: cannot be read as an image ({exc})") from exc
        if size != (image.width, image.height):
            raise InvalidInputError(
                f"image {name!r}: file is {size[0]}x{size[1]} but the annotation file says "
                f"{image.width}x{image.height} (width x height)"
            )
        digest = hashlib.sha256(data).hexdigest()
        if digest in by_digest:
            raise InvalidInputError(
                f"image {name!r} has the same content as {by_digest[digest]!r}; "
                "a dataset holds each image once"
            )
        by_digest[digest] = name
        located[name] = LocatedImage(uri=str(path), sha256=digest)
    return located


def write_bundle(
    session: Session,
    dataset_name: str,
    bundle: ImportBundle,
    located: dict[str, LocatedImage] | None = None,
) -> ImportResult:
    """Write a validated bundle into ``dataset_name`` (created if missing). Only flushes."""
    dataset, created = repo.get_or_create_dataset(session, dataset_name)

    existing = repo.images_by_file_name(session, dataset.id, list(bundle.images))
    for name, row in existing.items():
        want = bundle.images[name]
        if (row.width, row.height) not in ((want.width, want.height), (None, None)):
            raise ConflictError(
                f"image {name!r} is already in dataset {dataset.name!r} as "
                f"{row.width}x{row.height}, but the file says {want.width}x{want.height}"
            )
    if located:
        clash = repo.images_by_sha256(
            session, dataset.id, [loc.sha256 for n, loc in located.items() if n not in existing]
        )
        if clash:
            digest, other = next(iter(clash.items()))
            name = next(n for n, loc in located.items() if loc.sha256 == digest)
            raise ConflictError(
                f"image {name!r} has the same content as {other.file_name!r}, "
                f"already in dataset {dataset.name!r}"
            )
    new_rows = []
    for name, image in bundle.images.items():
        if name in existing:
            continue
        loc = located.get(name) if located else None
        new_rows.append(
            {
                "dataset_id": dataset.id,
                "file_name": name,
                "uri": loc.uri if loc else name,
                "sha256": loc.sha256 if loc else None,
                "width": image.width,
                "height": image.height,
                "status": ImageStatus.READY,
            }
        )
    repo.bulk_insert(session, Image, new_rows)
    image_ids = {
        name: image.id
        for name, image in repo.images_by_file_name(
            session, dataset.id, list(bundle.images)
        ).items()
    }

    concept_ids = repo.ensure_concepts(session, (p.phrase for p in bundle.pairs.values()))
    keys = {
        key: (image_ids[pair.file_name], concept_ids[pair.phrase])
        for key, pair in bundle.pairs.items()
    }
    clashes = repo.existing_pairs(session, list(keys.values()))
    if clashes:
        file_name, phrase = next(k for k, v in keys.items() if v in clashes)
        raise ConflictError(
            f"{len(clashes)} pair(s) already exist in dataset {dataset.name!r}, e.g. "
            f"({file_name!r}, {phrase!r}); import does not merge into existing pairs"
        )
    repo.bulk_insert(
        session,
        Pair,
        [
            {
                "dataset_id": dataset.id,
                "image_id": keys[key][0],
                "concept_id": keys[key][1],
                "origin": PairOrigin.IMPORT,
                "state": PairState.NEGATIVE if pair.negative else PairState.POSITIVE,
                "is_exhaustive": pair.is_exhaustive,
                "is_pixel_exhaustive": pair.is_pixel_exhaustive,
                "state_reason": "imported",
            }
            for key, pair in bundle.pairs.items()
        ],
    )
    pair_ids = repo.pair_ids(session, dataset.id, [v[0] for v in keys.values()])
    annotation_rows = [
        {
            "dataset_id": dataset.id,
            "pair_id": pair_ids[keys[key]],
            "rle_counts": ann.counts,
            "bbox_x": ann.bbox[0],
            "bbox_y": ann.bbox[1],
            "bbox_w": ann.bbox[2],
            "bbox_h": ann.bbox[3],
            "area": ann.area,
            "iscrowd": ann.iscrowd,
            "source": AnnotationSource.IMPORT,
            "score": ann.score,
        }
        for key, pair in bundle.pairs.items()
        for ann in pair.annotations
    ]
    repo.bulk_insert(session, Annotation, annotation_rows)
    session.flush()
    return ImportResult(
        dataset=dataset.name,
        dataset_created=created,
        images_added=len(new_rows),
        images_reused=len(existing),
        positives=sum(not p.negative for p in bundle.pairs.values()),
        negatives=sum(p.negative for p in bundle.pairs.values()),
        annotations=len(annotation_rows),
    )


def import_file(
    session: Session,
    dataset_name: str,
    fmt: str,
    path: Path,
    images_dir: Path | None = None,
) -> ImportResult:
    """Validate ``path`` (and the images under ``images_dir``) and write it into the dataset."""
    bundle = read_bundle(path, fmt)
    located = locate_images(bundle, images_dir) if images_dir is not None else None
    return write_bundle(session, dataset_name, bundle, located)
