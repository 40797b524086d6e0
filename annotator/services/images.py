"""Add images to a dataset from files, directories and http(s) URLs, with optional alt-text.

Each input is checked on its own (exists, readable, not empty, an image format by its header,
not over the pixel limit, downloadable within the size and time limits); a bad one is reported
with its reason and the rest go on. Images are de-duplicated by sha256 within the dataset. Full
decoding happens later, in the ``ingest`` stage of a mining job.

Where the bytes live (``images.uri``): local files are recorded by absolute path (or copied
under ``ANNOTATOR_MEDIA_ROOT`` with ``copy``); downloaded URLs are stored under the media root,
content-addressed; with ``download=False`` the URL itself is recorded and ``ingest`` fetches it.
``file_name`` (the name in exports) is the path relative to the directory given, the file's
name for a file given directly, or the URL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from annotator import media
from annotator.db import mining
from annotator.db import repositories as repo
from annotator.db.models import Image, ImageStatus
from annotator.errors import InvalidInputError

__all__ = ["AddResult", "Source", "add_images", "expand_inputs", "read_alt_text"]


@dataclass(frozen=True)
class Source:
    """One image to add: where it is (absolute path or URL) and its name in the dataset."""

    uri: str
    file_name: str

    @property
    def is_url(self) -> bool:
        return media.is_url(self.uri)


@dataclass
class AddResult:
    dataset: str
    dataset_created: bool = False
    added: int = 0
    duplicates: int = 0
    alt_texts: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    alt_text_unmatched: list[str] = field(default_factory=list)


def expand_inputs(
    inputs: Sequence[str], *, recursive: bool = True
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Files, directories (image files inside, by extension; sub-directories when
    ``recursive``) and URLs as sources, in the order given (directories sorted), plus the
    inputs that name nothing usable with the reason."""
    sources: list[Source] = []
    bad: list[tuple[str, str]] = []
    for raw in inputs:
        if media.is_url(raw):
            sources.append(Source(raw, raw))
            continue
        path = media.local_path(raw)
        if path.is_dir():
            found = sorted(_walk(path, recursive))
            if not found:
                bad.append((raw, "directory holds no image files (" + _extensions() + ")"))
            root = path.resolve()
            sources += [Source(str(f.resolve()), f.resolve().relative_to(root).as_posix())
                        for f in found]  # fmt: skip
        elif path.is_file():
            sources.append(Source(str(path.resolve()), path.name))
        elif path.exists():
            bad.append((raw, "not a regular file"))
        else:
            bad.append((raw, "no such file or directory"))
    return sources, bad


def _extensions() -> str:
    return " ".join(sorted(media.IMAGE_EXTENSIONS))


def _walk(directory: Path, recursive: bool) -> Iterator[Path]:
    entries = directory.rglob("*") if recursive else directory.iterdir()
    for entry in entries:
        if (
            entry.is_file()
            and entry.suffix.lower() in media.IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in entry.relative_to(directory).parts)
        ):
            yield entry


def read_alt_text(path: Path) -> dict[str, str]:
    """``{file_name or uri: alt_text}`` from a JSONL file of ``{"file_name": ..., "alt_text":
    ...}`` or ``{"uri": ..., "alt_text": ...}`` lines (blank lines ignored).

    Raises:
        InvalidInputError: unreadable file or a malformed line (named by its number).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"--alt-text {path}: {exc.strerror or exc}") from exc
    out: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{where}: not JSON ({exc.msg})") from exc
        if not isinstance(entry, dict):
            raise InvalidInputError(f"{where}: expected an object with file_name/uri and alt_text")
        key = entry.get("file_name") or entry.get("uri")
        text = entry.get("alt_text")
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"{where}: needs a 'file_name' or 'uri' string")
        if not isinstance(text, str):
            raise InvalidInputError(f"{where}: needs an 'alt_text' string")
        out[key] = text
    return out


def _fetch(source: Source, download: bool) -> tuple[bytes | None, media.ImageInfo | None]:
    if source.is_url and not download:
        return None, None
    data = media.read_source(source.uri)
    return data, media.inspect_image(data, source.uri)


def add_images(
    session: Session,
    dataset_name: str,
    inputs: Sequence[str],
    *,
    alt_text: dict[str, str] | None = None,
    recursive: bool = True,
    copy: bool = False,
    download: bool = True,
    create: bool = True,
    progress: Callable[[int], None] | None = None,
) -> AddResult:
    """Add the images behind ``inputs`` to the dataset (created when missing and ``create``).

    ``alt_text`` maps a file name or URI to the image's alt-text; it is also applied to images
    already in the dataset. ``progress`` is called with 1 per input image handled.
    """
    if create:
        dataset, created = repo.get_or_create_dataset(session, dataset_name)
    else:
        dataset, created = repo.get_dataset(session, dataset_name), False
    result = AddResult(dataset.name, created)
    sources, bad = expand_inputs(inputs, recursive=recursive)
    result.failed += bad
    texts = dict(alt_text or {})
    names = [s.file_name for s in sources]
    existing = repo.images_by_file_name(session, dataset.id, names)
    seen_sha: dict[str, str] = {}
    seen_names: dict[str, str] = {name: image.uri for name, image in existing.items()}
    new_rows: list[Image] = []
    for source in sources:
        try:
            if source.file_name in seen_names:
                taken_by = seen_names[source.file_name]
                if source.file_name in existing or taken_by == source.uri:
                    result.duplicates += 1
                else:
                    reason = f"file name {source.file_name!r} is taken by {taken_by}"
                    result.failed.append((source.uri, reason))
                continue
            data, info = _fetch(source, download)
            uri, digest = source.uri, None
            if data is not None:
                digest = media.sha256_hex(data)
                known = seen_sha.get(digest) or (
                    d.file_name
                    if (d := repo.images_by_sha256(session, dataset.id, [digest]).get(digest))
                    else None
                )
                if known is not None:
                    result.duplicates += 1
                    continue
                seen_sha[digest] = source.file_name
                assert info is not None
                if source.is_url:
                    uri = str(media.store_bytes(data, dataset.id, digest, info.extension))
                elif copy:
                    uri = str(media.copy_file(Path(source.uri), dataset.id, digest))
            image = Image(
                dataset_id=dataset.id,
                file_name=source.file_name,
                uri=uri,
                sha256=digest,
                width=info.width if info else None,
                height=info.height if info else None,
                alt_text=texts.get(source.file_name) or texts.get(source.uri),
                status=ImageStatus.PENDING,
            )
            session.add(image)
            new_rows.append(image)
            seen_names[source.file_name] = source.uri
            result.added += 1
        except InvalidInputError as exc:
            result.failed.append((source.uri, _strip(str(exc), source.uri)))
        finally:
            if progress is not None:
                progress(1)
    session.flush()
    if texts:
        result.alt_texts, result.alt_text_unmatched = _apply_alt_text(session, dataset.id, texts)
    return result


def _strip(message: str, prefix: str) -> str:
    return message[len(prefix) + 2 :] if message.startswith(prefix + ": ") else message


def _apply_alt_text(
    session: Session, dataset_id: int, texts: dict[str, str]
) -> tuple[int, list[str]]:
    """Set alt-text on the dataset's images named (file name or URI) in ``texts``."""
    matched: set[str] = set()
    applied = 0
    keys = list(texts)
    for image in repo.images_by_file_name(session, dataset_id, keys).values():
        image.alt_text = texts[image.file_name]
        matched.add(image.file_name)
        applied += 1
    by_uri = [k for k in keys if k not in matched]
    for image in mining.images_by_uri(session, dataset_id, by_uri):
        image.alt_text = texts[image.uri]
        matched.add(image.uri)
        applied += 1
    session.flush()
    return applied, [k for k in keys if k not in matched]
