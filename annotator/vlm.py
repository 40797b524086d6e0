"""Shared plumbing for the Llama-style vision-language backends (captioner, VLM verifier).

One loaded (processor, model) pair per checkpoint and device, through
:func:`annotator.modeling.load_pretrained` (so hub ids and local directories share one code path
and one set of error messages), and the two ways the backends use it: batched greedy generation
and next-token scores. Imports torch/transformers lazily: constructing a backend stays cheap.

Greedy generation runs a plain decoding loop with the KV cache (:meth:`VlmRuntime._greedy`)
that makes the forward calls HF ``generate(do_sample=False)`` makes, so it gives the same tokens
(tested), without ``generate``'s per-call setup; models whose generation config asks for more
than plain greedy decoding (penalties, forced tokens, beams, a static cache) use ``generate``.

Model inputs come from the HF processor, or, for processors whose inputs are token ids plus one
fixed-size ``pixel_values`` row per image (LLaVA-style), from :class:`FastInputs`: the token ids
of each prompt are taken from one processor call and reused, and the pixels of many images are
made in one batched pass. It gives exactly the processor's tensors (checked against the
processor for every new prompt; on any difference it turns itself off and the processor is
used), without the processor's per-question cost (tokenising the same prompt again, per-image
Python in the image processor). Images may be PIL images or ``(H, W, 3)`` uint8 arrays (the
verifier's renderings, made in numpy). A photo the processor resizes is resized once per image
object by the processor's own resize step and kept (:func:`_processor_resize`): the caption and
the EV questions of an image share it, and EV draws its boxes on it
(:meth:`VlmRuntime.model_sized`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL.Image import Image

    # An RGB image: PIL, or an ``(H, W, 3)`` uint8 array (renderings made in numpy).
    Picture: TypeAlias = Image | np.ndarray

__all__ = ["FastInputs", "VlmRuntime", "user_message"]

log = logging.getLogger(__name__)

# The keys a processor's output may have for the fast path to rebuild it.
_FAST_KEYS = frozenset({"input_ids", "attention_mask", "pixel_values"})
# Prompts whose token ids are kept (MV asks one prompt per phrase).
_IDS_CACHE_SIZE = 4096
# Images resized by an image processor's resize step, kept per image object: the caption and
# the EV questions of an image (on one worker, back to back) resize it once. A few batches'
# worth (~0.5 MB each at 336 x 448).
_RESIZED_CACHE_SIZE = 32
_resized: OrderedDict[tuple[Any, ...], tuple[Image, np.ndarray]] = OrderedDict()
_resized_lock = threading.Lock()


def _hw(image: Picture) -> tuple[int, int]:
    """``(height, width)`` of a PIL image or an ``(H, W, 3)`` array."""
    import numpy as np

    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    width, height = image.size
    return int(height), int(width)


def _as_pil(image: Picture) -> Image:
    """A PIL image for the processor (arrays are RGB ``uint8``: made into images as such,
    so no processor has to guess their channel axis)."""
    import numpy as np
    from PIL import Image as PILImage

    return PILImage.fromarray(image, "RGB") if isinstance(image, np.ndarray) else image


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
    # Build model inputs without running the processor per question where that gives exactly
    # the processor's tensors (see FastInputs); False: always the processor.
    fast_inputs: bool = True
    # Greedy decoding by a plain loop where it gives exactly ``generate``'s tokens (see
    # :meth:`_greedy`); False: always ``generate``.
    lean_decoding: bool = True
    _fast: FastInputs | None = field(default=None, init=False, repr=False)
    _dtype: tuple[Any, torch.dtype] | None = field(default=None, init=False, repr=False)

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

    def _already_sized(self, images: Sequence[Picture]) -> bool:
        """Whether the processor's resize would leave every image as it is (a ``shortest_edge``
        processor and images whose short side is that edge): then it is not run at all."""
        size = self.image_size()
        if not size or set(size) != {"shortest_edge"}:
            return False
        return all(min(_hw(image)) == size["shortest_edge"] for image in images)

    def model_sized(self, image: Image) -> Image | None:
        """``image`` as the processor's resize step makes it (its own resize, with its size and
        resampling: the pixels it would go on with), for drawing on at the model's resolution;
        ``None`` for processors whose resize is not one step of that kind (tiles, patches,
        padding), or that do not resize. Kept per image object (see :data:`_resized`)."""
        image_processor = getattr(self.processor, "image_processor", None)
        if image_processor is None or not _plain_pil_processor(image_processor):
            return None
        if not getattr(image_processor, "do_resize", False) or getattr(
            image_processor, "do_pad", False
        ):
            return None
        resized = _processor_resize(
            image_processor, image, image_processor.size, image_processor.resample
        )
        if resized is None:
            return None
        if resized.shape[:2] == _hw(image):
            return image
        from PIL import Image as PILImage

        return PILImage.fromarray(resized, "RGB")

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

    def encode(self, images: Sequence[Picture], prompts: Sequence[str]) -> Any:
        """Batch of chat prompts (one image each), left-padded, on the model's device.

        ``pixel_values`` are cast to the model dtype; ``input_ids`` stay ``int64``. The same
        tensors as :meth:`encode_with_processor`, made by :class:`FastInputs` where it applies.
        """
        texts = [self.chat_text(p) for p in prompts]
        extra = {"do_resize": False} if self._already_sized(images) else {}
        batch = None
        if self.fast_inputs:
            if self._fast is None:
                self._fast = FastInputs(self.processor)
            batch = self._fast.encode(images, texts, extra)
        if batch is None:
            batch = self._processor_encode(images, texts, extra)
        return self._to_device(batch)

    def encode_with_processor(self, images: Sequence[Picture], prompts: Sequence[str]) -> Any:
        """:meth:`encode` through the HF processor alone (the reference the fast path equals)."""
        texts = [self.chat_text(p) for p in prompts]
        extra = {"do_resize": False} if self._already_sized(images) else {}
        return self._to_device(self._processor_encode(images, texts, extra))

    def _processor_encode(
        self, images: Sequence[Picture], texts: Sequence[str], extra: Mapping[str, Any]
    ) -> Any:
        return self.processor(
            images=[[_as_pil(image)] for image in images],
            text=list(texts),
            padding=True,
            padding_side="left",
            return_tensors="pt",
            **extra,
        )

    def _to_device(self, batch: Any) -> Any:
        batch = batch.to(self.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model_dtype())
        return batch

    def model_dtype(self) -> torch.dtype:
        """``model.dtype`` (its first floating-point parameter's), kept for this model object:
        transformers walks the parameters for it on every call, once per batch here."""
        cached = self._dtype
        if cached is None or cached[0] is not self.model:
            cached = self._dtype = (self.model, self.model.dtype)
        return cached[1]

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
            new_tokens = self._greedy(batch, max_new_tokens, pad_id) if self.lean_decoding else None
            if new_tokens is None:
                output = self.model.generate(
                    **batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id
                )
                new_tokens = output[:, batch["input_ids"].shape[1] :]
        return [
            t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        ]

    def generate_with_hf(
        self, images: Sequence[Image], prompts: Sequence[str], max_new_tokens: int
    ) -> list[str]:
        """:meth:`generate` through HF ``generate`` alone (the reference the lean loop equals)."""
        lean, self.lean_decoding = self.lean_decoding, False
        try:
            return self.generate(images, prompts, max_new_tokens)
        finally:
            self.lean_decoding = lean

    def _greedy(self, batch: Any, max_new_tokens: int, pad_id: int | None) -> torch.Tensor | None:
        """The new tokens ``(B, steps)`` of HF ``generate(do_sample=False)`` for this batch, by
        a plain decoding loop with the KV cache: the same forward calls with the same inputs
        (position ids from the attention mask, the mask dropped when it is all ones, logits of
        the last position only, finished rows padded, stop at EOS or ``max_new_tokens``), so
        the same tokens, without ``generate``'s per-call setup (config copies and validation,
        signature inspection, logits processors, stopping criteria objects) and per-step input
        preparation: ~3 ms per call on the CPU. ``None`` when the model's generation config
        asks for anything besides plain greedy decoding (:func:`_lean_plan`): then ``generate``
        runs."""
        import torch

        plan = self.__dict__.get("_lean_plan", _UNSET)
        if plan is _UNSET:
            plan = self.__dict__["_lean_plan"] = _lean_plan(self.model)
        if plan is None:
            return None
        input_ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None or attention_mask.ndim != 2:
            return None  # generate would infer the mask from the pad token: let it
        rows = input_ids.shape[0]
        inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        positions = attention_mask.long().cumsum(-1) - 1
        positions = positions.masked_fill(attention_mask == 0, 0)
        if bool((attention_mask == 1).all()):
            attention_mask = None  # as generate: no padding, no mask
        eos = None if plan.eos is None else plan.eos.to(input_ids.device)
        pad = torch.tensor(pad_id if pad_id is not None else 0, device=input_ids.device)
        cache = plan.new_cache()
        unfinished = torch.ones(rows, dtype=torch.bool, device=input_ids.device)
        tokens: list[torch.Tensor] = []
        step_ids = input_ids
        for step in range(max_new_tokens):
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention_mask,
                position_ids=positions,
                **{plan.cache_argument: cache},
                use_cache=True,
                return_dict=True,
                **plan.extra,
                **inputs,
            )
            cache = getattr(out, plan.cache_argument)
            next_ids = out.logits[:, -1].to(dtype=torch.float32).argmax(dim=-1)
            if eos is not None:
                next_ids = torch.where(unfinished, next_ids, pad)
                unfinished &= ~torch.isin(next_ids, eos)
            tokens.append(next_ids)
            if step + 1 == max_new_tokens or (eos is not None and not bool(unfinished.any())):
                break
            step_ids = next_ids[:, None]
            positions = positions[:, -1:] + 1
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones((rows, 1))], 1)
            inputs = {}  # the image is in the cache after the first step
        if not tokens:
            return input_ids.new_zeros((rows, 0))
        return torch.stack(tokens, dim=1)

    def next_token_logits(self, images: Sequence[Picture], prompts: Sequence[str]) -> torch.Tensor:
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
        self, images: Sequence[Picture], prompts: Sequence[str], size: int
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
        if n > size:
            self._learn_prompts(images, prompts, size)
        return [
            self.encode(images[start : start + size], prompts[start : start + size])
            for start in range(0, n, size)
        ]

    def _learn_prompts(self, images: Sequence[Picture], prompts: Sequence[str], size: int) -> None:
        """Before :meth:`encode_chunks` encodes chunk by chunk: the prompts new to the fast path
        learnt in one processor call for the whole call (per image setting: the chunks'
        ``do_resize``), not in one per chunk that asks a new one."""
        if not self.fast_inputs:
            return
        if self._fast is None:
            self._fast = FastInputs(self.processor)
        groups: dict[bool, tuple[list[Picture], list[str]]] = {}
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            group = groups.setdefault(self._already_sized(chunk), ([], []))
            group[0].extend(chunk)
            group[1].extend(self.chat_text(p) for p in prompts[start : start + size])
        for sized, (group_images, texts) in groups.items():
            self._fast.learn(group_images, texts, {"do_resize": False} if sized else {})


_UNSET: Any = object()
# Generation config fields that plain greedy decoding may carry: token ids, sampling settings
# (unused without sampling), lengths (set per call), bookkeeping; and fields whose values here
# leave greedy decoding plain. Any other field that differs from its default (a repetition
# penalty, forced or suppressed tokens, a static cache, beams, ...) makes ``generate`` build
# something the lean loop does not rebuild: it is not used then.
_PLAIN_GENERATION_FIELDS = frozenset(
    {
        "bos_token_id", "eos_token_id", "pad_token_id", "do_sample", "temperature", "top_k",
        "top_p", "min_p", "typical_p", "max_length", "max_new_tokens", "transformers_version",
        "_from_model_config",
    }
)  # fmt: skip
_PLAIN_GENERATION_VALUES: dict[str, tuple[Any, ...]] = {
    "use_cache": (True,),
    "cache_implementation": ("dynamic",),
    "num_beams": (1,),
    "num_return_sequences": (1,),
    "min_length": (0,),
    "min_new_tokens": (0,),
    "repetition_penalty": (1.0,),
    "length_penalty": (1.0,),
    "output_attentions": (False,),
    "output_hidden_states": (False,),
    "output_scores": (False,),
    "output_logits": (False,),
    "return_dict_in_generate": (False,),
    "renormalize_logits": (False,),
    "remove_invalid_values": (False,),
    "token_healing": (False,),
    "is_assistant": (False,),
}


@dataclass(frozen=True)
class _LeanPlan:
    """What :meth:`VlmRuntime._greedy` needs of a model (worked out once per model)."""

    eos: torch.Tensor | None
    extra: dict[str, Any]
    cache_config: Any
    # The forward's name for the KV cache, in and out: ``past_key_values``, or ``cache`` in
    # newer transformers (5.25 here; the old name there only a deprecated alias).
    cache_argument: str = "past_key_values"

    def new_cache(self) -> Any:
        """An empty cache, as ``generate`` makes it for a dynamic cache."""
        from transformers import DynamicCache

        return DynamicCache(config=self.cache_config)


def _lean_plan(model: Any) -> _LeanPlan | None:
    """A decoder-only model whose ``generate(do_sample=False)`` is plain greedy decoding with a
    dynamic KV cache: its EOS ids and the forward's extra arguments; ``None`` otherwise."""
    import inspect

    import torch
    from transformers import GenerationConfig

    config = getattr(model, "config", None)
    generation = getattr(model, "generation_config", None)
    if config is None or generation is None or getattr(config, "is_encoder_decoder", False):
        return None
    try:
        parameters = set(inspect.signature(model.forward).parameters)
        ours = generation.to_dict()
        defaults = GenerationConfig().to_dict()
    except (TypeError, ValueError):
        return None
    cache_argument = next((n for n in ("cache", "past_key_values") if n in parameters), None)
    if cache_argument is None or not {"position_ids", "attention_mask"} <= parameters:
        return None
    if "use_cache" not in parameters and "kwargs" not in parameters:
        return None
    for key in ours.keys() | defaults.keys():
        value = ours.get(key)
        if value == defaults.get(key) or key in _PLAIN_GENERATION_FIELDS:
            continue
        if value is None or value in _PLAIN_GENERATION_VALUES.get(key, ()):
            continue
        return None
    eos_ids = ours.get("eos_token_id")
    if isinstance(eos_ids, int):
        eos_ids = [eos_ids]
    eos = torch.tensor(list(eos_ids), dtype=torch.long) if eos_ids else None
    # generate computes the logits of the last position only where the model can.
    extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    return _LeanPlan(
        eos=eos,
        extra=extra,
        cache_config=config.get_text_config(decoder=True),
        cache_argument=cache_argument,
    )


class FastInputs:
    """A processor's model inputs for one-image chat prompts, without running it per question.

    Applies to processors whose output is ``input_ids``, ``attention_mask`` and one
    ``pixel_values`` row per image (``(B, C, H, W)``), where a prompt's token ids depend on the
    image only through that row's size (LLaVA: a fixed number of image tokens per crop):

    * token ids: one processor call per (chat text, pixel size), on the first image that needs
      it; kept (up to 4096 prompts) and left-padded as the tokenizer pads;
    * pixels: for the PIL/numpy image processors whose steps are centre crop, rescale and
      normalise (LLaVA, CLIP) and images already at the model's size, those steps in numpy on
      the whole batch at once (the same operations in the same dtypes: the same values); else
      the processor's image part alone, on the whole batch.

    Every new prompt's processor call is also a check: its ``pixel_values`` must equal this
    class's for the same image, and its keys must be the ones above. On any difference the fast
    path turns itself off for good (logged) and :meth:`encode` returns ``None``: the caller uses
    the processor.
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.enabled = True
        self._ids: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def encode(
        self, images: Sequence[Picture], texts: Sequence[str], extra: Mapping[str, Any]
    ) -> Any | None:
        """The processor's output for these (image, chat text) rows (CPU tensors), or ``None``
        when this processor or batch is not one the fast path rebuilds exactly."""
        import numpy as np
        import torch
        from transformers import BatchFeature

        if not self.enabled or not images or len(images) != len(texts):
            return None
        pixels = self.pixel_values(images, extra)
        if pixels is None:
            return None
        shape = tuple(pixels.shape[1:])
        # The new prompts of the batch (first row asking each), learnt in one processor call.
        new: dict[str, int] = {}
        for index, text in enumerate(texts):
            if (text, shape) not in self._ids:
                new.setdefault(text, index)
        if new and not self._learn(
            [images[i] for i in new.values()], list(new), extra, pixels[list(new.values())]
        ):
            return None
        rows = [self._ids[(text, shape)] for text in texts]
        length = max(r.size for r in rows)
        pad_id = self.processor.tokenizer.pad_token_id
        if pad_id is None and any(r.size != length for r in rows):
            return None  # the tokenizer would refuse to pad: let it say so
        # Left-padded rows, as the tokenizer pads them.
        input_ids = np.full((len(rows), length), pad_id or 0, dtype=np.int64)
        attention = np.zeros((len(rows), length), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, length - row.size :] = row
            attention[i, length - row.size :] = 1
        return BatchFeature(
            {
                "input_ids": torch.from_numpy(input_ids),
                "attention_mask": torch.from_numpy(attention),
                "pixel_values": pixels,
            }
        )

    def learn(
        self, images: Sequence[Picture], texts: Sequence[str], extra: Mapping[str, Any]
    ) -> None:
        """Learn the texts not known yet (on the first image asking each) in one processor
        call, as :meth:`encode` would for a batch of them: later :meth:`encode` calls on parts
        of these rows find them known. Does nothing where the fast path does not apply (then
        :meth:`encode` says so)."""
        if not self.enabled or not images or len(images) != len(texts):
            return
        first: dict[str, int] = {}
        for index, text in enumerate(texts):
            first.setdefault(text, index)
        pixels = self.pixel_values([images[i] for i in first.values()], extra)
        if pixels is None:
            return
        shape = tuple(pixels.shape[1:])
        new = [j for j, text in enumerate(first) if (text, shape) not in self._ids]
        if new:
            candidates = list(first.items())
            self._learn(
                [images[candidates[j][1]] for j in new],
                [candidates[j][0] for j in new],
                extra,
                pixels[new],
            )

    def pixel_values(self, images: Sequence[Picture], extra: Mapping[str, Any]) -> Any | None:
        """``(B, C, H, W)`` float32 pixel values of the images, as the processor makes them."""
        import torch

        array = _numpy_pixels(self.processor.image_processor, images, extra)
        if array is not None:
            return torch.from_numpy(array)
        try:
            out = self.processor(
                images=[[_as_pil(image)] for image in images], return_tensors="pt", **extra
            )
        except Exception as exc:  # a processor that wants text with its images, ragged sizes
            self._disable(f"its image part alone fails ({type(exc).__name__}: {exc})")
            return None
        pixels = out.get("pixel_values")
        if set(out) != {"pixel_values"} or pixels is None or pixels.ndim != 4:
            self._disable(f"its image part gives {sorted(out)}, not one pixel row per image")
            return None
        if pixels.shape[0] != len(images):
            self._disable("its image part gives not one pixel row per image")
            return None
        return pixels

    def _disable(self, problem: str) -> None:
        self.enabled = False
        log.warning(
            "%s: building model inputs without the processor is off (%s); using the processor "
            "for every question",
            type(self.processor).__name__,
            problem,
        )

    def _learn(
        self,
        images: Sequence[Picture],
        texts: Sequence[str],
        extra: Mapping[str, Any],
        pixels: torch.Tensor,
    ) -> bool:
        """Learn the token ids of ``texts`` (new prompts, one image each, ``pixels`` their rows
        of the fast path) from one processor call, after checking that the call's output is
        what this class rebuilds: the same pixels, and each row's ids as the tokenizer pads a
        batch (left, to the longest row). Several prompts share the call (the processor's
        per-call cost is most of it); a row's ids do not depend on the others'. False (and
        disabled) on any difference."""
        import numpy as np
        import torch

        pad_id = self.processor.tokenizer.pad_token_id
        if len(texts) > 1 and pad_id is None:  # the tokenizer cannot pad: one call each
            return all(
                self._learn([image], [text], extra, pixels[i : i + 1])
                for i, (image, text) in enumerate(zip(images, texts, strict=True))
            )
        many = {"padding": True, "padding_side": "left"} if len(texts) > 1 else {}
        reference = self.processor(
            images=[[_as_pil(image)] for image in images],
            text=list(texts),
            return_tensors="pt",
            **many,
            **extra,
        )
        problem = None
        if set(reference) != _FAST_KEYS:
            problem = f"its inputs are {sorted(reference)}"
        elif not torch.equal(reference["pixel_values"], pixels):
            problem = "its pixel values differ from the fast path's"
        else:
            mask = reference["attention_mask"].numpy()
            ids = reference["input_ids"].numpy().astype(np.int64)
            lengths = mask.sum(axis=1)
            # Each row: pads, then its tokens (left padding), and the longest row unpadded.
            shapes_ok = all(
                bool((mask[r, mask.shape[1] - n :] == 1).all())
                and bool((ids[r, : mask.shape[1] - n] == pad_id).all())
                for r, n in enumerate(lengths.tolist())
            )
            if not shapes_ok or int(lengths.max()) != mask.shape[1]:
                problem = "its attention mask is not all ones"
        if problem is not None:
            self._disable(problem)
            return False
        if len(self._ids) + len(texts) > _IDS_CACHE_SIZE:
            self._ids.clear()
        shape = tuple(pixels.shape[1:])
        for r, (text, n) in enumerate(zip(texts, lengths.tolist(), strict=True)):
            self._ids[(text, shape)] = np.ascontiguousarray(ids[r, ids.shape[1] - n :])
        return True


def _plain_pil_processor(image_processor: Any) -> bool:
    """Whether this is a transformers PIL/numpy image processor whose preprocessing is the
    base ``PilBackend`` one or LLaVA's (``pad -> resize -> center_crop -> rescale ->
    normalize``, one image at a time): the pipeline :func:`_numpy_pixels` rebuilds."""
    try:
        from transformers.image_processing_backends import PilBackend
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    except ImportError:  # pragma: no cover - other transformers versions: use the processor
        return False
    preprocess = getattr(type(image_processor), "_preprocess", None)
    return isinstance(image_processor, PilBackend) and preprocess in (
        PilBackend._preprocess,
        LlavaImageProcessorPil._preprocess,
    )


def _processor_resize(
    image_processor: Any, image: Image, size: Any, resample: Any
) -> np.ndarray | None:
    """``(H, W, 3)`` uint8: an RGB PIL image resized by the image processor's own ``resize``
    with these settings, as its preprocessing calls it (channels first); ``None`` when that
    fails. Kept per image object and settings (:data:`_resized`)."""
    import numpy as np

    key = (id(image), image.size, type(image_processor), repr(size), repr(resample))
    with _resized_lock:
        hit = _resized.get(key)
        if hit is not None and hit[0] is image:
            _resized.move_to_end(key)
            return hit[1]
    pixels = _pil_resize(image, size, resample)
    if pixels is None:
        try:
            channels_first = np.asarray(image).transpose(2, 0, 1)
            resized = image_processor.resize(image=channels_first, size=size, resample=resample)
        except Exception as exc:  # a size config its resize does not take
            log.debug("%s resize: %s", type(image_processor).__name__, exc)
            return None
        if resized.ndim != 3 or resized.shape[0] != 3 or resized.dtype != np.uint8:
            return None
        pixels = np.ascontiguousarray(resized.transpose(1, 2, 0))
    with _resized_lock:
        # The image is held with its pixels: its id cannot be reused while the entry lives.
        _resized[key] = (image, pixels)
        _resized.move_to_end(key)
        while len(_resized) > _RESIZED_CACHE_SIZE:
            _resized.popitem(last=False)
    return pixels


def _pil_resize(image: Image, size: Any, resample: Any) -> np.ndarray | None:
    """What the PIL image processors' resize step does to an RGB PIL image for the two size
    configs it is commonly given (``shortest_edge`` alone; ``height`` and ``width``), without
    its conversions to and from channels-first arrays: the output size by transformers' own
    rule, then ``Image.resize`` with the same resampling (the step converts its uint8 array
    back to this very image first). ``None`` for other configs."""
    import numpy as np
    from PIL import Image as PILImage
    from transformers.image_transforms import get_resize_output_image_size
    from transformers.image_utils import ChannelDimension

    try:
        fields = {k: v for k, v in dict(size).items() if v}
    except (TypeError, ValueError):
        return None
    if resample is None or not isinstance(resample, int):  # PILImageResampling is an int
        return None
    width, height = image.size
    if set(fields) == {"shortest_edge"}:
        shape = np.broadcast_to(np.uint8(0), (3, height, width))  # only its shape is read
        new_height, new_width = get_resize_output_image_size(
            shape,
            size=fields["shortest_edge"],
            default_to_square=False,
            input_data_format=ChannelDimension.FIRST,
        )
    elif set(fields) == {"height", "width"}:
        new_height, new_width = fields["height"], fields["width"]
    else:
        return None
    resized = image.resize(
        (int(new_width), int(new_height)), resample=PILImage.Resampling(resample)
    )
    return np.asarray(resized)


def _numpy_pixels(
    image_processor: Any, images: Sequence[Picture], extra: Mapping[str, Any]
) -> np.ndarray | None:
    """``(B, C, H, W)`` float32 pixel values of the transformers PIL/numpy image processor's
    ``resize -> center_crop -> rescale -> normalize`` pipeline (the base ``PilBackend`` one and
    LLaVA's) for RGB images (PIL, or ``(H, W, 3)`` uint8 arrays), made for the whole batch at
    once with the same numpy operations in the same dtypes; the resize, where the processor
    resizes, by its own resize step on each PIL image (kept per image: see
    :func:`_processor_resize`). ``None`` when any of that does not hold."""
    import numpy as np

    if not _plain_pil_processor(image_processor):
        return None

    def setting(name: str) -> Any:
        return extra.get(name, getattr(image_processor, name, None))

    if setting("do_pad"):
        return None
    arrays: list[np.ndarray] = []
    for image in images:
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                return None
            if setting("do_resize"):
                return None  # renderings are made at the model's size
            arrays.append(image)
        elif image.mode != "RGB":
            return None
        elif setting("do_resize"):
            resized = _processor_resize(
                image_processor, image, setting("size"), setting("resample")
            )
            if resized is None:
                return None
            arrays.append(resized)
        else:
            arrays.append(np.asarray(image))
    if setting("do_center_crop"):
        height, width = _height_width(setting("crop_size"))
        if not height or not width:
            return None
        cropped = []
        for array in arrays:
            h, w = array.shape[:2]
            top, left = (h - height) // 2, (w - width) // 2
            if top < 0 or left < 0:
                return None  # the processor pads a too-small image: not rebuilt here
            cropped.append(array[top : top + height, left : left + width])
        arrays = cropped
    if len({a.shape for a in arrays}) != 1:
        return None
    table = _pixel_table(setting, arrays[0].shape[-1])
    if table is None:
        return None
    # (B, C, H, W): each value is the processor's element-wise steps applied to one uint8 of
    # one channel, so it is read off the table of all 256 levels per channel (the same float32
    # values as running the steps on the batch, without its float64 and float32 temporaries).
    levels = np.stack(arrays).transpose(0, 3, 1, 2)
    out = np.empty(levels.shape, dtype=np.float32)
    for channel in range(levels.shape[1]):
        np.take(table[channel], levels[:, channel], out=out[:, channel])
    return out


# Per-channel lookup tables of the processors' rescale/normalize steps (see _pixel_table).
_pixel_tables: dict[tuple[Any, ...], np.ndarray] = {}


def _pixel_table(setting: Callable[[str], Any], channels: int) -> np.ndarray | None:
    """``(channels, 256)`` float32: what the processor's ``rescale -> normalize`` steps make of
    each uint8 level in each channel, computed by those steps (the same numpy operations in the
    same dtypes, element-wise) on an image holding every level; ``None`` when the mean or std
    is not one number per channel."""
    import numpy as np

    rescale, normalize = bool(setting("do_rescale")), bool(setting("do_normalize"))
    mean = std = None
    if normalize:
        mean = _per_channel(setting("image_mean"), channels)
        std = _per_channel(setting("image_std"), channels)
        if mean is None or std is None:
            return None
    factor: Any = setting("rescale_factor") if rescale else None
    key = (rescale, factor, normalize, tuple(mean or ()), tuple(std or ()), channels)
    table = _pixel_tables.get(key)
    if table is not None:
        return table
    # (1, 256, 1, C): every level in every channel, laid out as (B, H, W, C) images are.
    levels = np.broadcast_to(
        np.arange(256, dtype=np.uint8)[None, :, None, None], (1, 256, 1, channels)
    )
    values: np.ndarray
    if rescale:
        # transformers' rescale: the float64 product, then float32.
        values = (levels.astype(np.float64) * factor).astype(np.float32)
    else:
        values = levels.astype(np.float32)
    if normalize:
        assert mean is not None and std is not None
        # transformers' normalize: (x - mean) / std, mean and std in the image's float dtype.
        values = (values - np.asarray(mean, dtype=values.dtype)) / np.asarray(
            std, dtype=values.dtype
        )
    table = np.ascontiguousarray(values[0, :, 0, :].T)
    if len(_pixel_tables) >= 16:
        _pixel_tables.clear()
    _pixel_tables[key] = table
    return table


def _height_width(size: Any) -> tuple[int | None, int | None]:
    """``(height, width)`` of a size config (a dict or transformers' ``SizeDict``)."""
    if isinstance(size, Mapping):
        return size.get("height"), size.get("width")
    return getattr(size, "height", None), getattr(size, "width", None)


def _per_channel(value: Any, channels: int) -> list[float] | None:
    if isinstance(value, int | float):
        return [float(value)] * channels
    try:
        values = [float(v) for v in value]
    except TypeError:
        return None
    return values if len(values) == channels else None
