"""Tiny random-initialised checkpoints, written to disk the way real ones are.

No weights can be downloaded on these machines, so tests build models from small configs,
``save_pretrained`` them into a directory and load them back through the product code, the
same ``from_pretrained(local_dir)`` path users take with hub ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from annotator.training import checkpoint

# Words the tiny tokenizers are trained on; phrases built from them tokenise without <unk>.
VOCAB_WORDS = [
    "a",
    "the",
    "red",
    "blue",
    "green",
    "yellow",
    "striped",
    "white",
    "black",
    "small",
    "large",
    "wooden",
    "metal",
    "cat",
    "dog",
    "umbrella",
    "sneaker",
    "car",
    "person",
    "tree",
    "house",
    "window",
    "tabby",
    "siamese",
    "zebra",
    "bird",
    "bicycle",
    "bottle",
    "chair",
    "table",
    "cup",
    "book",
    "phone",
    "lamp",
]


def build_clip_style_tokenizer(directory: Path, max_length: int = 32) -> Any:
    """The package's CLIP-style BPE tokenizer over ``VOCAB_WORDS``, saved to ``directory``."""
    return checkpoint.build_clip_style_tokenizer(directory, VOCAB_WORDS, max_length=max_length)


def tiny_sam3_config(
    vocab_size: int, bos: int, eos: int, image_size: int = 224, initializer_range: float = 0.2
) -> Any:
    """A ``Sam3Config`` with every part at hidden size 32 and one or two layers (~0.25 M params).

    ``image_size`` must be a multiple of 14 * 8 (patch size times window size). The large
    ``initializer_range`` spreads scores and mask probabilities over (0, 1); with the default
    0.02 they all sit within 1e-4 of 0.5, where every threshold would be decided by rounding
    noise.
    """
    size = checkpoint.ModelSize(
        image_size=image_size, hidden=32, heads=2, mlp=64, vit_layers=2, window=8,
        text_layers=1, text_length=32, encoder_layers=1, decoder_layers=1, queries=20,
        initializer_range=initializer_range,
    )  # fmt: skip
    return checkpoint.sam3_config(size, vocab_size=vocab_size, bos=bos, eos=eos)


def write_sam3_processor_config(directory: Path, image_size: int) -> None:
    """``processor_config.json`` as ``Sam3Processor.save_pretrained`` writes it (nested)."""
    checkpoint.write_processor_config(directory, image_size)


def build_tiny_sam3(directory: Path, *, seed: int = 0, image_size: int = 224) -> Path:
    """Write a complete tiny SAM 3 checkpoint (model, tokenizer, processor config) to
    ``directory`` and return it. The same seed gives byte-identical weights."""
    from transformers import Sam3Model

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_clip_style_tokenizer(directory)
    config = tiny_sam3_config(
        vocab_size=len(tokenizer),
        bos=tokenizer.bos_token_id,
        eos=tokenizer.eos_token_id,
        image_size=image_size,
    )
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    model.save_pretrained(directory)
    write_sam3_processor_config(directory, image_size)
    return directory
