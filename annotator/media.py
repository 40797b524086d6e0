"""Image bytes: read from a local path or an http(s) URL (bounded), inspect, store under the
media root. No database.

Every failure is an :class:`~annotator.errors.InvalidInputError` whose message names the source
and says what is wrong, so a caller can record it on the item and go on with the next one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from annotator.config import get_settings
from annotator.errors import ImageDecodeError, InvalidInputError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInfo",
    "fetch_url",
    "inspect_image",
    "is_url",
    "local_path",
    "read_source",
    "sha256_hex",
    "store_bytes",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
)
_ORIENTATION = 0x0112
_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
                      "BMP": ".bmp", "TIFF": ".tif", "MPO": ".jpg"}  # fmt: skip


def is_url(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def local_path(uri: str) -> Path:
    """The file a local ``uri`` (a path or ``file://`` URL) names."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri).expanduser()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_url(url: str, *, max_bytes: int | None = None, timeout_s: float | None = None) -> bytes:
    """GET ``url`` (redirects followed), refusing bodies over ``max_bytes`` without reading them
    whole. Defaults from settings (``ANNOTATOR_DOWNLOAD_MAX_BYTES`` / ``_TIMEOUT_S``)."""
    import httpx

    settings = get_settings()
    limit = max_bytes or settings.download_max_bytes
    timeout = timeout_s or settings.download_timeout_s
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=timeout) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                raise InvalidInputError(f"{url}: HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise InvalidInputError(
                    f"{url}: {int(declared):,} bytes exceeds the download limit of {limit:,} "
                    "(ANNOTATOR_DOWNLOAD_MAX_BYTES)"
                )
            body = bytearray()
            for block in response.iter_bytes():
                body += block
                if len(body) > limit:
                    raise InvalidInputError(
                        f"{url}: more than {limit:,} bytes, over the download limit "
                        "(ANNOTATOR_DOWNLOAD_MAX_BYTES)"
                    )
            return bytes(body)
    except httpx.TimeoutException as exc:
        raise InvalidInputError(
            f"{url}: timed out after {timeout:g} s ({type(exc).__name__})"
        ) from exc
    except httpx.HTTPError as exc:
        raise InvalidInputError(f"{url}: cannot download: {exc}") from exc


def read_source(uri: str) -> bytes:
    """The bytes behind a local path, ``file://`` or http(s) URL."""
    if is_url(uri):
        return fetch_url(uri)
    path = local_path(uri)
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{uri}: file not found") from exc
    except IsADirectoryError as exc:
        raise InvalidInputError(f"{uri}: is a directory") from exc
    except OSError as exc:
        raise InvalidInputError(f"{uri}: cannot read: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: format (``"JPEG"`` ...) and the upright width and height (EXIF
    orientation applied)."""

    format: str
    width: int
    height: int

    @property
    def extension(self) -> str:
        return _FORMAT_EXTENSIONS.get(self.format, "." + self.format.lower())


def inspect_image(data: bytes, name: str, *, max_pixels: int | None = None) -> ImageInfo:
    """Read only the header: refuse empty data, unknown formats and images over ``max_pixels``
    (default ``ANNOTATOR_MAX_IMAGE_PIXELS``) before anything is decoded."""
    limit = max_pixels or get_settings().max_image_pixels
    if not data:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(BytesIO(data)) as opened:
                width, height = opened.size
                fmt = opened.format or "unknown"
                # EXIF orientations 5-8 turn the image by 90 degrees: report the upright size.
                if opened.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                    width, height = height, width
    except PILImage.DecompressionBombError as exc:
        raise ImageDecodeError(f"{name}: refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"{name}: not an image format Pillow recognises (expected JPEG, PNG, WebP, TIFF, "
            "BMP, GIF ...)"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{name}: corrupt image header ({exc})") from exc
    if width * height > limit:
        raise ImageDecodeError(
            f"{name}: {width} x {height} = {width * height / 1e6:,.0f} Mpx exceeds the limit of "
            f"{limit / 1e6:,.0f} Mpx (ANNOTATOR_MAX_IMAGE_PIXELS)"
        )
    return ImageInfo(fmt, width, height)


def store_bytes(data: bytes, dataset_id: int, sha256: str, extension: str) -> Path:
    """Write ``data`` content-addressed under the media root (idempotent); return the path."""
    root = get_settings().media_root.expanduser().resolve()
    target = root / str(dataset_id) / sha256[:2] / f"{sha256}{extension}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


def copy_file(source: Path, dataset_id: int, sha256: str) -> Path:
    """Copy ``source`` content-addressed under the media root (idempotent); return the path."""
    root = get_settings().media_root.expanduser().resolve()
    target = root / str(dataset_id) / sha256[:2] / f"{sha256}{source.suffix.lower()}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    return target
