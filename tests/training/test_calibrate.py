"""The operating point written into a checkpoint moves exactly the logits it says it moves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from annotator.datasets.synthetic import vocabulary
from annotator.training.calibrate import (
    OperatingPoint,
    apply_operating_point,
    calibration_scenes,
    fit_operating_point,
)
from annotator.training.checkpoint import ModelSize, new_model_dir
from annotator.training.data import batches, synthetic_examples
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
    point = fit_operating_point(model_dir, scenes, deltas=(0.0, 3.0), scales=(1.0, 2.0))
    assert point.presence_shift in (0.0, 3.0) and point.class_scale in (1.0, 2.0)
    assert point.cgf1_after >= point.cgf1_before and point.scenes == 2
    # Applying the chosen point gives the model the cgF1 the fit measured.
    apply_operating_point(model_dir, point)
    again = fit_operating_point(model_dir, scenes, deltas=(0.0,), scales=(1.0,))
    assert again.cgf1_before == pytest.approx(point.cgf1_after, abs=0.5)


def test_apply_refuses_a_checkpoint_without_the_heads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model_dir = tmp_path / "other"
    model_dir.mkdir()
    save_file({"w": torch.zeros(2)}, str(model_dir / "model.safetensors"))
    point = OperatingPoint(0.5, 1.0, 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="presence_head"):
        apply_operating_point(model_dir, point)
    shutil.rmtree(model_dir)
