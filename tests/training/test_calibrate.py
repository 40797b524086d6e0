"""The operating point written into a checkpoint moves exactly the logits it says it moves."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from annotator import masks as mask_ops
from annotator.datasets.synthetic import vocabulary
from annotator.metrics import PairEval, cgf1
from annotator.miners.sam3 import Sam3Proposer
from annotator.starter import starter_model_dir
from annotator.training.calibrate import (
    NMS_IOUS,
    REFINE_RADII,
    OperatingPoint,
    _Pair,
    _suppressed,
    apply_operating_point,
    calibration_scenes,
    describe_point,
    exponent_for,
    fit_operating_point,
    fit_presence_calibration,
)
from annotator.training.checkpoint import ModelSize, new_model_dir
from annotator.training.data import batches, synthetic_examples
from annotator.training.evaluate import evaluate_scenes
from annotator.training.trainer import _forward, load_for_training

TINY = ModelSize(
    image_size=112, hidden=32, heads=2, mlp=64, vit_layers=1, text_layers=1, text_length=8,
    encoder_layers=1, decoder_layers=1, queries=8, initializer_range=0.02,
)  # fmt: skip


def _logits(model_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    model, tokenizer, preprocessing = load_for_training(model_dir, torch.device("cpu"))
    model.eval()
    examples = synthetic_examples(0, 2, preprocessing)
    batch = next(batches(examples, preprocessing, images_per_batch=2, phrases_per_image=3, seed=0,
                         flip=False))  # fmt: skip
    with torch.no_grad():
        out = _forward(model, tokenizer, batch, torch.device("cpu")).outputs
    return out.pred_logits, out.presence_logits


def test_apply_shifts_presence_and_scales_class_logits(tmp_path: Path) -> None:
    model_dir = new_model_dir(tmp_path / "m", vocabulary(), TINY)
    class_before, presence_before = _logits(model_dir)
    point = OperatingPoint(
        presence_shift=1.5, class_scale=2.0, cgf1_before=0.0, cgf1_after=0.0, scenes=0
    )
    apply_operating_point(model_dir, point)
    class_after, presence_after = _logits(model_dir)
    torch.testing.assert_close(presence_after, presence_before + 1.5, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(class_after, class_before * 2.0, atol=1e-5, rtol=1e-5)
    assert (model_dir / "calibration.json").is_file()


def test_fit_picks_the_best_grid_point_and_never_loses(tmp_path: Path) -> None:
    model_dir = new_model_dir(tmp_path / "m", vocabulary(), TINY)
    scenes = calibration_scenes(2, 112)
    point = fit_operating_point(
        model_dir, scenes, deltas=(0.0, 3.0), scales=(1.0, 2.0), thresholds=(0.5, 0.3)
    )
    assert point.presence_shift in (0.0, 3.0) and point.class_scale in (1.0, 2.0)
    assert point.score_exponent in (1.0, pytest.approx(exponent_for(0.3)))
    assert point.nms_iou in NMS_IOUS
    assert point.mask_refine_radius in REFINE_RADII
    assert point.cgf1_after >= point.cgf1_before and point.scenes == 2
    # Applying the chosen point gives the model, as the sam3 proposer loads it (the exponent
    # from calibration.json), the cgF1 the fit measured.
    apply_operating_point(model_dir, point)
    with Sam3Proposer(str(model_dir)) as proposer:
        measured = evaluate_scenes(proposer, scenes)
    assert measured.cgf1 == pytest.approx(point.cgf1_after, abs=0.5)
    # The presence calibration is the logistic fit of "has instances" on every pair's presence
    # logit at the chosen shift, which the applied model reports as is.
    with Sam3Proposer(str(model_dir), score_threshold=0.0, presence_scale=1.0,
                      presence_bias=0.0) as proposer:  # fmt: skip
        logits, present = [], []
        for scene in scenes:
            phrases = [*scene.positives, *scene.negatives]
            for phrase, found in zip(phrases, proposer.propose(scene.image, phrases), strict=True):
                logits.append(math.log(found.presence / (1 - found.presence)))
                present.append(bool(scene.masks_of(phrase)))
    refit = fit_presence_calibration(np.array(logits), np.array(present))
    assert (point.presence_scale, point.presence_bias) == pytest.approx(refit, abs=1e-3)


def test_fit_moves_the_threshold_with_the_exponent(tmp_path: Path) -> None:
    """A grid of one shift and scale: the best threshold's cgF1 is what the plain product
    thresholded there scores, and the exponent maps that threshold to 0.5."""
    model_dir = new_model_dir(tmp_path / "m", vocabulary(), TINY)
    scenes = calibration_scenes(2, 112)
    thresholds = (0.5, 0.2, 0.05)
    point = fit_operating_point(
        model_dir, scenes, deltas=(0.0,), scales=(1.0,), thresholds=thresholds,
        refine_radii=(0.0,),
    )  # fmt: skip
    with Sam3Proposer(str(model_dir), score_exponent=1.0) as proposer:
        pairs = []
        for scene in scenes:
            phrases = [*scene.positives, *scene.negatives]
            for phrase, found in zip(phrases, proposer.propose(scene.image, phrases), strict=True):
                gt = [mask_ops.encode(m) for m in scene.masks_of(phrase)]
                pairs.append(PairEval(gt=gt, pred=found.masks, scores=list(found.scores)))
    by_threshold = {t: cgf1(pairs, score_threshold=t).cgf1 for t in thresholds}
    assert point.cgf1_after == pytest.approx(max(by_threshold.values()))
    chosen = 0.5 ** (1 / point.score_exponent)
    assert by_threshold[min(thresholds, key=lambda t: abs(t - chosen))] == pytest.approx(
        point.cgf1_after
    )


def test_fit_turns_the_mask_refinement_on_where_it_pays(tmp_path: Path) -> None:
    """On the shipped starter (16 x 16 masks of flat-coloured shapes) the guided filter raises
    cgF1: the fit picks a radius, records it, and the proposer reading calibration.json
    measures what the fit said."""
    model_dir = tmp_path / "starter"
    shutil.copytree(starter_model_dir(), model_dir)
    scenes = calibration_scenes(8, 112)
    grid = {"deltas": (0.0,), "scales": (1.0,), "thresholds": (0.5,), "nms_ious": (1.0,)}
    plain = fit_operating_point(model_dir, scenes, refine_radii=(0.0,), **grid)
    point = fit_operating_point(model_dir, scenes, refine_radii=(0.0, 4.0), **grid)
    assert plain.mask_refine_radius == 0.0 and point.mask_refine_radius == 4.0
    assert point.cgf1_after > plain.cgf1_after + 1.0
    apply_operating_point(model_dir, point)
    with Sam3Proposer(str(model_dir)) as proposer:
        assert proposer._refine_radius == 4.0
        measured = evaluate_scenes(proposer, scenes)
    assert measured.cgf1 == pytest.approx(point.cgf1_after, abs=0.5)
    assert "mask NMS off, mask refinement radius 4" in describe_point(point.as_dict())


def test_presence_calibration_recovers_a_logistic_relation() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(2.0, 3.0, 20_000)
    present = rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))
    a, b = fit_presence_calibration(logits, present)
    assert a == pytest.approx(0.5, abs=0.03) and b == pytest.approx(-1.0, abs=0.06)
    # Pairs the logit separates completely: a finite fit, short of certainty.
    separated = fit_presence_calibration(np.array([-3.0, -2.0, 2.0, 3.0]), np.array([0, 0, 1, 1]))
    assert 0.0 < separated[0] < 10.0
    certain = 1 / (1 + math.exp(-(separated[0] * 3.0 + separated[1])))
    assert 0.7 < certain < 0.99
    # A shifted and saturated presence (what a cgF1 shift of +4 does) maps back to the same
    # probabilities: the calibration undoes any shift of the logit.
    a4, b4 = fit_presence_calibration(logits + 4.0, present)
    assert a4 == pytest.approx(a, abs=1e-6) and b4 == pytest.approx(b - 4.0 * a, abs=1e-5)


def test_presence_calibration_without_evidence() -> None:
    # Pairs of one kind only: nothing to fit, the model's presence as is.
    assert fit_presence_calibration(np.array([1.0, 2.0]), np.array([True, True])) == (1.0, 0.0)
    # A logit that orders the pairs the wrong way: the base rate (3 of 4 present).
    a, b = fit_presence_calibration(
        np.array([-2.0, -1.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0]),
        np.array([True, True, True, True, True, True, False, False]),
    )
    assert a == 0.0 and b == pytest.approx(math.log(3.0))
    with pytest.raises(ValueError, match="3 logits but 2 labels"):
        fit_presence_calibration(np.zeros(3), np.zeros(2))


def test_describe_point_names_a_presence_calibration() -> None:
    point = {"presence_shift": 4.0, "class_scale": 1.25, "score_exponent": 0.431,
             "nms_iou": 0.3, "presence_scale": 0.8123, "presence_bias": -3.4}  # fmt: skip
    assert describe_point(point).endswith(
        "mask refinement off, reported presence sigmoid(0.81 x logit -3.40)"
    )


def test_describe_point_reads_older_records() -> None:
    """A calibration record from before the refinement existed reads as refinement off."""
    old = {"presence_shift": 0.5, "class_scale": 1.25, "score_exponent": 0.431, "nms_iou": 0.3}
    assert describe_point(old) == (
        "presence +0.5, class x1.25, score exponent 0.43, mask NMS at IoU 0.3, mask refinement off"
    )


def test_exponent_for_maps_the_threshold_to_one_half() -> None:
    for threshold in (0.5, 0.3, 0.1):
        assert threshold ** exponent_for(threshold) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="threshold"):
        exponent_for(1.0)


def test_apply_refuses_a_checkpoint_without_the_heads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model_dir = tmp_path / "other"
    model_dir.mkdir()
    save_file({"w": torch.zeros(2)}, str(model_dir / "model.safetensors"))
    point = OperatingPoint(0.5, 1.0, 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="presence_head"):
        apply_operating_point(model_dir, point)
    shutil.rmtree(model_dir)


def test_fit_suppresses_the_masks_the_proposer_suppresses() -> None:
    """The fit's NMS on the collected masks (best first) keeps what the proposer's NMS
    (``annotator.masks.nms``) keeps, with each kept mask's logit and IoUs."""
    rng = np.random.default_rng(0)
    grid = np.zeros((12, 40, 40), dtype=bool)
    for k in range(12):  # overlapping squares: some pairs above, some below each IoU
        x, y = rng.integers(0, 14, size=2)
        size = int(rng.integers(12, 26))
        grid[k, y : y + size, x : x + size] = True
    pred = mask_ops.encode_many(grid)
    gt = mask_ops.encode_many(grid[:3])
    logits = np.sort(rng.normal(size=12))[::-1]
    pair = _Pair(
        gt=gt, pred=pred, class_logit=logits, presence_logit=0.5,
        ious=mask_ops.iou_matrix(pred, gt), self_ious=mask_ops.iou_matrix(pred, pred),
    )  # fmt: skip
    sizes = set()
    for nms in (1.0, 0.7, 0.5, 0.3, 0.1):
        kept = mask_ops.nms(pred, logits.tolist(), nms)
        out = _suppressed(pair, nms)
        assert out.pred == [pred[i] for i in kept]
        np.testing.assert_array_equal(out.class_logit, logits[kept])
        np.testing.assert_array_equal(out.ious, pair.ious[kept])
        np.testing.assert_array_equal(out.self_ious, pair.self_ious[np.ix_(kept, kept)])
        sizes.add(len(kept))
    assert len(sizes) >= 3 and max(sizes) == 12  # the thresholds suppress differently
