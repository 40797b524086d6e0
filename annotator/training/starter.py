"""The starter proposer: a small ``Sam3Model`` trained from scratch on the synthetic world.

``annotator train starter`` runs :func:`train_starter`: a fresh model directory of
:data:`STARTER_SIZE` with a tokenizer for the world's words, trained on synthetic scenes (seeds
``0 .. scenes - 1``), a snapshot after ``weak_steps`` steps kept as the deliberately weaker
checkpoint the flywheel demo starts round 2 from, and both measured on the held-out scenes
(seeds from :data:`~annotator.training.evaluate.HELD_OUT_SEED`) with :func:`annotator.metrics.cgf1`,
after each has its operating point calibrated on other scenes (:func:`calibrate_model`).
The figures go to ``metrics.json`` beside the model directories.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from annotator import machine
from annotator.backends import MaskProposer
from annotator.datasets.synthetic import Scene, vocabulary
from annotator.miners.sam3 import Preprocessing, read_calibration
from annotator.training.calibrate import (
    apply_operating_point,
    calibration_scenes,
    fit_operating_point,
)
from annotator.training.checkpoint import ModelSize, new_model_dir
from annotator.training.data import SYNTHETIC_ATTRIBUTE_CLASSES, synthetic_examples
from annotator.training.evaluate import evaluate_scenes, held_out_scenes
from annotator.training.loss import LossWeights
from annotator.training.trainer import StepReport, TrainSettings, train

__all__ = [
    "STARTER_SIZE",
    "STARTER_WEIGHTS",
    "StarterResult",
    "calibrate_model",
    "evaluate_model",
    "record_check",
    "train_starter",
]

STARTER_SIZE = ModelSize(
    image_size=112,
    hidden=64,
    heads=4,
    mlp=128,
    # Four ViT layers: with the vision warm-up they tell shapes apart better than two
    # (docs/benchmarks.md "Starter model"), and the vision pass is a small part of a step.
    vit_layers=4,
    window=8,
    text_layers=1,
    text_length=8,
    encoder_layers=1,
    decoder_layers=2,
    queries=16,
    # With the usual 0.02 this narrow, post-norm model passes almost nothing of its inputs to
    # the presence and class heads at first (presence logits vary by ~1e-6 across images and
    # phrases), and learning to recognise a phrase stalls; 0.15 everywhere saturates the DETR
    # attention at random positions. 0.06, with the DETR query/key projections at 0.25, lets
    # both recognition and attention learn (docs/benchmarks.md "Starter model").
    initializer_range=0.06,
    attention_init=0.25,
    # Masks at 16 x 16 (2x the grid, not SAM 3's 4x): a whole-model step ~40 % cheaper, and the
    # proposer's guided-filter refinement recovers the edges (docs/benchmarks.md, eleventh
    # session: pmF1 0.783 refined at 5,000 steps against 0.757 at 32 x 32 and 4,000).
    mask_scale=2,
)
# The starter's loss: the classification term balanced (alpha 0.5) and less focused (gamma 1)
# so matched queries become confident enough for the 0.5 score threshold, and the dense
# attribute term (colour, shape, texture per position of the vision features), which the
# synthetic world can supervise exactly.
STARTER_WEIGHTS = LossWeights(focal_alpha=0.5, class_gamma=1.0, dense=1.0)
# Synthetic scenes are drawn at the model's input size (no resize between them).
SCENE_SIZE = STARTER_SIZE.image_size
HELD_OUT_SCENES = 200
# A smaller fixed set the test suite re-measures the shipped model on.
CHECK_SCENES = 40
# Scenes the operating point is fitted on (neither trained nor measured on).
CALIBRATION_SCENES = 100


@dataclass
class StarterResult:
    out: Path
    weak: Path | None
    metrics: dict[str, Any]


def evaluate_model(
    model_dir: Path,
    scenes: int = HELD_OUT_SCENES,
    device: str = "cpu",
    mask_refine_radius: float | None = None,
) -> dict:
    """cgF1, pmF1 and IL_MCC of a model directory on the first ``scenes`` held-out scenes,
    through the ``sam3`` backend (``Sam3Proposer``, default thresholds; the mask refinement of
    its ``calibration.json`` unless ``mask_refine_radius`` is given, 0: none)."""
    from annotator.miners.sam3 import Sam3Proposer

    with Sam3Proposer(
        str(model_dir), device=device, mask_refine_radius=mask_refine_radius
    ) as proposer:
        return _measure(proposer, held_out_scenes(scenes, SCENE_SIZE))


def _measure(proposer: MaskProposer, scenes: Sequence[Scene]) -> dict:
    """:func:`evaluate_model`'s record of ``proposer`` on ``scenes``."""
    began = time.monotonic()
    result = evaluate_scenes(proposer, scenes)
    return {
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.as_dict().items()},
        "cgF1": round(result.cgf1, 2),
        "held_out_scenes": len(scenes),
        "eval_s": round(time.monotonic() - began, 1),
    }


def _measure_trained(model_dir: Path, scenes: int, device: str = "cpu") -> dict[str, dict]:
    """The trained model's figures: ``model`` on the first ``scenes`` held-out scenes,
    ``model_unrefined`` (when its calibration refines masks: the network's own masks) and
    ``check`` (the first :data:`CHECK_SCENES`), each what :func:`evaluate_model` gives, from
    one run of the network (the proposer keeps its outputs for the other settings)."""
    from annotator.miners.sam3 import Sam3Proposer

    held_out = held_out_scenes(max(scenes, CHECK_SCENES), SCENE_SIZE)
    with Sam3Proposer(str(model_dir), device=device) as proposer:
        proposer.keep_outputs()
        figures = {"model": _measure(proposer, held_out[:scenes])}
        if read_calibration(str(model_dir)).mask_refine_radius > 0:
            unrefined = proposer.with_settings(mask_refine_radius=0.0)
            figures["model_unrefined"] = _measure(unrefined, held_out[:scenes])
        figures["check"] = _measure(proposer, held_out[:CHECK_SCENES])
    return figures


def train_starter(
    out: Path,
    *,
    steps: int,
    scenes: int,
    weak_steps: int | None,
    settings: TrainSettings,
    eval_scenes: int = HELD_OUT_SCENES,
    calibration_scenes: int = CALIBRATION_SCENES,
    resume: bool = True,
    progress: Callable[[StepReport], None] | None = None,
    command: str = "",
) -> StarterResult:
    """Train the starter into ``out`` (and ``<out>-weak`` at ``weak_steps``), evaluate both,
    and write ``<out>/../metrics.json``."""
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="starter-init-") as tmp:
        init = new_model_dir(Path(tmp) / "init", vocabulary(), STARTER_SIZE, seed=settings.seed)
        preprocessing = Preprocessing.from_config(
            json.loads((init / "processor_config.json").read_text())["image_processor"]
        )
        examples = synthetic_examples(0, scenes, preprocessing, scene_size=SCENE_SIZE)
        snapshots = (weak_steps,) if weak_steps else ()
        result = train(
            init,
            examples,
            out,
            TrainSettings(
                **{
                    **settings.__dict__,
                    "steps": steps,
                    "snapshot_steps": snapshots,
                    "weights": STARTER_WEIGHTS,
                    "attribute_classes": SYNTHETIC_ATTRIBUTE_CLASSES,
                }
            ),
            resume=resume,
            progress=progress,
            metadata={"source": f"synthetic scenes 0..{scenes - 1}", "command": command},
        )
    weak: Path | None = None
    if weak_steps:
        produced = out.with_name(f"{out.name}-step{weak_steps}")
        weak = out.with_name(f"{out.name}-weak")
        if produced.exists():
            if weak.exists():
                shutil.rmtree(weak)
            produced.rename(weak)
    train_s = time.monotonic() - began
    calibration = {"model": calibrate_model(out, calibration_scenes, device=settings.device)}
    if weak is not None and weak.exists():
        calibration["weak"] = calibrate_model(weak, calibration_scenes, device=settings.device)
    metrics: dict[str, Any] = {
        "command": command,
        "steps": steps,
        "vision_steps": settings.vision_steps,
        "vision_images": settings.vision_images,
        "vision_lr": settings.vision_lr,
        "weak_steps": weak_steps,
        "training_scenes": scenes,
        "train_wall_s": round(train_s, 1),
        "resumed_from": result.resumed_from,
        "first_loss": result.first_loss,
        "last_loss": result.last_loss,
        "machine": f"{machine.describe()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}",
        "size": STARTER_SIZE.as_dict(),
        "lr": settings.lr,
        "weights": {
            k: v for k, v in STARTER_WEIGHTS.__dict__.items() if v != getattr(LossWeights(), k)
        },
        "params": _params(out),
        "calibration": calibration,
    }
    # With the network's own masks when they are refined (docs/benchmarks.md reports both) and
    # the check figure the tests re-measure; on the CPU in float32 whatever the training device.
    measured = _measure_trained(out, eval_scenes)
    check = measured.pop("check")
    metrics.update(measured)
    if weak is not None and weak.exists():
        metrics["weak"] = evaluate_model(weak, eval_scenes)
    metrics["check"] = check
    (out.parent / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return StarterResult(out=out, weak=weak, metrics=metrics)


def calibrate_model(model_dir: Path, scenes: int = CALIBRATION_SCENES, device: str = "cpu") -> dict:
    """Fit the operating point of ``model_dir`` on the calibration scenes and write it into its
    weights (:mod:`annotator.training.calibrate`); returns what was applied."""
    point = fit_operating_point(model_dir, calibration_scenes(scenes, SCENE_SIZE), device=device)
    apply_operating_point(model_dir, point)
    return point.as_dict()


def record_check(model_dir: Path, scenes: int = 40) -> dict[str, Any]:
    """Measure ``model_dir`` on the first ``scenes`` held-out scenes and record it as
    ``check`` in ``metrics.json`` beside it (what the test suite compares against)."""
    path = model_dir.parent / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics["check"] = evaluate_model(model_dir, scenes)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return dict(metrics["check"])


def _params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
            total += _numel(handle, key)
    return total


def _numel(handle: Any, key: str) -> int:
    shape = handle.get_slice(key).get_shape()
    count = 1
    for dim in shape:
        count *= int(dim)
    return count
