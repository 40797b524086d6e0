"""The proposer's training loop: ``Sam3Model`` + :class:`~annotator.training.loss.SetCriterion`.

Per step: one vision forward for the batch's images, then every image-phrase row of the batch
through the detector (the rows of an image share its vision features, as at inference), the
set-prediction loss, AdamW with warm-up and cosine decay, gradient clipping.

The output directory is a standard model directory (``config.json``, ``model.safetensors``,
tokenizer files, ``processor_config.json``) that ``Sam3Model.from_pretrained`` and the ``sam3``
proposer load. Training state (weights, optimiser, step) is checkpointed under
``<out>/.training/`` every ``checkpoint_every`` steps, and a run started again with ``resume``
continues from there with the same batches it would have seen.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from annotator import modeling
from annotator.miners.sam3 import Preprocessing, _image_processor_config
from annotator.training.data import Batch, Example, batches
from annotator.training.loss import (
    AttributeHead,
    AuxOutputs,
    LossWeights,
    SetCriterion,
    Target,
    attribute_shares,
    box_xyxy_from_masks,
    dense_attribute_loss,
)

__all__ = ["StepReport", "TrainResult", "TrainSettings", "load_for_training", "train"]

STATE_DIR = ".training"
STATE_FILE = "state.pt"


@dataclass(frozen=True)
class TrainSettings:
    """How to train. ``steps`` counts optimiser steps; ``snapshot_steps`` also saves the model
    directory as it was after those steps (as ``<out>-step<N>``), e.g. a weaker checkpoint."""

    steps: int = 2000
    images_per_batch: int = 8
    phrases_per_image: int = 4
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    checkpoint_every: int = 200
    snapshot_steps: tuple[int, ...] = ()
    weights: LossWeights = field(default_factory=LossWeights)
    # Classes per attribute map of the examples (e.g. ``SYNTHETIC_ATTRIBUTE_CLASSES``) for the
    # dense auxiliary loss (``weights.dense``); empty: no dense loss.
    attribute_classes: tuple[int, ...] = ()
    # A warm-up of the vision encoder alone on the dense attribute loss before the ``steps``
    # (needs ``attribute_classes`` and examples with attribute maps): ``vision_images`` images
    # per step at peak learning rate ``vision_lr``, its own AdamW and cosine schedule. Without
    # the detector a step costs a fraction of a full one, so the encoder sees many more images
    # for the same time (what a small ViT trained from scratch needs to tell shapes apart).
    vision_steps: int = 0
    vision_images: int = 16
    vision_lr: float = 3e-3


@dataclass(frozen=True)
class StepReport:
    """One optimiser step; ``stage`` is ``"vision"`` in the vision warm-up (``step`` of its
    ``steps``), else ``"detector"``."""

    step: int
    steps: int
    loss: float
    terms: dict[str, float]
    lr: float
    elapsed_s: float
    stage: str = "detector"


@dataclass
class TrainResult:
    out: Path
    steps: int
    resumed_from: int
    first_loss: float | None
    last_loss: float | None
    elapsed_s: float
    snapshots: list[Path] = field(default_factory=list)
    history: list[tuple[int, float]] = field(default_factory=list)


def load_for_training(source: str | Path, device: torch.device) -> tuple[Any, Any, Preprocessing]:
    """Model (train mode, float32), tokenizer and preprocessing of a local model directory."""
    from transformers import AutoTokenizer, Sam3Model

    path = str(source)
    model = Sam3Model.from_pretrained(path, dtype=torch.float32)
    model.to(device)  # type: ignore[arg-type]
    model.train()
    tokenizer = AutoTokenizer.from_pretrained(path)
    preprocessing = Preprocessing.from_config(_image_processor_config(path))
    return model, tokenizer, preprocessing


def _lr_factor(step: int, settings: TrainSettings, steps: int | None = None) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 5 % at ``steps``."""
    total = settings.steps if steps is None else steps
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(total - settings.warmup_steps, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _targets(batch: Batch) -> list[Target]:
    return [Target(masks=m, boxes=box_xyxy_from_masks(m)) for m in batch.masks]


class Forward(NamedTuple):
    """``outputs``: the model's outputs for the batch's rows; ``layers``: with ``aux``, every
    decoder layer's logits, boxes and presence, first to last (the last is ``outputs``' own);
    ``vision``: the batch's vision features (one per image)."""

    outputs: Any
    layers: list[AuxOutputs]
    vision: Any


def _forward(
    model: Any, tokenizer: Any, batch: Batch, device: torch.device, *, aux: bool = False
) -> Forward:
    """One forward of the batch: the vision pass once per image, the detector per row.

    The decoder layers' outputs are collected with hooks: the transformers model computes them
    but returns only the last layer's."""
    from transformers.models.sam3.modeling_sam3 import (
        Sam3VisionEncoderOutput,
        box_cxcywh_to_xyxy,
        inverse_sigmoid,
    )

    vision = model.get_vision_features(pixel_values=batch.pixels.to(device))
    index = batch.image_index.to(device)
    rows = Sam3VisionEncoderOutput(
        fpn_hidden_states=tuple(t.index_select(0, index) for t in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(t.index_select(0, index) for t in vision.fpn_position_encoding),
    )
    length = int(getattr(model.config.text_config, "max_position_embeddings", 32))
    encoded = tokenizer(
        batch.phrases, padding="max_length", truncation=True, max_length=length,
        return_tensors="pt",
    )  # fmt: skip
    attention_mask = encoded["attention_mask"].to(device)
    captured: dict[str, Any] = {}
    hooks = []
    if aux:
        for name in ("detr_encoder", "detr_decoder"):
            hooks.append(
                getattr(model, name).register_forward_hook(
                    lambda _m, _i, out, name=name: captured.__setitem__(name, out)
                )
            )
    try:
        outputs = model(
            vision_embeds=rows,
            input_ids=encoded["input_ids"].to(device),
            attention_mask=attention_mask,
        )
    finally:
        for hook in hooks:
            hook.remove()
    if not aux:
        return Forward(outputs, [], vision)
    decoder, encoder = captured["detr_decoder"], captured["detr_encoder"]
    hidden = decoder.intermediate_hidden_states  # (L, N, Q, H)
    logits = model.dot_product_scoring(
        decoder_hidden_states=hidden,
        text_features=encoder.text_features,
        text_mask=attention_mask.bool(),
    ).squeeze(-1)
    offsets = model.detr_decoder.box_head(hidden)
    boxes = box_cxcywh_to_xyxy((inverse_sigmoid(decoder.reference_boxes) + offsets).sigmoid())
    layers = [
        AuxOutputs(
            pred_logits=logits[k], pred_boxes=boxes[k], presence_logits=decoder.presence_logits[k]
        )
        for k in range(hidden.shape[0])
    ]
    return Forward(outputs, layers, vision)


class AttributeTargets:
    """The dense attribute term's targets (:func:`~annotator.training.loss.attribute_shares`)
    of each example, computed on its first use and kept: an image's one-hot maps and their
    pooling cost a seventh of a vision warm-up step, and the warm-up sees every example about a
    dozen times. A flipped image's shares are the mirror image of its example's (adaptive
    pooling's windows are symmetric), and a batch's are laid out as the pooling of the batch's
    maps leaves them: the values, and the training, are exactly those without the cache."""

    def __init__(self, examples: Sequence[Example], classes: Sequence[int]) -> None:
        self.examples = examples
        self.classes = tuple(classes)
        self._shares: dict[tuple[int, tuple[tuple[int, int], ...]], list[list[torch.Tensor]]] = {}

    def __call__(self, batch: Batch, logits: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per level of ``logits``, per attribute, the ``(B, n, h, w)`` shares of the batch's
        images."""
        sizes = tuple((int(level.shape[-2]), int(level.shape[-1])) for level in logits)
        images = [self._example(k, sizes, flipped) for k, flipped in batch.sources]
        return [
            [
                torch.cat([image[level][a] for image in images]).contiguous(
                    memory_format=torch.channels_last
                )
                for a in range(len(self.classes))
            ]
            for level in range(len(sizes))
        ]

    def _example(
        self, k: int, sizes: tuple[tuple[int, int], ...], flipped: bool
    ) -> list[list[torch.Tensor]]:
        key = (k, sizes)
        if key not in self._shares:
            maps = self.examples[k].attributes
            if maps is None:
                raise ValueError("the dense attribute term needs examples with attribute maps")
            tensor = torch.from_numpy(np.ascontiguousarray(maps)).long()[None]
            self._shares[key] = attribute_shares(tensor, self.classes, sizes)
        shares = self._shares[key]
        return [[t.flip(-1) for t in level] for level in shares] if flipped else shares


def _adamw(
    named: Sequence[tuple[str, torch.nn.Parameter]], weight_decay: float, lr: float
) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices only (not on norms and biases); the fused
    kernel (one pass over every parameter per step: 12 -> 5 ms a step for the starter on CPU)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in named:
        (no_decay if param.ndim < 2 or "norm" in name or "bias" in name else decay).append(param)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        fused=True,
    )


def _vision_warmup(
    model: Any,
    head: AttributeHead,
    examples: Sequence[Example],
    preprocessing: Preprocessing,
    settings: TrainSettings,
    device: torch.device,
    *,
    start: int,
    state: dict[str, Any] | None,
    targets: AttributeTargets,
    checkpoint: Callable[[int, dict[str, Any]], None],
    progress: Callable[[StepReport], None] | None,
    began: float,
) -> None:
    """Steps ``start .. vision_steps - 1`` of the vision warm-up: the vision encoder and the
    attribute head on the dense loss alone (``TrainSettings.vision_steps``)."""
    named = [*model.vision_encoder.named_parameters(), *head.named_parameters()]
    params = [p for _, p in named]
    optimizer = _adamw(named, settings.weight_decay, settings.vision_lr)
    total = settings.vision_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, settings, total)
    )
    if state is not None:
        optimizer.load_state_dict(state["vision_optimizer"])
        scheduler.load_state_dict(state["vision_scheduler"])
    # Its own batch sequence (another seed), so the detector's batches stay as without it.
    stream = batches(
        examples, preprocessing, images_per_batch=settings.vision_images, phrases_per_image=1,
        seed=settings.seed + 1, start_step=start,
    )  # fmt: skip
    model.train()
    for step in range(start, total):
        batch = next(stream)
        if batch.attributes is None:
            raise ValueError("the vision warm-up needs examples with attribute maps")
        levels = model.get_vision_features(pixel_values=batch.pixels.to(device)).fpn_hidden_states
        logits = head(levels[: len(head.convs)])
        loss = dense_attribute_loss(logits, targets(batch, logits), settings.attribute_classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        done = step + 1
        if progress is not None:
            value = float(loss.detach())
            progress(
                StepReport(
                    step=done, steps=total, loss=value, terms={"dense": value},
                    lr=float(scheduler.get_last_lr()[0]), elapsed_s=time.monotonic() - began,
                    stage="vision",
                )
            )  # fmt: skip
        if done == total or (settings.checkpoint_every and done % settings.checkpoint_every == 0):
            checkpoint(
                done,
                {
                    "vision_optimizer": optimizer.state_dict(),
                    "vision_scheduler": scheduler.state_dict(),
                },
            )


def save_model_dir(model: Any, tokenizer: Any, source: Path, out: Path) -> None:
    """Write ``model`` as a complete model directory at ``out`` (tokenizer and processor
    config copied from ``source``), replacing the files of an older one atomically enough:
    a reader sees the old or the new weights file, never half of one."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".saving"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    processor = source / "processor_config.json"
    if processor.is_file() and processor.resolve() != (tmp / processor.name).resolve():
        shutil.copyfile(processor, tmp / processor.name)
    for file in tmp.iterdir():
        file.replace(out / file.name)
    tmp.rmdir()


def train(
    init: Path,
    examples: Sequence[Example],
    out: Path,
    settings: TrainSettings,
    *,
    resume: bool = True,
    progress: Callable[[StepReport], None] | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the model of directory ``init`` on ``examples``; write the result to ``out``.

    ``init`` is a complete model directory (a fresh one from
    :func:`~annotator.training.checkpoint.new_model_dir`, or a trained proposer to fine-tune).
    With ``resume`` and a training state under ``out``, training continues from it (``init``
    is then only read for the tokenizer and processor config).
    """
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = modeling.resolve_device(settings.device)
    model, tokenizer, preprocessing = load_for_training(init, device)
    criterion = SetCriterion(settings.weights)
    head: AttributeHead | None = None
    if settings.weights.dense > 0 and settings.attribute_classes:
        fpn = int(model.config.vision_config.fpn_hidden_size)
        levels = len(model.config.vision_config.backbone_feature_sizes)
        head = AttributeHead(fpn, settings.attribute_classes, levels).to(device)
    named = list(model.named_parameters())
    if head is not None:
        named += [(f"attribute_head.{n}", p) for n, p in head.named_parameters()]
    optimizer = _adamw(named, settings.weight_decay, settings.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, settings)
    )
    state_path = out / STATE_DIR / STATE_FILE
    start = 0
    history: list[tuple[int, float]] = []
    state: dict[str, Any] | None = None
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        if head is not None and "attribute_head" in state:
            head.load_state_dict(state["attribute_head"])
        if "optimizer" in state:  # absent while the vision warm-up was running
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        start = int(state["step"])
        history = list(state.get("history", []))
    resumed_from = start
    # States from before the warm-up existed have none to finish.
    vision_done = int(state.get("vision_step", settings.vision_steps)) if state else 0

    def checkpoint(step: int, vision_step: int, extra: dict[str, Any] | None = None) -> None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                **({"attribute_head": head.state_dict()} if head is not None else {}),
                **(
                    extra
                    or {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
                ),
                "step": step,
                "vision_step": vision_step,
                "history": history,
                "settings": repr(settings),
            },
            tmp,
        )
        tmp.replace(state_path)

    # The dense term's targets, per example, shared by the vision warm-up and the whole model.
    attribute_targets = AttributeTargets(examples, settings.attribute_classes)
    began = time.monotonic()
    if settings.vision_steps and vision_done < settings.vision_steps:
        if head is None:
            raise ValueError(
                "vision_steps needs the dense attribute loss (weights.dense > 0 and "
                "attribute_classes)"
            )
        _vision_warmup(
            model, head, examples, preprocessing, settings, device,
            start=vision_done,
            state=state if state and "vision_optimizer" in state else None,
            targets=attribute_targets,
            checkpoint=lambda k, extra: checkpoint(0, k, extra),
            progress=progress, began=began,
        )  # fmt: skip

    snapshots: list[Path] = []
    stream = batches(
        examples,
        preprocessing,
        images_per_batch=settings.images_per_batch,
        phrases_per_image=settings.phrases_per_image,
        seed=settings.seed,
        start_step=start,
    )
    first_loss: float | None = history[0][1] if history else None
    last_loss: float | None = history[-1][1] if history else None
    model.train()
    for step in range(start, settings.steps):
        batch = next(stream)
        forward = _forward(model, tokenizer, batch, device, aux=settings.weights.aux > 0)
        terms = criterion(forward.outputs, _targets(batch), forward.layers[:-1])
        if head is not None and batch.attributes is not None:
            # The levels the detector uses (the model drops the vision neck's coarsest one).
            logits = head(forward.vision.fpn_hidden_states[: len(head.convs)])
            terms["dense"] = dense_attribute_loss(
                logits, attribute_targets(batch, logits), settings.attribute_classes
            )
            terms["total"] = terms["total"] + settings.weights.dense * terms["dense"]
        loss = terms["total"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], settings.grad_clip)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        history.append((step + 1, value))
        first_loss = value if first_loss is None else first_loss
        last_loss = value
        if progress is not None:
            progress(
                StepReport(
                    step=step + 1,
                    steps=settings.steps,
                    loss=value,
                    terms={k: float(v.detach()) for k, v in terms.items() if k != "total"},
                    lr=float(scheduler.get_last_lr()[0]),
                    elapsed_s=time.monotonic() - began,
                )
            )
        done = step + 1
        if done in settings.snapshot_steps:
            snapshot = out.with_name(f"{out.name}-step{done}")
            model.eval()
            save_model_dir(model, tokenizer, Path(init), snapshot)
            model.train()
            snapshots.append(snapshot)
        if settings.checkpoint_every and done % settings.checkpoint_every == 0:
            checkpoint(done, settings.vision_steps)
    model.eval()
    save_model_dir(model, tokenizer, Path(init), out)
    checkpoint(settings.steps, settings.vision_steps)
    elapsed = time.monotonic() - began
    info = {
        "steps": settings.steps,
        "resumed_from": resumed_from,
        "elapsed_s": round(elapsed, 1),
        "settings": {k: v for k, v in asdict(settings).items() if k != "weights"},
        "weights": asdict(settings.weights),
        **(metadata or {}),
    }
    (out / STATE_DIR / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return TrainResult(
        out=out,
        steps=settings.steps,
        resumed_from=resumed_from,
        first_loss=first_loss,
        last_loss=last_loss,
        elapsed_s=elapsed,
        snapshots=snapshots,
        history=history,
    )
