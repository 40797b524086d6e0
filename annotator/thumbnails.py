"""JPEG thumbnails of images, cached on disk under ``ANNOTATOR_MEDIA_ROOT/thumbnails``.

The cache path is built from the image id and the size only (integers), never from anything a
request sends, so it cannot point outside the cache directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from annotator.images import load_image

__all__ = ["SIZES", "thumbnail"]

SIZES = (128, 256, 512)


def cache_path(cache_dir: Path, image_id: int, size: int) -> Path:
    return cache_dir / str(int(size)) / f"{int(image_id)}.jpg"


def thumbnail(source: Path, cache_dir: Path, image_id: int, size: int) -> Path:
    """The cached thumbnail (longest side ``size``) of image ``image_id`` stored at ``source``,
    made on first use. Raises ``ImageDecodeError`` for bytes that are not an image."""
    target = cache_path(cache_dir, image_id, size)
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    image = load_image(source)
    image.thumbnail((size, size))
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a concurrent request never reads half a file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="JPEG", quality=85)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
