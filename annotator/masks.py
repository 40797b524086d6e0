"""Instance-mask utilities: COCO RLE, polygons and Label Studio brush RLE.

Pure functions (numpy, pycocotools, OpenCV); no DB or web imports.

Conventions
-----------
* A binary mask is a ``(H, W)`` ``bool`` array (``uint8`` 0/1 is accepted as input; any
  non-zero value counts as foreground). A stack is ``(N, H, W)``.
* :class:`RLE` is COCO *compressed* RLE: ``{"size": [H, W], "counts": str}``. ``counts`` is
  always a ``str`` here (pycocotools hands back ``bytes``; we decode it), so RLEs can go
  straight into JSON. Functions that take an RLE also accept ``bytes`` counts.
* Pixel coordinates follow COCO: pixel ``(x, y)`` covers the square ``[x, x+1) × [y, y+1)``;
  bboxes are ``[x, y, w, h]`` floats, polygons are flat ``[x1, y1, x2, y2, ...]`` lists.
* pycocotools does no validation of its own (mismatched sizes give IoU ``-1`` and an empty
  merge; truncated counts decode to garbage), so the functions here check sizes, and
  :func:`from_segmentation` fully validates untrusted input, raising :class:`MaskFormatError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
from pycocotools import mask as mask_utils

__all__ = [
    "RLE",
    "MaskFormatError",
    "MaskRuns",
    "area",
    "areas",
    "bbox",
    "bboxes",
    "decode",
    "decode_columns",
    "decode_many",
    "decode_region",
    "encode",
    "encode_column_crops",
    "encode_many",
    "foreground_runs",
    "from_brush",
    "from_polygons",
    "from_segmentation",
    "from_uncompressed",
    "iou_matrix",
    "merge",
    "nms",
    "to_brush",
    "to_polygons",
    "to_uncompressed",
]

BoolArray = npt.NDArray[np.bool_]


class RLE(TypedDict):
    """COCO compressed run-length encoding of one binary mask."""

    size: list[int]  # [height, width]
    counts: str  # COCO compressed RLE string (utf-8 str, never bytes)


class MaskFormatError(ValueError):
    """A segmentation / RLE / brush payload is malformed or does not fit the image."""


# --------------------------------------------------------------------------------------
# helpers


def _to_rle(obj: dict[str, Any]) -> RLE:
    """pycocotools dict (bytes counts, maybe numpy ints in size) -> :class:`RLE`."""
    counts = obj["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    h, w = obj["size"]
    return {"size": [int(h), int(w)], "counts": counts}


def _size(rle: RLE) -> tuple[int, int]:
    h, w = rle["size"]
    return int(h), int(w)


def _check_same_size(rles: Sequence[RLE], what: str) -> None:
    if not rles:
        return
    first = _size(rles[0])
    for i, r in enumerate(rles):
        if _size(r) != first:
            raise ValueError(
                f"{what}: RLE {i} has size {list(_size(r))}, expected {list(first)} "
                "(all masks must have the same height x width)"
            )


def _check_hw(height: int, width: int) -> tuple[int, int]:
    h, w = int(height), int(width)
    if h <= 0 or w <= 0:
        raise MaskFormatError(f"image height x width must be positive, got [{h}, {w}]")
    return h, w


def _parse_counts(counts: str | bytes) -> npt.NDArray[np.int64]:
    """Decode a COCO compressed ``counts`` string into run lengths (vectorised).

    Mirrors ``rleFrString`` in pycocotools' ``maskApi.c``: each value is a little-endian
    sequence of 5-bit groups stored as chars ``'0' + c`` (bit 0x20 = "more follows", bit 0x10
    of the last group = sign); from the 4th value on, each value is a delta against the value
    two positions earlier. Raises :class:`MaskFormatError` on any malformed input.
    """
    if isinstance(counts, str):
        try:
            raw = counts.encode("ascii")
        except UnicodeEncodeError:
            raise MaskFormatError("RLE counts string contains non-ASCII characters") from None
    else:
        raw = bytes(counts)
    if not raw:
        return np.zeros(0, dtype=np.int64)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if ((c < 0) | (c > 63)).any():
        raise MaskFormatError("RLE counts string has characters outside '0'..'o'")
    more = (c & 0x20) != 0
    if more[-1]:
        raise MaskFormatError("RLE counts string is truncated (last value is unterminated)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 12:  # 12 * 5 = 60 bits; real counts need at most 7 chars
        raise MaskFormatError("RLE counts string has an impossibly long value")
    k = np.arange(c.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative])
    cnts = x.copy()
    cnts[1::2] = np.cumsum(x[1::2])  # odd chain: 1, 3, 5, ... (delta from index 3 on)
    cnts[2::2] = np.cumsum(x[2::2])  # even chain from 2: 2, 4, 6, ... (index 0 is absolute)
    return cnts


def _validate_counts(cnts: npt.NDArray[np.int64], height: int, width: int) -> None:
    if (cnts < 0).any():
        raise MaskFormatError("RLE counts contain negative run lengths")
    total = int(cnts.sum())
    if total != height * width:
        raise MaskFormatError(
            f"RLE run lengths sum to {total}, expected height x width = "
            f"{height} x {width} = {height * width}"
        )


# --------------------------------------------------------------------------------------
# COCO RLE


def encode(mask: np.ndarray) -> RLE:
    """Encode one ``(H, W)`` mask (bool, or integers where non-zero is foreground)."""
    if mask.ndim != 2:
        raise ValueError(f"encode expects a 2-D (H, W) mask, got shape {mask.shape}")
    return encode_many(mask[None])[0]


def encode_many(masks: np.ndarray) -> list[RLE]:
    """Encode an ``(N, H, W)`` stack of masks with a single pycocotools call."""
    if masks.ndim != 3:
        raise ValueError(f"encode_many expects an (N, H, W) stack, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    # pycocotools wants (H, W, N) uint8 0/1 in Fortran order (0/255 would break its encoder).
    # A bool stack is reinterpreted as uint8 (no copy); one whose (H, W, N) transpose already is
    # Fortran-ordered (a (N, W, H) C-ordered array seen as (N, H, W)) is not copied at all.
    binary = masks.view(np.uint8) if masks.dtype == np.bool_ else (masks != 0).view(np.uint8)
    hwn = np.asfortranarray(binary.transpose(1, 2, 0))
    return [_to_rle(r) for r in mask_utils.encode(hwn)]


def encode_column_crops(
    crops: Sequence[np.ndarray], boxes: npt.ArrayLike, height: int, width: int
) -> list[RLE]:
    """Encode K masks of ``height x width`` given only their boxes' contents: the same RLEs as
    :func:`encode_many` of the full masks, without reading the background around the boxes.

    ``boxes`` is ``(K, 4)`` integer ``x0, y0, x1, y1`` (ends exclusive; a mask with no
    foreground has an empty box, ``x1 == x0``) and ``crops[k]`` the mask's pixels inside its
    box, column-major: ``(x1 - x0, y1 - y0)`` with ``crops[k][c, r] = mask[y0 + r, x0 + c]``
    (bool or 0/1 uint8). Everything outside a box must be background.

    COCO RLE runs through the mask column by column; between two columns of a box lie the
    ``height - (y1 - y0)`` background rows below and above it. Each crop column is laid out with
    one background pixel after it standing for those rows (none when the box is as tall as the
    image), the crops one after the other with a background pixel between them; the runs'
    boundaries in that buffer (one comparison of neighbours for all K) map back to positions in
    the full mask, and their differences are the counts, compressed by pycocotools.
    """
    h, w = _check_hw(height, width)
    k = len(crops)
    if k == 0:
        return []
    box = np.asarray(boxes, dtype=np.int64).reshape(k, 4)
    x0, y0, x1, y1 = box.T
    cw, ch = x1 - x0, y1 - y0
    if (x0 < 0).any() or (y0 < 0).any() or (x1 > w).any() or (y1 > h).any():
        raise ValueError("encode_column_crops: a box lies outside the image")
    if (cw < 0).any() or (ch < 0).any():
        raise ValueError("encode_column_crops: a box ends before it starts")
    stride = ch + (ch < h)
    length = np.where(cw > 0, cw * stride, 0)
    starts = np.cumsum(length + 1) - length  # each crop's first pixel, after its separator
    buffer = np.zeros(int(starts[-1] + length[-1]) + 1, dtype=np.uint8)
    for index, crop in enumerate(crops):
        n = int(length[index])
        if n == 0:
            continue
        shape = (int(cw[index]), int(ch[index]))
        if crop.shape != shape:
            raise ValueError(f"encode_column_crops: crop {index} is {crop.shape}, box {shape}")
        start = int(starts[index])
        view = buffer[start : start + n].reshape(shape[0], int(stride[index]))
        view[:, : shape[1]] = crop
    edges = np.flatnonzero(buffer[1:] != buffer[:-1]) + 1  # a run starts at each
    owner = np.searchsorted(starts, edges, side="right") - 1
    local = edges - starts[owner]
    column, row = np.divmod(local, stride[owner])
    position = (x0[owner] + column) * h + y0[owner] + row
    inside = position < h * w  # a run ending at the last pixel ends with the mask
    position, owner = position[inside], owner[inside]
    # Each mask's run starts framed by 0 and h * w: their differences are its counts.
    runs = np.bincount(owner, minlength=k) + 1
    first = np.cumsum(runs + 1) - runs - 1  # where each mask's 0 goes
    framed = np.zeros(int(first[-1] + runs[-1]) + 1, dtype=np.int64)
    framed[np.arange(position.size) + 2 * owner + 1] = position
    framed[first + runs] = h * w
    counts = np.diff(framed).tolist()
    objects = [
        {"size": [h, w], "counts": counts[start : start + n]}
        for start, n in zip(first.tolist(), runs.tolist(), strict=True)
    ]
    return [_to_rle(r) for r in mask_utils.frPyObjects(objects, h, w)]


def decode(rle: RLE) -> BoolArray:
    """Decode one RLE to an ``(H, W)`` bool array (C-contiguous)."""
    return decode_many([rle])[0]


def decode_columns(rle: RLE) -> BoolArray:
    """Decode one RLE to an ``(H, W)`` bool array in column-major (Fortran) order, as
    pycocotools writes it: :func:`decode` without its transposing copy (for code that reads
    the mask through views, or hands ``mask.T`` to OpenCV)."""
    try:
        hwn = mask_utils.decode([rle])  # (H, W, 1) uint8 0/1, Fortran order
    except ValueError as exc:
        raise MaskFormatError(f"cannot decode RLE: {exc}") from exc
    return hwn[:, :, 0].view(np.bool_)


def decode_many(rles: Sequence[RLE]) -> BoolArray:
    """Decode RLEs of one common size to an ``(N, H, W)`` bool array.

    Raises ``ValueError`` for an empty sequence (the size would be unknown) or mixed sizes.
    """
    if len(rles) == 0:
        raise ValueError("decode_many needs at least one RLE (the mask size is unknown)")
    _check_same_size(rles, "decode_many")
    try:
        hwn = mask_utils.decode(list(rles))  # (H, W, N) uint8, Fortran order
    except ValueError as exc:  # pycocotools: "Invalid RLE mask representation"
        raise MaskFormatError(f"cannot decode RLE: {exc}") from exc
    return np.ascontiguousarray(hwn.transpose(2, 0, 1), dtype=np.bool_)


def _foreground_runs(rle: RLE) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start and end (exclusive) of each foreground run, as column-major pixel indices."""
    height, width = _size(rle)
    cnts = _parse_counts(rle["counts"])
    _validate_counts(cnts, height, width)
    ends = np.cumsum(cnts)
    # Runs alternate background / foreground, the first is background.
    starts, stops = (ends - cnts)[1::2], ends[1::2]
    keep = stops > starts
    return starts[keep], stops[keep]


def decode_region(rle: RLE, box: tuple[int, int, int, int]) -> BoolArray:
    """Decode only the ``(x0, y0, x1, y1)`` box (exclusive ends, inside the mask) of one RLE:
    a ``(y1 - y0, x1 - x0)`` bool array equal to ``decode(rle)[y0:y1, x0:x1]``."""
    height, width = _size(rle)
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"box {box} is not inside the {height} x {width} mask")
    starts, stops = _foreground_runs(rle)
    return _region(starts, stops, height, (x0, y0, x1, y1))


def _region(
    starts: npt.NDArray[np.int64],
    stops: npt.NDArray[np.int64],
    height: int,
    box: tuple[int, int, int, int],
) -> BoolArray:
    x0, y0, x1, y1 = box
    lo, hi = x0 * height, x1 * height
    keep = (stops > lo) & (starts < hi)
    first = np.clip(starts[keep], lo, hi) - lo
    last = np.clip(stops[keep], lo, hi) - lo
    n = hi - lo
    edges = np.bincount(first, minlength=n + 1) - np.bincount(last, minlength=n + 1)
    columns = np.cumsum(edges[:n]) > 0
    return np.ascontiguousarray(columns.reshape(x1 - x0, height)[:, y0:y1].T)


@dataclass(frozen=True)
class MaskRuns:
    """The foreground runs of several masks of one size, read from their RLEs without decoding.

    A run is a column-major pixel index range ``[starts[r], stops[r])`` (pixel ``(x, y)`` is
    index ``x * height + y``); mask ``k``'s runs are ``offsets[k]:offsets[k + 1]``, in order,
    non-empty and not touching (empty masks have none). ``boxes[k]`` is mask ``k``'s tight
    ``(x0, y0, x1, y1)`` box (exclusive ends; all zeros when empty), the box of :func:`bbox`.
    """

    height: int
    width: int
    starts: npt.NDArray[np.int64]
    stops: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]  # (N + 1,)
    boxes: npt.NDArray[np.int64]  # (N, 4)

    def __len__(self) -> int:
        return len(self.boxes)

    def region(self, k: int, box: tuple[int, int, int, int] | None = None) -> BoolArray:
        """Mask ``k`` decoded inside ``box`` (default: its own box): :func:`decode_region`."""
        x0, y0, x1, y1 = (int(v) for v in (self.boxes[k] if box is None else box))
        lo, hi = self.offsets[k], self.offsets[k + 1]
        return _region(self.starts[lo:hi], self.stops[lo:hi], self.height, (x0, y0, x1, y1))


def _segment_cumsum(values: npt.NDArray[np.int64], first: npt.NDArray[np.int64]) -> np.ndarray:
    """Cumulative sums of ``values`` restarting at each index in ``first`` (sorted, from 0)."""
    total = np.cumsum(values)
    lengths = np.diff(np.append(first, values.size))
    before = total[first] - values[first]
    return total - np.repeat(before, lengths)


_POW32 = np.left_shift(np.int64(1), 5 * np.arange(13, dtype=np.int64))


def _parse_counts_many(
    counts: Sequence[str | bytes],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """:func:`_parse_counts` of several strings in one vectorised pass: the run lengths of all,
    concatenated, and the offsets of each string's (``(N + 1,)``)."""
    raws: list[bytes] = []
    for value in counts:
        if isinstance(value, str):
            try:
                raws.append(value.encode("ascii"))
            except UnicodeEncodeError:
                raise MaskFormatError("RLE counts string contains non-ASCII characters") from None
        else:
            raws.append(bytes(value))
    char_ends = np.cumsum([len(r) for r in raws], dtype=np.int64)
    # Characters as 6-bit groups (uint8 arithmetic: wraps below '0', caught by the range check).
    c = np.frombuffer(b"".join(raws), dtype=np.uint8) - np.uint8(48)
    if c.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(len(raws) + 1, dtype=np.int64)
    if (c > 63).any():
        raise MaskFormatError("RLE counts string has characters outside '0'..'o'")
    terminal = c < 32  # bit 0x20 clear: the value's last group
    lasts = char_ends[np.diff(char_ends, prepend=0) > 0] - 1
    if not terminal[lasts].all():
        raise MaskFormatError("RLE counts string is truncated (last value is unterminated)")
    ends = np.flatnonzero(terminal)
    lengths = np.diff(ends, prepend=-1)
    if lengths.max() > 12:
        raise MaskFormatError("RLE counts string has an impossibly long value")
    # Each value is its 5-bit groups, least significant first: the last group's sign bit and
    # shifted value, then the earlier groups of the values that have them.
    last = c[ends].astype(np.int64)
    x = ((last & 0x0F) - (last & 0x10)) * _POW32[lengths - 1]
    longer = np.flatnonzero(lengths > 1)
    for i in range(1, int(lengths.max())):
        longer = longer[lengths[longer] > i]
        x[longer] += (c[ends[longer] - i] & 0x1F).astype(np.int64) * _POW32[lengths[longer] - 1 - i]
    offsets = np.zeros(len(raws) + 1, dtype=np.int64)
    offsets[1:] = np.searchsorted(ends, char_ends)
    # From the 4th value of a string on, each is a delta against the value two before it: a
    # cumulative sum along every other value, restarting per string (the first value is not
    # part of the even chain).
    j = np.arange(x.size) - np.repeat(offsets[:-1], np.diff(offsets))
    chained = np.where(j == 0, 0, x)
    stride2 = np.zeros(x.size + 2, dtype=np.int64)
    stride2[2::2] = np.cumsum(chained[0::2])
    stride2[3::2] = np.cumsum(chained[1::2])
    cnts = stride2[2:] - stride2[np.repeat(offsets[:-1], np.diff(offsets)) + (j & 1)]
    cnts[j == 0] = x[j == 0]
    return cnts, offsets


def foreground_runs(rles: Sequence[RLE]) -> MaskRuns:
    """The foreground runs and boxes of RLEs of one size (:class:`MaskRuns`), parsed from their
    counts strings in one vectorised pass and validated as :func:`to_uncompressed` does.

    Raises ``ValueError`` for an empty sequence or mixed sizes, :class:`MaskFormatError` for
    malformed counts.
    """
    if len(rles) == 0:
        raise ValueError("foreground_runs needs at least one RLE (the mask size is unknown)")
    _check_same_size(rles, "foreground_runs")
    height, width = _size(rles[0])
    cnts, offsets = _parse_counts_many([r["counts"] for r in rles])
    n = len(rles)
    per_mask = np.diff(offsets)
    if (cnts < 0).any():
        raise MaskFormatError("RLE counts contain negative run lengths")
    mask_of = np.repeat(np.arange(n), per_mask)
    totals = np.bincount(mask_of, weights=cnts, minlength=n)
    if (totals != height * width).any():
        bad = int(np.flatnonzero(totals != height * width)[0])
        raise MaskFormatError(
            f"RLE {bad}: run lengths sum to {int(totals[bad])}, expected height x width = "
            f"{height} x {width} = {height * width}"
        )
    ends = _segment_cumsum(cnts, offsets[:-1][per_mask > 0])
    j = np.arange(cnts.size) - np.repeat(offsets[:-1], per_mask)
    # Runs alternate background / foreground, the first is background; empty ones are dropped.
    keep = ((j & 1) == 1) & (cnts > 0)
    stops = ends[keep]
    starts = stops - cnts[keep]
    owner = mask_of[keep]
    # Runs separated by an empty background run touch: one run.
    joined = np.ones(starts.size, dtype=bool)
    joined[1:] = (starts[1:] != stops[:-1]) | (owner[1:] != owner[:-1])
    if not joined.all():
        heads = np.flatnonzero(joined)
        stops = stops[np.append(heads[1:] - 1, starts.size - 1)]
        starts, owner = starts[heads], owner[heads]
    run_offsets = np.zeros(n + 1, dtype=np.int64)
    run_offsets[1:] = np.cumsum(np.bincount(owner, minlength=n))
    boxes = np.zeros((n, 4), dtype=np.int64)
    filled = np.flatnonzero(np.diff(run_offsets) > 0)
    if filled.size:
        first, last = run_offsets[:-1][filled], run_offsets[1:][filled] - 1
        column, row = np.divmod(starts, height)
        end_column, end_row = np.divmod(stops - 1, height)
        # A run that goes on in the next column covers the bottom and the top row.
        wraps = np.maximum.reduceat((end_column > column).astype(np.int8), first) > 0
        boxes[filled, 0] = column[first]
        boxes[filled, 2] = end_column[last] + 1
        boxes[filled, 1] = np.where(wraps, 0, np.minimum.reduceat(row, first))
        boxes[filled, 3] = np.where(wraps, height, np.maximum.reduceat(end_row, first) + 1)
    return MaskRuns(height, width, starts, stops, run_offsets, boxes)


def area(rle: RLE) -> int:
    """Number of foreground pixels."""
    return int(mask_utils.area(rle))


def bbox(rle: RLE) -> list[float]:
    """Tight ``[x, y, w, h]`` box in pixels (COCO convention); ``[0, 0, 0, 0]`` if empty."""
    return [float(v) for v in mask_utils.toBbox(rle)]


def areas(rles: Sequence[RLE]) -> npt.NDArray[np.int64]:
    """Foreground pixels of each RLE, ``(N,)`` (one pycocotools call)."""
    if len(rles) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(mask_utils.area(list(rles)), dtype=np.int64).reshape(len(rles))


def bboxes(rles: Sequence[RLE]) -> npt.NDArray[np.float64]:
    """Tight ``[x, y, w, h]`` boxes of each RLE, ``(N, 4)`` (one pycocotools call); see
    :func:`bbox`."""
    if len(rles) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    return np.asarray(mask_utils.toBbox(list(rles)), dtype=np.float64).reshape(len(rles), 4)


def iou_matrix(
    a: Sequence[RLE], b: Sequence[RLE], iscrowd: Sequence[bool] | None = None
) -> np.ndarray:
    """Pairwise mask IoU, ``(len(a), len(b))`` float64.

    ``iscrowd[j]`` (one flag per element of ``b``) switches column ``j`` to COCO crowd
    semantics: ``|a ∩ b| / |a|`` instead of ``|a ∩ b| / |a ∪ b|``. An empty ``a`` mask scores 0.
    All masks must have the same size.
    """
    crowd: npt.NDArray[np.uint8]
    if iscrowd is None:
        crowd = np.zeros(len(b), dtype=np.uint8)
    else:
        if len(iscrowd) != len(b):
            raise ValueError(f"iscrowd has {len(iscrowd)} flags for {len(b)} masks in b")
        crowd = np.asarray([bool(v) for v in iscrowd], dtype=np.uint8)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    _check_same_size([*a, *b], "iou_matrix")
    ious = mask_utils.iou(list(a), list(b), crowd)
    return np.asarray(ious, dtype=np.float64).reshape(len(a), len(b))


def merge(rles: Sequence[RLE], intersect: bool = False) -> RLE:
    """Union (or intersection, ``intersect=True``) of RLEs of one common size."""
    if len(rles) == 0:
        raise ValueError("merge needs at least one RLE")
    _check_same_size(rles, "merge")
    return _to_rle(mask_utils.merge(list(rles), intersect=int(intersect)))


def nms(rles: Sequence[RLE], scores: Sequence[float], iou_threshold: float = 0.5) -> list[int]:
    """Greedy mask NMS; returns kept indices ordered by descending score.

    A mask is suppressed when its IoU with an already kept, higher-scoring mask is strictly
    greater than ``iou_threshold`` (torchvision convention). Ties in score keep input order.
    """
    if len(rles) != len(scores):
        raise ValueError(f"nms got {len(rles)} masks but {len(scores)} scores")
    if len(rles) == 0:
        return []
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ious = iou_matrix(rles, rles)
    suppressed = np.zeros(len(rles), dtype=np.bool_)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= ious[i] > iou_threshold
    return keep


def from_uncompressed(counts: list[int], size: Sequence[int]) -> RLE:
    """COCO uncompressed RLE (``iscrowd`` style: column-major run lengths starting with
    background) -> compressed :class:`RLE`. Validates that the runs cover ``H * W`` pixels."""
    if len(size) != 2:
        raise MaskFormatError(f"RLE size must be [height, width], got {list(size)}")
    h, w = _check_hw(size[0], size[1])
    arr = np.asarray(counts)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise MaskFormatError("uncompressed RLE counts must be a flat list of integers")
    cnts = arr.astype(np.int64)
    _validate_counts(cnts, h, w)
    obj = mask_utils.frPyObjects({"size": [h, w], "counts": cnts.tolist()}, h, w)
    return _to_rle(obj)


def to_uncompressed(rle: RLE) -> dict[str, list[int]]:
    """Compressed :class:`RLE` -> ``{"size": [h, w], "counts": [ints]}`` (exact inverse of
    :func:`from_uncompressed`; the run lengths are read straight from the string)."""
    h, w = _size(rle)
    cnts = _parse_counts(rle["counts"])
    _validate_counts(cnts, h, w)
    return {"size": [h, w], "counts": cnts.tolist()}


# --------------------------------------------------------------------------------------
# polygons


def from_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """Rasterise COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` into one merged RLE.

    Coordinates are pixel-corner based (``[0, 0, 4, 0, 4, 4, 0, 4]`` is exactly 16 pixels).
    Polygons with fewer than 3 points cover no area and are ignored; an empty list gives an
    empty mask. Odd-length or non-finite coordinate lists raise :class:`MaskFormatError`.
    """
    h, w = _check_hw(height, width)
    valid: list[list[float]] = []
    for i, poly in enumerate(polygons):
        if isinstance(poly, (str, bytes, dict)):
            raise MaskFormatError(f"polygon {i} must be a list of numbers, got {type(poly)}")
        try:
            arr = np.asarray(poly, dtype=np.float64)
        except (TypeError, ValueError):
            raise MaskFormatError(f"polygon {i} must be a flat list of numbers") from None
        if arr.ndim != 1:
            raise MaskFormatError(f"polygon {i} must be a flat list [x1, y1, x2, y2, ...]")
        if arr.size % 2:
            raise MaskFormatError(
                f"polygon {i} has an odd number of coordinates ({arr.size}); "
                "expected [x1, y1, x2, y2, ...]"
            )
        if not np.isfinite(arr).all():
            raise MaskFormatError(f"polygon {i} has non-finite coordinates")
        if arr.size >= 6:
            valid.append(arr.tolist())
    if not valid:
        return encode(np.zeros((h, w), dtype=np.bool_))
    # Every entry has >= 6 numbers, so pycocotools takes its polygon branch (a 4-number
    # entry would be read as a bbox).
    rles = mask_utils.frPyObjects(valid, h, w)
    return _to_rle(mask_utils.merge(rles, intersect=0))


def to_polygons(rle: RLE, min_points: int = 3) -> list[list[float]]:
    """Outer contours of the mask as COCO polygons (one per external connected component).

    The polygons run along pixel *edges* (corner coordinates), not through pixel centres, so
    ``from_polygons(to_polygons(r), h, w)`` reproduces any hole-free mask exactly, single
    pixels included. What is lost: holes (COCO polygons cannot express them; they come back
    filled) and anything sub-pixel. Contours are traced with 8-connectivity
    (``cv2.RETR_EXTERNAL`` on a 2x nearest-upsampled crop, ``CHAIN_APPROX_SIMPLE``);
    polygons with fewer than ``min_points`` vertices are dropped. Empty mask -> ``[]``.
    """
    x0, y0, bw, bh = (int(v) for v in mask_utils.toBbox(rle))
    if bw == 0 or bh == 0:
        return []
    crop = decode(rle)[y0 : y0 + bh, x0 : x0 + bw].view(np.uint8)
    up = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    up = np.pad(up, 1)  # keep contours off the image border
    import cv2  # imported here: only polygon export needs it

    mode, method = cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    contours, _ = cv2.findContours(up, mode, method, offset=(-1, -1))
    polygons: list[list[float]] = []
    origin = np.array([x0, y0], dtype=np.int64)
    for contour in contours:
        # Upsampled pixel p lies on the left/top half of source pixel p // 2 when p is even,
        # right/bottom half when odd: (p + 1) // 2 is then the matching pixel corner.
        pts = (contour.reshape(-1, 2).astype(np.int64) + 1) // 2 + origin
        pts = pts[np.any(pts != np.roll(pts, 1, axis=0), axis=1)]  # drop repeated vertices
        if len(pts) >= max(min_points, 1):
            polygons.append(pts.astype(np.float64).ravel().tolist())
    return polygons


# --------------------------------------------------------------------------------------
# any COCO segmentation


def from_segmentation(segmentation: object, height: int, width: int) -> RLE:
    """Validate and convert any COCO ``segmentation`` value to a compressed :class:`RLE`.

    Accepted forms: a polygon list ``[[x1, y1, ...], ...]``; an uncompressed RLE dict
    ``{"size": [h, w], "counts": [ints]}``; a compressed RLE dict whose ``counts`` is ``str``
    or ``bytes``. RLE sizes must equal ``[height, width]`` and run lengths must cover exactly
    ``height * width`` pixels. Anything else raises :class:`MaskFormatError`.
    """
    h, w = _check_hw(height, width)
    if isinstance(segmentation, list | tuple):
        for i, poly in enumerate(segmentation):
            if not isinstance(poly, list | tuple | np.ndarray):
                raise MaskFormatError(
                    "polygon segmentation must be a list of polygons [[x1, y1, ...], ...]; "
                    f"element {i} is {type(poly).__name__}"
                )
        return from_polygons(segmentation, h, w)
    if not isinstance(segmentation, dict):
        raise MaskFormatError(
            "segmentation must be a polygon list or an RLE dict with 'size' and 'counts', "
            f"got {type(segmentation).__name__}"
        )
    missing = [k for k in ("size", "counts") if k not in segmentation]
    if missing:
        raise MaskFormatError(f"RLE segmentation is missing key(s) {missing}")
    size = segmentation["size"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in size)
    ):
        raise MaskFormatError(f"RLE size must be [height, width] integers, got {size!r}")
    got = [int(size[0]), int(size[1])]
    if got != [h, w]:
        raise MaskFormatError(f"RLE size {got} does not match image height x width {[h, w]}")
    counts = segmentation["counts"]
    if isinstance(counts, list | tuple):
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in counts):
            raise MaskFormatError("uncompressed RLE counts must be a list of integers")
        return from_uncompressed(list(counts), [h, w])
    if isinstance(counts, str | bytes):
        _validate_counts(_parse_counts(counts), h, w)
        text = counts if isinstance(counts, str) else counts.decode("ascii")
        return {"size": [h, w], "counts": text}
    raise MaskFormatError(
        f"RLE counts must be a list of ints, str or bytes, got {type(counts).__name__}"
    )


# --------------------------------------------------------------------------------------
# Label Studio brush RLE (not COCO RLE)
#
# The Label Studio editor stores a brush mask as RGBA pixels (row-major, 4 values per pixel)
# packed with the run-length format of thi-ng's ``rle-pack``, as a list of byte values. The
# bytes are one big-endian bit stream:
#
#   header   32 bits: number of values N (= height x width x 4)
#             5 bits: word size - 1 (bits per value)
#            4 x 4 bits: the widths - 1 of the four run-length fields
#   blocks   until N values are out: 1 bit "repeat"; 2 bits: which run-length field;
#            that many bits: n - 1; then one word (repeat: the value n times) or n words
#            (literal: n values)
#   padding  zero bits up to a whole byte
#
# The encoder below writes what ``label_studio_sdk.converter.brush.mask2rle`` writes, byte for
# byte (word size 8, fields 3 / 4 / 8 / 16 bits, runs of one value as one-word literals, runs
# over 256 values as 16-bit repeats cut at 65,536, 1 to 8 padding bits). The decoder reads any
# valid stream, including the Label Studio editor's (literal blocks, other widths).

_BRUSH_WORD_BITS = 8
_BRUSH_FIELD_BITS = (3, 4, 8, 16)
_BRUSH_HEADER_BITS = 32 + 5 + 4 * 4
_BRUSH_MAX_REPEAT = 1 << 16  # the longest run one 16-bit field holds
# Positions decoded per vectorised step (bounds the decoder's temporary memory).
_BRUSH_CHUNK_BITS = 1 << 20


def _brush_header(count: int) -> int:
    """The 53 header bits of a stream of ``count`` values, as an integer."""
    head = count << 5 | (_BRUSH_WORD_BITS - 1)
    for bits in _BRUSH_FIELD_BITS:
        head = head << 4 | (bits - 1)
    return head


def _brush_encode_runs(lengths: npt.NDArray[np.int64], values: npt.NDArray[np.int64]) -> bytes:
    """Brush RLE bytes of the runs ``values[i]`` x ``lengths[i]`` (values 0..255, lengths >= 1)."""
    count = int(lengths.sum())
    # A run longer than 256 takes the 16-bit field; one longer than 65,536 is cut into pieces
    # of 65,536 and a last piece of the rest (1..65,536), all with the 16-bit field.
    pieces = np.where(lengths > _BRUSH_MAX_REPEAT, (lengths - 1) // _BRUSH_MAX_REPEAT + 1, 1)
    run = np.repeat(np.arange(lengths.size), pieces)
    first = np.cumsum(pieces) - pieces  # index of each run's first piece
    k = np.arange(run.size) - first[run]  # piece number within its run
    total = lengths[run]
    n = np.where(k < pieces[run] - 1, _BRUSH_MAX_REPEAT, total - k * _BRUSH_MAX_REPEAT)
    value = values[run]
    # Field index: 0 (3 bits) up to 8, 1 (4 bits) up to 16, 2 (8 bits) up to 256, else 3.
    field = np.searchsorted(np.array([8, 16, 256]), total, side="left")
    width_of = np.array(_BRUSH_FIELD_BITS, dtype=np.int64)[field]
    repeat = (total > 1).astype(np.int64)  # a run of one value is a one-word literal
    code = ((repeat << 2 | field) << width_of | (n - 1)) << _BRUSH_WORD_BITS | value
    width = 3 + width_of + _BRUSH_WORD_BITS  # 14 .. 27 bits per block

    # Lay the blocks' bits side by side: each code as 32 big-endian bits, keep its last
    # ``width`` bits (row by row, so in block order).
    parts = [
        np.unpackbits(np.array([_brush_header(count)], dtype=">u8").view(np.uint8))[
            -_BRUSH_HEADER_BITS:
        ]
    ]
    for start in range(0, code.size, _BRUSH_CHUNK_BITS // 32):
        c = code[start : start + _BRUSH_CHUNK_BITS // 32].astype(">u4")
        w = width[start : start + _BRUSH_CHUNK_BITS // 32]
        bits = np.unpackbits(c.view(np.uint8)).reshape(-1, 32)
        parts.append(bits[np.arange(32) >= (32 - w)[:, None]])
    nbits = _BRUSH_HEADER_BITS + int(width.sum())
    # The SDK always pads, 1 to 8 zero bits (a whole zero byte when already aligned).
    parts.append(np.zeros(8 - nbits % 8, dtype=np.uint8))
    return np.packbits(np.concatenate(parts)).tobytes()


def to_brush(mask: np.ndarray) -> list[int]:
    """``(H, W)`` mask -> Label Studio brush ``rle`` (list of byte values).

    Encodes RGBA pixels with value 255 for foreground in every channel (Label Studio reads the
    alpha channel); the bytes are those of ``label_studio_sdk.converter.brush.mask2rle``, from a
    vectorised encoder whose cost grows with the number of runs.
    """
    if mask.ndim != 2:
        raise ValueError(f"to_brush expects a 2-D (H, W) mask, got shape {mask.shape}")
    if mask.size == 0 or mask.size * 4 >= 1 << 32:
        raise ValueError(f"to_brush expects a non-empty mask under 2**30 pixels, got {mask.shape}")
    flat = np.ravel(mask) != 0
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.append(starts, flat.size)).astype(np.int64) * 4  # 4 channels
    values = np.where(flat[starts], 255, 0).astype(np.int64)
    return list(_brush_encode_runs(lengths, values))


def _brush_windows(payload: bytes) -> npt.NDArray[np.uint64]:
    """For each byte offset, the 64 bits of the stream that start there (zeros past the end)."""
    padded = np.concatenate((np.frombuffer(payload, dtype=np.uint8), np.zeros(8, np.uint8)))
    n = len(payload) + 1
    words = np.zeros(n, dtype=np.uint64)
    for k in range(8):
        words |= padded[k : k + n].astype(np.uint64) << np.uint64(56 - 8 * k)
    return words


def _brush_read(
    words: npt.NDArray[np.uint64], at: npt.NDArray[np.int64], bits: int
) -> npt.NDArray[np.int64]:
    """The ``bits``-bit fields (``bits <= 57``) that start at the stream's bits ``at``."""
    window = words[at >> 3] << (at & 7).astype(np.uint64)
    return (window >> np.uint64(64 - bits)).astype(np.int64)


def _brush_blocks(
    words: npt.NDArray[np.uint64], at: npt.NDArray[np.int64], field_bits: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """For blocks starting at bits ``at``: repeat or literal, the width of their run-length
    field, and their number of values."""
    head = _brush_read(words, at, 19)  # flag, field index, and up to 16 bits of field
    width = field_bits[head >> 16 & 3]
    n = (head >> (16 - width) & ((1 << width) - 1)) + 1
    return head >> 18 == 1, width, n


def _brush_decode_runs(
    payload: bytes, count: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Decode a brush RLE stream of ``count`` values (its header already checked) into runs:
    ``values[i]`` repeated ``lengths[i]`` times, lengths summing to ``count``."""
    head = int.from_bytes(payload[:7], "big") >> 3
    word_bits = (head >> 16 & 31) + 1
    field_bits = np.array([(head >> (12 - 4 * i) & 15) + 1 for i in range(4)], dtype=np.int64)
    words = _brush_windows(payload)
    end = len(payload) * 8

    # Where a block starts depends on every block before it, so the blocks are found by a
    # walk; what a block at bit p would be (its length in bits and in values) is computed for
    # every p of a chunk at once, so the walk is two lookups per block.
    starts: list[int] = []
    pos, produced = _BRUSH_HEADER_BITS, 0
    chunk_start = chunk_end = 0
    # Memoryviews of int64 arrays: indexing one gives a Python int, without a list copy.
    bit_len = value_len = np.zeros(0, dtype=np.int64).data
    while produced < count:
        if pos >= end:
            raise MaskFormatError(
                f"malformed brush RLE: the stream ends after {produced} of {count} values"
            )
        if not chunk_start <= pos < chunk_end:
            chunk_start, chunk_end = pos, min(pos + _BRUSH_CHUNK_BITS, end)
            repeat, width, n = _brush_blocks(
                words, np.arange(chunk_start, chunk_end, dtype=np.int64), field_bits
            )
            bit_len = (3 + width + np.where(repeat, 1, n) * word_bits).data
            value_len = n.data
        i = pos - chunk_start
        starts.append(pos)
        produced += value_len[i]
        pos += bit_len[i]
    if pos > end:
        raise MaskFormatError("malformed brush RLE: the last block is cut off")

    block = np.array(starts, dtype=np.int64)
    repeat, width, n = _brush_blocks(words, block, field_bits)
    # One word per repeat block, n words per literal block.
    words_per = np.where(repeat, 1, n)
    owner = np.repeat(np.arange(block.size), words_per)
    k = np.arange(owner.size) - (np.cumsum(words_per) - words_per)[owner]
    at = block[owner] + 3 + width[owner] + k * word_bits
    values = _brush_read(words, at, word_bits)  # words are at most 32 bits
    if values.size and int(values.max()) > 255:
        raise MaskFormatError(
            f"malformed brush RLE: value {int(values.max())} does not fit a byte (0..255)"
        )
    # The last block may run past the value count: clipped (so does the SDK for a repeat).
    ends = np.minimum(np.cumsum(np.where(repeat[owner], n[owner], 1)), count)
    lengths = np.diff(ends, prepend=0)
    keep = lengths > 0
    return values[keep].astype(np.uint8), lengths[keep]


def from_brush(rle: Sequence[int], height: int, width: int) -> BoolArray:
    """Label Studio brush ``rle`` -> ``(H, W)`` bool mask (alpha channel ``>= 128``).

    Raises :class:`MaskFormatError` if the payload is malformed or does not encode exactly
    ``height * width`` RGBA pixels. Decodes everything ``label_studio_sdk``'s ``decode_rle``
    decodes (any word size and run-length field widths, literal and repeat blocks), vectorised.
    """
    h, w = _check_hw(height, width)
    try:
        payload = bytes(rle)  # also rejects values outside 0..255
    except (ValueError, TypeError) as exc:
        raise MaskFormatError(f"brush RLE must be a list of byte values 0..255: {exc}") from exc
    if len(payload) * 8 < _BRUSH_HEADER_BITS:
        raise MaskFormatError(f"brush RLE is too short ({len(payload)} bytes) to hold a header")
    # The header starts with the value count as a 32-bit big-endian integer; check it before
    # decoding so a bad payload cannot make the decoder allocate gigabytes.
    num = int.from_bytes(payload[:4], "big")
    if num != h * w * 4:
        raise MaskFormatError(
            f"brush RLE holds {num} values, expected height x width x 4 = "
            f"{h} x {w} x 4 = {h * w * 4}"
        )
    values, lengths = _brush_decode_runs(payload, num)
    # Value v is channel v % 4 of pixel v // 4: a run of values [s, e) covers the alpha
    # channels (4j + 3) of pixels [s // 4, e // 4).
    ends = np.cumsum(lengths) // 4
    pixels = np.diff(ends, prepend=0)
    return np.repeat(values >= 128, pixels).reshape(h, w)
