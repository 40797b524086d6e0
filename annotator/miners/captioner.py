"""Captioner: a Llama-style vision-language model describes every visible object (``"vlm"``).

The default checkpoint is ``settings.captioner_model`` (Llama 3.2 Vision Instruct); any
image-text-to-text checkpoint with a chat template works, from the hub or a local directory.
Decoding is greedy and bounded, so a caption is a deterministic function of (image, checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from annotator.backends import LazyModelBackend
from annotator.config import get_settings
from annotator.images import ensure_rgb

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

    from annotator.vlm import VlmRuntime

__all__ = ["CAPTION_PROMPT", "VlmCaptioner"]

CAPTION_PROMPT = (
    "Describe this image in detail. Name every visible object, person, animal and surface, "
    "including small and partly hidden ones and ones in the background, each with its colour, "
    "material or pattern when visible. Use plain sentences; do not guess at things you cannot see."
)


class VlmCaptioner(LazyModelBackend):
    """Detailed captions from an image-text-to-text model.

    Args:
        model: hub id or local directory (default ``settings.captioner_model``).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (default ``settings.device``).
        dtype: model dtype (default bf16 on CUDA, fp32 on CPU).
        batch_size: images per ``generate`` call (left-padded prompts).
        max_new_tokens: bound on caption length.
        prompt: the instruction (default :data:`CAPTION_PROMPT`).

    Use as a context manager::

        with VlmCaptioner() as captioner:
            captions = captioner.caption(images)
    """

    name = "vlm"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 4,
        max_new_tokens: int = 192,
        prompt: str = CAPTION_PROMPT,
    ) -> None:
        settings = get_settings()
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be at least 1")
        self.source = model or settings.captioner_model
        self.device_setting = device or settings.device
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt
        self._runtime: VlmRuntime | None = None

    def load(self) -> None:
        """Load the processor and model (once per process; idempotent)."""
        if self._runtime is None:
            from annotator.vlm import VlmRuntime

            self._runtime = VlmRuntime.load(
                self.source, self.device_setting, self.dtype, what="captioner"
            )

    def release(self) -> None:
        self._runtime = None

    def caption(self, images: Sequence[Image]) -> list[str]:
        """One caption per image, in order (batches of ``batch_size``)."""
        return self._caption(images, self.batch_size)

    def caption_looped(self, images: Sequence[Image]) -> list[str]:
        """Same captions, one image per ``generate`` call (for tests and benchmarks)."""
        return self._caption(images, 1)

    def _caption(self, images: Sequence[Image], batch_size: int) -> list[str]:
        self.load()
        assert self._runtime is not None
        captions: list[str] = []
        for start in range(0, len(images), batch_size):
            batch = [ensure_rgb(image) for image in images[start : start + batch_size]]
            captions.extend(
                self._runtime.generate(batch, [self.prompt] * len(batch), self.max_new_tokens)
            )
        return captions
