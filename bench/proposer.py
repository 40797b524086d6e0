"""Benchmark the SAM 3 proposer: batched phrases vs one prompt at a time.

For N phrases per image it times three ways of running the same model through
``annotator.miners.sam3.Sam3Proposer``:

- ``batched``: one vision forward, phrases through the detector ``--batch-size`` at a time
  (what the engine does);
- ``looped``: one vision forward, then one detector forward per phrase (the official
  ``Sam3Processor``: ``set_image`` once, ``set_text_prompt`` per phrase);
- ``naive``: the whole model per phrase, vision included (``model(**processor(image, text))``
  in a loop, as the transformers examples do).

By default it runs the tiny random-initialised model of the tests on the CPU. ``--full`` builds
a full-size random-initialised ``Sam3Model`` (default ``Sam3Config``, 1008 x 1008 input) in bf16
on CUDA when available: speed does not depend on weight values. Next to it it prints a floor,
the counted FLOPs of one image divided by a measured matmul rate, and the paper's 30 ms per
image on an H200. Results go in docs/benchmarks.md.

    python bench/proposer.py                      # tiny, CPU
    python bench/proposer.py --full --phrases 1,5,20
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator import machine  # noqa: E402
from annotator.backends import PhraseProposals  # noqa: E402
from annotator.miners.sam3 import Sam3Proposer  # noqa: E402
from tests.models.tiny import (  # noqa: E402
    VOCAB_WORDS,
    build_clip_style_tokenizer,
    build_tiny_sam3,
    write_sam3_processor_config,
)

PAPER_MS_PER_IMAGE_H200 = 30.0


def build_full_sam3(directory: Path, dtype: torch.dtype) -> Path:
    """A full-size random-initialised SAM 3 checkpoint (default config) written to disk."""
    from transformers import Sam3Config, Sam3Model

    tokenizer = build_clip_style_tokenizer(directory)
    config = Sam3Config()
    text_config: Any = config.text_config
    text_config.bos_token_id = tokenizer.bos_token_id
    text_config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    model: Any = Sam3Model(config)
    model = model.to(dtype).eval()
    model.save_pretrained(directory)
    write_sam3_processor_config(directory, config.image_size)
    return directory


def phrases_for(count: int) -> list[str]:
    words = sorted(set(VOCAB_WORDS))
    return [f"{words[i % len(words)]} {words[(3 * i + 7) % len(words)]}" for i in range(count)]


def images_for(count: int, size: tuple[int, int]) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(count)
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_modes(
    modes: Sequence[tuple[str, Callable[[Image.Image], list[PhraseProposals]]]],
    images: Sequence[Image.Image],
    device: torch.device,
    repeats: int,
) -> dict[str, tuple[float, float]]:
    """Per mode: median seconds per image over ``repeats`` passes, and instances per image.

    Passes of the modes are interleaved, so a burst of load on a shared machine hits every
    mode alike instead of whichever ran during it.
    """
    for _, run in modes:
        run(images[0])  # warm-up: allocator, kernels, lazy inits
    passes: dict[str, list[float]] = {name: [] for name, _ in modes}
    instances: dict[str, float] = {}
    for _ in range(repeats):
        for name, run in modes:
            synchronize(device)
            start = time.perf_counter()
            found = 0
            for image in images:
                found += sum(len(p.masks) for p in run(image))
            synchronize(device)
            passes[name].append((time.perf_counter() - start) / len(images))
            instances[name] = found / len(images)
    return {name: (statistics.median(passes[name]), instances[name]) for name, _ in modes}


def vision_per_phrase(
    proposer: Sam3Proposer, image: Image.Image, phrases: Sequence[str]
) -> list[PhraseProposals]:
    """The whole model (vision included) once per phrase."""
    return [found for phrase in phrases for found in proposer.propose(image, [phrase])]


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul throughput in FLOP/s (the practical peak for this dtype)."""
    n = 4096 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    runs = 20 if device.type == "cuda" else 5
    start = time.perf_counter()
    for _ in range(runs):
        a @ b
    synchronize(device)
    return 2 * n**3 * runs / (time.perf_counter() - start)


def count_flops(proposer: Sam3Proposer, image: Image.Image, phrases: Sequence[str]) -> int:
    """FLOPs of one image: the vision forward plus the detector on all phrases."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        proposer.propose(image, phrases)
    return int(counter.get_total_flops())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size Sam3Config (GPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--phrases", default="1,5,20", help="phrases per image, comma-separated")
    parser.add_argument("--images", type=int, default=0, help="images per pass (default 8/4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes (median reported)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--skip-naive", action="store_true", help="skip the vision-per-phrase row")
    args = parser.parse_args(argv)

    from annotator import modeling

    device = modeling.resolve_device(args.device)
    dtype = modeling.default_dtype(device) if args.full else torch.float32
    counts = [int(c) for c in args.phrases.split(",")]
    n_images = args.images or (4 if args.full else 8)
    torch.set_grad_enabled(False)

    with tempfile.TemporaryDirectory() as tmp:
        if args.full:
            source = build_full_sam3(Path(tmp) / "sam3-full-random", dtype)
            size = (1008, 1008)
        else:
            source = build_tiny_sam3(Path(tmp) / "sam3-tiny", seed=0)
            size = (320, 240)
        proposer = Sam3Proposer(
            str(source),
            device=str(device),
            dtype=dtype,
            batch_size=args.batch_size,
            score_threshold=args.score_threshold,
        )
        with proposer:
            model = proposer._model
            assert model is not None
            params = sum(p.numel() for p in model.parameters())
            images = images_for(n_images, size)
            rate = matmul_rate(device, dtype)
            rows: list[tuple[int, str, float, float, float]] = []
            floors: dict[int, float] = {}
            for count in counts:
                phrases = phrases_for(count)
                floors[count] = count_flops(proposer, images[0], phrases) / rate
                modes: list[tuple[str, Callable[[Image.Image], list[PhraseProposals]]]] = [
                    ("batched", partial(proposer.propose, phrases=phrases)),
                    ("looped", partial(proposer.propose_looped, phrases=phrases)),
                ]
                if not args.skip_naive:
                    modes.append(("naive", partial(vision_per_phrase, proposer, phrases=phrases)))
                timed = time_modes(modes, images, device, args.repeats)
                for mode, (seconds, instances) in timed.items():
                    rows.append((count, mode, seconds, instances, floors[count]))

    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({machine.describe()}, {torch.get_num_threads()} threads)"
    )
    print(
        f"SAM 3 proposer, {'full-size' if args.full else 'tiny'} random-init model "
        f"({params / 1e6:.1f} M params, {str(dtype).removeprefix('torch.')}) on {where}; "
        f"images {size[0]}x{size[1]}, batch size {args.batch_size}, "
        f"score threshold {args.score_threshold}, median of {args.repeats} passes over "
        f"{n_images} images; torch {torch.__version__}"
    )
    print(f"measured matmul rate: {rate / 1e12:.2f} TFLOP/s ({str(dtype).removeprefix('torch.')})")
    header = (
        f"{'phrases':>7}  {'mode':<8} {'ms/image':>10} {'images/s':>9} "
        f"{'vs looped':>9} {'inst/img':>8} {'floor ms':>9}"
    )
    print(header)
    print("-" * len(header))
    looped = {count: s for count, mode, s, _, _ in rows if mode == "looped"}
    for count, mode, seconds, instances, floor in rows:
        print(
            f"{count:>7}  {mode:<8} {seconds * 1e3:>10.2f} {1 / seconds:>9.2f} "
            f"{looped[count] / seconds:>8.2f}x {instances:>8.1f} {floor * 1e3:>9.3f}"
        )
    if args.full:
        print(f"paper: {PAPER_MS_PER_IMAGE_H200:.0f} ms/image on an H200 (100+ objects)")
    print("floor = counted FLOPs of one image (vision + detector) / measured matmul rate")
    print("reproduce: python " + shlex.join(["bench/proposer.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
