"""Decoding uploads into upright RGB images, and refusing what cannot be decoded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.errors import ImageDecodeError, InvalidInputError
from annotator.images import ensure_rgb, load_image


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    image = load_image(data)
    assert image.size == (20, 40)  # width and height swapped
    upright = np.asarray(image)
    assert upright[:20].mean() > 200 and upright[20:].mean() < 50  # white half now on top


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK", "1"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    image = load_image(_encode(Image.new(mode, (7, 5)), fmt))
    assert image.mode == "RGB" and image.size == (7, 5)


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.all(np.asarray(ensure_rgb(clear)) == 255)


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    gray = Image.fromarray(np.full((3, 3), 32768, dtype=np.uint16))
    assert np.asarray(load_image(_encode(gray, "PNG")))[0, 0, 0] == 128


def test_path_and_stream(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (3, 2), (1, 2, 3)).save(path)
    assert load_image(path).getpixel((0, 0)) == (1, 2, 3)
    with path.open("rb") as stream:
        assert load_image(stream).size == (3, 2)


def test_undecodable_inputs_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="not an image format"):
        load_image(b"<html>not an image</html>")
    truncated = _encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:300]
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        load_image(truncated)
    with pytest.raises(ImageDecodeError, match="cannot read image"):
        load_image(tmp_path / "missing.jpg")
    assert issubclass(ImageDecodeError, InvalidInputError)
