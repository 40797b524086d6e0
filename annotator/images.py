"""Decoding images into the one form every model sees: an upright RGB ``PIL.Image``.

Photos arrive as JPEG with an EXIF orientation tag, PNG with alpha, palette GIFs, 16-bit
grayscale TIFFs. Masks are stored in the pixel frame of the upright image, so the orientation is
applied once here, before anyone measures width and height.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from annotator.errors import ImageDecodeError

__all__ = ["ImageSource", "ensure_rgb", "load_image"]

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def ensure_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of ``image`` (or ``image`` itself when it already is RGB).

    Transparent pixels are composited on white, as the transformers image processors do, so a
    cut-out PNG is not turned into an object on black. 16-bit and float grayscale are scaled to
    8 bits by PIL's ``convert``.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in {"I;16", "I;16B", "I;16L", "I"}:
        # PIL clips wide integers to 0..255 instead of scaling; scale 16-bit data by hand.
        image = image.convert("I")
        high = image.getextrema()[1]
        if isinstance(high, int | float) and high > 255:
            image = image.point(lambda value: value / 256)
        image = image.convert("L")
    return image.convert("RGB")


def _describe(source: ImageSource) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes>"
    if isinstance(source, str | os.PathLike):
        return str(source)
    return getattr(source, "name", None) or "<stream>"


def load_image(source: ImageSource) -> Image.Image:
    """Decode a file path, bytes or binary stream into an upright RGB image.

    The whole image is decoded here (not lazily), so a truncated file fails now, with its name,
    rather than later inside a model.

    Raises:
        ImageDecodeError: the data is not an image PIL can decode (unknown format, truncated,
            too large to be safe) or the file cannot be read.
    """
    name = _describe(source)
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            handle: BinaryIO = io.BytesIO(bytes(source))
        elif isinstance(source, str | os.PathLike):
            handle = Path(source).expanduser().open("rb")
        else:
            handle = source
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image {name}: {exc.strerror or exc}") from exc
    try:
        with warnings.catch_warnings():
            # A DecompressionBombWarning is an error here: a worker must not decode 1 Gpx.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as opened:
                opened.load()
                # A new image, detached from the file (a copy when nothing is to be turned):
                # no second copy of the pixels is needed.
                upright = ImageOps.exif_transpose(opened)
                return ensure_rgb(upright)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"cannot decode image {name}: not an image format Pillow recognises "
            "(expected JPEG, PNG, WebP, TIFF, BMP, GIF ...)"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"cannot decode image {name}: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt data surfaces as OSError ("image file is truncated") or
        # SyntaxError (broken PNG chunks) from the decoders.
        raise ImageDecodeError(f"cannot decode image {name}: corrupt or truncated ({exc})") from exc
    finally:
        if isinstance(source, str | os.PathLike):
            handle.close()
