"""Benchmark one training step of the starter proposer (``annotator train starter``).

Times the two kinds of step of a fresh ``STARTER_SIZE`` model on synthetic scenes, in one
process, each with the dense attribute term's targets from the trainer's per-example cache
(``annotator.training.trainer.AttributeTargets``, what training does) and computed from the
batch's class maps every step (what it did before; the same values and layout, tested):

- ``whole``: a whole-model step, 8 images x 4 phrases (``--images``, ``--phrases``): forward
  (``trainer._forward``), set-prediction loss, dense term, backward, clipped fused AdamW;
- ``vision``: a step of the vision warm-up, 16 images (``--vision-images``), vision encoder and
  dense term only.

The step time also says how fast the machine is at the moment: the end-to-end time of
``annotator train starter`` scales with it (docs/benchmarks.md "Starter model").

    python bench/train_step.py                 # 2 threads, 30 timed steps per row
    python bench/train_step.py --steps 60 --threads 1
    python bench/train_step.py --threads 1 --images 4 --vision-images 8   # half a batch
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator import machine  # noqa: E402
from annotator.datasets.synthetic import vocabulary  # noqa: E402
from annotator.miners.sam3 import Preprocessing  # noqa: E402
from annotator.training import trainer  # noqa: E402
from annotator.training.checkpoint import new_model_dir  # noqa: E402
from annotator.training.data import (  # noqa: E402
    SYNTHETIC_ATTRIBUTE_CLASSES,
    Batch,
    batches,
    synthetic_examples,
)
from annotator.training.loss import (  # noqa: E402
    AttributeHead,
    SetCriterion,
    dense_attribute_loss,
)
from annotator.training.starter import SCENE_SIZE, STARTER_SIZE, STARTER_WEIGHTS  # noqa: E402


def time_steps(step: Callable[[], None], steps: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return times


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--scenes", type=int, default=200, help="synthetic scenes to draw from")
    parser.add_argument("--images", type=int, default=8, help="images per whole-model step")
    parser.add_argument("--phrases", type=int, default=4, help="phrases per image")
    parser.add_argument("--vision-images", type=int, default=16, help="images per vision step")
    parser.add_argument(
        "--mask-scale", type=int, default=STARTER_SIZE.mask_scale,
        help="the masks' resolution in patch grids (ModelSize.mask_scale: 4 or 2)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        size = dataclasses.replace(STARTER_SIZE, mask_scale=args.mask_scale)
        init = new_model_dir(Path(tmp) / "init", vocabulary(), size, seed=0)
        preprocessing = Preprocessing.from_config(
            json.loads((init / "processor_config.json").read_text())["image_processor"]
        )
        model, tokenizer, _ = trainer.load_for_training(init, torch.device("cpu"))
    examples = synthetic_examples(0, args.scenes, preprocessing, scene_size=SCENE_SIZE)
    criterion = SetCriterion(STARTER_WEIGHTS)
    fpn = int(model.config.vision_config.fpn_hidden_size)
    head = AttributeHead(
        fpn, SYNTHETIC_ATTRIBUTE_CLASSES, len(model.config.vision_config.backbone_feature_sizes)
    )
    named = [*model.named_parameters(), *(("head." + n, p) for n, p in head.named_parameters())]
    params = [p for _, p in named]
    optimizer = trainer._adamw(named, 0.05, 5e-4)
    stream = batches(
        examples, preprocessing, images_per_batch=args.images, phrases_per_image=args.phrases,
        seed=0,
    )  # fmt: skip
    vision_stream = batches(
        examples, preprocessing, images_per_batch=args.vision_images, phrases_per_image=1, seed=1
    )

    cache = trainer.AttributeTargets(examples, SYNTHETIC_ATTRIBUTE_CLASSES)

    def dense_loss(cached: bool, batch: Batch, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        assert batch.attributes is not None
        logits = head(levels[: len(head.convs)])
        targets = cache(batch, logits) if cached else batch.attributes
        return dense_attribute_loss(logits, targets, SYNTHETIC_ATTRIBUTE_CLASSES)

    def update(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()

    def whole_step(cached: bool) -> Callable[[], None]:
        def step() -> None:
            batch = next(stream)
            forward = trainer._forward(model, tokenizer, batch, torch.device("cpu"))
            terms = criterion(forward.outputs, trainer._targets(batch))
            update(terms["total"] + dense_loss(cached, batch, forward.vision.fpn_hidden_states))

        return step

    def vision_step(cached: bool) -> Callable[[], None]:
        def step() -> None:
            batch = next(vision_stream)
            levels = model.get_vision_features(pixel_values=batch.pixels).fpn_hidden_states
            update(dense_loss(cached, batch, levels))

        return step

    model.train()
    # Every example in the cache first (as after the first epoch of training).
    with torch.no_grad():
        features = model.get_vision_features(pixel_values=next(stream).pixels).fpn_hidden_states
    sizes = tuple((int(t.shape[-2]), int(t.shape[-1])) for t in features[: len(head.convs)])
    for k in range(len(examples)):
        cache._example(k, sizes, False)
    rows: list[tuple[str, list[float]]] = []
    # Interleaved twice, so a change in the machine's speed during the run shows as a spread
    # between the two passes rather than as a difference between the rows.
    for _ in range(2):
        for kind, step in (("whole", whole_step), ("vision", vision_step)):
            rows.append((f"{kind}, cached", time_steps(step(True), args.steps)))
            rows.append((f"{kind}, from maps", time_steps(step(False), args.steps)))

    print(
        f"starter training step, {machine.describe()}, {args.threads} torch "
        f"threads, torch {torch.__version__}; whole: {args.images} images x {args.phrases} "
        f"phrases, vision: {args.vision_images} images"
    )
    header = f"{'step':<20} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'steps':>6}"
    print(header)
    print("-" * len(header))
    for name, times in rows:
        ms = [1000 * t for t in times]
        print(
            f"{name:<20} {statistics.median(ms):>10.0f} {min(ms):>8.0f} {max(ms):>8.0f} "
            f"{len(ms):>6}"
        )
    print("reproduce: python " + shlex.join(["bench/train_step.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
