"""Tests for annotator.masks (COCO RLE, polygons, Label Studio brush RLE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from annotator import masks as M

# pycocotools' decode trips numpy 2's __array__(copy=...) deprecation; not our code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _numpy_counts(mask: np.ndarray) -> list[int]:
    """Reference COCO uncompressed counts: column-major runs, starting with background."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    return [0, *counts] if flat[0] else counts


def _iou_np(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# ---------------------------------------------------------------------------- encode/decode


@pytest.mark.parametrize(
    "mask",
    [
        _rng(1).random((17, 23)) < 0.5,
        _rng(2).random((64, 48)) < 0.1,
        _rng(3).random((5, 200)) < 0.9,
        np.zeros((7, 9), dtype=bool),
        np.ones((7, 9), dtype=bool),
        _rect(10, 12, 4, 5, 6, 7),  # 1 pixel
        _rect(10, 12, 0, 1, 0, 1),  # 1 pixel in the corner
        _rect(10, 12, 9, 10, 11, 12),  # 1 pixel in the far corner
        _disc(30, 70, 12, 40, 9),  # non-square
        np.ones((1, 1), dtype=bool),
    ],
)
def test_encode_decode_round_trip(mask: np.ndarray) -> None:
    rle = M.encode(mask)
    assert isinstance(rle["counts"], str)
    assert rle["size"] == [mask.shape[0], mask.shape[1]]
    assert all(type(v) is int for v in rle["size"])
    json.dumps(rle)  # JSON-serialisable as is
    out = M.decode(rle)
    assert out.dtype == np.bool_ and out.shape == mask.shape
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, mask)


def test_encode_accepts_uint8_0_255_and_fortran_input() -> None:
    mask = _rng(4).random((20, 30)) < 0.4
    expected = M.encode(mask)
    assert M.encode(mask.astype(np.uint8) * 255) == expected
    assert M.encode(mask.astype(np.uint8)) == expected
    assert M.encode(np.asfortranarray(mask)) == expected
    assert M.encode(mask[:, ::-1][:, ::-1]) == expected  # non-contiguous view


def test_encode_rejects_wrong_ndim() -> None:
    with pytest.raises(ValueError):
        M.encode(np.zeros((2, 3, 4), dtype=bool))
    with pytest.raises(ValueError):
        M.encode_many(np.zeros((3, 4), dtype=bool))


def test_encode_many_matches_encode_and_decode_many() -> None:
    stack = _rng(5).random((6, 13, 29)) < 0.3
    stack[0] = False
    stack[1] = True
    rles = M.encode_many(stack)
    assert rles == [M.encode(m) for m in stack]
    out = M.decode_many(rles)
    assert out.shape == stack.shape and out.dtype == np.bool_
    np.testing.assert_array_equal(out, stack)
    assert M.encode_many(np.zeros((0, 4, 5), dtype=bool)) == []


def test_decode_many_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        M.decode_many([])
    a = M.encode(np.zeros((4, 5), dtype=bool))
    b = M.encode(np.zeros((5, 4), dtype=bool))
    with pytest.raises(ValueError, match="same"):
        M.decode_many([a, b])


def test_decode_accepts_bytes_counts() -> None:
    mask = _disc(20, 20, 10, 10, 5)
    rle = M.encode(mask)
    raw = {"size": rle["size"], "counts": rle["counts"].encode()}
    np.testing.assert_array_equal(M.decode(raw), mask)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)))
def test_round_trip_property(mask: np.ndarray) -> None:
    rle = M.encode(mask)
    np.testing.assert_array_equal(M.decode(rle), mask)
    assert M.area(rle) == int(mask.sum())
    unc = M.to_uncompressed(rle)
    assert unc["counts"] == _numpy_counts(mask)
    assert M.from_uncompressed(unc["counts"], unc["size"]) == rle


# ---------------------------------------------------------------------------- area / bbox


@pytest.mark.parametrize("seed", range(5))
def test_area_and_bbox_match_numpy(seed: int) -> None:
    rng = _rng(seed)
    h, w = (int(v) for v in rng.integers(5, 60, size=2))
    mask = np.zeros((h, w), dtype=bool)
    y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
    mask[y0 : y0 + 4, x0 : x0 + 7] = rng.random(mask[y0 : y0 + 4, x0 : x0 + 7].shape) < 0.7
    mask[y0, x0] = True
    rle = M.encode(mask)
    assert M.area(rle) == int(mask.sum())
    ys, xs = np.nonzero(mask)
    expected = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert M.bbox(rle) == [float(v) for v in expected]
    assert all(type(v) is float for v in M.bbox(rle))


def test_area_bbox_empty_and_full() -> None:
    empty = M.encode(np.zeros((8, 11), dtype=bool))
    assert M.area(empty) == 0
    assert M.bbox(empty) == [0.0, 0.0, 0.0, 0.0]
    full = M.encode(np.ones((8, 11), dtype=bool))
    assert M.area(full) == 88
    assert M.bbox(full) == [0.0, 0.0, 11.0, 8.0]


# ---------------------------------------------------------------------------- IoU / merge / NMS


def test_iou_matrix_matches_numpy() -> None:
    rng = _rng(7)
    a = rng.random((4, 25, 31)) < 0.4
    b = rng.random((3, 25, 31)) < 0.6
    a[0] = False  # empty mask in a
    b[2] = a[1]  # identical pair
    got = M.iou_matrix(M.encode_many(a), M.encode_many(b))
    expected = np.array([[_iou_np(x, y) for y in b] for x in a])
    assert got.shape == (4, 3) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert got[1, 2] == pytest.approx(1.0)


def test_iou_matrix_iscrowd_semantics() -> None:
    dt = _rect(20, 20, 0, 10, 0, 10)  # 100 px
    crowd = _rect(20, 20, 0, 20, 0, 5)  # 100 px, overlap 50
    got = M.iou_matrix([M.encode(dt)], [M.encode(crowd), M.encode(crowd)], [True, False])
    # crowd: |dt ∩ gt| / |dt|; normal: |dt ∩ gt| / |dt ∪ gt|
    np.testing.assert_allclose(got, [[50 / 100, 50 / 150]])
    # a detection fully inside a crowd region scores 1 even though the region is larger
    inside = _rect(20, 20, 2, 8, 1, 4)
    assert M.iou_matrix([M.encode(inside)], [M.encode(crowd)], [True])[0, 0] == 1.0


def test_iou_matrix_empty_inputs_and_errors() -> None:
    r = M.encode(np.ones((3, 3), dtype=bool))
    assert M.iou_matrix([], []).shape == (0, 0)
    assert M.iou_matrix([r, r], []).shape == (2, 0)
    assert M.iou_matrix([], [r], [True]).shape == (0, 1)
    assert M.iou_matrix([], []).dtype == np.float64
    with pytest.raises(ValueError, match="iscrowd"):
        M.iou_matrix([r], [r], [True, False])
    other = M.encode(np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="same"):
        M.iou_matrix([r], [other])


def test_merge_union_and_intersection() -> None:
    rng = _rng(8)
    stack = rng.random((3, 16, 21)) < 0.5
    rles = M.encode_many(stack)
    np.testing.assert_array_equal(M.decode(M.merge(rles)), stack.any(axis=0))
    np.testing.assert_array_equal(M.decode(M.merge(rles, intersect=True)), stack.all(axis=0))
    assert isinstance(M.merge(rles)["counts"], str)
    assert M.merge(rles[:1]) == rles[0]
    with pytest.raises(ValueError):
        M.merge([])
    with pytest.raises(ValueError, match="same"):
        M.merge([rles[0], M.encode(np.zeros((21, 16), dtype=bool))])


def test_nms_keeps_the_right_indices() -> None:
    h, w = 40, 40
    big = _rect(h, w, 0, 20, 0, 20)
    big_shifted = _rect(h, w, 1, 21, 1, 21)  # IoU with big = 361 / 439 ≈ 0.82
    other = _rect(h, w, 25, 35, 25, 35)
    half = _rect(h, w, 0, 20, 0, 10)  # IoU with big = 0.5 exactly
    rles = [M.encode(m) for m in (big_shifted, other, big, half)]
    scores = [0.8, 0.5, 0.9, 0.7]
    # big (0.9) kept; big_shifted suppressed; half (IoU 0.5, not > 0.5) kept; other kept.
    assert M.nms(rles, scores, iou_threshold=0.5) == [2, 3, 1]
    assert M.nms(rles, scores, iou_threshold=0.49) == [2, 1]
    assert M.nms(rles, scores, iou_threshold=0.9) == [2, 0, 3, 1]
    assert M.nms([], []) == []
    # equal scores keep input order
    assert M.nms([rles[1], rles[1]], [0.3, 0.3]) == [0]
    with pytest.raises(ValueError):
        M.nms(rles, [0.1])


# ---------------------------------------------------------------------------- uncompressed


def test_uncompressed_round_trip_known_value() -> None:
    # 3x3 mask read column-major: col0 = [0,1,0], col1 = [1,1,0], col2 = [1,0,0]
    mask = np.array([[0, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=bool)
    counts = [1, 1, 1, 2, 1, 1, 2]
    assert _numpy_counts(mask) == counts
    rle = M.from_uncompressed(counts, [3, 3])
    np.testing.assert_array_equal(M.decode(rle), mask)
    assert rle == M.encode(mask)
    assert M.to_uncompressed(rle) == {"size": [3, 3], "counts": counts}
    # a mask starting with foreground has a leading zero run
    full_first = M.from_uncompressed([0, 2, 7], (3, 3))
    assert M.area(full_first) == 2
    assert M.to_uncompressed(full_first)["counts"] == [0, 2, 7]


def test_uncompressed_large_counts_round_trip() -> None:
    mask = np.zeros((1536, 2048), dtype=bool)
    mask[700:, 100:1900] = True
    mask[0, 0] = True
    rle = M.encode(mask)
    unc = M.to_uncompressed(rle)
    assert unc["counts"] == _numpy_counts(mask)
    assert M.from_uncompressed(unc["counts"], unc["size"]) == rle


def test_from_uncompressed_validates() -> None:
    with pytest.raises(M.MaskFormatError, match="sum to 8"):
        M.from_uncompressed([1, 7], [3, 3])
    with pytest.raises(M.MaskFormatError, match="negative"):
        M.from_uncompressed([10, -1], [3, 3])
    with pytest.raises(M.MaskFormatError):
        M.from_uncompressed([1.5, 7.5], [3, 3])  # type: ignore[list-item]
    with pytest.raises(M.MaskFormatError):
        M.from_uncompressed([9], [3])


# ---------------------------------------------------------------------------- runs


def _runs_of(runs: M.MaskRuns, k: int, size: int) -> np.ndarray:
    """Mask ``k`` of ``runs`` as a flat column-major bool array."""
    flat = np.zeros(size, dtype=bool)
    for start, stop in zip(
        runs.starts[runs.offsets[k] : runs.offsets[k + 1]],
        runs.stops[runs.offsets[k] : runs.offsets[k + 1]],
        strict=True,
    ):
        assert stop > start  # no empty runs
        assert not flat[start:stop].any()
        flat[start:stop] = True
    return flat


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda h: st.integers(1, 30).flatmap(
            lambda w: st.lists(
                hnp.arrays(np.bool_, (h, w), elements=st.booleans()), min_size=1, max_size=5
            )
        )
    )
)
def test_foreground_runs_are_the_masks_pixels_and_boxes(masks: list[np.ndarray]) -> None:
    rles = [M.encode(m) for m in masks]
    runs = M.foreground_runs(rles)
    h, w = masks[0].shape
    assert (runs.height, runs.width, len(runs)) == (h, w, len(masks))
    for k, (mask, rle) in enumerate(zip(masks, rles, strict=True)):
        np.testing.assert_array_equal(_runs_of(runs, k, h * w), mask.ravel(order="F"))
        starts = runs.starts[runs.offsets[k] : runs.offsets[k + 1]]
        stops = runs.stops[runs.offsets[k] : runs.offsets[k + 1]]
        assert (starts[1:] > stops[:-1]).all()  # apart, in order
        x, y, bw, bh = (int(v) for v in M.bbox(rle))
        assert tuple(runs.boxes[k]) == ((x, y, x + bw, y + bh) if bw else (0, 0, 0, 0))
        if bw:
            np.testing.assert_array_equal(runs.region(k), mask[y : y + bh, x : x + bw])


def test_foreground_runs_of_wrapping_large_and_touching_runs() -> None:
    # A run from the bottom of one column into the next: the box spans every row.
    mask = np.zeros((6, 5), dtype=bool)
    mask[4:, 1] = True
    mask[:2, 2] = True
    big = np.zeros((1536, 2048), dtype=bool)
    big[700:, 100:1900] = True  # counts of several characters, deltas below zero
    runs = M.foreground_runs([M.encode(mask), M.encode(np.zeros((6, 5), bool))])
    assert tuple(runs.boxes[0]) == (1, 0, 3, 6)
    assert tuple(runs.boxes[1]) == (0, 0, 0, 0) and runs.offsets[2] == runs.offsets[1]
    assert runs.starts.tolist() == [10] and runs.stops.tolist() == [14]
    large = M.foreground_runs([M.encode(big)])
    assert tuple(large.boxes[0]) == (100, 700, 1900, 1536)
    assert (large.stops - large.starts == 1536 - 700).all() and len(large.starts) == 1800
    # An empty background run between two foreground runs: they are one run.
    touching = {"size": [3, 3], "counts": M.from_uncompressed([2, 3, 0, 2, 2], [3, 3])["counts"]}
    assert M.to_uncompressed(touching)["counts"] == [2, 3, 0, 2, 2]
    joined = M.foreground_runs([touching])
    assert (joined.starts.tolist(), joined.stops.tolist()) == ([2], [7])


def test_foreground_runs_validate_like_to_uncompressed() -> None:
    good = M.encode(_rect(4, 4, 1, 3, 1, 3))
    with pytest.raises(ValueError, match="at least one"):
        M.foreground_runs([])
    with pytest.raises(ValueError, match="same height x width"):
        M.foreground_runs([good, M.encode(np.zeros((4, 5), bool))])
    for counts, match in [
        ("", "sum to 0"),
        ("1", "sum to 1"),
        ("zz", "outside"),
        ("5\u00e9", "non-ASCII"),
        ("05P", "truncated"),
        ("0" + "o" * 12 + "1", "impossibly long"),
        ("51O", "negative"),
    ]:
        with pytest.raises(M.MaskFormatError, match=match):
            M.foreground_runs([good, {"size": [4, 4], "counts": counts}])
    # bytes counts, as pycocotools hands them back
    raw = {"size": good["size"], "counts": good["counts"].encode()}
    assert M.foreground_runs([raw]).starts.tolist() == M.foreground_runs([good]).starts.tolist()


# ---------------------------------------------------------------------------- polygons


def test_from_polygons_rectangle_and_triangle_area() -> None:
    rect = M.from_polygons([[2, 3, 12, 3, 12, 8, 2, 8]], 20, 30)
    assert M.area(rect) == 10 * 5
    assert M.bbox(rect) == [2.0, 3.0, 10.0, 5.0]
    np.testing.assert_array_equal(M.decode(rect), _rect(20, 30, 3, 8, 2, 12))
    # right triangle with legs 40: area 800, rasterisation is within a few boundary pixels
    tri = M.from_polygons([[0, 0, 40, 0, 0, 40]], 50, 50)
    assert abs(M.area(tri) - 800) <= 40
    # two polygons are merged (union)
    two = M.from_polygons([[0, 0, 4, 0, 4, 4, 0, 4], [10, 10, 14, 10, 14, 14, 10, 14]], 20, 20)
    assert M.area(two) == 32


def test_from_polygons_edge_cases() -> None:
    assert M.area(M.from_polygons([], 5, 6)) == 0
    assert M.from_polygons([], 5, 6)["size"] == [5, 6]
    # a 2-point "polygon" would be read by pycocotools as a bbox; we ignore it instead
    assert M.area(M.from_polygons([[0, 0, 4, 4]], 10, 10)) == 0
    assert M.area(M.from_polygons([[0, 0, 4, 4], [0, 0, 2, 0, 2, 2, 0, 2]], 10, 10)) == 4
    with pytest.raises(M.MaskFormatError, match="odd"):
        M.from_polygons([[0, 0, 4, 0, 4]], 10, 10)
    with pytest.raises(M.MaskFormatError, match="non-finite"):
        M.from_polygons([[0, 0, 4, 0, float("nan"), 4]], 10, 10)
    with pytest.raises(M.MaskFormatError):
        M.from_polygons([[[0, 0], [4, 0], [4, 4]]], 10, 10)  # type: ignore[list-item]


def test_rle_polygon_rle_disc_iou() -> None:
    disc = _disc(120, 160, 60, 75, 33)
    rle = M.encode(disc)
    polys = M.to_polygons(rle)
    assert len(polys) == 1 and len(polys[0]) % 2 == 0
    back = M.from_polygons(polys, 120, 160)
    assert M.iou_matrix([rle], [back])[0, 0] > 0.9
    # corner-traced contours make hole-free masks round-trip exactly
    np.testing.assert_array_equal(M.decode(back), disc)


@pytest.mark.parametrize(
    "mask",
    [
        _rect(10, 10, 4, 5, 4, 5),  # single pixel
        _rect(10, 10, 0, 10, 0, 10),  # full image (touches every border)
        _rect(12, 9, 2, 3, 1, 8),  # one-pixel-thin line
        np.eye(6, dtype=bool),  # diagonal chain (8-connected)
        _disc(40, 50, 10, 10, 6) | _rect(40, 50, 25, 38, 30, 48),  # two components
    ],
)
def test_polygon_round_trip_exact_for_hole_free_masks(mask: np.ndarray) -> None:
    h, w = mask.shape
    back = M.from_polygons(M.to_polygons(M.encode(mask)), h, w)
    np.testing.assert_array_equal(M.decode(back), mask)


def test_to_polygons_fills_holes_and_handles_empty() -> None:
    ring = _disc(60, 60, 30, 30, 20) & ~_disc(60, 60, 30, 30, 8)
    polys = M.to_polygons(M.encode(ring))
    assert len(polys) == 1
    np.testing.assert_array_equal(
        M.decode(M.from_polygons(polys, 60, 60)), _disc(60, 60, 30, 30, 20)
    )
    assert M.to_polygons(M.encode(np.zeros((5, 5), dtype=bool))) == []
    two = _rect(20, 20, 1, 3, 1, 3) | _rect(20, 20, 10, 15, 10, 15)
    assert len(M.to_polygons(M.encode(two))) == 2
    assert len(M.to_polygons(M.encode(two), min_points=5)) == 0  # both are 4-vertex squares


# ---------------------------------------------------------------------------- from_segmentation


def test_from_segmentation_every_form() -> None:
    mask = _disc(24, 32, 12, 15, 7)
    rle = M.encode(mask)
    unc = M.to_uncompressed(rle)
    assert M.from_segmentation(rle, 24, 32) == rle
    assert M.from_segmentation(dict(rle), 24, 32) == rle
    assert M.from_segmentation({"size": [24, 32], "counts": rle["counts"].encode()}, 24, 32) == rle
    assert M.from_segmentation(unc, 24, 32) == rle
    assert M.from_segmentation({"size": (24, 32), "counts": tuple(unc["counts"])}, 24, 32) == rle
    poly = M.from_segmentation([[2, 3, 12, 3, 12, 8, 2, 8]], 24, 32)
    assert poly["size"] == [24, 32] and M.area(poly) == 50
    assert M.from_segmentation(M.to_polygons(rle), 24, 32) == rle
    # numpy ints (e.g. from a dataframe) are accepted
    np_size = {"size": [np.int64(24), np.int64(32)], "counts": rle["counts"]}
    assert M.from_segmentation(np_size, 24, 32) == rle


def test_from_segmentation_size_mismatch_message() -> None:
    rle = M.encode(np.zeros((10, 20), dtype=bool))
    with pytest.raises(M.MaskFormatError) as exc:
        M.from_segmentation(rle, 480, 640)
    assert str(exc.value) == "RLE size [10, 20] does not match image height x width [480, 640]"
    assert isinstance(exc.value, ValueError)
    unc = M.to_uncompressed(rle)
    with pytest.raises(M.MaskFormatError, match=r"RLE size \[10, 20\] does not match"):
        M.from_segmentation(unc, 480, 640)


@pytest.mark.parametrize(
    ("segmentation", "match"),
    [
        ({"size": [3, 3], "counts": "1o"}, "truncated"),  # unterminated value
        ({"size": [3, 3], "counts": "2"}, "sum to 2"),  # too few pixels
        ({"size": [3, 3], "counts": "3\x7f"}, "outside"),  # illegal character
        ({"size": [3, 3], "counts": "3é"}, "non-ASCII"),
        ({"size": [3, 3], "counts": ""}, "sum to 0"),
        ({"size": [3, 3], "counts": [1, 2]}, "sum to 3"),
        ({"size": [3, 3], "counts": [4, -1, 6]}, "negative"),
        ({"size": [3, 3], "counts": [4.0, 5.0]}, "integers"),
        ({"size": [3, 3], "counts": [True, 8]}, "integers"),
        ({"size": [3, 3], "counts": 9}, "counts must be"),
        ({"size": [3, 3]}, "missing"),
        ({"counts": "9"}, "missing"),
        ({"size": [3], "counts": "9"}, "size must be"),
        ({"size": "3x3", "counts": "9"}, "size must be"),
        ({"size": [3.0, 3.0], "counts": "9"}, "size must be"),
        ([[0, 0, 2, 0, 2]], "odd"),
        ([0, 0, 2, 0, 2, 2], "list of polygons"),  # flat list instead of nested
        ([["a", "b", "c", "d", "e", "f"]], "numbers"),
        ("segmentation", "got str"),
        (None, "got NoneType"),
        (np.zeros((3, 3), dtype=bool), "got ndarray"),
    ],
)
def test_from_segmentation_errors(segmentation: object, match: str) -> None:
    with pytest.raises(M.MaskFormatError, match=match):
        M.from_segmentation(segmentation, 3, 3)


def test_from_segmentation_minimal_strings() -> None:
    # "9" is one background run of 9 pixels: a valid empty 3x3 mask
    assert M.area(M.from_segmentation({"size": [3, 3], "counts": "9"}, 3, 3)) == 0
    # "0" then 9 foreground pixels encoded as "09": a full 3x3 mask
    assert M.area(M.from_segmentation({"size": [3, 3], "counts": "09"}, 3, 3)) == 9


def test_from_segmentation_rejects_bad_image_size() -> None:
    with pytest.raises(M.MaskFormatError, match="positive"):
        M.from_segmentation([], 0, 5)


# ---------------------------------------------------------------------------- brush
#
# The Label Studio SDK's codec (label_studio_sdk.converter.brush) is the oracle: our encoder must
# write its bytes exactly, our decoder must read whatever it reads.


def _sdk_brush(mask: np.ndarray) -> list[int]:
    from label_studio_sdk.converter.brush import mask2rle

    return [int(v) for v in mask2rle(np.where(mask, 255, 0).astype(np.uint8))]


def _sdk_alpha(rle: list[int], h: int, w: int) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    return np.asarray(decode_rle(bytes(rle)).reshape(h, w, 4)[:, :, 3] >= 128)


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.concatenate(([0], np.flatnonzero(values[1:] != values[:-1]) + 1))
    lengths = np.diff(np.append(starts, values.size)).astype(np.int64)
    return lengths, values[starts].astype(np.int64)


def _line(n: int) -> np.ndarray:
    return np.ones((1, n), dtype=bool)


BRUSH_EDGE_MASKS = {
    "1x1 empty": np.zeros((1, 1), dtype=bool),
    "1x1 full": np.ones((1, 1), dtype=bool),
    "empty": np.zeros((9, 7), dtype=bool),
    "full": np.ones((9, 7), dtype=bool),
    "single pixel": _rect(9, 7, 4, 5, 3, 4),
    "first pixel": _rect(9, 7, 0, 1, 0, 1),
    "last pixel": _rect(9, 7, 8, 9, 6, 7),
    "odd sizes": _rng(9).random((37, 53)) < 0.5,
    "sparse": _rng(10).random((64, 64)) < 0.05,
    "checkerboard": np.indices((13, 11)).sum(axis=0) % 2 == 1,
    "disc": _disc(100, 140, 50, 70, 30),
    # runs of 2, 4, 16 and 64 pixels (8, 16, 64 and 256 values): the edges of the 3-, 4- and
    # 8-bit run-length fields; 65 pixels (260 values) takes the 16-bit one
    "run field edges": np.repeat(
        np.arange(12) % 2 == 0, [2, 3, 4, 5, 16, 17, 64, 65, 1, 2, 1, 4]
    ).reshape(1, -1),
    # 16,384 pixels are 65,536 values, the longest run one block holds; one more pixel is cut
    # into two blocks, and 40,000 pixels (160,000 values) into three
    "longest block": _line(16_384),
    "one past the longest block": _line(16_385),
    "three blocks": _line(40_000),
    "long background run": _rect(300, 300, 299, 300, 0, 300),
    "portrait": _disc(70, 20, 35, 10, 8),
}


@pytest.mark.parametrize("mask", BRUSH_EDGE_MASKS.values(), ids=BRUSH_EDGE_MASKS.keys())
def test_to_brush_is_byte_exact_with_the_sdk(mask: np.ndarray) -> None:
    rle = M.to_brush(mask)
    assert all(type(v) is int and 0 <= v <= 255 for v in rle)
    assert rle == _sdk_brush(mask)
    out = M.from_brush(rle, *mask.shape)
    assert out.dtype == np.bool_ and out.shape == mask.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(_sdk_alpha(rle, *mask.shape), mask)


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.bool_, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=48)))
def test_to_brush_property(mask: np.ndarray) -> None:
    rle = M.to_brush(mask)
    assert rle == _sdk_brush(mask)
    np.testing.assert_array_equal(M.from_brush(rle, *mask.shape), mask)


def test_to_brush_accepts_uint8_and_rejects_bad_shapes() -> None:
    mask = _disc(20, 30, 10, 12, 6)
    assert M.to_brush(mask.astype(np.uint8) * 7) == M.to_brush(mask)
    with pytest.raises(ValueError, match="2-D"):
        M.to_brush(np.zeros((2, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match="non-empty"):
        M.to_brush(np.zeros((0, 3), dtype=bool))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 255), st.integers(1, 300)), min_size=1, max_size=40),
    st.booleans(),
)
def test_brush_encoder_matches_sdk_encode_rle(runs: list[tuple[int, int]], long: bool) -> None:
    """Any bytes (runs of one value included, which masks never have), not only 0 / 255."""
    from label_studio_sdk.converter.brush import encode_rle

    if long:  # runs over 65,536 values
        runs = [(v, n * 997) for v, n in runs[:4]]
    values = np.repeat([v for v, _ in runs], [n for _, n in runs]).astype(np.uint8)
    lengths, run_values = _runs(values)
    encoded = M._brush_encode_runs(lengths, run_values)
    assert list(encoded) == encode_rle(values)
    got_values, got_lengths = M._brush_decode_runs(encoded, values.size)
    np.testing.assert_array_equal(np.repeat(got_values, got_lengths), values)


def _bits(value: int, width: int) -> str:
    return format(value, f"0{width}b")


@st.composite
def _brush_streams(draw: st.DrawFn) -> tuple[bytes, np.ndarray]:
    """Any valid stream, as another encoder may write it: word size 1..16, any run-length field
    widths, literal blocks of several values, a last repeat block that runs past the end."""
    word = draw(st.integers(1, 16))
    fields = draw(st.lists(st.integers(1, 16), min_size=4, max_size=4))
    top = min(255, (1 << word) - 1)  # the SDK decodes into uint8
    out: list[int] = []
    body = ""
    for _ in range(draw(st.integers(1, 12))):
        index = draw(st.integers(0, 3))
        n = draw(st.integers(1, min(1 << fields[index], 40)))
        if draw(st.booleans()):
            value = draw(st.integers(0, top))
            body += "1" + _bits(index, 2) + _bits(n - 1, fields[index]) + _bits(value, word)
            out += [value] * n
        else:
            words = draw(st.lists(st.integers(0, top), min_size=n, max_size=n))
            body += "0" + _bits(index, 2) + _bits(n - 1, fields[index])
            body += "".join(_bits(v, word) for v in words)
            out += words
    if draw(st.booleans()):
        # a last repeat block that runs past the declared count: only its first values count
        index = draw(st.integers(0, 3))
        n = draw(st.integers(2, min(1 << fields[index], 40)))
        value = draw(st.integers(0, top))
        body += "1" + _bits(index, 2) + _bits(n - 1, fields[index]) + _bits(value, word)
        out += [value] * draw(st.integers(1, n - 1))
    count = len(out)
    head = _bits(count, 32) + _bits(word - 1, 5) + "".join(_bits(f - 1, 4) for f in fields)
    bits = head + body
    bits += "0" * (-len(bits) % 8 + draw(st.sampled_from([0, 8])))
    payload = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    return payload, np.array(out, dtype=np.uint8)


@settings(max_examples=200, deadline=None)
@given(_brush_streams())
def test_brush_decoder_reads_what_the_sdk_reads(stream: tuple[bytes, np.ndarray]) -> None:
    from label_studio_sdk.converter.brush import decode_rle

    payload, expected = stream
    np.testing.assert_array_equal(decode_rle(payload), expected)  # the oracle agrees
    values, lengths = M._brush_decode_runs(payload, expected.size)
    np.testing.assert_array_equal(np.repeat(values, lengths), expected)


def _editor_cases() -> list[dict[str, object]]:
    path = Path(__file__).parent / "fixtures" / "label_studio_editor_brush.json"
    cases: list[dict[str, object]] = json.loads(path.read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", _editor_cases(), ids=lambda c: str(c["name"]))
def test_from_brush_reads_the_label_studio_editor(case: dict[str, Any]) -> None:
    """Masks as the Label Studio editor writes them: stroke colour in R, G, B, anti-aliased
    alpha, literal blocks; encoded by the editor's own encoder (see the fixture's source)."""
    h, w = case["height"], case["width"]
    expected = M.decode({"size": [h, w], "counts": case["alpha_ge_128"]})
    got = M.from_brush(case["rle"], h, w)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(_sdk_alpha(case["rle"], h, w), expected)


def test_brush_round_trip_full_size() -> None:
    h, w = 1536, 2048
    disc = _disc(h, w, 700, 1000, 500)
    np.testing.assert_array_equal(M.from_brush(M.to_brush(disc), h, w), disc)
    # random blocky mask (16x16 blocks): many runs
    blocks = _rng(11).random((h // 16, w // 16)) < 0.5
    blocky = np.kron(blocks, np.ones((16, 16), dtype=bool))
    rle = M.to_brush(blocky)
    assert rle == _sdk_brush(blocky)
    np.testing.assert_array_equal(M.from_brush(rle, h, w), blocky)
    # portrait orientation (width x height swapped) must not be confused with landscape
    tall = _disc(w, h, 1000, 700, 400)
    np.testing.assert_array_equal(M.from_brush(M.to_brush(tall), w, h), tall)


def test_from_brush_errors() -> None:
    rle = M.to_brush(np.ones((4, 5), dtype=bool))
    with pytest.raises(M.MaskFormatError, match="expected height x width x 4"):
        M.from_brush(rle, 5, 5)
    with pytest.raises(M.MaskFormatError, match="too short"):
        M.from_brush(rle[:3], 4, 5)
    with pytest.raises(M.MaskFormatError, match="too short"):
        M.from_brush(rle[:6], 4, 5)  # 48 of the header's 53 bits
    with pytest.raises(M.MaskFormatError, match=r"0\.\.255"):
        M.from_brush([*rle[:-1], 256], 4, 5)
    with pytest.raises(M.MaskFormatError, match="malformed"):
        M.from_brush(M.to_brush(_rng(12).random((4, 5)) < 0.5)[:8], 4, 5)
    # a huge declared value count is rejected before any decoding
    with pytest.raises(M.MaskFormatError, match="expected"):
        M.from_brush([255, 255, 255, 255, 0, 0, 0], 4, 5)
    with pytest.raises(M.MaskFormatError, match="height x width must be positive"):
        M.from_brush(rle, 0, 5)
    # a stream cut inside its last block
    noisy = M.to_brush(_rng(13).random((6, 7)) < 0.5)
    with pytest.raises(M.MaskFormatError, match="malformed brush RLE"):
        M.from_brush(noisy[:-3], 6, 7)
    # 12-bit words holding values a byte cannot (one repeat block of 4 x 300)
    bits = _bits(4, 32) + _bits(11, 5) + "".join(_bits(f - 1, 4) for f in (3, 4, 8, 16))
    bits += "1" + "00" + _bits(3, 3) + _bits(300, 12)
    bits += "0" * (-len(bits) % 8)
    payload = [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]
    with pytest.raises(M.MaskFormatError, match="does not fit a byte"):
        M.from_brush(payload, 1, 1)


def _column_crops(stack: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Each mask's box (x0, y0, x1, y1; empty ``0, 0, 0, 0``) and column-major crop."""
    columns = np.ascontiguousarray(stack.transpose(0, 2, 1))
    crops, boxes = [], []
    for plane in columns:
        xs, ys = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        box = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1) if xs.size else (0, 0, 0, 0)
        boxes.append(box)
        crops.append(plane[box[0] : box[2], box[1] : box[3]])
    return crops, np.array(boxes, dtype=np.int64).reshape(-1, 4)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (2, 2), (5, 9), (9, 5), (480, 640)])
def test_encode_column_crops_equals_encode_many(shape: tuple[int, int]) -> None:
    h, w = shape
    rng = np.random.default_rng(h * 1000 + w)
    stacks = [
        np.zeros((3, h, w), dtype=bool),  # empty
        np.ones((3, h, w), dtype=bool),  # full
        rng.random((4, h, w)) < 0.5,  # noise
        rng.random((4, h, w)) < 0.01,  # sparse
    ]
    single = np.zeros((2, h, w), dtype=bool)
    single[0, rng.integers(h), rng.integers(w)] = True
    single[1, h - 1, w - 1] = True
    borders = np.zeros((1, h, w), dtype=bool)
    borders[0, 0, :] = borders[0, -1, :] = borders[0, :, 0] = borders[0, :, -1] = True
    bands = np.zeros((3, h, w), dtype=bool)
    bands[0, :, w // 2 :] = True  # full height, to the right edge
    bands[1, h // 2 :, :] = True  # full width, to the bottom
    bands[2, :, : max(1, w // 3)] = True  # full height from the left edge
    blobs = np.zeros((6, h, w), dtype=bool)
    for plane in blobs:
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        plane[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.9
    stacks += [single, borders, bands, blobs]
    mixed = np.concatenate(stacks)
    for stack in [*stacks, mixed]:
        crops, boxes = _column_crops(stack)
        assert M.encode_column_crops(crops, boxes, h, w) == M.encode_many(stack)
        # Crops given as 0/1 uint8: the same.
        assert M.encode_column_crops([c.view(np.uint8) for c in crops], boxes, h, w) == (
            M.encode_many(stack)
        )
    full = np.ones((1, h, w), dtype=bool)
    loose = [np.ascontiguousarray(full[0].T)]
    assert M.encode_column_crops(loose, [[0, 0, w, h]], h, w) == M.encode_many(full)
    assert M.encode_column_crops([], np.zeros((0, 4)), h, w) == []


def test_encode_column_crops_loose_boxes_and_bad_input() -> None:
    rng = np.random.default_rng(7)
    stack = np.zeros((2, 20, 30), dtype=bool)
    stack[0, 5:9, 3:12] = rng.random((4, 9)) < 0.7
    stack[1, 0:3, 25:30] = True
    columns = stack.transpose(0, 2, 1)
    boxes = np.array([[1, 2, 15, 12], [20, 0, 30, 20]])  # holding background around the masks
    crops = [columns[k, x0:x1, y0:y1] for k, (x0, y0, x1, y1) in enumerate(boxes)]
    assert M.encode_column_crops(crops, boxes, 20, 30) == M.encode_many(stack)
    with pytest.raises(ValueError, match="outside"):
        M.encode_column_crops(crops, [[1, 2, 15, 12], [20, 0, 31, 20]], 20, 30)
    with pytest.raises(ValueError, match="crop 0"):
        M.encode_column_crops([crops[0][1:], crops[1]], boxes, 20, 30)
