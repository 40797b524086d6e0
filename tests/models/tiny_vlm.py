"""Tiny random-initialised Llama-style models for tests (no weights exist on these machines).

* :func:`build_tiny_vlm` writes a LLaVA checkpoint (tiny CLIP vision tower + tiny Llama text model)
  with a locally built word-level tokenizer, a chat template and an image processor, so the
  captioner and the VLM verifier load it through ``AutoProcessor`` /
  ``AutoModelForImageTextToText.from_pretrained(dir)`` exactly as they load a hub id.
* :func:`build_tiny_llm` writes a tiny Llama causal LM with the same tokenizer (LLM parser).
  With ``answer=[...]`` its weights are set by hand so greedy decoding emits exactly that token
  sequence after the generation prompt: a bigram machine (attention and MLP outputs zeroed,
  one-hot embeddings, ``lm_head`` mapping each token to its successor). That lets the parser's
  real generate -> decode -> JSON -> clean path be checked end to end.

Builders are cached per (kind, args) within the test session via the ``tmp_path_factory`` the
caller passes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<|system|>", "<|user|>", "<|assistant|>"]
# Enough words that prompts and answers tokenise to something other than <unk>.
WORDS = [
    "A",
    "B",
    "C",
    "D",
    "E",
    "F",
    "a",
    "an",
    "the",
    "of",
    "and",
    "or",
    "is",
    "are",
    "in",
    "on",
    "with",
    "to",
    "it",
    "this",
    "that",
    "image",
    "photo",
    "mask",
    "box",
    "accept",
    "reject",
    "describe",
    "detailed",
    "description",
    "every",
    "visible",
    "object",
    "objects",
    "phrase",
    "phrases",
    "answer",
    "letter",
    "which",
    "one",
    "yes",
    "no",
    "json",
    "array",
    "noun",
    "red",
    "blue",
    "green",
    "white",
    "black",
    "dog",
    "cat",
    "car",
    "man",
    "woman",
    "tree",
    "person",
    "umbrella",
    "striped",
    "tabby",
    "siamese",
    "[",
    "]",
    '"',
    ",",
    ".",
    ":",
    "?",
    "'",
    "-",
    "(",
    ")",
    "1",
    "2",
    "3",
    "4",
    "5",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|> "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> "
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} {{ eos_token }} "
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)

IMAGE_SIZE = 32
PATCH_SIZE = 8


def build_tokenizer(extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over :data:`WORDS` with a chat template and Llama-style specials."""
    vocab: dict[str, int] = {}
    for token in [*SPECIAL, *WORDS, *extra_words]:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL[4:],
        chat_template=CHAT_TEMPLATE,
    )
    tokenizer.padding_side = "left"
    return tokenizer


def _text_config(vocab_size: int, **overrides: object) -> LlamaConfig:
    config = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    config.update(overrides)
    return LlamaConfig(**config)


def build_tiny_vlm(directory: Path, seed: int = 0) -> Path:
    """Write a tiny LLaVA checkpoint (model, tokenizer, processor) to ``directory``."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(len(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    image_processor = LlavaImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_pad=False,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_tiny_llm(directory: Path, answer: list[str] | None = None, seed: int = 0) -> Path:
    """Write a tiny Llama causal LM and tokenizer to ``directory``.

    Args:
        answer: if given, words (each a vocabulary token, each used once) that greedy decoding
            emits after the ``<|assistant|>`` marker, followed by ``</s>``.
    """
    torch.manual_seed(seed)
    extra = tuple(answer or ())
    tokenizer = build_tokenizer(extra)
    vocab_size = len(tokenizer)
    if answer is None:
        model = LlamaForCausalLM(_text_config(vocab_size)).eval()
    else:
        # hidden size >= vocabulary size: one-hot embeddings pass the (zeroed) blocks intact.
        hidden = -(-vocab_size // 8) * 8
        model = LlamaForCausalLM(
            _text_config(
                vocab_size,
                hidden_size=hidden,
                intermediate_size=8,
                num_attention_heads=1,
                num_key_value_heads=1,
                head_dim=hidden,
                num_hidden_layers=1,
            )
        ).eval()
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(torch.eye(vocab_size, hidden))
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            chain = [
                tokenizer.convert_tokens_to_ids("<|assistant|>"),
                *tokenizer.convert_tokens_to_ids(answer),
                tokenizer.eos_token_id,
            ]
            if len(set(chain)) != len(chain):
                raise ValueError("answer tokens must be distinct vocabulary entries")
            lm_head = torch.zeros(vocab_size, hidden)
            lm_head[tokenizer.eos_token_id, :] = 1.0  # anything else: stop
            for current, following in itertools.pairwise(chain):
                lm_head[:, current] = 0.0
                lm_head[following, current] = 10.0
            model.lm_head.weight.copy_(lm_head)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


_built: dict[tuple[str, tuple[str, ...]], Path] = {}


def cached_tiny_vlm(factory: object) -> Path:
    """:func:`build_tiny_vlm` once per test session (``factory`` is ``tmp_path_factory``)."""
    key = ("vlm", ())
    if key not in _built:
        _built[key] = build_tiny_vlm(factory.mktemp("tiny-vlm"))  # type: ignore[attr-defined]
    return _built[key]


def cached_tiny_llm(factory: object, answer: list[str] | None = None) -> Path:
    """:func:`build_tiny_llm` once per test session and answer."""
    key = ("llm", tuple(answer or ()))
    if key not in _built:
        _built[key] = build_tiny_llm(factory.mktemp("tiny-llm"), answer)  # type: ignore[attr-defined]
    return _built[key]
