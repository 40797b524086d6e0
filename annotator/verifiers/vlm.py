"""VLM verifier (``"vlm"``): mask verification (MV) and exhaustivity verification (EV) as
multiple-choice questions to a Llama-style vision-language model.

The answer is read from the next-token distribution, not from sampled text: one forward pass,
softmax over the option letters' token ids (``A``, ``B``, ...), ``p_accept`` = the probability
mass of the accepting options, ``label`` = the most likely option. The options follow the SAM 3
data engine (arXiv 2511.16719, §4 and A.4):

* MV: Accept / Accept as text / Flag label / Whole image / Reject.
* EV with masks: Accept (every instance is boxed) / Reject (an instance is missing) /
  Reject-unseparated / Flag label / Whole image / Ungroundable.
* EV without masks (the proposer found nothing): Accept (the phrase is absent, a verified
  negative) / Reject (it is present) / Flag label / Ungroundable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from annotator import masks as mask_ops
from annotator.backends import LazyModelBackend, MaskQuery, PairQuery, Verdict
from annotator.config import get_settings
from annotator.errors import ModelLoadError
from annotator.images import ensure_rgb
from annotator.verifiers.render import MaskRenderer, draw_boxes, render_height, scale_boxes

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL.Image import Image

    from annotator.vlm import Picture, VlmRuntime

__all__ = ["EV_ABSENT_OPTIONS", "EV_OPTIONS", "MV_OPTIONS", "Option", "VlmVerifier"]


@dataclass(frozen=True)
class Option:
    """One answer of a multiple-choice question: its label, text, and whether it accepts."""

    label: str
    text: str
    accepts: bool


MV_OPTIONS: tuple[Option, ...] = (
    Option("accept", "Accept: the mask covers exactly one whole instance of the phrase", True),
    Option("accept_as_text", "Accept as text: the mask is a written word or sign of it", True),
    Option("flag_label", "Flag label: the phrase is ambiguous or wrong for what is shown", False),
    Option("whole_image", "Whole image: the phrase describes the whole image", False),
    Option("reject", "Reject: wrong object, part of an object, or several objects", False),
)
EV_OPTIONS: tuple[Option, ...] = (
    Option("accept", "Accept: every instance of the phrase has its own box", True),
    Option("reject", "Reject: at least one instance has no box", False),
    Option("reject_unseparated", "Reject: instances cannot be told apart one by one", False),
    Option("flag_label", "Flag label: the phrase is ambiguous or wrong", False),
    Option("whole_image", "Whole image: the phrase describes the whole image", False),
    Option("ungroundable", "Ungroundable: the phrase cannot be pointed at in an image", False),
)
EV_ABSENT_OPTIONS: tuple[Option, ...] = (
    Option("accept", "Accept: there is no instance of the phrase in the image", True),
    Option("reject", "Reject: the phrase is present in the image", False),
    Option("flag_label", "Flag label: the phrase is ambiguous or wrong", False),
    Option("ungroundable", "Ungroundable: the phrase cannot be pointed at in an image", False),
)
LETTERS = "ABCDEF"  # enough for the longest question (EV, six options)


def _question(header: str, options: Sequence[Option]) -> str:
    lines = [header, ""]
    lines += [f"{LETTERS[i]}. {option.text}" for i, option in enumerate(options)]
    lines += ["", "Answer with the letter of one option."]
    return "\n".join(lines)


def mv_prompt(phrase: str) -> str:
    """The MV question for the rendering of :func:`render_mask_query`."""
    return _question(
        f"Left: a photo with one region filled in green and outlined in yellow. Right: a zoomed "
        f'view of the same region. Is the highlighted region one whole instance of "{phrase}"?',
        MV_OPTIONS,
    )


def ev_prompt(phrase: str, n_boxes: int) -> str:
    """The EV question: exhaustivity with boxes drawn, or absence when there are none."""
    if n_boxes == 0:
        return _question(
            f'A detector found no "{phrase}" in this photo. Is "{phrase}" really absent?',
            EV_ABSENT_OPTIONS,
        )
    return _question(
        f'The photo shows {n_boxes} red box(es), each meant to contain one "{phrase}". '
        f'Does every "{phrase}" in the photo have its own box?',
        EV_OPTIONS,
    )


class VlmVerifier(LazyModelBackend):
    """MV/EV verifier on an image-text-to-text model (default ``settings.verifier_model``).

    Args:
        model: hub id or local directory.
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (default ``settings.device``).
        dtype: model dtype (default bf16 on CUDA, fp32 on CPU).
        batch_size: questions per forward pass (left-padded).
        crop_context: margin of the MV zoomed crop, as a fraction of the mask box size.
        fast_inputs: build the model inputs without running the HF processor per question
            where that gives exactly the processor's tensors (:class:`annotator.vlm.FastInputs`);
            ``False``: the processor for every question.
    """

    name = "vlm"
    # MV looks at the rendered mask only: the pipeline need not compute proposal features
    # (FeaturedMaskQuery) for it.
    reads_features = False

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 8,
        crop_context: float = 0.5,
        fast_inputs: bool = True,
    ) -> None:
        settings = get_settings()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.source = model or settings.verifier_model
        self.device_setting = device or settings.device
        self.dtype = dtype
        self.batch_size = batch_size
        self.crop_context = crop_context
        self.fast_inputs = fast_inputs
        self._runtime: VlmRuntime | None = None
        self._letter_ids: dict[str, list[int]] | None = None
        self._letter_tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def load(self) -> None:
        """Load processor and model; resolve the option letters' token ids."""
        if self._runtime is not None:
            return
        from annotator.vlm import VlmRuntime

        runtime = VlmRuntime.load(self.source, self.device_setting, self.dtype, what="verifier")
        runtime.fast_inputs = self.fast_inputs
        self._letter_ids = _letter_token_ids(runtime.tokenizer, self.source)
        self._letter_tables.clear()
        self._runtime = runtime

    def release(self) -> None:
        self._runtime = None

    # -- questions -------------------------------------------------------------------------------

    def mask_inputs(self, query: MaskQuery) -> tuple[Image, str]:
        """The image and prompt the model sees for one MV query."""
        from PIL import Image as PILImage

        rendering, prompt = self._mask_inputs([query])[0]
        return PILImage.fromarray(rendering, "RGB"), prompt

    def _render_height(self, image: Image) -> int | None:
        """The MV rendering's height for this model's image processor (see
        :func:`~annotator.verifiers.render.render_height`): rendered at the size the model
        takes, the processor does not resize it again."""
        self.load()
        assert self._runtime is not None
        return render_height(self._runtime.image_size(), image.size)

    def _mask_inputs(self, queries: Sequence[MaskQuery]) -> list[tuple[np.ndarray, str]]:
        """MV inputs (renderings as ``(H, W, 3)`` uint8 arrays, in query order): the masks of
        one image are rendered together by its renderer (the image is read and scaled once,
        the masks are never decoded at full resolution: see
        :meth:`~annotator.verifiers.render.MaskRenderer.render_rles`)."""
        by_image: dict[int, list[int]] = {}
        for index, query in enumerate(queries):
            by_image.setdefault(id(query.image), []).append(index)
        renderings: dict[int, np.ndarray] = {}
        for indices in by_image.values():
            image = ensure_rgb(queries[indices[0]].image)
            renderer = MaskRenderer(
                image, height=self._render_height(image), context=self.crop_context
            )
            rendered = renderer.render_rles([queries[i].mask for i in indices])
            renderings.update(zip(indices, rendered, strict=True))
        prompts: dict[str, str] = {}
        out: list[tuple[np.ndarray, str]] = []
        for index, query in enumerate(queries):
            rendering = renderings[index]
            prompt = prompts.get(query.phrase)
            if prompt is None:
                prompt = prompts[query.phrase] = mv_prompt(query.phrase)
            out.append((rendering, prompt))
        return out

    def pair_inputs(self, query: PairQuery) -> tuple[Image, str]:
        """The image and prompt the model sees for one EV query: the boxes are drawn at the
        size the model sees the image (the processor's own resize of it, done once per image:
        see :meth:`~annotator.vlm.VlmRuntime.model_sized`), so a 2-pixel box stays 2 pixels
        wide there, as MV's outlines do; at full resolution for processors that do not resize
        in one step."""
        self.load()
        assert self._runtime is not None
        image = ensure_rgb(query.image)
        boxes = mask_ops.bboxes(query.masks)
        prompt = ev_prompt(query.phrase, len(boxes))
        sized = self._runtime.model_sized(image)
        if sized is None:
            return draw_boxes(image, boxes.tolist()), prompt
        return draw_boxes(sized, scale_boxes(boxes, image.size, sized.size)), prompt

    def verify_masks(self, queries: Sequence[MaskQuery]) -> list[Verdict]:
        """MV verdicts; ``p_accept`` = P(Accept) + P(Accept as text) among the option letters."""
        inputs = self._mask_inputs(queries)
        return self._ask(inputs, [MV_OPTIONS] * len(inputs))

    def verify_pairs(self, queries: Sequence[PairQuery]) -> list[Verdict]:
        """EV verdicts; ``p_accept`` = P(Accept): exhaustive (with masks) or absent (without)."""
        inputs = [self.pair_inputs(q) for q in queries]
        options = [EV_OPTIONS if q.masks else EV_ABSENT_OPTIONS for q in queries]
        return self._ask(inputs, options)

    def option_probabilities(
        self, images: Sequence[Picture], prompts: Sequence[str], n_options: Sequence[int]
    ) -> list[list[float]]:
        """Per question, the softmax over its option letters of the next-token logits.

        A letter with several single-token spellings (``"A"``, ``" A"``) gets their summed mass.
        """
        import torch

        self.load()
        assert self._runtime is not None and self._letter_ids is not None
        counts = list(n_options)
        if not images:
            return []
        width = max(counts)
        # Per batch, only the option letters' logits (rows, letters, spellings); the rest
        # for all questions at once (per row the same operations: the same values, in a few
        # tensor operations per call instead of per batch).
        spelled: list[torch.Tensor] = []
        for batch in self._runtime.encode_chunks(images, prompts, self.batch_size):
            logits = self._runtime.batch_logits(batch)
            index, _ = self._letter_table(logits.device)
            spelled.append(logits[:, index[:width]])
        # Each letter's spellings' log-mass (a letter with fewer spellings is padded with
        # -inf: no mass).
        _, padding = self._letter_table(spelled[0].device)
        per_letter = torch.logsumexp(torch.cat(spelled) + padding[:width], dim=2)
        out: list[list[float]] = [[] for _ in counts]
        for count in set(counts):  # the questions with this many options, together
            picked = [r for r, c in enumerate(counts) if c == count]
            probs = torch.softmax(per_letter[picked, :count], dim=1).tolist()
            for r, row in zip(picked, probs, strict=True):
                out[r] = row
        return out

    def _letter_table(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The option letters' token ids as ``(letters, spellings)`` int64, padded by repeating
        a letter's first id, and ``(letters, spellings)`` float32: 0, or -inf at padding."""
        import torch

        assert self._letter_ids is not None
        table = self._letter_tables.get(device)
        if table is None:
            ids = [self._letter_ids[letter] for letter in LETTERS]
            width = max(len(i) for i in ids)
            index = torch.tensor([i + [i[0]] * (width - len(i)) for i in ids], device=device)
            padding = torch.tensor(
                [[0.0] * len(i) + [float("-inf")] * (width - len(i)) for i in ids],
                device=device,
            )
            table = self._letter_tables[device] = (index, padding)
        return table

    def _ask(
        self, inputs: Sequence[tuple[Picture, str]], options: Sequence[Sequence[Option]]
    ) -> list[Verdict]:
        if not inputs:
            return []
        probabilities = self.option_probabilities(
            [image for image, _ in inputs],
            [prompt for _, prompt in inputs],
            [len(o) for o in options],
        )
        verdicts: list[Verdict] = []
        for probs, opts in zip(probabilities, options, strict=True):
            best = max(range(len(opts)), key=probs.__getitem__)
            p_accept = sum(p for p, option in zip(probs, opts, strict=True) if option.accepts)
            verdicts.append(Verdict(label=opts[best].label, p_accept=min(max(p_accept, 0.0), 1.0)))
        return verdicts


def _letter_token_ids(tokenizer: object, source: str) -> dict[str, list[int]]:
    """Single-token ids of each option letter (bare and space-prefixed spellings)."""
    encode = getattr(tokenizer, "encode")  # noqa: B009 - any tokenizer-like object
    ids: dict[str, list[int]] = {}
    for letter in LETTERS:
        found: list[int] = []
        for spelling in (letter, " " + letter):
            tokens = encode(spelling, add_special_tokens=False)
            if len(tokens) == 1 and tokens[0] not in found:
                found.append(int(tokens[0]))
        unk = getattr(tokenizer, "unk_token_id", None)
        found = [t for t in found if t != unk]
        if not found:
            raise ModelLoadError(
                f"cannot use {source!r} as a verifier: its tokenizer has no single token for the "
                f"option letter {letter!r}; choose an instruction-tuned VLM with a standard "
                "(BPE or SentencePiece) tokenizer"
            )
        ids[letter] = found
    return ids
