"""MV/EV renderings, checked on pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from annotator.verifiers.render import (
    BOX_COLOR,
    FILL_COLOR,
    GAP,
    OUTLINE_COLOR,
    crop_box,
    draw_boxes,
    mask_box,
    overlay_mask,
    render_mask_query,
)


def _image(w: int = 40, h: int = 30) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _mask(h: int = 30, w: int = 40) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[8:20, 10:30] = True
    return mask


def test_overlay_colours_inside_outlines_edge_and_leaves_outside_untouched() -> None:
    image, mask = _image(), _mask()
    before = np.asarray(image).astype(np.float32)
    after = np.asarray(overlay_mask(image, mask, alpha=0.5, outline_width=2)).astype(np.float32)
    outside = ~mask
    np.testing.assert_array_equal(after[outside], before[outside])
    interior = np.zeros_like(mask)
    interior[10:18, 12:28] = True  # 2 px in from every edge
    expected = np.rint(0.5 * before[interior] + 0.5 * np.asarray(FILL_COLOR, np.float32))
    np.testing.assert_array_equal(after[interior], expected)
    ring = mask & ~interior
    assert (after[ring] == np.asarray(OUTLINE_COLOR, np.float32)).all()


def test_overlay_rejects_mismatched_mask() -> None:
    with pytest.raises(ValueError, match="mask shape"):
        overlay_mask(_image(), np.zeros((5, 5), bool))


def test_crop_box_contains_mask_with_context_and_stays_inside() -> None:
    assert mask_box(_mask()) == (10, 8, 30, 20)
    assert mask_box(np.zeros((3, 3), bool)) is None
    x0, y0, x1, y1 = crop_box((10, 8, 30, 20), (40, 30), context=0.25, min_size=4)
    assert (x1 - x0, y1 - y0) == (30, 30)  # 20 px * 1.5, clipped to the image height
    assert 0 <= x0 <= 10 and 30 <= x1 <= 40 and y0 == 0 and y1 == 30
    # a small mask in a corner: at least min_size, shifted inside
    assert crop_box((0, 0, 2, 2), (100, 80), context=0.5, min_size=32) == (0, 0, 32, 32)
    assert crop_box((98, 78, 100, 80), (100, 80), min_size=32) == (68, 48, 100, 80)


def test_render_mask_query_is_overlay_plus_zoomed_crop() -> None:
    image, mask = _image(), _mask()
    rendered = render_mask_query(image, mask, context=0.25)
    overlaid = overlay_mask(image, mask)
    box = crop_box((10, 8, 30, 20), image.size, context=0.25)  # min_size 32: 32 x 30 px
    assert box == (4, 0, 36, 30)
    assert rendered.height == image.height
    assert rendered.width == image.width + GAP + 32  # the crop already has the image height
    pixels = np.asarray(rendered)
    np.testing.assert_array_equal(pixels[:, : image.width], np.asarray(overlaid))
    assert (pixels[:, image.width : image.width + GAP] == 255).all()
    np.testing.assert_array_equal(pixels[:, image.width + GAP :], np.asarray(overlaid.crop(box)))
    # empty mask: the image alone
    empty = render_mask_query(image, np.zeros((30, 40), bool))
    np.testing.assert_array_equal(np.asarray(empty), np.asarray(image))


def test_draw_boxes_outlines_each_box() -> None:
    image = Image.new("RGB", (40, 30), (0, 0, 0))
    out = np.asarray(draw_boxes(image, [[5, 4, 10, 8], [20, 10, 15, 15]], width=1))
    red = np.asarray(BOX_COLOR)
    assert (out[4, 5:15] == red).all() and (out[11, 5:15] == red).all()  # top / bottom rows
    assert (out[4:12, 5] == red).all() and (out[4:12, 14] == red).all()  # left / right columns
    assert (out[5:11, 6:14] == 0).all()  # inside untouched
    assert (out[0:4] == 0).all()  # outside untouched
    assert (out[10, 20:35] == red).all()
