"""The guided-filter mask refinement: box means, the filter's defining properties, crops, and
the SAM 3 proposer's use of it (from calibration.json or an argument)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from annotator import masks
from annotator.miners.refine import GuideStats, box_mean, guided_filter, refine_masks
from annotator.miners.sam3 import Sam3Proposer

PHRASES = ["striped umbrella", "cat", "red car"]


@pytest.mark.parametrize(("ry", "rx"), [(1, 1), (2, 3), (4, 0), (7, 7)])
def test_box_mean_is_the_windowed_mean_inside_the_image(ry: int, rx: int) -> None:
    x = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(ry * 10 + rx))
    expected = F.avg_pool2d(
        x, (2 * ry + 1, 2 * rx + 1), stride=1, padding=(ry, rx), count_include_pad=False
    )
    torch.testing.assert_close(box_mean(x, ry, rx), expected, atol=1e-5, rtol=1e-5)


def test_a_flat_guide_gives_the_smoothed_source() -> None:
    """No colour contrast: every window's fit has slope 0, so the output is the box mean of
    the source's box means."""
    guide = torch.full((3, 20, 24), 0.4)
    source = torch.rand(2, 20, 24, generator=torch.Generator().manual_seed(0))
    out = guided_filter(GuideStats.of(guide, 2, 3, 1e-3), source)
    torch.testing.assert_close(out, box_mean(box_mean(source, 2, 3), 2, 3), atol=1e-5, rtol=1e-5)


def _disc_scene() -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """A red disc (radius 11.5 px) on grey in a 56 x 56 image, its mask, and the mask as an 8x
    coarser grid resized back bilinearly (what a proposer's upsampling gives)."""
    yy, xx = np.mgrid[:56, :56]
    truth = (yy - 27.3) ** 2 + (xx - 30.6) ** 2 <= 11.5**2
    image = np.full((56, 56, 3), 0.5, dtype=np.float32)
    image[truth] = (0.9, 0.1, 0.1)
    coarse = F.interpolate(torch.from_numpy(truth).float()[None, None], size=(7, 7), mode="area")
    blurred = F.interpolate(coarse, size=(56, 56), mode="bilinear", align_corners=False)[0]
    return torch.from_numpy(image).permute(2, 0, 1), truth, blurred


def test_the_refined_mask_snaps_to_the_colour_edge() -> None:
    guide, truth, blurred = _disc_scene()

    def iou(mask: np.ndarray) -> float:
        return float((mask & truth).sum() / (mask | truth).sum())

    plain = blurred[0].numpy() > 0.5
    refined = guided_filter(GuideStats.of(guide, 3, 3, 1e-3), blurred)[0].numpy() > 0.5
    assert iou(plain) < 0.9  # the coarse grid's cells straddle the disc's edge
    assert iou(refined) == 1.0


def test_refine_masks_works_on_widened_crops() -> None:
    guide, truth, blurred = _disc_scene()
    probabilities = torch.cat([blurred, torch.zeros_like(blurred)])
    boxes = torch.tensor([[20, 15, 44, 39], [0, 0, 0, 0]])
    crops, widened = refine_masks(probabilities, GuideStats.of(guide, 2, 3, 1e-3), boxes, 0.5)
    # Widened by twice the radius each side (x by 6, y by 4), clipped; the empty box stays so.
    assert widened.tolist() == [[14, 11, 50, 43], [0, 0, 0, 0]]
    assert crops[0].shape == (32, 36) and crops[1].shape == (0, 0)
    full = np.zeros_like(truth)
    full[11:43, 14:50] = crops[0].numpy()
    np.testing.assert_array_equal(full, truth)


def _calibrated(tiny_sam3_dir: Path, tmp_path: Path, record: str) -> Path:
    target = tmp_path / "calibrated"
    shutil.copytree(tiny_sam3_dir, target)
    (target / "calibration.json").write_text(record)
    return target


def test_the_proposer_refines_as_calibration_json_says(
    tiny_sam3_dir: Path, tmp_path: Path, scene: Image.Image
) -> None:
    """The radius and ridge come from calibration.json (an argument wins; 0 turns it off).
    Refinement moves mask pixels, not which instances are kept or their scores and boxes."""
    model = _calibrated(
        tiny_sam3_dir, tmp_path, '{"mask_refine_radius": 3, "mask_refine_eps": 0.01}'
    )
    with Sam3Proposer(str(model), device="cpu", score_threshold=0.0) as proposer:
        refined = proposer.propose(scene, PHRASES)
        assert (proposer._refine_radius, proposer._refine_eps) == (3.0, 0.01)
    with Sam3Proposer(
        str(model), device="cpu", score_threshold=0.0, mask_refine_radius=0
    ) as plain_proposer:
        plain = plain_proposer.propose(scene, PHRASES)
    changed = 0
    for left, right in zip(refined, plain, strict=True):
        assert len(left.masks) == len(right.masks) > 0
        np.testing.assert_array_equal(left.scores, right.scores)
        np.testing.assert_array_equal(left.boxes, right.boxes)
        changed += sum(a != b for a, b in zip(left.masks, right.masks, strict=True))
    assert changed > 0


def test_refined_crops_equal_the_filter_on_the_whole_image(
    tiny_sam3_dir: Path, scene: Image.Image
) -> None:
    """Inside each mask's own box the crop sees every pixel the filter reads, so the refined
    mask there is the whole-image filter's (up to rounding at the threshold)."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 8, 8, generator=generator) * 3
    logits[3] = -10.0  # an empty mask
    width, height = scene.size
    colours = torch.from_numpy(np.asarray(scene.convert("RGB"), dtype=np.float32) / 255.0)
    guide = GuideStats.of(colours.permute(2, 0, 1), 2, 3, 1e-3)
    proposer = Sam3Proposer(str(tiny_sam3_dir), device="cpu")
    crops, boxes = proposer._host_crops(logits, height, width, guide)
    rles = masks.encode_column_crops(crops, boxes, height, width)
    probabilities = F.interpolate(
        logits.sigmoid()[None], size=(height, width), mode="bilinear", align_corners=False
    )[0]
    whole = guided_filter(guide, probabilities).numpy()
    _, plain_boxes = proposer._host_crops(logits, height, width)
    assert not masks.decode(rles[3]).any()
    for k in range(3):
        got = masks.decode(rles[k]).astype(bool)
        x0, y0, x1, y1 = (int(v) for v in plain_boxes[k])
        inside = np.zeros_like(got)
        inside[y0:y1, x0:x1] = True
        expected = whole[k] > 0.5
        differ = inside & (got != expected)
        assert np.abs(whole[k][differ] - 0.5).max(initial=0.0) < 1e-4
        assert got[inside].any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_refine_radius": -1}, r"mask_refine_radius must be in \[0, 64\]"),
        ({"mask_refine_radius": 100}, r"mask_refine_radius must be in \[0, 64\]"),
        ({"mask_refine_eps": 0}, "mask_refine_eps must be positive"),
    ],
)
def test_bad_refinement_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Sam3Proposer("unused", **kwargs)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"mask_refine_radius": -2}', r"mask_refine_radius must be in \[0, 64\]"),
        ('{"mask_refine_eps": 0}', "mask_refine_eps must be positive"),
        ('{"mask_refine_radius": "wide"}', "mask_refine_radius must be a number"),
    ],
)
def test_bad_refinement_in_calibration_json_is_reported(
    tiny_sam3_dir: Path, tmp_path: Path, record: str, message: str
) -> None:
    model = _calibrated(tiny_sam3_dir, tmp_path, record)
    with pytest.raises(ValueError, match=message):
        Sam3Proposer(str(model), device="cpu").load()
