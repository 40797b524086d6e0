"""Tiny random-initialised checkpoints, written to disk the way real ones are.

No weights can be downloaded on these machines, so tests build models from small configs,
``save_pretrained`` them into a directory and load them back through the product code, the
same ``from_pretrained(local_dir)`` path users take with hub ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

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


def _bpe_vocab_and_merges(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A deterministic BPE table (the ``tokenizers`` trainer breaks ties differently per run):
    single characters, characters ending a word, then left-to-right merges spelling each word."""
    specials = ["<|startoftext|>", "<|endoftext|>", "<|unk|>"]
    characters = sorted({c for word in words for c in word})
    tokens = [*specials, *characters, *(c + "</w>" for c in characters)]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            if (merged, piece) not in merges:
                merges.append((merged, piece))
                tokens.append(merged + piece)
            merged = merged + piece
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def build_clip_style_tokenizer(directory: Path, max_length: int = 32) -> Any:
    """A small BPE tokenizer shaped like CLIP's (lower-case, ``</w>`` word ends, start/end
    tokens, padded with the end token), saved to ``directory``; returns the fast tokenizer.
    Words outside ``VOCAB_WORDS`` fall back to characters, as in any BPE."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    start, end, unknown = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
    vocab, merges = _bpe_vocab_and_merges(sorted(set(VOCAB_WORDS)))
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=unknown, end_of_word_suffix="</w>")
    )
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.BPEDecoder(suffix="</w>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}",
        special_tokens=[(start, vocab[start]), (end, vocab[end])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=start,
        eos_token=end,
        unk_token=unknown,
        pad_token=end,
        model_max_length=max_length,
    )
    fast.save_pretrained(directory)
    return fast


def tiny_sam3_config(
    vocab_size: int, bos: int, eos: int, image_size: int = 224, initializer_range: float = 0.2
) -> Any:
    """A ``Sam3Config`` with every part at hidden size 32 and one or two layers (~0.25 M params).

    ``image_size`` must be a multiple of 14 * 8 (patch size times window size); the FPN levels
    are then 4x, 2x, 1x and 0.5x the patch grid. The large ``initializer_range`` spreads scores
    and mask probabilities over (0, 1); with the default 0.02 they all sit within 1e-4 of 0.5,
    where every threshold would be decided by rounding noise.
    """
    from transformers import Sam3Config

    grid = image_size // 14
    small = {
        "hidden_size": 32,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "initializer_range": initializer_range,
    }
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                **small,
                "num_hidden_layers": 2,
                "image_size": image_size,
                "patch_size": 14,
                "window_size": 8,
                "global_attn_indexes": [1],
                "pretrain_image_size": image_size,
            },
            "fpn_hidden_size": 32,
            "initializer_range": initializer_range,
            "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        },
        text_config={
            **small,
            "vocab_size": vocab_size,
            "projection_dim": 32,
            "num_hidden_layers": 1,
            "max_position_embeddings": 32,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": 20},
        mask_decoder_config={
            "hidden_size": 32,
            "num_attention_heads": 2,
            "initializer_range": initializer_range,
        },
        initializer_range=initializer_range,
    )


def write_sam3_processor_config(directory: Path, image_size: int) -> None:
    """``processor_config.json`` as ``Sam3Processor.save_pretrained`` writes it (nested)."""
    config = {
        "image_processor": {
            "image_processor_type": "Sam3ImageProcessor",
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "rescale_factor": 1 / 255,
            "resample": 2,
            "size": {"height": image_size, "width": image_size},
            "mask_size": {"height": 4 * image_size // 14, "width": 4 * image_size // 14},
        },
        "point_pad_value": -10,
        "target_size": image_size,
        "processor_class": "Sam3Processor",
    }
    (directory / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")


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
