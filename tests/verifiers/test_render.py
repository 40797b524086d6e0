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


def _photo(w: int = 160, h: int = 120) -> Image.Image:
    rng = np.random.default_rng(2)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_render_at_the_model_height_colours_inside_only_and_keeps_crop_bounds() -> None:
    """Rendered smaller than the image (the processor's input size): the image is scaled
    (area), the mask too (a pixel at least half covered is inside), and the overlay is drawn on
    the scaled panel: outside untouched, fill inside, a 2-pixel outline on the mask's edge."""
    import cv2

    image = _photo()
    mask = np.zeros((120, 160), dtype=bool)
    mask[30:90, 40:120] = True
    height, left_w = 30, 40  # a quarter of 160 x 120
    rendered = np.asarray(render_mask_query(image, mask, context=0.5, height=height))
    box = crop_box((40, 30, 120, 90), image.size, context=0.5)
    assert box == (0, 0, 160, 120)  # 80 px * 2, clipped to the image
    assert rendered.shape == (height, left_w + GAP + 40, 3)
    assert (rendered[:, left_w : left_w + GAP] == 255).all()
    scaled = cv2.resize(np.asarray(image), (left_w, height), interpolation=cv2.INTER_AREA)
    left = rendered[:, :left_w]
    # Mask rows 30..90 / columns 40..120 cover panel rows 7.5..22.5 (7 and 22 half covered:
    # inside) and columns 10..30.
    inside = np.zeros((height, left_w), dtype=bool)
    inside[7:23, 10:30] = True
    np.testing.assert_array_equal(left[~inside], scaled[~inside])
    interior = np.zeros_like(inside)
    interior[9:21, 12:28] = True
    fill = np.rint(0.55 * scaled[interior].astype(np.float32) + 0.45 * np.float32(FILL_COLOR))
    np.testing.assert_array_equal(left[interior], fill.astype(np.uint8))
    assert (left[inside & ~interior] == OUTLINE_COLOR).all()
    # The crop (here the whole image) is scaled and overlaid the same way.
    np.testing.assert_array_equal(rendered[:, left_w + GAP :], left)


def test_crop_panel_is_the_crop_of_the_overlay_when_not_scaled() -> None:
    """Crops as high as the image are not scaled: the right panel is exactly the crop of the
    full-resolution overlay (the outline included, also where the mask ends at the crop)."""
    rng = np.random.default_rng(4)
    image = _image(100, 40)
    for k in range(20):
        mask = np.zeros((40, 100), dtype=bool)
        x0, y0 = rng.integers(0, 40), rng.integers(0, 10)
        mask[y0 : y0 + rng.integers(20, 30), x0 : x0 + rng.integers(40, 60)] = True
        mask &= rng.random(mask.shape) < 0.97  # holes
        context = 0.0 if k % 2 else 0.5
        box = mask_box(mask)
        assert box is not None
        crop = crop_box(box, (100, 40), context=context)
        assert crop[3] - crop[1] == 40  # clipped to the image height: no scaling
        rendered = np.asarray(render_mask_query(image, mask, context=context))
        expected = np.asarray(overlay_mask(image, mask).crop(crop))
        np.testing.assert_array_equal(rendered[:, 100 + GAP :], expected)


def test_renderer_reuses_the_image_and_decodes_only_the_mask_box() -> None:
    from annotator import masks as mask_ops
    from annotator.verifiers.render import MaskRenderer

    image = _photo()
    rng = np.random.default_rng(3)
    # One renderer per height for all its masks; 7 px high: panels shrunk from integral images.
    renderers = {h: MaskRenderer(image, height=h, context=0.5) for h in (48, 7)}
    for k in range(12):
        height = 48 if k < 6 else 7
        renderer = renderers[height]
        mask = np.zeros((120, 160), dtype=bool)
        x, y = rng.integers(0, 140), rng.integers(0, 100)
        mask[y : y + rng.integers(1, 40), x : x + rng.integers(1, 60)] = True
        if k % 6 == 4:
            mask[5:110, 3:150] = rng.random((105, 147)) < 0.7  # large and ragged
        if k % 6 == 5:
            mask[:] = False
        one = np.asarray(render_mask_query(image, mask, height=height))
        np.testing.assert_array_equal(np.asarray(renderer.render(mask)), one)
        np.testing.assert_array_equal(np.asarray(renderer.render_rle(mask_ops.encode(mask))), one)


def test_render_height_matches_the_processor_input() -> None:
    from annotator.verifiers.render import render_height

    assert render_height(None, (640, 480)) is None
    assert render_height({"shortest_edge": 336}, (640, 480)) == 336  # the rendering is wide
    assert render_height({"height": 560, "width": 560}, (640, 480)) == 560
    # longest_edge: the image panel (4:3) plus a square crop is 384 wide
    assert render_height({"longest_edge": 384}, (640, 480)) == 162  # 162 * 4/3 + 4 + 162 = 382
    assert render_height({"max_pixels": 1000}, (640, 480)) is None  # unknown: full resolution


def _masks_for(rng: np.random.Generator, h: int, w: int) -> list[np.ndarray]:
    """Rectangles, ragged and hole-ridden masks, the whole image, a single pixel, masks on
    the border, an empty one."""
    masks = []
    for k in range(10):
        mask = np.zeros((h, w), dtype=bool)
        y, x = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
        mask[y : y + int(rng.integers(1, h)), x : x + int(rng.integers(1, w))] = True
        if k % 3 == 1:
            mask &= rng.random((h, w)) < 0.8
        masks.append(mask)
    masks.append(rng.random((h, w)) < 0.5)
    masks.append(np.ones((h, w), dtype=bool))
    single = np.zeros((h, w), dtype=bool)
    single[h - 1, w - 1] = True
    masks.append(single)
    masks.append(np.zeros((h, w), dtype=bool))
    return masks


@pytest.mark.parametrize("height", [5, 30, 48, 60, 90, 120, 200])
@pytest.mark.parametrize("decode_above", [0.0, 0.01, float("inf")])
def test_renderings_from_rles_are_the_renderings_of_the_masks(
    height: int, decode_above: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All masks of an image rendered at once from their runs (never decoded at full
    resolution) give exactly the pixels of rendering each decoded mask: shrunk (by a lot and
    a little), at the image size, grown, cropped with and without context. So do ragged
    masks, which are decoded (by default, those with more than one RLE character per 100
    pixels; here also every mask, or none)."""
    from annotator import masks as mask_ops
    from annotator.verifiers import render
    from annotator.verifiers.render import MaskRenderer

    monkeypatch.setattr(render, "_DECODE_ABOVE", decode_above)

    image = _photo()
    masks = _masks_for(np.random.default_rng(height), 120, 160)
    for context in (0.0, 0.5):
        renderer = MaskRenderer(image, height=height, context=context)
        batch = renderer.render_rles([mask_ops.encode(m) for m in masks])
        assert len(batch) == len(masks)
        for mask, rendered in zip(masks, batch, strict=True):
            assert rendered.dtype == np.uint8 and rendered.shape[0] == height
            np.testing.assert_array_equal(rendered, np.asarray(renderer.render(mask)))
    assert renderer.render_rles([]) == []
    with pytest.raises(ValueError, match="mask size"):
        renderer.render_rles([mask_ops.encode(np.zeros((12, 16), bool))])


@pytest.mark.parametrize(("solid_pixels", "stack_pixels"), [(0, 1 << 30), (1 << 30, 12000)])
def test_renderings_of_many_masks_are_composed_together_with_the_same_pixels(
    solid_pixels: int, stack_pixels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renderings of an image's masks are composed together, as one stack of renderings
    of several widths or a few (one erosion of the stacked masks for the outlines): the pixels
    of composing each alone, for crops of several widths, masks touching every border of both
    panels, and either way of painting the outline."""
    from annotator import masks as mask_ops
    from annotator.verifiers import render
    from annotator.verifiers.render import MaskRenderer

    monkeypatch.setattr(render, "_SOLID_PIXELS", solid_pixels)
    monkeypatch.setattr(render, "_STACK_PIXELS", stack_pixels)  # 12000: ~3 renderings a stack
    image = _photo()
    masks = _masks_for(np.random.default_rng(7), 120, 160)
    for edge in (
        (slice(0, 3), slice(None)),
        (slice(None), slice(0, 2)),
        (slice(117, 120), slice(150, 160)),
    ):
        mask = np.zeros((120, 160), dtype=bool)
        mask[edge] = True
        masks.append(mask)
    renderer = MaskRenderer(image, height=40)
    rles = [mask_ops.encode(m) for m in masks]
    runs = mask_ops.foreground_runs(rles)
    boxes = runs.boxes.tolist()
    crops = [render.crop_box(b, (160, 120), 0.5) for b in boxes if b[2] > b[0]]
    assert len({render._panel_width(x1 - x0, y1 - y0, 40) for x0, y0, x1, y1 in crops}) > 1
    for mask, rendered in zip(masks, renderer.render_runs(runs), strict=True):
        np.testing.assert_array_equal(rendered, np.asarray(renderer.render(mask)))


@pytest.mark.parametrize("height", [1, 7, 32, 40])
def test_image_boxes_are_scaled_together_with_the_pixels_of_each_alone(height: int) -> None:
    """The crops of an image scaled together (read off its integral image in one pass, the
    boxes' columns side by side) are the pixels of scaling each box alone, whichever way a box
    is scaled (area sums off the integral image, OpenCV's area or bilinear resampling, or not
    at all), for boxes of any shape, on every border, and one pixel wide or high."""
    from annotator.verifiers.render import _AreaScaler, _panel_width

    rng = np.random.default_rng(height)
    h, w = 480, 640
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    boxes: list[tuple[int, int, int, int]] = [(0, 0, w, h), (0, 0, 1, 1), (w - 1, 0, w, h)]
    boxes += [(0, h - height, height, h), (3, 5, 3 + 2 * height, 5 + height)]
    for _ in range(60):
        bw, bh = int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        boxes.append((x0, y0, x0 + bw, y0 + bh))
    widths = [_panel_width(x1 - x0, y1 - y0, height) for x0, y0, x1, y1 in boxes]
    widths[1] = 5  # grown
    scaler = _AreaScaler(pixels)
    assert sum(scaler._by_integral(b, height, w) for b, w in zip(boxes, widths, strict=True)) > 10
    together = scaler.scale_many(boxes, height, widths)
    for box, width, scaled in zip(boxes, widths, together, strict=True):
        np.testing.assert_array_equal(scaled, _AreaScaler(pixels).scale(box, height, width))
    assert scaler.scale_many([], height, []) == []


@pytest.mark.parametrize("factor", [2, 3, 4, 6])
def test_shrunk_mask_pixels_are_those_at_least_half_covered(factor: int) -> None:
    """Shrunk by any factor, a panel pixel is in the mask when at least half of the image
    pixels it covers are: here whole blocks of ``factor x factor`` pixels, counted directly.
    (Pixels the overlay touches are told apart from the image panel: every channel of this
    image is in 100..200, which the fill and the outline always change.)"""
    from annotator import masks as mask_ops
    from annotator.verifiers.render import MaskRenderer

    rng = np.random.default_rng(factor)
    h, w = 72, 96
    image = Image.fromarray(rng.integers(100, 201, (h, w, 3), dtype=np.uint8))
    renderer = MaskRenderer(image, height=h // factor)
    plain = renderer._panel
    for mask in _masks_for(rng, h, w)[:-1]:
        blocks = mask.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
        expected = blocks >= 0.5
        for rendered in (renderer.render_rles([mask_ops.encode(mask)])[0], renderer.render(mask)):
            left = np.asarray(rendered)[:, : plain.shape[1]]
            np.testing.assert_array_equal((left != plain).any(axis=2), expected)


def test_scale_boxes_moves_box_pixels_to_the_resized_image() -> None:
    from annotator.verifiers.render import scale_boxes

    # 640 x 480 -> 43 x 32: x 64..192 -> 4.3..12.9 -> pixels 4..12; y 48..144 -> 3.2..9.6 -> 3..9
    assert scale_boxes([[64, 48, 128, 96]], (640, 480), (43, 32)) == [[4.0, 3.0, 9.0, 7.0]]
    # a box thinner than a pixel after scaling keeps one pixel; an empty one stays empty
    assert scale_boxes([[100, 100, 3, 2], [5, 5, 0, 0]], (640, 480), (43, 32)) == [
        [7.0, 7.0, 1.0, 1.0],
        [5 * 43 / 640, 5 * 32 / 480, 0.0, 0.0],
    ]
    # drawn at the new size, the outline is where the scaled box is
    image = Image.new("RGB", (43, 32), (0, 0, 0))
    out = np.asarray(draw_boxes(image, scale_boxes([[64, 48, 128, 96]], (640, 480), (43, 32))))
    red = np.asarray(BOX_COLOR)
    assert (out[3, 4:13] == red).all() and (out[9, 4:13] == red).all()
    assert (out[3:10, 4] == red).all() and (out[3:10, 12] == red).all()
    assert (out[5:8, 6:11] == 0).all() and (out[10:] == 0).all()
