"""What the VLM verifier looks at: masks and boxes drawn on the image (pure, numpy + OpenCV).

* MV (one mask): :func:`render_mask_query` = the whole image with the mask filled in a translucent
  colour and outlined, side by side with a zoomed crop around the mask's box (small objects stay
  visible to a model that sees the image at a few hundred pixels).
* EV (all accepted masks of a phrase): :func:`draw_boxes` on the whole image.

Rendering happens at the size the model sees (``height``, from the processor's input size; see
:func:`render_height`): the image and the mask are scaled to each panel first and the overlay is
drawn there, in ``uint8``, on the mask's box only, so a 2-pixel outline stays 2 pixels wide in
what the model sees and no full-resolution float image is ever made. :class:`MaskRenderer`
keeps one image's scaled panel for the many masks of that image.

Colours are fixed so the prompt can name them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw

from annotator import masks as mask_ops

__all__ = [
    "BOX_COLOR",
    "FILL_COLOR",
    "OUTLINE_COLOR",
    "MaskRenderer",
    "compose_side_by_side",
    "crop_box",
    "draw_boxes",
    "mask_box",
    "overlay_mask",
    "render_height",
    "render_mask_query",
]

Color = tuple[int, int, int]
Box = tuple[int, int, int, int]
FILL_COLOR: Color = (0, 255, 0)  # "green"
OUTLINE_COLOR: Color = (255, 255, 0)  # "yellow"
BOX_COLOR: Color = (255, 0, 0)  # "red"
GAP = 4  # pixels of white between the two panels
ALPHA = 0.45
OUTLINE_WIDTH = 2
_CROSS = np.ones((3, 3), np.uint8)
# Shrinking to fewer than 1 / _SMALL_OUTPUT of the pixels: area sums read off an integral image
# (work grows with the output); less: OpenCV's area resampling (work grows with the input).
_SMALL_OUTPUT = 16
_luts: dict[tuple[Color, float], np.ndarray] = {}


def _blend_lut(color: Color, alpha: float) -> np.ndarray:
    """``(256, 3)`` uint8: ``round((1 - alpha) * p + alpha * color)`` per channel, computed in
    float32 exactly as a float overlay would, so the uint8 overlay is the same pixels."""
    key = (color, alpha)
    lut = _luts.get(key)
    if lut is None:
        values = np.arange(256, dtype=np.float32)[:, None]
        blended = (1.0 - alpha) * values + alpha * np.asarray(color, dtype=np.float32)[None, :]
        lut = np.rint(blended).clip(0, 255).astype(np.uint8)
        if len(_luts) > 16:
            _luts.clear()
        _luts[key] = lut
    return lut


def _box_of(inside: np.ndarray) -> Box | None:
    rows = np.flatnonzero(inside.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(inside.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _overlay_inplace(
    pixels: np.ndarray,
    inside: np.ndarray,
    color: Color,
    alpha: float,
    outline: Color,
    outline_width: int,
) -> None:
    """Fill and outline ``inside`` on ``pixels`` (``(H, W, 3)`` uint8, modified in place).

    Only the mask's box (grown by the outline width) is read and written. Past the array's
    border is background: the outline runs along it where the mask touches it (a crop always
    holds its whole mask, so this holds for the zoomed crop too).
    """
    box = _box_of(inside)
    if box is None:
        return
    x0, y0, x1, y1 = box
    region = pixels[y0:y1, x0:x1]
    sub = inside[y0:y1, x0:x1]
    lut = _blend_lut(color, alpha)
    values = region[sub]  # (n, 3)
    region[sub] = np.stack([lut[values[:, c], c] for c in range(3)], axis=1)
    if outline_width <= 0:
        return
    w = outline_width
    height, width = inside.shape
    # The box grown by the outline width (clipped): erosion there sees the real neighbours.
    gx0, gy0, gx1, gy1 = max(x0 - w, 0), max(y0 - w, 0), min(x1 + w, width), min(y1 + w, height)
    grown = inside[gy0:gy1, gx0:gx1].astype(np.uint8)
    # Past the array: background. Elsewhere ``grown`` holds the real neighbours.
    padded = np.pad(grown, w)
    eroded = cv2.erode(padded, _CROSS, iterations=w)[w:-w, w:-w]
    interior = eroded[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0].astype(bool)
    region[sub & ~interior] = outline


def overlay_mask(
    image: Image.Image,
    mask: np.ndarray,
    color: Color = FILL_COLOR,
    alpha: float = ALPHA,
    outline: Color = OUTLINE_COLOR,
    outline_width: int = OUTLINE_WIDTH,
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
    pixels = np.array(image.convert("RGB"), dtype=np.uint8)
    inside = np.asarray(mask, dtype=bool)
    if inside.shape != pixels.shape[:2]:
        raise ValueError(f"mask shape {inside.shape} != image shape {pixels.shape[:2]}")
    _overlay_inplace(pixels, inside, color, alpha, outline, outline_width)
    return Image.fromarray(pixels, "RGB")


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight ``(x0, y0, x1, y1)`` box (exclusive ends) of a ``(H, W)`` mask; ``None`` if empty."""
    return _box_of(np.asarray(mask, dtype=bool))


def crop_box(
    box: Box,
    image_size: tuple[int, int],
    context: float = 0.5,
    min_size: int = 32,
) -> Box:
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
    a, b = (_scale_pixels(np.asarray(im.convert("RGB")), height) for im in (left, right))
    return Image.fromarray(_side_by_side(a, b), "RGB")


def _panel_width(width: int, height: int, target_height: int) -> int:
    return max(1, round(width * target_height / height))


def _area_sums(integral: np.ndarray, y_edges: np.ndarray, x_edges: np.ndarray) -> np.ndarray:
    """Sums of the pixels over the cells between consecutive (fractional) edges, read off an
    integral image (``cv2.integral``: ``(h + 1, w + 1[, c])``); fractional pixels count by
    their covered area. The integral of a piecewise-constant image is bilinear inside each
    pixel, so interpolating the table bilinearly is exact."""
    rows, cols = integral.shape[0] - 1, integral.shape[1] - 1
    y_edges = np.clip(y_edges, 0.0, rows)
    x_edges = np.clip(x_edges, 0.0, cols)
    fy = np.minimum(y_edges.astype(np.int64), rows - 1)
    fx = np.minimum(x_edges.astype(np.int64), cols - 1)
    ty = (y_edges - fy).reshape(-1, *([1] * (integral.ndim - 1)))
    tx = (x_edges - fx).reshape(-1, *([1] * (integral.ndim - 2)))
    at_rows = integral[fy] * (1.0 - ty) + integral[fy + 1] * ty  # (ny, w + 1[, c])
    at = at_rows[:, fx] * (1.0 - tx) + at_rows[:, fx + 1] * tx  # (ny, nx[, c])
    return np.diff(np.diff(at, axis=0), axis=1)


def _edges(start: float, length: float, n_out: int) -> np.ndarray:
    return start + np.arange(n_out + 1, dtype=np.float64) * (length / n_out)


class _AreaScaler:
    """Area-averaged scalings of any box of one image (its integral image is made once)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self._integral: np.ndarray | None = None

    def scale(self, box: Box, height: int, width: int) -> np.ndarray:
        """``box`` of the image scaled to ``height x width`` (uint8): area averages when
        shrinking, bilinear when growing, the pixels themselves when the size is unchanged."""
        x0, y0, x1, y1 = box
        h, w = y1 - y0, x1 - x0
        if (h, w) == (height, width):
            return self.pixels[y0:y1, x0:x1]
        if height * width >= h * w:
            return cv2.resize(
                self.pixels[y0:y1, x0:x1], (width, height), interpolation=cv2.INTER_LINEAR
            )
        if height * width * _SMALL_OUTPUT >= h * w:
            # Shrinking a little: OpenCV's area resampling of the box is cheaper than sampling
            # the integral image for this many output pixels.
            return cv2.resize(
                self.pixels[y0:y1, x0:x1], (width, height), interpolation=cv2.INTER_AREA
            )
        if self._integral is None:
            self._integral = cv2.integral(self.pixels, sdepth=cv2.CV_64F)
        sums = _area_sums(self._integral, _edges(y0, h, height), _edges(x0, w, width))
        means = sums * (height * width / (h * w))
        return np.rint(means).clip(0, 255).astype(np.uint8)


def _scale_pixels(pixels: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """``(h, w, 3)`` uint8 scaled to ``height`` (and ``width``, default: aspect kept);
    area averaging when shrinking, bilinear when growing; the array itself when unchanged."""
    h, w = pixels.shape[:2]
    width = _panel_width(w, h, height) if width is None else width
    return _AreaScaler(pixels).scale((0, 0, w, h), height, width)


def _mask_integral(region: np.ndarray) -> np.ndarray:
    """``cv2.integral`` (int32 pixel counts, ``(h + 1, w + 1)``) of a bool mask, row- or
    column-major (a column-major mask is integrated as its transpose: no copy)."""
    values = region.view(np.uint8)
    if values.strides[-1] != 1 and values.strides[0] == 1:
        return cv2.integral(values.T).T
    return cv2.integral(values if values.strides[-1] == 1 else np.ascontiguousarray(values))


def _by_integral(size: tuple[int, int], out: tuple[int, int]) -> bool:
    """Whether :func:`_scale_region` scales ``size`` to ``out`` from an integral image."""
    return out != size and out[0] * out[1] * _SMALL_OUTPUT < size[0] * size[1]


def _scale_region(
    region: np.ndarray,
    offset: tuple[int, int],
    size: tuple[int, int],
    out: tuple[int, int],
    integral: np.ndarray | None = None,
) -> np.ndarray:
    """A mask that is empty but for ``region`` (bool, its top-left at ``offset = (x, y)``) in
    an array of ``size = (h, w)``, scaled to ``out = (h, w)``: a pixel is inside when at least
    half of it is covered (area coverage, computed on the region only, when shrinking; bilinear
    when growing)."""
    (h, w), (oh, ow) = size, out
    x, y = offset
    rh, rw = region.shape
    if (h, w) == (oh, ow):
        full = np.zeros((h, w), dtype=bool)
        full[y : y + rh, x : x + rw] = region
        return full
    if not _by_integral(size, out):
        # Growing, or shrinking a little: OpenCV on the whole array (bilinear / area).
        full8 = np.zeros((h, w), dtype=np.uint8)
        full8[y : y + rh, x : x + rw] = region.view(np.uint8) * np.uint8(255)
        method = cv2.INTER_LINEAR if oh * ow >= h * w else cv2.INTER_AREA
        return cv2.resize(full8, (ow, oh), interpolation=method) >= 128
    # Output rows/columns that the region reaches, and their edges in region coordinates.
    py0, py1 = math.floor(y * oh / h), min(math.ceil((y + rh) * oh / h), oh)
    px0, px1 = math.floor(x * ow / w), min(math.ceil((x + rw) * ow / w), ow)
    step_y, step_x = h / oh, w / ow
    y_edges = np.arange(py0, py1 + 1, dtype=np.float64) * step_y - y
    x_edges = np.arange(px0, px1 + 1, dtype=np.float64) * step_x - x
    if integral is None:
        integral = _mask_integral(region)
    coverage = _area_sums(integral, y_edges, x_edges) / (step_y * step_x)
    scaled = np.zeros((oh, ow), dtype=bool)
    scaled[py0:py1, px0:px1] = coverage >= 0.5 - 1e-4
    return scaled


def _side_by_side(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    height = a.shape[0]
    canvas = np.full((height, a.shape[1] + GAP + b.shape[1], 3), 255, dtype=np.uint8)
    canvas[:, : a.shape[1]] = a
    canvas[:, a.shape[1] + GAP :] = b
    return canvas


def render_height(size: Mapping[str, Any] | None, image_size: tuple[int, int]) -> int | None:
    """The height at which to render an MV query for an image processor with this ``size``
    config (its ``image_processor.size``) and an image of ``image_size``, or ``None`` (full
    resolution) for configs it does not know.

    ``shortest_edge``: that edge (the rendering is wider than high: the processor takes it
    without resizing); ``height``: that height; ``longest_edge``: the height at which the
    rendering's width (the image panel plus a square crop) is that edge.
    """
    if not size:
        return None
    if size.get("shortest_edge"):
        return int(size["shortest_edge"])
    if size.get("height"):
        return int(size["height"])
    if size.get("longest_edge"):
        edge = int(size["longest_edge"])
        width, height = image_size
        # width(h) = h * (width / height) + GAP + h
        return max(1, math.floor((edge - GAP) / (width / height + 1.0)))
    return None


class MaskRenderer:
    """MV renderings of one image for many masks (:func:`render_mask_query` for each).

    The image is read once and its left panel (the whole image at ``height``) is scaled once;
    each mask then costs about its own box's worth of work (:meth:`render_rle` decodes only
    the box of an RLE).

    Args:
        image: the RGB image.
        height: height of the rendering (default: the image's height).
        context: margin of the zoomed crop, as a fraction of the mask box size.
    """

    def __init__(self, image: Image.Image, height: int | None = None, context: float = 0.5) -> None:
        self.pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        self.image_height, self.image_width = self.pixels.shape[:2]
        self.height = height or self.image_height
        self.context = context
        self._scaler = _AreaScaler(self.pixels)
        self._crops: dict[tuple[int, ...], np.ndarray] = {}
        panel_w = _panel_width(self.image_width, self.image_height, self.height)
        self._panel = np.array(
            self._scaler.scale((0, 0, self.image_width, self.image_height), self.height, panel_w)
        )

    def render(self, mask: np.ndarray) -> Image.Image:
        """The rendering for a ``(H, W)`` bool mask."""
        inside = np.asarray(mask, dtype=bool)
        if inside.shape != (self.image_height, self.image_width):
            raise ValueError(
                f"mask shape {inside.shape} != image shape {(self.image_height, self.image_width)}"
            )
        box = _box_of(inside)
        if box is None:
            return self.render_region(np.zeros((0, 0), dtype=bool), None)
        x0, y0, x1, y1 = box
        return self.render_region(inside[y0:y1, x0:x1], box)

    def render_rle(self, rle: mask_ops.RLE) -> Image.Image:
        """The rendering for a COCO RLE of the image's size (only the mask's box is decoded)."""
        height, width = (int(v) for v in rle["size"])
        if (height, width) != (self.image_height, self.image_width):
            raise ValueError(
                f"mask size {[height, width]} != image size {[self.image_height, self.image_width]}"
            )
        x, y, w, h = (round(v) for v in mask_ops.bbox(rle))
        if w == 0 or h == 0:
            return self.render_region(np.zeros((0, 0), dtype=bool), None)
        box = (x, y, x + w, y + h)
        if w * h * 4 >= width * height:
            # A large mask: pycocotools' full decode is faster than decoding the box (and is
            # used column-major, as decoded: no transposing copy).
            return self.render_region(mask_ops.decode_columns(rle)[y : y + h, x : x + w], box)
        return self.render_region(mask_ops.decode_region(rle, box), box)

    def render_region(self, region: np.ndarray, box: Box | None) -> Image.Image:
        """The rendering for the mask that is ``region`` inside its tight ``box`` (``None``:
        the empty mask) and empty elsewhere."""
        left = self._panel.copy()
        panel_h, panel_w = left.shape[:2]
        size = (self.image_height, self.image_width)
        if box is None:
            return Image.fromarray(left, "RGB")
        x0, y0, _, _ = box
        cx0, cy0, cx1, cy1 = crop_box(box, (self.image_width, self.image_height), self.context)
        crop_w = _panel_width(cx1 - cx0, cy1 - cy0, self.height)
        # The region's integral image, shared by both panels' scalings when they need it.
        integral = (
            _mask_integral(region)
            if _by_integral(size, (panel_h, panel_w))
            or _by_integral((cy1 - cy0, cx1 - cx0), (self.height, crop_w))
            else None
        )
        _overlay_inplace(
            left,
            _scale_region(region, (x0, y0), size, (panel_h, panel_w), integral),
            FILL_COLOR, ALPHA, OUTLINE_COLOR, OUTLINE_WIDTH,
        )  # fmt: skip
        key = (cx0, cy0, cx1, cy1, crop_w)
        scaled = self._crops.get(key)
        if scaled is None:  # large masks often share a crop (the whole image)
            scaled = self._scaler.scale((cx0, cy0, cx1, cy1), self.height, crop_w)
            if len(self._crops) >= 32:
                self._crops.clear()
            self._crops[key] = scaled
        crop = np.array(scaled)
        inside = _scale_region(
            region, (x0 - cx0, y0 - cy0), (cy1 - cy0, cx1 - cx0), (self.height, crop_w), integral
        )
        _overlay_inplace(crop, inside, FILL_COLOR, ALPHA, OUTLINE_COLOR, OUTLINE_WIDTH)
        return Image.fromarray(_side_by_side(left, crop), "RGB")


def render_mask_query(
    image: Image.Image, mask: np.ndarray, context: float = 0.5, height: int | None = None
) -> Image.Image:
    """MV input: the overlaid image (left) and a zoomed crop of it around the mask (right).

    Both panels are ``height`` pixels high (default: the image height); the overlay is drawn at
    that size. An empty mask gives the overlay alone.
    """
    return MaskRenderer(image, height=height, context=context).render(mask)


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
