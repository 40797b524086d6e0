"""SAM 3 mask proposer on transformers' ``Sam3Model`` (CPU and GPU; the default proposer).

Per image: one vision forward (``get_vision_features``), then the phrases go through the
detector in batches of ``batch_size`` that share the image's vision embeddings (expanded, not
copied). Post-processing stays on the device: scores are ``sigmoid(logit) * sigmoid(presence)``
(as ``Sam3Processor.post_process_instance_segmentation`` computes them), low-resolution mask
probabilities are resized to the original image and thresholded there, each mask's box is found
there, and only the boxes and their pixels (of kept instances) travel to the host, where they
become COCO RLE.

Preprocessing reimplements ``Sam3ImageProcessor`` (resize to the checkpoint's square size,
bilinear with antialiasing, rescale, normalise) with plain torch, from the checkpoint's own
processor config: the transformers class needs torchvision, whose PyPI wheels do not load with
the CPU build of torch, and doing it in torch lets the resize run on the GPU.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from annotator import masks as mask_ops
from annotator import modeling
from annotator.backends import LazyModelBackend, PhraseProposals
from annotator.config import get_settings
from annotator.images import ensure_rgb
from annotator.miners import refine

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, Sam3Model

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "Preprocessing",
    "Sam3Proposer",
    "read_calibration",
]

# A model directory's score calibration (annotator.training.calibrate writes it).
CALIBRATION_FILE = "calibration.json"

# Elements (instances x pixels) upsampled at once: bounds device memory at ~256 MB of float32
# however large the image and however many instances a phrase has.
_UPSAMPLE_BUDGET = 64 * 1024 * 1024
# Phrases whose token rows a proposer keeps (see Sam3Proposer._tokenize).
_TOKEN_ROWS = 4096
# The guided-filter refinement's default ridge, and the largest radius (input pixels) accepted.
DEFAULT_REFINE_EPS = 1e-3
MAX_REFINE_RADIUS = 64.0


@dataclass(frozen=True)
class Preprocessing:
    """What ``Sam3ImageProcessor`` does to an image, read from the checkpoint's processor config.

    Defaults are ``Sam3ImageProcessor``'s class defaults (1008 x 1008, mean = std = 0.5).
    """

    height: int = 1008
    width: int = 1008
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Preprocessing:
        """From an image processor dict (``preprocessor_config.json`` or the nested part of
        ``processor_config.json``)."""
        size = config.get("size") or {}
        height = int(size.get("height", cls.height))
        width = int(size.get("width", cls.width))

        def triple(value: object, default: tuple[float, float, float]) -> tuple[float, ...]:
            if value is None:
                return default
            if isinstance(value, int | float):
                return (float(value),) * 3
            return tuple(float(v) for v in value)  # type: ignore[attr-defined]

        mean = triple(config.get("image_mean"), cls.image_mean)
        std = triple(config.get("image_std"), cls.image_std)
        return cls(
            height=height,
            width=width,
            rescale_factor=float(config.get("rescale_factor", cls.rescale_factor)),
            image_mean=(mean[0], mean[1], mean[2]),
            image_std=(std[0], std[1], std[2]),
            do_rescale=bool(config.get("do_rescale", True)),
            do_normalize=bool(config.get("do_normalize", True)),
        )

    def __call__(
        self, image: Image.Image, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """``(1, 3, height, width)`` pixel values in ``dtype`` on ``device`` for an RGB image."""
        array = np.array(ensure_rgb(image), dtype=np.uint8)  # a writable copy for torch
        pixels = torch.from_numpy(array).to(device).permute(2, 0, 1).unsqueeze(0).float()
        if pixels.shape[-2:] != (self.height, self.width):
            pixels = F.interpolate(
                pixels,
                size=(self.height, self.width),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            # torchvision resizes uint8 images to uint8: round and clip the same way.
            pixels = pixels.round_().clamp_(0, 255)
        if self.do_rescale:
            pixels = pixels * self.rescale_factor
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self.image_std, device=device).view(1, 3, 1, 1)
            pixels = (pixels - mean) / std
        return pixels.to(dtype)


def _image_processor_config(source: str) -> dict[str, Any]:
    from transformers.image_processing_base import ImageProcessingMixin

    config, _ = ImageProcessingMixin.get_image_processor_dict(source)
    return dict(config)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class Calibration:
    """The post-processing a model directory's ``calibration.json`` records (see
    :mod:`annotator.training.calibrate`); the defaults change nothing."""

    score_exponent: float = 1.0
    # Masks of one phrase overlapping a better-scored kept one by more IoU than this are
    # dropped (1: no suppression).
    nms_iou: float = 1.0
    # Guided-filter refinement of the resized masks (:mod:`annotator.miners.refine`): radius in
    # input pixels (0: off) and ridge on colours in [0, 1].
    mask_refine_radius: float = 0.0
    mask_refine_eps: float = DEFAULT_REFINE_EPS
    # The reported presence: sigmoid(presence_scale x presence logit + presence_bias), a
    # probability that the phrase is present measured on calibration data (1, 0: the model's).
    presence_scale: float = 1.0
    presence_bias: float = 0.0


def read_calibration(source: str) -> Calibration:
    """What ``<source>/calibration.json`` records (the defaults when ``source`` is not a local
    directory or has no such file, and for each field it leaves out). A malformed value is an
    error naming the file, not a silent default."""
    path = Path(source) / CALIBRATION_FILE
    if not path.is_file():
        return Calibration()
    try:
        recorded = json.loads(path.read_text())
        if not isinstance(recorded, dict):
            raise ValueError(f"expected a JSON object, got {type(recorded).__name__}")
    except ValueError as exc:
        raise ValueError(f"{path}: not a calibration record ({exc})") from exc
    values: dict[str, float] = {}
    for key in _BOUNDS:
        if key not in recorded:
            continue
        value = recorded[key]
        try:
            number = float(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {key} must be a number, got {value!r}") from exc
        if not _BOUNDS[key][0](number):
            raise ValueError(f"{path}: {key} must be {_BOUNDS[key][1]}, got {value!r}")
        values[key] = number
    return Calibration(**values)


# What each calibrated value may be: a test and its wording (the proposer's arguments and
# calibration.json are checked alike).
_BOUNDS: dict[str, tuple[Callable[[float], bool], str]] = {
    "score_exponent": (lambda v: v > 0, "positive"),
    "nms_iou": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "mask_refine_radius": (
        lambda v: 0.0 <= v <= MAX_REFINE_RADIUS,
        f"in [0, {MAX_REFINE_RADIUS:g}]",
    ),
    "mask_refine_eps": (lambda v: v > 0, "positive"),
    "presence_scale": (lambda v: 0.0 <= v < math.inf, "a finite number >= 0"),
    "presence_bias": (math.isfinite, "finite"),
}


def _check(key: str, value: float | None) -> None:
    """Refuse a calibrated value outside its bounds (``None``: not given)."""
    test, wording = _BOUNDS[key]
    if value is not None and not test(value):
        raise ValueError(f"{key} must be {wording}, got {value!r}")


def _check_post_processing(values: dict[str, Any]) -> None:
    """Refuse a post-processing setting outside its bounds (thresholds in [0, 1]; the
    calibrated values as :func:`_check`); ``None``: not given."""
    for label in ("score_threshold", "mask_threshold"):
        value = values.get(label)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{label} must be in [0, 1], got {value}")
    for label in _BOUNDS:
        _check(label, values.get(label))


class Sam3Proposer(LazyModelBackend):
    """Every instance of each phrase in an image, from SAM 3 via transformers.

    Args:
        model: a hub id (``facebook/sam3``) or a local directory written by ``save_pretrained``
            holding the model, its tokenizer and its processor config.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        dtype: model dtype; default bf16 on CUDA, fp32 on CPU.
        batch_size: phrases per detector forward (bounds memory: the detector's activations grow
            linearly with it, the vision embeddings are shared).
        score_threshold: keep instances whose ``sigmoid(logit) * presence`` exceeds this.
        mask_threshold: binarise mask probabilities (after resizing) above this.
        max_instances: keep at most this many instances per phrase (highest scores first).
        score_exponent: report ``(sigmoid(logit) * presence) ** score_exponent`` as the score (a
            monotone calibration: ranks are unchanged, the 0.5 point moves). ``None``: the
            ``score_exponent`` of the model directory's ``calibration.json`` (written by
            ``annotator train starter``, see :mod:`annotator.training.calibrate`), else 1.
        nms_iou: drop a phrase's mask whose IoU with a better-scored kept mask of the same
            phrase exceeds this (greedy mask NMS, before ``max_instances``); 1 keeps every
            mask (SAM 3's one-to-one matching makes duplicates rare; a briefly trained model
            makes many). ``None``: the model directory's ``calibration.json``, else 1.
        mask_refine_radius: refine each resized mask with a colour guided filter of this
            radius, in pixels of the model's input (:mod:`annotator.miners.refine`): its edges
            move to the image's colour edges nearby. 0: off. ``None``: the model directory's
            ``calibration.json``, else off.
        mask_refine_eps: the guided filter's ridge (colours in [0, 1]): how much contrast an
            edge needs to be followed. ``None``: ``calibration.json``'s, else 1e-3.
        presence_scale, presence_bias: the presence each :class:`PhraseProposals` reports is
            ``sigmoid(presence_scale x presence logit + presence_bias)``: a probability that the
            phrase is present, fitted on calibration data (what EV's absence question reads);
            the scores keep the model's own presence. ``None``: ``calibration.json``'s, else
            1 and 0 (the model's presence).

    Use as a context manager (loads on enter; the weights stay cached for the process)::

        with Sam3Proposer("facebook/sam3") as proposer:
            found = proposer.propose(image, ["striped umbrella", "dog"])
    """

    name = "sam3"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int = 16,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        max_instances: int | None = None,
        score_exponent: float | None = None,
        nms_iou: float | None = None,
        mask_refine_radius: float | None = None,
        mask_refine_eps: float | None = None,
        presence_scale: float | None = None,
        presence_bias: float | None = None,
    ) -> None:
        settings = get_settings()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        _check_post_processing(
            {
                "score_threshold": score_threshold,
                "mask_threshold": mask_threshold,
                "score_exponent": score_exponent,
                "nms_iou": nms_iou,
                "mask_refine_radius": mask_refine_radius,
                "mask_refine_eps": mask_refine_eps,
                "presence_scale": presence_scale,
                "presence_bias": presence_bias,
            }
        )
        self.source = model or settings.proposer_model
        self.device_setting = device or settings.device
        self.dtype = dtype
        self.batch_size = batch_size
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.max_instances = max_instances
        self.score_exponent = score_exponent
        self.nms_iou = nms_iou
        self.mask_refine_radius = mask_refine_radius
        self.mask_refine_eps = mask_refine_eps
        self.presence_scale = presence_scale
        self.presence_bias = presence_bias
        self._exponent = 1.0
        self._nms_iou = 1.0
        self._refine_radius = 0.0
        self._refine_eps = DEFAULT_REFINE_EPS
        self._presence_calibration = (1.0, 0.0)
        self._model: Sam3Model | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        # Each phrase's token ids and attention mask (rows of ``_tokenize``), kept: a job asks
        # the same phrases of many images.
        self._token_rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._preprocessing: Preprocessing | None = None
        self._device: torch.device | None = None
        # The detector's outputs per (image, phrase batch), when kept (keep_outputs).
        self._kept: _KeptOutputs | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device the model runs on (resolved on first use)."""
        if self._device is None:
            self._device = modeling.resolve_device(self.device_setting)
        return self._device

    def load(self) -> None:
        """Load model, tokenizer and preprocessing config (once per process; idempotent)."""
        if self._model is not None:
            return
        from transformers import AutoTokenizer, Sam3Model

        device = self.device
        dtype = self.dtype or modeling.default_dtype(device)
        # The model first: a directory without weights is the likeliest mistake to report.
        model = modeling.load_pretrained(
            Sam3Model.from_pretrained,
            self.source,
            what="the SAM 3 model",
            device=device,
            dtype=dtype,
        )
        tokenizer = modeling.load_pretrained(
            AutoTokenizer.from_pretrained,
            self.source,
            what="the SAM 3 tokenizer",
            needs_weights=False,
        )
        config = modeling.load_pretrained(
            _image_processor_config,
            self.source,
            what="the SAM 3 processor config",
            needs_weights=False,
        )
        self._preprocessing = Preprocessing.from_config(config)
        self._resolve_settings()
        self._tokenizer = tokenizer
        self._token_rows.clear()
        self._model = model

    def _resolve_settings(self) -> None:
        """The post-processing settings in effect: each given one, else the model directory's
        ``calibration.json``'s."""
        recorded = read_calibration(self.source)
        self._exponent = (
            self.score_exponent if self.score_exponent is not None else recorded.score_exponent
        )
        self._nms_iou = self.nms_iou if self.nms_iou is not None else recorded.nms_iou
        self._refine_radius = (
            self.mask_refine_radius
            if self.mask_refine_radius is not None
            else recorded.mask_refine_radius
        )
        self._refine_eps = (
            self.mask_refine_eps if self.mask_refine_eps is not None else recorded.mask_refine_eps
        )
        self._presence_calibration = (
            self.presence_scale if self.presence_scale is not None else recorded.presence_scale,
            self.presence_bias if self.presence_bias is not None else recorded.presence_bias,
        )

    def keep_outputs(self, budget_bytes: int = 1 << 30) -> None:
        """From now on keep the detector's outputs of each image and phrase batch (up to
        ``budget_bytes`` of them; beyond it they are computed again) and reuse them when the
        same image object comes back with the same phrases, here or in a proposer made from
        this one by :meth:`with_settings`. Comparing post-processing settings (score exponent,
        NMS, mask refinement) on one set of images then costs the network once: what
        calibration and the starter's measurements do. Images are recognised by identity
        (pass the same object again), and the outputs are exactly those a new forward gives."""
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self._kept = _KeptOutputs(budget_bytes)

    def with_settings(self, **changes: Any) -> Sam3Proposer:
        """A proposer with other post-processing settings (``score_threshold``,
        ``mask_threshold``, ``max_instances``, ``score_exponent``, ``nms_iou``,
        ``mask_refine_radius``, ``mask_refine_eps``, ``presence_scale``, ``presence_bias``; as
        the constructor takes them) that shares this one's loaded model, token rows and kept
        outputs."""
        unknown = sorted(set(changes) - set(_POST_PROCESSING))
        if unknown:
            raise ValueError(
                f"with_settings changes post-processing only ({', '.join(_POST_PROCESSING)}); "
                f"got {', '.join(unknown)}"
            )
        _check_post_processing(changes)
        other = copy.copy(self)
        for label, value in changes.items():
            setattr(other, label, value)
        if other._model is not None:
            other._resolve_settings()
        return other

    def release(self) -> None:
        # The weights stay in the process cache for the next job; this instance lets go of them.
        self._model = None
        self._tokenizer = None
        self._token_rows.clear()

    # -- inference ---------------------------------------------------------------------------

    def propose(self, image: Image.Image, phrases: Sequence[str]) -> list[PhraseProposals]:
        """Every instance of each phrase, one :class:`PhraseProposals` per phrase, in order.

        One vision forward for the image; phrases in batches of ``batch_size``.
        """
        return self._propose(image, phrases, self.batch_size)

    def propose_looped(self, image: Image.Image, phrases: Sequence[str]) -> list[PhraseProposals]:
        """Same outputs, one phrase per detector forward, as the official ``Sam3Processor``
        (``set_image`` once, then ``set_text_prompt`` per phrase) runs it. For benchmarks and
        for checking the batched path."""
        return self._propose(image, phrases, 1)

    @torch.inference_mode()
    def _propose(
        self, image: Image.Image, phrases: Sequence[str], batch_size: int
    ) -> list[PhraseProposals]:
        self.load()
        assert self._model is not None and self._preprocessing is not None
        if not phrases:
            return []
        model = self._model
        given = image
        image = ensure_rgb(image)
        width, height = image.size
        guide = self._guide(image, height, width)
        vision = None
        results: list[PhraseProposals] = []
        for chunk in _chunks(phrases, batch_size):
            outputs = self._kept.get(given, chunk) if self._kept is not None else None
            if outputs is None:
                if vision is None:
                    pixel_values = self._preprocessing(image, self.device, model.dtype)
                    vision = model.get_vision_features(pixel_values=pixel_values)
                input_ids, attention_mask = self._tokenize(chunk)
                outputs = model(
                    vision_embeds=_expand_vision(vision, len(chunk)),
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                )
                if self._kept is not None:
                    self._kept.put(given, chunk, outputs)
            results.extend(self._post_process(outputs, chunk, height, width, guide))
        return results

    def _guide(self, image: Image.Image, height: int, width: int) -> refine.GuideStats | None:
        """The image's statistics for the mask refinement (its colours in [0, 1] on the device,
        the radius at its size), when masks are refined (``None`` otherwise)."""
        if self._refine_radius <= 0:
            return None
        assert self._preprocessing is not None
        radius_y = round(self._refine_radius * height / self._preprocessing.height)
        radius_x = round(self._refine_radius * width / self._preprocessing.width)
        if radius_y == 0 and radius_x == 0:
            return None
        colours = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).to(self.device)
        return refine.GuideStats.of(
            colours.permute(2, 0, 1).float().div_(255.0), radius_y, radius_x, self._refine_eps
        )

    def _tokenize(self, phrases: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L)`` int64 ids and attention mask, padded to the text encoder's length.

        Padding every phrase to the same fixed length (as ``Sam3Processor`` does, 32 tokens)
        makes a phrase's result independent of which other phrases share its batch. So a
        phrase's row is the same in any batch: each is tokenized once (the phrases new to this
        proposer together) and its row kept.
        """
        assert self._tokenizer is not None and self._model is not None
        rows = self._token_rows
        new = [phrase for phrase in dict.fromkeys(phrases) if phrase not in rows]
        if new:
            # The text encoder's position table bounds the prompt length (32 for SAM 3).
            max_length = int(getattr(self._model.config.text_config, "max_position_embeddings", 32))
            encoded = self._tokenizer(
                new,
                padding="max_length",
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            if len(rows) + len(new) > _TOKEN_ROWS:
                rows.clear()
            for index, phrase in enumerate(new):
                rows[phrase] = (encoded["input_ids"][index], encoded["attention_mask"][index])
        return (
            torch.stack([rows[phrase][0] for phrase in phrases]).to(self.device),
            torch.stack([rows[phrase][1] for phrase in phrases]).to(self.device),
        )

    def _post_process(
        self,
        outputs: Any,
        phrases: Sequence[str],
        height: int,
        width: int,
        guide: refine.GuideStats | None = None,
    ) -> list[PhraseProposals]:
        """Scores, boxes and RLE masks per phrase from one detector forward.

        ``outputs.pred_logits`` ``(B, Q)``, ``presence_logits`` ``(B, 1)``, ``pred_boxes``
        ``(B, Q, 4)`` normalised xyxy, ``pred_masks`` ``(B, Q, h, w)`` logits.
        """
        presence_logits = outputs.presence_logits.float().squeeze(-1)  # (B,)
        presence = presence_logits.sigmoid()
        scores = outputs.pred_logits.float().sigmoid() * presence[:, None]  # (B, Q)
        a, b = self._presence_calibration
        reported = presence if (a, b) == (1.0, 0.0) else (presence_logits * a + b).sigmoid()
        if self._exponent != 1.0:
            scores = scores.pow(self._exponent)
        scale = torch.tensor([width, height, width, height], device=scores.device)
        suppress = self._nms_iou < 1.0
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        for index in range(len(phrases)):
            keep = torch.nonzero(scores[index] > self.score_threshold).squeeze(1)
            kept_scores, order = scores[index, keep].sort(descending=True)
            keep = keep[order]
            if self.max_instances is not None and not suppress:
                keep, kept_scores = keep[: self.max_instances], kept_scores[: self.max_instances]
            kept.append((keep, kept_scores))
        # Every kept instance of the batch's phrases upsampled, thresholded and encoded together.
        rows = torch.cat([torch.full_like(keep, i) for i, (keep, _) in enumerate(kept)])
        columns = torch.cat([keep for keep, _ in kept])
        encoded = self._masks_to_rle(outputs.pred_masks[rows, columns], height, width, guide)
        found: list[PhraseProposals] = []
        start = 0
        for index, phrase in enumerate(phrases):
            keep, kept_scores = kept[index]
            rles = encoded[start : start + len(keep)]
            start += len(keep)
            if suppress:
                # Best first already, so the survivors keep that order; max_instances counts
                # survivors.
                survivors = mask_ops.nms(rles, kept_scores.tolist(), self._nms_iou)
                survivors = sorted(survivors)[: self.max_instances]
                chosen = torch.as_tensor(survivors, dtype=torch.long, device=keep.device)
                keep, kept_scores = keep[chosen], kept_scores[chosen]
                rles = [rles[i] for i in survivors]
            xyxy = outputs.pred_boxes[index, keep].float() * scale
            xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
            xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
            xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1)
            found.append(
                PhraseProposals(
                    phrase=phrase,
                    masks=rles,
                    boxes=xywh.cpu().numpy().astype(np.float32).reshape(-1, 4),
                    scores=kept_scores.cpu().numpy().astype(np.float32),
                    presence=float(reported[index]),
                )
            )
        return found

    def _masks_to_rle(
        self, logits: torch.Tensor, height: int, width: int, guide: refine.GuideStats | None = None
    ) -> list[mask_ops.RLE]:
        """``(K, h, w)`` mask logits -> K RLEs at ``height x width`` (refined by ``guide``'s
        filter when given).

        Probabilities are resized and thresholded on the device, a few instances at a time,
        and each mask's box found there (:meth:`_host_crops`), so only the boxes' contents
        reach the host, where they are encoded (the same RLE as the full masks').
        """
        if logits.shape[0] == 0:
            return []
        step = max(1, _UPSAMPLE_BUDGET // (height * width))
        rles: list[mask_ops.RLE] = []
        for start in range(0, logits.shape[0], step):
            crops, boxes = self._host_crops(logits[start : start + step], height, width, guide)
            rles.extend(mask_ops.encode_column_crops(crops, boxes, height, width))
        return rles

    def _host_crops(
        self, logits: torch.Tensor, height: int, width: int, guide: refine.GuideStats | None = None
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """``(K, h, w)`` mask logits -> each ``height x width`` bool mask's box and the box's
        pixels on the host (see :func:`annotator.masks.encode_column_crops`).

        The tensor work of post-processing, on the model's device: sigmoid, bilinear resize (as
        the transformers post-processing does) and threshold, written column-major
        (``(K, width, height)``), the layout COCO RLE runs in; each mask's box, from the
        low-resolution probabilities (below); and the copy of the boxes and their contents
        (column-major crops) to the host: not the whole masks.
        """
        probabilities = logits.float().sigmoid()
        resized = F.interpolate(
            probabilities[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
        # A resized probability is a convex combination of (at most) 2 x 2 neighbouring
        # low-resolution ones, so it exceeds the threshold only next to one that reaches it
        # (less a margin for rounding): each mask's box, found on the small probabilities and
        # widened to the output pixels that read them, holds all its foreground (and some
        # background, which the encoding skips). No pass over the full-size masks.
        candidates = probabilities >= self.mask_threshold - 1e-3
        boxes = torch.cat(
            [
                _reach(_extent(candidates.any(dim=1)), probabilities.shape[2], width),
                _reach(_extent(candidates.any(dim=2)), probabilities.shape[1], height),
            ],
            dim=1,
        )
        if guide is not None:
            refined, widened = refine.refine_masks(
                resized, guide, boxes[:, [0, 2, 1, 3]], self.mask_threshold
            )
            return [crop.T.cpu().numpy() for crop in refined], widened.cpu().numpy()
        columns = torch.empty(
            (resized.shape[0], width, height), dtype=torch.bool, device=resized.device
        )
        torch.gt(resized.transpose(1, 2), self.mask_threshold, out=columns)
        host_boxes = boxes[:, [0, 2, 1, 3]].cpu().numpy()  # x0, y0, x1, y1
        crops = [
            columns[k, x0:x1, y0:y1].cpu().numpy()
            for k, (x0, y0, x1, y1) in enumerate(host_boxes.tolist())
        ]
        return crops, host_boxes


def _reach(extent: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """``(K, 2)`` first / end index of low-resolution pixels along an axis of ``size`` ->
    the output pixels (of ``out``) whose bilinear resize (``align_corners=False``) reads one
    of them: output ``i`` reads source ``floor(s)`` and ``floor(s) + 1`` (clamped) with
    ``s = (i + 0.5) * size / out - 0.5``, so it reads ``[first, end)`` when ``first - 1 <= s <
    end``; one more output pixel each side for rounding. Empty stays ``0, 0``."""
    ratio = size / out
    first = torch.floor((extent[:, 0] - 0.5) / ratio - 0.5).long() - 1
    end = torch.ceil((extent[:, 1] + 0.5) / ratio - 0.5).long() + 2
    empty = extent[:, 1] == 0
    first = torch.where(empty, 0, first.clamp(0, out))
    end = torch.where(empty, 0, end.clamp(0, out))
    return torch.stack([first, end], dim=1)


def _extent(present: torch.Tensor) -> torch.Tensor:
    """``(K, n)`` bool -> ``(K, 2)`` int64: the first index that is set and one past the last
    (``0, 0`` where none is)."""
    n = present.shape[1]
    index = torch.arange(n, device=present.device)
    first = torch.where(present, index, n).amin(dim=1)
    end = torch.where(present, index + 1, 0).amax(dim=1)
    first = torch.where(end > 0, first, 0)
    return torch.stack([first, end], dim=1)


# What Sam3Proposer.with_settings may change.
_POST_PROCESSING = (
    "score_threshold",
    "mask_threshold",
    "max_instances",
    "score_exponent",
    "nms_iou",
    "mask_refine_radius",
    "mask_refine_eps",
    "presence_scale",
    "presence_bias",
)


class _DetectorOutputs(NamedTuple):
    """What post-processing reads of a detector forward."""

    pred_logits: torch.Tensor
    presence_logits: torch.Tensor
    pred_boxes: torch.Tensor
    pred_masks: torch.Tensor


class _KeptOutputs:
    """Detector outputs by (image object, phrase batch), up to a byte budget. Each entry holds
    its image, so the object's ``id`` cannot be reused for another image while it is kept."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._entries: dict[tuple[int, tuple[str, ...]], tuple[Any, _DetectorOutputs]] = {}

    def get(self, image: Any, phrases: Sequence[str]) -> _DetectorOutputs | None:
        entry = self._entries.get((id(image), tuple(phrases)))
        return entry[1] if entry is not None and entry[0] is image else None

    def put(self, image: Any, phrases: Sequence[str], outputs: Any) -> None:
        kept = _DetectorOutputs(
            outputs.pred_logits, outputs.presence_logits, outputs.pred_boxes, outputs.pred_masks
        )
        size = sum(t.numel() * t.element_size() for t in kept)
        if self.used + size <= self.budget:
            self._entries[(id(image), tuple(phrases))] = (image, kept)
            self.used += size


def _expand_vision(vision: Any, batch: int) -> Any:
    """The image's vision embeddings as a batch of ``batch`` identical rows, without copying.

    The detector reads only the FPN features and their position encodings; ``expand`` makes
    views with stride 0 along the batch, so a batch of 16 phrases costs no extra memory here.
    """
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    if batch == 1:
        return vision
    return Sam3VisionEncoderOutput(
        fpn_hidden_states=tuple(t.expand(batch, *t.shape[1:]) for t in vision.fpn_hidden_states),
        fpn_position_encoding=tuple(
            t.expand(batch, *t.shape[1:]) for t in vision.fpn_position_encoding
        ),
    )
