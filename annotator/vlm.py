"""Shared plumbing for the Llama-style vision-language backends (captioner, VLM verifier).

One loaded (processor, model) pair per checkpoint and device, through
:func:`annotator.modeling.load_pretrained` (so hub ids and local directories share one code path
and one set of error messages), and the two ways the backends use it: batched greedy generation
and next-token scores. Imports torch/transformers lazily: constructing a backend stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

__all__ = ["VlmRuntime", "user_message"]


def user_message(text: str, with_image: bool = True) -> list[dict[str, Any]]:
    """A one-turn chat in the multimodal message format processors' chat templates expect."""
    content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


@dataclass
class VlmRuntime:
    """A loaded image-text-to-text model and its processor on one device.

    Build it with :meth:`load`; ``model`` is in eval mode and cached for the process.
    """

    source: str
    processor: Any
    model: Any
    device: torch.device

    @classmethod
    def load(
        cls, source: str, device_setting: str, dtype: torch.dtype | None = None, what: str = "VLM"
    ) -> VlmRuntime:
        """Load processor + ``AutoModelForImageTextToText`` from a hub id or local directory.

        Raises:
            ModelLoadError: offline, gated, no weights, not an image-text-to-text checkpoint.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from annotator import modeling

        device = modeling.resolve_device(device_setting)
        processor = modeling.load_pretrained(
            AutoProcessor.from_pretrained, source, what=f"the {what} processor", needs_weights=False
        )
        model = modeling.load_pretrained(
            AutoModelForImageTextToText.from_pretrained,
            source,
            what=f"the {what} model",
            device=device,
            dtype=dtype or modeling.default_dtype(device),
        )
        return cls(source=source, processor=processor, model=model, device=device)

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer."""
        return self.processor.tokenizer

    def image_size(self) -> dict[str, int] | None:
        """The image processor's ``size`` config (``shortest_edge``, ``height``/``width``, ...;
        unset keys dropped), or ``None`` when it has none."""
        size = getattr(getattr(self.processor, "image_processor", None), "size", None)
        if not size or isinstance(size, int | float):
            return None  # absent, or a bare number whose meaning differs between processors
        try:
            items = dict(size).items()  # a dict, or transformers' SizeDict
        except (TypeError, ValueError):
            return None
        return {k: int(v) for k, v in items if isinstance(v, int | float) and v}

    def _already_sized(self, images: Sequence[Image]) -> bool:
        """Whether the processor's resize would leave every image as it is (a ``shortest_edge``
        processor and images whose short side is that edge): then it is not run at all."""
        size = self.image_size()
        if not size or set(size) != {"shortest_edge"}:
            return False
        return all(min(image.size) == size["shortest_edge"] for image in images)

    def chat_text(self, prompt: str) -> str:
        """The chat-templated text of a one-image prompt (cached: MV asks one prompt per phrase
        for every mask of the phrase)."""
        cache: dict[str, str] = self.__dict__.setdefault("_chat_texts", {})
        text = cache.get(prompt)
        if text is None:
            text = self.processor.apply_chat_template(
                user_message(prompt), add_generation_prompt=True
            )
            if len(cache) >= 4096:
                cache.clear()
            cache[prompt] = text
        return text

    def encode(self, images: Sequence[Image], prompts: Sequence[str]) -> Any:
        """Batch of chat prompts (one image each), left-padded, on the model's device.

        ``pixel_values`` are cast to the model dtype; ``input_ids`` stay ``int64``.
        """
        texts = [self.chat_text(p) for p in prompts]
        extra = {"do_resize": False} if self._already_sized(images) else {}
        batch = self.processor(
            images=[[image] for image in images],
            text=texts,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            **extra,
        )
        batch = batch.to(self.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        return batch

    def generate(
        self, images: Sequence[Image], prompts: Sequence[str], max_new_tokens: int
    ) -> list[str]:
        """Greedy answers (special tokens dropped, whitespace stripped), one per prompt."""
        import torch

        batch = self.encode(images, prompts)
        tokenizer = self.tokenizer
        pad_id = (
            tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else (tokenizer.eos_token_id)
        )
        with torch.inference_mode():
            output = self.model.generate(
                **batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return [
            t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        ]

    def next_token_logits(self, images: Sequence[Image], prompts: Sequence[str]) -> torch.Tensor:
        """Logits of the first answer token, ``(B, vocab)`` float32 (one forward, no sampling)."""
        return self.batch_logits(self.encode(images, prompts))

    def batch_logits(self, batch: Any) -> torch.Tensor:
        """:meth:`next_token_logits` of an encoded batch (:meth:`encode`)."""
        import torch

        with torch.inference_mode():
            logits = self.model(**batch).logits
        # Left padding: the last position is the last prompt token for every row.
        return logits[:, -1, :].float()

    def encode_chunks(
        self, images: Sequence[Image], prompts: Sequence[str], size: int
    ) -> list[Any]:
        """:meth:`encode` of ``images[i:i + size]`` for each chunk, the same tensors; when every
        prompt is the same (MV asks one per phrase, for all its masks) the processor runs once
        for all of them and the batch is cut into chunks, which is the same thing without the
        processor's per-call cost: without padding, a row does not depend on the others.
        Processors whose outputs are not one row per image (flattened patches) are run per
        chunk."""
        n = len(images)
        if n > size and len(set(prompts)) == 1:
            batch = self.encode(images, prompts)
            pixels = batch.get("pixel_values")
            rows_first = all(getattr(v, "shape", (n,))[0] == n for v in batch.values()) and (
                pixels is None or pixels.ndim >= 4
            )
            if rows_first:
                return [
                    type(batch)({k: v[start : start + size] for k, v in batch.items()})
                    for start in range(0, n, size)
                ]
        return [
            self.encode(images[start : start + size], prompts[start : start + size])
            for start in range(0, n, size)
        ]
