"""What the VLM verifier looks at: masks and boxes drawn on the image (pure, PIL + numpy).

* MV (one mask): :func:`render_mask_query` = the whole image with the mask filled in a translucent
  colour and outlined, side by side with a zoomed crop around the mask's box (small objects stay
  visible to a model that sees the image at a few hundred pixels).
* EV (all accepted masks of a phrase): :func:`draw_boxes` on the whole image.

Colours are fixed so the prompt can name them.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BOX_COLOR",
    "FILL_COLOR",
    "OUTLINE_COLOR",
    "compose_side_by_side",
    "crop_box",
    "draw_boxes",
    "mask_box",
    "overlay_mask",
    "render_mask_query",
]

Color = tuple[int, int, int]
FILL_COLOR: Color = (0, 255, 0)  # "green"
OUTLINE_COLOR: Color = (255, 255, 0)  # "yellow"
BOX_COLOR: Color = (255, 0, 0)  # "red"
GAP = 4  # pixels of white between the two panels


def overlay_mask(
    image: Image.Image,
    mask: np.ndarray,
    color: Color = FILL_COLOR,
    alpha: float = 0.45,
    outline: Color = OUTLINE_COLOR,
    outline_width: int = 2,
) -> Image.Image:
    """A copy of ``image`` with ``mask`` filled and outlined; pixels outside are untouched.

    Args:
        image: RGB image of size ``(W, H)``.
        mask: ``(H, W)`` bool (or 0/1) array.
        alpha: fill opacity: inside pixels become ``round((1 - alpha) * pixel + alpha * color)``.
        outline_width: the mask's pixels within this many pixels (8-connected) of the outside
            are painted ``outline`` (the outline is drawn inside the mask, so the outside stays
            untouched); 0 disables it.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    inside = np.asarray(mask, dtype=bool)
    if inside.shape != pixels.shape[:2]:
        raise ValueError(f"mask shape {inside.shape} != image shape {pixels.shape[:2]}")
    out = pixels.copy()
    out[inside] = (1.0 - alpha) * pixels[inside] + alpha * np.asarray(color, dtype=np.float32)
    if outline_width > 0 and inside.any():
        # Pad with background so the image border counts as outside too.
        padded = np.pad(inside.astype(np.uint8), outline_width, constant_values=0)
        eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=outline_width)
        interior = eroded[outline_width:-outline_width, outline_width:-outline_width].astype(bool)
        out[inside & ~interior] = outline
    return Image.fromarray(np.rint(out).clip(0, 255).astype(np.uint8), "RGB")


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight ``(x0, y0, x1, y1)`` box (exclusive ends) of a ``(H, W)`` mask; ``None`` if empty."""
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def crop_box(
    box: tuple[int, int, int, int],
    image_size: tuple[int, int],
    context: float = 0.5,
    min_size: int = 32,
) -> tuple[int, int, int, int]:
    """A square-ish crop around ``box`` (``x0, y0, x1, y1``) inside the image.

    The box is grown by ``context`` times its size on each side, to at least ``min_size`` pixels,
    then shifted (not shrunk) to lie inside ``image_size = (W, H)`` where possible.
    """
    width, height = image_size
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * context)
    side = max(side, float(min_size))
    cw, ch = min(round(side), width), min(round(side), height)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left = round(cx - cw / 2.0)
    top = round(cy - ch / 2.0)
    left = min(max(left, 0), width - cw)
    top = min(max(top, 0), height - ch)
    return left, top, left + cw, top + ch


def compose_side_by_side(left: Image.Image, right: Image.Image, height: int) -> Image.Image:
    """Both images scaled to ``height`` (aspect kept) next to each other on white."""

    def scaled(im: Image.Image) -> Image.Image:
        width = max(1, round(im.width * height / im.height))
        return im.resize((width, height), Image.Resampling.BILINEAR)

    a, b = scaled(left), scaled(right)
    canvas = Image.new("RGB", (a.width + GAP + b.width, height), (255, 255, 255))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + GAP, 0))
    return canvas


def render_mask_query(
    image: Image.Image, mask: np.ndarray, context: float = 0.5, height: int | None = None
) -> Image.Image:
    """MV input: the overlaid image (left) and a zoomed crop of it around the mask (right).

    ``height`` defaults to the image height. An empty mask gives the overlay alone.
    """
    overlaid = overlay_mask(image, mask)
    box = mask_box(mask)
    if box is None:
        return overlaid
    crop = overlaid.crop(crop_box(box, overlaid.size, context=context))
    return compose_side_by_side(overlaid, crop, height or overlaid.height)


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    color: Color = BOX_COLOR,
    width: int = 2,
) -> Image.Image:
    """EV input: a copy of ``image`` with each ``[x, y, w, h]`` pixel box outlined.

    The outline covers the box's border pixels ``x .. x+w-1`` / ``y .. y+h-1`` (``width`` pixels
    thick, drawn inwards).
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    for x, y, w, h in boxes:
        x0, y0 = round(x), round(y)
        x1, y1 = round(x + w) - 1, round(y + h) - 1
        if x1 < x0 or y1 < y0:
            continue
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)
    return out
