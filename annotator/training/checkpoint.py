"""SAM 3 model directories built from scratch: a small config, a local tokenizer, the processor
config, written with ``save_pretrained`` so ``Sam3Model.from_pretrained`` and the ``sam3``
proposer load them like any checkpoint.

The real SAM 3 tokenizer (CLIP BPE) is gated on the hub; a model trained from scratch needs only
a tokenizer for its own vocabulary, so :func:`build_clip_style_tokenizer` writes a small BPE
tokenizer shaped like CLIP's (lower-case, ``</w>`` word ends, start/end tokens, padded with the
end token). Words outside its vocabulary fall back to characters, as in any BPE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ModelSize",
    "build_clip_style_tokenizer",
    "new_model_dir",
    "sam3_config",
    "write_processor_config",
]


def _bpe_vocab_and_merges(words: Sequence[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A deterministic BPE table (the ``tokenizers`` trainer breaks ties differently per run):
    single characters, characters ending a word, then left-to-right merges spelling each word.

    BPE applies merges by rank, so an earlier word's merge can pre-empt a later word's chain
    (``"an"`` from ``"and"`` splits ``"orange"`` into ``or an g e``); :func:`_repair_merges`
    then appends merges joining the pieces that were left, until every word is one token."""
    specials = ["<|startoftext|>", "<|endoftext|>", "<|unk|>"]
    characters = sorted({c for word in words for c in word})
    tokens = [*specials, *characters, *(c + "</w>" for c in characters)]
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        _chain(pieces, merges, tokens)
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _chain(pieces: Sequence[str], merges: list[tuple[str, str]], tokens: list[str]) -> None:
    """Append the left-to-right merges that join ``pieces`` into one token."""
    merged = pieces[0]
    for piece in pieces[1:]:
        if (merged, piece) not in merges:
            merges.append((merged, piece))
            tokens.append(merged + piece)
        merged = merged + piece


def _bpe_model(vocab: dict[str, int], merges: list[tuple[str, str]], unknown: str) -> Any:
    from tokenizers import models

    return models.BPE(vocab=vocab, merges=merges, unk_token=unknown, end_of_word_suffix="</w>")


def _repair_merges(
    words: Sequence[str], vocab: dict[str, int], merges: list[tuple[str, str]], unknown: str
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Append merges (lowest rank) for every word the table splits, until none is split."""
    for _ in range(len(words) + 1):
        model = _bpe_model(vocab, merges, unknown)
        split = [
            [t.value for t in model.tokenize(word)]
            for word in words
            if len(model.tokenize(word)) > 1
        ]
        if not split:
            return vocab, merges
        tokens = list(vocab)
        for pieces in split:
            _chain(pieces, merges, tokens)
        for token in tokens:
            vocab.setdefault(token, len(vocab))
    raise RuntimeError(f"could not build a BPE table spelling every word as one token: {words}")


def build_clip_style_tokenizer(directory: Path, words: Sequence[str], max_length: int = 32) -> Any:
    """Write a small CLIP-style BPE tokenizer whose whole words are ``words`` (each one token)
    to ``directory`` and return it (a ``PreTrainedTokenizerFast``). The same words give the
    same files."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    start, end, unknown = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
    unique = sorted({word.lower() for word in words})
    vocab, merges = _bpe_vocab_and_merges(unique)
    vocab, merges = _repair_merges(unique, vocab, merges, unknown)
    tokenizer = Tokenizer(_bpe_model(vocab, merges, unknown))
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
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return fast


@dataclass(frozen=True)
class ModelSize:
    """The dimensions of a small ``Sam3Config`` (every part shares ``hidden``).

    ``image_size`` must be a multiple of ``patch * window`` (patch size times window size): the
    FPN levels are then ``mask_scale``x .. 0.5x the patch grid (4x, 2x, 1x, 0.5x by default, as
    SAM 3), and masks come out at ``mask_scale`` x the grid (``image_size * 4 / 14`` pixels
    square by default).
    """

    image_size: int = 224
    hidden: int = 64
    heads: int = 4
    mlp: int = 128
    vit_layers: int = 2
    window: int = 8
    text_layers: int = 1
    text_length: int = 8
    encoder_layers: int = 1
    decoder_layers: int = 2
    queries: int = 16
    initializer_range: float = 0.02
    # Standard deviation of the query/key projections of the DETR encoder and decoder attention
    # (None: ``initializer_range`` like every other weight). At 0.02 with 64 channels every
    # attention starts uniform, so the presence token sees the *mean* of the image tokens (a
    # small object is a ~2 % signal of it) and its gradient towards attending is second order;
    # at 0.15 everywhere the attention starts saturated at random positions (entropy ~0.5 of a
    # possible 4.2). Larger query/key weights (0.25) let a fixed-phrase presence ("is there
    # red?") learn in ~150 steps where 0.02 stays at the prior, and with initializer 0.06 the
    # starter's held-out presence AUC went 0.50 -> 0.76 in 1500 steps; docs/benchmarks.md.
    attention_init: float | None = None
    # The ViT's patch size in pixels (SAM 3's is 14). A smaller patch gives a finer grid (more
    # tokens per object) and finer masks, at the cost of more positions everywhere.
    patch: int = 14
    # The finest FPN level (and the masks) at this many times the patch grid: 4 as SAM 3 (288 x
    # 288 for 1008 px), or 2 (half as fine, a quarter of the mask decoder's per-row work).
    mask_scale: int = 4

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sam3_config(size: ModelSize, *, vocab_size: int, bos: int, eos: int) -> Any:
    """A ``Sam3Config`` of ``size`` for a tokenizer of ``vocab_size`` tokens."""
    from transformers import Sam3Config

    if size.image_size % (size.patch * size.window):
        raise ValueError(
            f"image_size {size.image_size} must be a multiple of patch x window "
            f"({size.patch} x {size.window} = {size.patch * size.window})"
        )
    if size.mask_scale not in (2, 4):
        raise ValueError(f"mask_scale must be 2 or 4, not {size.mask_scale}")
    grid = size.image_size // size.patch
    # FPN levels from mask_scale x the grid, halving down to 0.5x; the detector uses all but
    # the last.
    scales = [float(size.mask_scale)]
    while scales[-1] > 0.5:
        scales.append(scales[-1] / 2)
    common = {
        "hidden_size": size.hidden,
        "num_attention_heads": size.heads,
        "intermediate_size": size.mlp,
        "initializer_range": size.initializer_range,
    }
    return Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model",
                **common,
                "num_hidden_layers": size.vit_layers,
                "image_size": size.image_size,
                "patch_size": size.patch,
                "window_size": size.window,
                # The last layer attends globally, the others within windows (as SAM 3's ViT).
                "global_attn_indexes": [size.vit_layers - 1],
                "pretrain_image_size": size.image_size,
            },
            "fpn_hidden_size": size.hidden,
            "initializer_range": size.initializer_range,
            "backbone_feature_sizes": [[int(s * grid)] * 2 for s in scales[:-1]],
            "scale_factors": scales,
        },
        text_config={
            **common,
            "vocab_size": vocab_size,
            "projection_dim": size.hidden,
            "num_hidden_layers": size.text_layers,
            "max_position_embeddings": size.text_length,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": eos,
        },
        geometry_encoder_config={**common, "num_layers": 1},
        detr_encoder_config={**common, "num_layers": size.encoder_layers, "dropout": 0.0},
        detr_decoder_config={
            **common,
            "num_layers": size.decoder_layers,
            "num_queries": size.queries,
            "dropout": 0.0,
        },
        mask_decoder_config={
            "hidden_size": size.hidden,
            "num_attention_heads": size.heads,
            "initializer_range": size.initializer_range,
            # One 3x3 convolution per level above the grid (SAM 3's default of 3 leaves one
            # unused at mask_scale 4, kept so that models made before keep their weights).
            **({} if size.mask_scale == 4 else {"num_upsampling_stages": len(scales) - 2}),
        },
        initializer_range=size.initializer_range,
    )


def _init_attention(model: Any, std: float) -> None:
    """Redraw the query and key projections of the DETR encoder and decoder attention
    (self- and cross-attention, text and vision) from ``N(0, std)`` (seeded by the caller)."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("detr_encoder.", "detr_decoder.")) and name.endswith(
                ("q_proj.weight", "k_proj.weight")
            ):
                param.normal_(0.0, std)


def write_processor_config(
    directory: Path, image_size: int, patch: int = 14, mask_scale: int = 4
) -> None:
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
            "mask_size": {
                "height": mask_scale * image_size // patch,
                "width": mask_scale * image_size // patch,
            },
        },
        "point_pad_value": -10,
        "target_size": image_size,
        "processor_class": "Sam3Processor",
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")


def new_model_dir(
    directory: Path, words: Sequence[str], size: ModelSize | None = None, *, seed: int = 0
) -> Path:
    """Write a complete, randomly initialised SAM 3 checkpoint (model, tokenizer for ``words``,
    processor config) to ``directory`` and return it. The same seed gives identical weights."""
    import torch
    from transformers import Sam3Model

    size = size or ModelSize()
    tokenizer = build_clip_style_tokenizer(directory, words, max_length=size.text_length)
    config = sam3_config(
        size, vocab_size=len(tokenizer), bos=tokenizer.bos_token_id, eos=tokenizer.eos_token_id
    )
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    if size.attention_init is not None:
        _init_attention(model, size.attention_init)
    model.save_pretrained(directory)
    write_processor_config(directory, size.image_size, size.patch, size.mask_scale)
    return directory
