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

    def encode(self, images: Sequence[Image], prompts: Sequence[str]) -> Any:
        """Batch of chat prompts (one image each), left-padded, on the model's device.

        ``pixel_values`` are cast to the model dtype; ``input_ids`` stay ``int64``.
        """
        texts = [
            self.processor.apply_chat_template(user_message(p), add_generation_prompt=True)
            for p in prompts
        ]
        batch = self.processor(
            images=[[image] for image in images],
            text=texts,
            padding=True,
            padding_side="left",
            return_tensors="pt",
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
        import torch

        batch = self.encode(images, prompts)
        with torch.inference_mode():
            logits = self.model(**batch).logits
        # Left padding: the last position is the last prompt token for every row.
        return logits[:, -1, :].float()
