"""What an import file says, as plain data, and the pieces shared by the streaming writers.

Parsers (``coco.parse``, ``saco.parse``) validate a whole file and return an ``ImportBundle``
without touching the database; the import service writes a bundle in one transaction. Every
error names the entry it is about (``annotations[12] (id 345): ...``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from annotator import masks
from annotator.errors import InvalidInputError


@dataclass
class ImportedAnnotation:
    """One mask of a pair. ``counts`` is the COCO compressed RLE sized to the image."""

    counts: str
    area: int
    bbox: tuple[float, float, float, float]
    iscrowd: bool = False
    score: float | None = None


@dataclass
class ImportedPair:
    """One (image, phrase). A pair with no annotations is a negative (verified absent)."""

    file_name: str
    phrase: str
    negative: bool
    is_exhaustive: bool | None = None
    is_pixel_exhaustive: bool | None = None
    annotations: list[ImportedAnnotation] = field(default_factory=list)


@dataclass
class ImportedImage:
    file_name: str
    width: int
    height: int


@dataclass
class ImportBundle:
    """A validated import file: images by file name, pairs keyed by (file name, phrase)."""

    images: dict[str, ImportedImage] = field(default_factory=dict)
    pairs: dict[tuple[str, str], ImportedPair] = field(default_factory=dict)

    @property
    def num_annotations(self) -> int:
        return sum(len(p.annotations) for p in self.pairs.values())


def load_json(path: Path) -> Any:
    """Read a JSON file; a malformed one is an ``InvalidInputError`` naming the position."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc


def entry(section: str, index: int, item: Any) -> str:
    """How an error names an entry: ``annotations[12] (id 345)``."""
    if isinstance(item, dict) and "id" in item:
        return f"{section}[{index}] (id {item['id']!r})"
    return f"{section}[{index}]"


def require(item: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(item, dict):
        raise InvalidInputError(f"{where}: expected an object, got {type(item).__name__}")
    if key not in item:
        raise InvalidInputError(f"{where}: missing field {key!r}")
    value = item[key]
    # bool is an int in Python; a width of `true` is still wrong.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InvalidInputError(f"{where}: field {key!r} must not be a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidInputError(f"{where}: field {key!r} must be {names}, got {value!r}")
    return value


def positive_int(item: Any, key: str, where: str) -> int:
    value = require(item, key, int, where)
    if value <= 0:
        raise InvalidInputError(f"{where}: field {key!r} must be positive, got {value}")
    return int(value)


def optional_bool(item: dict[str, Any], key: str, where: str) -> bool | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise InvalidInputError(f"{where}: field {key!r} must be true/false, got {value!r}")


def clean_phrase(text: str, where: str) -> str:
    """Collapse white space. Imported phrases are kept as written otherwise (lossless)."""
    phrase = " ".join(text.split())
    if not phrase:
        raise InvalidInputError(f"{where}: empty phrase")
    if len(phrase) > 256:
        raise InvalidInputError(f"{where}: phrase longer than 256 characters")
    return phrase


def imported_annotation(
    segmentation: Any,
    image: ImportedImage,
    where: str,
    *,
    iscrowd: bool,
    score: float | None,
) -> ImportedAnnotation:
    """Any COCO segmentation form -> compressed RLE with pixel area and bbox from the mask."""
    try:
        rle = masks.from_segmentation(segmentation, image.height, image.width)
    except ValueError as exc:
        raise InvalidInputError(f"{where} (image {image.file_name!r}): {exc}") from exc
    x, y, w, h = masks.bbox(rle)
    return ImportedAnnotation(
        counts=rle["counts"],
        area=masks.area(rle),
        bbox=(float(x), float(y), float(w), float(h)),
        iscrowd=iscrowd,
        score=score,
    )


class HashingWriter:
    """A binary sink that hashes what passes through (for version checksums)."""

    def __init__(self, inner: IO[bytes] | None = None) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.bytes_written += len(data)
        if self.inner is not None:
            self.inner.write(data)
        return len(data)

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


def write_json_array(out: HashingWriter, batches: Iterable[Sequence[Any]]) -> int:
    """Stream JSON values, given in batches, as one array; returns the number of values.

    Each batch is serialised by one ``orjson.dumps`` call (C speed), so memory holds one batch
    at most and the per-value Python overhead stays small.
    """
    out.write(b"[")
    count = 0
    for batch in batches:
        if not batch:
            continue
        if count:
            out.write(b",")
        out.write(orjson.dumps(batch)[1:-1])
        count += len(batch)
    out.write(b"]")
    return count


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
