"""What the VLM verifier looks at: masks and boxes drawn on the image (pure, numpy + OpenCV).

* MV (one mask): :func:`render_mask_query` = the whole image with the mask filled in a translucent
  colour and outlined, side by side with a zoomed crop around the mask's box (small objects stay
  visible to a model that sees the image at a few hundred pixels).
* EV (all accepted masks of a phrase): :func:`draw_boxes` on the whole image.

Rendering happens at the size the model sees (``height``, from the processor's input size; see
:func:`render_height`): the image and the mask are scaled to each panel first and the overlay is
drawn there, in ``uint8``, on the mask's box only, so a 2-pixel outline stays 2 pixels wide in
what the model sees and no full-resolution float image is ever made. :class:`MaskRenderer`
keeps one image's scaled panel for the many masks of that image, and renders all of them from
their RLE runs together (:meth:`MaskRenderer.render_rles`): a mask is never decoded at full
resolution, its coverage of each panel pixel is read off its runs.

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
    "scale_boxes",
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
# Crops read off the integral image together, this many output columns at a time.
_SCALE_COLUMNS = 96
# A scaled mask pixel is inside from this coverage on (half, less float rounding).
_HALF = 0.5 - 1e-4
# A mask whose RLE has more characters than this share of the image's pixels (about one run
# per 150 pixels) is rendered by decoding it; below, from its runs. Reading runs costs ~0.2 us
# per character, decoding ~3 ns per pixel: they break even near 0.013.
_DECODE_ABOVE = 0.01


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
    fy = np.minimum(y_edges.astype(np.int64), rows - 1)[:, None]
    fx = np.minimum(x_edges.astype(np.int64), cols - 1)[None, :]
    ty = (y_edges - fy[:, 0]).reshape(-1, 1, *([1] * (integral.ndim - 2)))
    tx = (x_edges - fx[0]).reshape(1, -1, *([1] * (integral.ndim - 2)))
    # The table at the cells' corners only: rows interpolated, then columns.
    left = integral[fy, fx] * (1.0 - ty) + integral[fy + 1, fx] * ty
    right = integral[fy, fx + 1] * (1.0 - ty) + integral[fy + 1, fx + 1] * ty
    at = left * (1.0 - tx) + right * tx  # (ny, nx[, c])
    return np.diff(np.diff(at, axis=0), axis=1)


def _edges(start: float, length: float, n_out: int) -> np.ndarray:
    return start + np.arange(n_out + 1, dtype=np.float64) * (length / n_out)


class _AreaScaler:
    """Area-averaged scalings of any box of one image (its integral image is made once)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self._integral: np.ndarray | None = None

    def _by_integral(self, box: Box, height: int, width: int) -> bool:
        x0, y0, x1, y1 = box
        h, w = y1 - y0, x1 - x0
        return (h, w) != (height, width) and height * width * _SMALL_OUTPUT < h * w

    def _table(self) -> np.ndarray:
        if self._integral is None:
            # Exact sums either way; int32 (half the memory of float64) while they fit.
            h, w = self.pixels.shape[:2]
            depth = cv2.CV_32S if h * w * 255 < 2**31 else cv2.CV_64F
            self._integral = cv2.integral(self.pixels, sdepth=depth)
        return self._integral

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
        if not self._by_integral(box, height, width):
            # Shrinking a little: OpenCV's area resampling of the box is cheaper than sampling
            # the integral image for this many output pixels.
            return cv2.resize(
                self.pixels[y0:y1, x0:x1], (width, height), interpolation=cv2.INTER_AREA
            )
        sums = _area_sums(self._table(), _edges(y0, h, height), _edges(x0, w, width))
        means = sums * (height * width / (h * w))
        return np.rint(means).clip(0, 255).astype(np.uint8)

    def scale_many(
        self, boxes: Sequence[Box], height: int, widths: Sequence[int]
    ) -> list[np.ndarray]:
        """:meth:`scale` of each box to ``height x widths[i]``, the same pixels; the boxes
        shrunk from the integral image are read off it together."""
        out: list[np.ndarray] = []
        batch: list[int] = []
        for i, box in enumerate(boxes):
            if self._by_integral(box, height, widths[i]):
                batch.append(i)
                out.append(self.pixels[:0, :0])  # filled below
            else:
                out.append(self.scale(box, height, widths[i]))
        if not batch:
            return out
        table = self._table()
        rows, cols = table.shape[0] - 1, table.shape[1] - 1
        # :meth:`scale`'s steps (``_edges``, ``_area_sums``, the means) for all the boxes at
        # once, each array operation on the same operands in the same order as there: the same
        # values. The boxes' columns are laid one after the other (``owner``: the box of each
        # column edge).
        picked = np.asarray([boxes[i] for i in batch], dtype=np.int64).reshape(-1, 4)
        x0, y0, x1, y1 = picked.T
        out_w = np.asarray([widths[i] for i in batch], dtype=np.int64)
        # Row edges (n, height + 1) and the column edges of all boxes, concatenated.
        steps = np.arange(height + 1, dtype=np.float64)
        y_edges = y0[:, None] + steps * ((y1 - y0) / height)[:, None]
        sizes = out_w + 1
        first = np.cumsum(sizes) - sizes  # each box's first column edge
        owner = np.repeat(np.arange(len(batch)), sizes)
        local = (np.arange(int(sizes.sum())) - first[owner]).astype(np.float64)
        xs = x0[owner] + local * ((x1 - x0) / out_w)[owner]
        y_edges = np.clip(y_edges, 0.0, rows)
        xs = np.clip(xs, 0.0, cols)
        fy = np.minimum(y_edges.astype(np.int64), rows - 1)[owner]  # (X, height + 1)
        ty = (y_edges[owner] - fy)[:, :, None]
        fx = np.minimum(xs.astype(np.int64), cols - 1)[:, None]
        tx = (xs - fx[:, 0])[:, None, None]
        stride = cols + 1
        flat = table.reshape(-1, *table.shape[2:])
        at = fy * stride + fx  # (X, height + 1): top-left corner
        scale = ((height * out_w) / ((y1 - y0) * (x1 - x0))).tolist()
        begins, ends = first.tolist(), (first + sizes).tolist()

        def corners(index: np.ndarray) -> np.ndarray:
            # Gathered by flat index (np.take: cheaper than indexing by two index arrays, the
            # same values) and made float64 as the products below would make them: a product
            # of integers and broadcast floats is several times slower.
            return np.take(flat, index, axis=0).astype(np.float64)

        k = 0
        while k < len(batch):
            # A few boxes at a time (up to _SCALE_COLUMNS columns): each temporary below stays
            # small enough for the CPU's cache (~10% faster than all columns at once).
            j = k + 1
            while j < len(batch) and ends[j] - begins[k] <= _SCALE_COLUMNS:
                j += 1
            lo, hi = begins[k], ends[j - 1]
            a, down, across = at[lo:hi], ty[lo:hi], tx[lo:hi]
            # _area_sums' operations in its order (the same values): rows, then columns;
            # differences along y, then along x.
            left = corners(a) * (1.0 - down) + corners(a + stride) * down
            right = corners(a + 1) * (1.0 - down) + corners(a + stride + 1) * down
            along_y = np.diff(left * (1.0 - across) + right * across, axis=1)  # (., height, 3)
            for m in range(k, j):
                block = along_y[begins[m] - lo : ends[m] - lo]
                sums = (block[1:] - block[:-1]).transpose(1, 0, 2)
                out[batch[m]] = np.rint(sums * scale[m]).clip(0, 255).astype(np.uint8)
            k = j
        return out


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
    """Whether :func:`_scale_region` scales ``size`` to ``out`` by area coverage (shrinking)."""
    return out != size and out[0] * out[1] < size[0] * size[1]


def _scale_region(
    region: np.ndarray,
    offset: tuple[int, int],
    size: tuple[int, int],
    out: tuple[int, int],
    integral: np.ndarray | None = None,
) -> np.ndarray:
    """A mask that is empty but for ``region`` (bool, its top-left at ``offset = (x, y)``) in
    an array of ``size = (h, w)``, scaled to ``out = (h, w)``: when shrinking, a pixel is
    inside when at least half of it is covered (area coverage, computed on the region only);
    when growing, bilinear."""
    (h, w), (oh, ow) = size, out
    x, y = offset
    rh, rw = region.shape
    if (h, w) == (oh, ow):
        full = np.zeros((h, w), dtype=bool)
        full[y : y + rh, x : x + rw] = region
        return full
    if not _by_integral(size, out):
        full8 = np.zeros((h, w), dtype=np.uint8)
        full8[y : y + rh, x : x + rw] = region.view(np.uint8) * np.uint8(255)
        return cv2.resize(full8, (ow, oh), interpolation=cv2.INTER_LINEAR) >= 128
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
    scaled[py0:py1, px0:px1] = coverage >= _HALF
    return scaled


def _run_coverage(
    runs: mask_ops.MaskRuns,
    masks: Sequence[int],
    rows: np.ndarray,
    cols: np.ndarray,
    n_rows: int,
    n_cols: np.ndarray,
) -> list[np.ndarray]:
    """Which cells of a grid laid over each of several masks are at least half covered (as
    :func:`_scale_region` counts), from the masks' runs: no mask is decoded.

    Mask ``masks[i]``'s grid has ``n_rows`` rows from ``rows[i, 0]`` (a mask pixel row, maybe
    fractional) in steps of ``rows[i, 1]``, and ``n_cols[i]`` columns from ``cols[i, 0]`` in
    steps of ``cols[i, 1]``; steps are at least one pixel and the grid covers the mask's box.
    Fractional pixels count by their covered area. Returns per mask ``(n_rows, n_cols[i])``
    bool.

    The work grows with the runs and the cells, not with the pixels. A run within one pixel
    column adds ``clip(y - top, 0, bottom - top)`` foreground rows above ``y``: a sum of two
    ramps starting at its ends. Each column lies in at most two grid columns (by its overlap
    with each); the ramps of a grid column, binned by the row edge they start below, give its
    foreground area above every row edge from two cumulative sums.
    """
    height = runs.height
    selected = np.asarray(masks, dtype=np.int64)
    n_cols = np.asarray(n_cols, dtype=np.int64)
    first_run = runs.offsets[selected]
    n_runs = runs.offsets[selected + 1] - first_run
    owner = np.repeat(np.arange(selected.size), n_runs)
    index = np.arange(int(n_runs.sum())) - np.repeat(np.cumsum(n_runs) - n_runs - first_run, n_runs)
    starts, stops = runs.starts[index], runs.stops[index]
    # Runs cut at column ends: (column, top, bottom) pieces.
    column, last_column = starts // height, (stops - 1) // height
    top, bottom = starts - column * height, stops - column * height
    span = last_column - column + 1
    if (span > 1).any():
        piece = np.repeat(np.arange(span.size), span)
        step = np.arange(piece.size) - np.repeat(np.cumsum(span) - span, span)
        top = np.where(step == 0, top[piece], 0)
        bottom = np.where(
            step == span[piece] - 1, stops[piece] - last_column[piece] * height, height
        )
        column, owner = column[piece] + step, owner[piece]
    # The grid column of each piece's pixel column, and the overlaps with it and the next.
    x_first, x_step = cols[owner, 0], cols[owner, 1]
    band = np.clip(np.floor((column - x_first) / x_step).astype(np.int64), 0, n_cols[owner] - 1)
    overlap = np.minimum(column + 1.0, x_first + (band + 1) * x_step) - column
    has_next = band + 1 < n_cols[owner]
    column_offsets = np.cumsum(n_cols) - n_cols
    slot = column_offsets[owner] + band
    slots = int(n_cols.sum())
    edges = n_rows + 1
    # How many row edges lie at or above each end: its ramp counts below those edges only.
    y_first, y_step = rows[owner, 0], rows[owner, 1]
    top_before = np.clip(np.floor((top - y_first) / y_step).astype(np.int64) + 1, 0, edges)
    bottom_before = np.clip(np.floor((bottom - y_first) / y_step).astype(np.int64) + 1, 0, edges)
    # Ramps (grid column, edges before its start, start row, weight); a ramp adds
    # weight * (y - start) below its start. Most pixel columns lie in one grid column: their
    # ramps into the next one weigh nothing and are left out.
    spilled = np.flatnonzero(has_next & (overlap < 1.0))
    spill = 1.0 - overlap[spilled]
    ramp_slot = np.concatenate([slot, slot, slot[spilled] + 1, slot[spilled] + 1])
    ramp_before = np.concatenate(
        [top_before, bottom_before, top_before[spilled], bottom_before[spilled]]
    )
    ramp_start = np.concatenate([top, bottom, top[spilled], bottom[spilled]]).astype(np.float64)
    ramp_weight = np.concatenate([overlap, -overlap, spill, -spill])
    # Binned edge-major: cumulative sums down the edges give each grid column's weight and
    # moment below every edge, and the grid's rows come out as rows.
    bins = ramp_before * slots + ramp_slot
    size = (edges + 1) * slots
    weights = np.bincount(bins, ramp_weight, size).reshape(edges + 1, slots)[:edges]
    moments = np.bincount(bins, ramp_weight * ramp_start, size).reshape(edges + 1, slots)[:edges]
    np.cumsum(weights, axis=0, out=weights)
    np.cumsum(moments, axis=0, out=moments)
    slot_owner = np.repeat(np.arange(selected.size), n_cols)
    # Foreground area above each edge: sum over ramps of weight * (edge - start).
    above = (rows[slot_owner, 0] + np.arange(edges)[:, None] * rows[slot_owner, 1]) * weights
    above -= moments
    cell = rows[slot_owner, 1] * cols[slot_owner, 1]
    covered = np.diff(above, axis=0) >= _HALF * cell  # (n_rows, slots)
    return [
        covered[:, start : start + count]
        for start, count in zip(column_offsets.tolist(), n_cols.tolist(), strict=True)
    ]


def _overlay_block(
    pixels: np.ndarray, inside: np.ndarray, at: tuple[int, int], blended: np.ndarray | None = None
) -> None:
    """Fill and outline a mask on ``pixels`` (``(h, w, 3)`` uint8, modified in place) as
    :func:`_overlay_inplace` does with the fixed colours, in OpenCV calls on the mask's block:
    ``inside`` (bool) holds every pixel of the mask, its top-left at ``at = (row, col)``.
    ``blended``: ``pixels`` already blended with the fill colour (the same shape), if at hand."""
    y, x = at
    h, w = inside.shape
    region = pixels[y : y + h, x : x + w]
    mask = inside.view(np.uint8)
    if blended is None:
        fill = cv2.LUT(region, _blend_lut(FILL_COLOR, ALPHA).reshape(1, 256, 3))
    else:
        fill = blended[y : y + h, x : x + w]
    cv2.copyTo(fill, mask, region)
    if OUTLINE_WIDTH <= 0:
        return
    # Past the block is background (it holds the whole mask), as past the array's border.
    interior = cv2.erode(
        mask, _CROSS, iterations=OUTLINE_WIDTH, borderType=cv2.BORDER_CONSTANT, borderValue=0
    )
    cv2.copyTo(_solid(OUTLINE_COLOR, h, w), cv2.subtract(mask, interior), region)


_solids: dict[Color, np.ndarray] = {}
# The largest solid image kept (pixels): larger outlines are painted by numpy indexing.
_SOLID_PIXELS = 1 << 20
# The most pixels of renderings composed as one stack (MaskRenderer._compose_many).
_STACK_PIXELS = 1 << 21


def _solid(color: Color, height: int, width: int) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 image of one colour (a view of a cached one)."""
    image = _solids.get(color)
    if image is None or image.shape[0] < height or image.shape[1] < width:
        old_h, old_w = (0, 0) if image is None else image.shape[:2]
        image = np.empty((max(height, old_h, 64), max(width, old_w, 64), 3), dtype=np.uint8)
        image[:] = color
        _solids[color] = image
    return image[:height, :width]


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

    The image is read once and its left panel (the whole image at ``height``) is scaled once.
    :meth:`render` takes a decoded mask (the reference); :meth:`render_rles` renders many RLEs
    together from their runs, with the same pixels, in work that grows with the masks' runs
    and the panels' pixels, not with the image's.

    Args:
        image: the RGB image.
        height: height of the rendering (default: the image's height).
        context: margin of the zoomed crop, as a fraction of the mask box size.
    """

    def __init__(self, image: Image.Image, height: int | None = None, context: float = 0.5) -> None:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        self.pixels = np.asarray(rgb, dtype=np.uint8)
        self.image_height, self.image_width = self.pixels.shape[:2]
        self.height = height or self.image_height
        self.context = context
        self._scaler = _AreaScaler(self.pixels)
        self._crops: dict[tuple[int, ...], np.ndarray] = {}
        self._blended: np.ndarray | None = None  # the left panel blended with the fill colour
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
        """The rendering for a COCO RLE of the image's size (:meth:`render_rles`)."""
        return Image.fromarray(self.render_rles([rle])[0], "RGB")

    def render_rles(self, rles: Sequence[mask_ops.RLE]) -> list[np.ndarray]:
        """The renderings (``(height, w, 3)`` uint8 arrays, the pixels of :meth:`render`) for
        COCO RLEs of the image's size, all made together from the masks' runs: no mask is
        decoded at full resolution (see :meth:`render_runs`)."""
        size = [self.image_height, self.image_width]
        for rle in rles:
            if [int(v) for v in rle["size"]] != size:
                raise ValueError(f"mask size {list(rle['size'])} != image size {size}")
        # Ragged masks (many runs for their pixels) are cheaper decoded, in C, than read run
        # by run; compact ones (a trained model's) are read from their runs.
        limit = _DECODE_ABOVE * self.image_height * self.image_width
        dense = [i for i, rle in enumerate(rles) if len(rle["counts"]) > limit]
        sparse = [i for i, rle in enumerate(rles) if len(rle["counts"]) <= limit]
        out: dict[int, np.ndarray] = {}
        if sparse:
            runs = mask_ops.foreground_runs([rles[i] for i in sparse])
            out.update(zip(sparse, self.render_runs(runs), strict=True))
        for i in dense:
            out[i] = self._render_decoded(rles[i])
        return [out[i] for i in range(len(rles))]

    def _render_decoded(self, rle: mask_ops.RLE) -> np.ndarray:
        """:meth:`render_rles` of one mask by decoding it (its box, or all of it when the box
        is large: pycocotools' decode, used column-major as decoded)."""
        x, y, w, h = (round(v) for v in mask_ops.bbox(rle))
        if w == 0 or h == 0:
            return self._render_region(np.zeros((0, 0), dtype=bool), None)
        box = (x, y, x + w, y + h)
        if w * h * 4 >= self.image_width * self.image_height:
            return self._render_region(mask_ops.decode_columns(rle)[y : y + h, x : x + w], box)
        return self._render_region(mask_ops.decode_region(rle, box), box)

    def render_runs(self, runs: mask_ops.MaskRuns) -> list[np.ndarray]:
        """The renderings for masks given by their runs (:func:`annotator.masks.foreground_runs`),
        as ``(height, w, 3)`` uint8 arrays: the pixels of :meth:`render` of each mask.

        The masks are shrunk to both panels by area coverage straight from their runs, all
        together (:func:`_run_coverage`), the crops of the image are read off its integral
        image together, and each overlay is a few OpenCV calls on the mask's block. Masks that
        are not shrunk (a panel as large as the image or larger) are decoded in their box.
        """
        height, panel_w = self.height, self._panel.shape[1]
        size = (self.image_height, self.image_width)
        boxes = runs.boxes.tolist()
        filled = [k for k, box in enumerate(boxes) if box[2] > box[0]]
        # Empty masks: the image alone.
        out = [self._panel if box[2] > box[0] else self._panel.copy() for box in boxes]
        if not filled:
            return out
        crops = [
            crop_box(boxes[k], (self.image_width, self.image_height), self.context) for k in filled
        ]
        widths = [_panel_width(x1 - x0, y1 - y0, height) for x0, y0, x1, y1 in crops]
        # Both panels of every mask in one pass: the image panel, then the crop.
        frames = [(0, 0, *size, height, panel_w)] * len(filled) + [
            (x0, y0, y1 - y0, x1 - x0, height, w)
            for (x0, y0, x1, y1), w in zip(crops, widths, strict=True)
        ]
        scaled = self._scaled_masks(runs, filled + filled, frames)
        left, right = scaled[: len(filled)], scaled[len(filled) :]
        composed = self._compose_many(left, right, self._crop_pixels(crops, widths))
        for k, rendering in zip(filled, composed, strict=True):
            out[k] = rendering
        return out

    def _crop_pixels(self, crops: Sequence[Box], widths: Sequence[int]) -> list[np.ndarray]:
        """The image inside each crop box scaled to the rendering's height (cached: large masks
        often share a crop, the whole image)."""
        keys = [(*crop, w) for crop, w in zip(crops, widths, strict=True)]
        missing = list(dict.fromkeys(key for key in keys if key not in self._crops))
        if missing:
            if len(self._crops) + len(missing) > 32:
                self._crops.clear()
            scaled = self._scaler.scale_many(
                [(x0, y0, x1, y1) for x0, y0, x1, y1, _ in missing],
                self.height,
                [w for *_, w in missing],
            )
            self._crops.update(zip(missing, scaled, strict=True))
        return [self._crops[key] for key in keys]

    def _scaled_masks(
        self,
        runs: mask_ops.MaskRuns,
        masks: Sequence[int],
        frames: Sequence[tuple[int, int, int, int, int, int]],
    ) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """Each mask in its frame ``(x, y, h, w, out_h, out_w)`` (the box of the image at
        ``(x, y)`` of size ``h x w``; it holds the mask's box) scaled to ``out_h x out_w`` as
        :func:`_scale_region` scales it, as a block that holds all of the scaled mask and the
        block's ``(row, col)`` in the output. Shrinking masks by area coverage from their runs,
        all together; the others decoded in their box."""
        out: list[tuple[np.ndarray, tuple[int, int]]] = []
        shrink: list[tuple[int, int, int, int, int]] = []  # (index, row0, row1, col0, col1)
        boxes = runs.boxes.tolist()
        for i, (k, (fx, fy, h, w, oh, ow)) in enumerate(zip(masks, frames, strict=True)):
            x0, y0, x1, y1 = boxes[k]
            if not _by_integral((h, w), (oh, ow)) or oh > h or ow > w:
                region = runs.region(k)
                out.append((_scale_region(region, (x0 - fx, y0 - fy), (h, w), (oh, ow)), (0, 0)))
                continue
            # The output rows/columns the box reaches.
            py0, py1 = math.floor((y0 - fy) * oh / h), min(math.ceil((y1 - fy) * oh / h), oh)
            px0, px1 = math.floor((x0 - fx) * ow / w), min(math.ceil((x1 - fx) * ow / w), ow)
            shrink.append((i, py0, py1, px0, px1))
            out.append((np.zeros((0, 0), dtype=bool), (py0, px0)))
        if shrink:
            # Each grid in mask coordinates: first edge and step, per axis.
            rows, cols = [], []
            for i, py0, _, px0, _ in shrink:
                fx, fy, h, w, oh, ow = frames[i]
                rows.append((fy + py0 * (h / oh), h / oh))
                cols.append((fx + px0 * (w / ow), w / ow))
            blocks = _run_coverage(
                runs,
                [masks[i] for i, *_ in shrink],
                np.array(rows),
                np.array(cols),
                max(py1 - py0 for _, py0, py1, _, _ in shrink),
                np.array([px1 - px0 for *_, px0, px1 in shrink]),
            )
            for (i, py0, py1, _, _), block in zip(shrink, blocks, strict=True):
                out[i] = (block[: py1 - py0], out[i][1])
        return out

    def render_region(self, region: np.ndarray, box: Box | None) -> Image.Image:
        """The rendering for the mask that is ``region`` inside its tight ``box`` (``None``:
        the empty mask) and empty elsewhere."""
        return Image.fromarray(self._render_region(region, box), "RGB")

    def _render_region(self, region: np.ndarray, box: Box | None) -> np.ndarray:
        if box is None:
            return self._panel.copy()
        panel_h, panel_w = self._panel.shape[:2]
        size = (self.image_height, self.image_width)
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
        left = _scale_region(region, (x0, y0), size, (panel_h, panel_w), integral)
        right = _scale_region(
            region, (x0 - cx0, y0 - cy0), (cy1 - cy0, cx1 - cx0), (self.height, crop_w), integral
        )
        crop = self._crop_pixels([(cx0, cy0, cx1, cy1)], [crop_w])[0]
        return self._compose((left, (0, 0)), (right, (0, 0)), crop)

    def _compose(
        self,
        left: tuple[np.ndarray, tuple[int, int]],
        right: tuple[np.ndarray, tuple[int, int]],
        crop: np.ndarray,
    ) -> np.ndarray:
        """The image panel and the crop side by side, each with the mask (a block holding all
        of it and the block's ``(row, col)``) filled and outlined."""
        panel_w = self._panel.shape[1]
        if self._blended is None:
            self._blended = cv2.LUT(self._panel, _blend_lut(FILL_COLOR, ALPHA).reshape(1, 256, 3))
        canvas = np.empty((self.height, panel_w + GAP + crop.shape[1], 3), dtype=np.uint8)
        canvas[:, :panel_w] = self._panel
        canvas[:, panel_w : panel_w + GAP] = 255
        canvas[:, panel_w + GAP :] = crop
        _overlay_block(canvas[:, :panel_w], *left, blended=self._blended)
        _overlay_block(canvas[:, panel_w + GAP :], *right)
        return canvas

    def _compose_many(
        self,
        left: Sequence[tuple[np.ndarray, tuple[int, int]]],
        right: Sequence[tuple[np.ndarray, tuple[int, int]]],
        crops: Sequence[np.ndarray],
    ) -> list[np.ndarray]:
        """:meth:`_compose` of many masks (``left[i]``, ``right[i]``, ``crops[i]``), the same
        pixels, in a few array operations for all of them instead of a dozen calls per mask.

        The renderings are made as one stack, as wide as the widest: each mask's two panels as
        one 0/1 plane followed by ``OUTLINE_WIDTH`` rows of background, so eroding the whole
        stack at once erodes each panel as :func:`_overlay_block` does (past a panel, its
        block, or the rendering is background: the gap between the panels is wider than the
        outline, the rows below keep the planes apart, and a narrower rendering's plane is
        background to its right, as past the array's border); the fill is picked from the
        blended panel and crop, then the outline (the mask less its erosion) painted over it.
        Each rendering is its part of the stack.
        """
        height, panel_w = self.height, self._panel.shape[1]
        at = panel_w + GAP
        widths = [at + crop.shape[1] for crop in crops]
        out: list[np.ndarray] = []
        start = 0
        while start < len(crops):
            # As many renderings as fit in _STACK_PIXELS (at least one): memory stays bounded
            # for large renderings and many masks.
            stop, widest = start + 1, widths[start]
            while stop < len(crops) and (
                (stop + 1 - start) * height * max(widest, widths[stop]) <= _STACK_PIXELS
            ):
                widest = max(widest, widths[stop])
                stop += 1
            members = range(start, stop)
            out += self._compose_stack(
                [left[i] for i in members],
                [right[i] for i in members],
                [crops[i] for i in members],
                [widths[i] for i in members],
            )
            start = stop
        return out

    def _compose_stack(
        self,
        left: Sequence[tuple[np.ndarray, tuple[int, int]]],
        right: Sequence[tuple[np.ndarray, tuple[int, int]]],
        crops: Sequence[np.ndarray],
        widths: Sequence[int],
    ) -> list[np.ndarray]:
        """:meth:`_compose_many` of renderings of these ``widths``, as one stack."""
        height, panel_w = self.height, self._panel.shape[1]
        lut = _blend_lut(FILL_COLOR, ALPHA).reshape(1, 256, 3)
        rows, at = height + OUTLINE_WIDTH, panel_w + GAP
        count, width = len(crops), max(widths)
        planes = np.zeros((count, rows, width), dtype=np.uint8)
        canvas = np.empty((count, height, width, 3), dtype=np.uint8)
        canvas[:, :, :panel_w] = self._panel
        canvas[:, :, panel_w:at] = 255
        for j in range(count):
            for (block, (y, x)), offset in ((left[j], 0), (right[j], at)):
                h, w = block.shape
                if h and w:
                    planes[j, y : y + h, offset + x : offset + x + w] = block.view(np.uint8)
            canvas[j, :, at : widths[j]] = crops[j]
        # As rows of one image: (count * height, width[, 3]); written in place. Right of a
        # narrower rendering the canvas is never read: no mask reaches there.
        flat = canvas.reshape(count * height, width, 3)
        inside = np.ascontiguousarray(planes[:, :height]).reshape(count * height, width)
        # The fill colour blended into every pixel (the image panel's part is _blended): picked
        # where the masks are.
        cv2.copyTo(cv2.LUT(flat, lut), inside, flat)
        if OUTLINE_WIDTH > 0:
            eroded = cv2.erode(
                planes.reshape(count * rows, width),
                _CROSS,
                iterations=OUTLINE_WIDTH,
                borderType=cv2.BORDER_CONSTANT,
                borderValue=0,
            ).reshape(count, rows, width)[:, :height]
            edge = cv2.subtract(inside, eroded.reshape(count * height, width))
            if count * height * width <= _SOLID_PIXELS:
                cv2.copyTo(_solid(OUTLINE_COLOR, count * height, width), edge, flat)
            else:  # not worth a cached solid image this large
                flat[edge.view(bool)] = OUTLINE_COLOR
        return [np.ascontiguousarray(canvas[j, :, : widths[j]]) for j in range(count)]


def render_mask_query(
    image: Image.Image, mask: np.ndarray, context: float = 0.5, height: int | None = None
) -> Image.Image:
    """MV input: the overlaid image (left) and a zoomed crop of it around the mask (right).

    Both panels are ``height`` pixels high (default: the image height); the overlay is drawn at
    that size. An empty mask gives the overlay alone.
    """
    return MaskRenderer(image, height=height, context=context).render(mask)


def scale_boxes(
    boxes: np.ndarray | Sequence[Sequence[float]],
    size: tuple[int, int],
    to: tuple[int, int],
) -> list[list[float]]:
    """``[x, y, w, h]`` pixel boxes of an image of ``size = (W, H)``, for the image resized to
    ``to``: each box's pixel range (as :func:`draw_boxes` covers it) scaled, and at least one
    pixel wide and high so that no box vanishes at a small size. Empty boxes stay empty."""
    sx, sy = to[0] / size[0], to[1] / size[1]
    out: list[list[float]] = []
    for x, y, w, h in np.asarray(boxes, dtype=np.float64).reshape(-1, 4).tolist():
        if w <= 0 or h <= 0:
            out.append([x * sx, y * sy, 0.0, 0.0])
            continue
        x0, y0 = round(x * sx), round(y * sy)
        x1, y1 = max(round((x + w) * sx), x0 + 1), max(round((y + h) * sy), y0 + 1)
        out.append([float(x0), float(y0), float(x1 - x0), float(y1 - y0)])
    return out


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
