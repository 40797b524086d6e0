"""The operating point of a trained proposer, baked into its weights.

Inference and cgF1 keep an instance when ``sigmoid(class) x sigmoid(presence)`` reaches 0.5. A
model trained briefly from scratch ranks well but is under-confident: the product of two
uncertain probabilities rarely reaches 0.5 (the starter's held-out cgF1 was 0.7 at 0.5 and ~20
at 0.2). SAM 3 reaches its operating point by long training; a small model gets it from
calibration on scenes it was neither trained nor measured on (seeds from
:data:`CALIBRATION_SEED`):

* a **presence shift** ``delta``: added to the bias of the presence head's last layer, so every
  presence logit moves by ``delta``;
* a **class temperature** ``scale``: the text projection of the dot-product scoring multiplied
  by ``scale``, so every class logit is multiplied by it;
* a **score exponent** ``gamma``: the reported score is ``(sigmoid(class) x sigmoid(presence))
  ** gamma``, so the 0.5 rule keeps what a threshold ``tau = 0.5 ** (1 / gamma)`` on the plain
  product would. Shift and temperature cannot move the threshold on the *product* (with the
  presence saturated, ``sigmoid(scale x class) >= 0.5`` is ``class >= 0`` whatever the scale),
  and the dot-product logit has no bias to shift; the exponent can, and keeps every ranking;
* a **mask NMS** IoU ``nms``: a briefly trained DETR answers one object with several queries
  (the one-to-one matching suppresses duplicates only once training has gone far), and each
  duplicate is a false positive; the proposer drops a phrase's mask that overlaps a
  better-scored kept one by more than ``nms`` (:func:`annotator.masks.nms`). Which masks
  survive depends only on the ranking, which the other three keep;
* a **mask refinement** radius ``radius``: the proposer refines each resized mask with a
  colour guided filter (:mod:`annotator.miners.refine`), which moves its edges to the image's
  colour edges within reach; 0 is off;
* a **presence calibration** ``(a, b)``: the presence the proposer *reports* (what the ``scores``
  verifier's EV reads as ``1 - P(absent)``) is ``sigmoid(a x presence logit + b)``, a logistic
  (Platt) fit of "the phrase has instances" on the calibration pairs at the fitted shift. The
  shift is chosen for cgF1 and can saturate the presence (+4 makes nearly every phrase look
  present), so without it an absence threshold means something else for every retrained model;
  with it ``1 - presence`` is a probability measured on data the model was not trained on. The
  scores keep the uncalibrated presence (the cgF1 point is unchanged).

:func:`fit_operating_point` runs the model once over the calibration scenes keeping every
query, then picks ``(nms, delta, scale, tau)`` from a fixed grid that maximises cgF1 at the
0.5 threshold (ties: no or lighter NMS, then the smallest change); then it measures each
refinement radius of its grid at that point (through the proposer, on a copy of the model with
the point applied) and, for the best one when it beats none, refines the masks of every query
of the first run and fits ``(delta, scale, tau)`` again on them. The network runs twice over the
scenes in all, once as the model is and once with the point applied: the proposer keeps its
outputs for the other settings (:meth:`~annotator.miners.sam3.Sam3Proposer.keep_outputs`).
:func:`apply_operating_point` writes shift and temperature into the weights and the rest into
``calibration.json`` beside them, where the ``sam3`` proposer reads the exponent, the NMS IoU
and the refinement (:func:`annotator.miners.sam3.read_calibration`). A loader that ignores that
file gets the shift and temperature, the plain product, no NMS and no refinement.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from annotator import masks as mask_ops
from annotator.datasets.synthetic import Scene, make_scene
from annotator.metrics import IOU_THRESHOLDS, PairEval, cgf1_from_counts, pair_counts
from annotator.training.evaluate import GroundTruthImage, evaluate_scenes, proposals_with_truth

if TYPE_CHECKING:
    from annotator.miners.sam3 import Sam3Proposer

__all__ = [
    "CALIBRATION_SEED",
    "OperatingPoint",
    "apply_operating_point",
    "calibration_scenes",
    "describe_point",
    "exponent_for",
    "fit_operating_point",
    "fit_presence_calibration",
]

# Calibration scenes: disjoint from training (0 ..) and held-out (1,000,000 ..) seeds.
CALIBRATION_SEED = 2_000_000
DELTAS: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
SCALES: tuple[float, ...] = (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0)
# Thresholds on the plain product the exponent can move the 0.5 point to.
THRESHOLDS: tuple[float, ...] = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15)
# Mask NMS IoUs (1: none).
NMS_IOUS: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3)
# Guided-filter refinement radii, in input pixels (0: none); the ridge stays at its default.
REFINE_RADII: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 12.0)


@dataclass(frozen=True)
class OperatingPoint:
    """A presence shift, a class temperature, a score exponent, a mask NMS IoU and a mask
    refinement radius, and the calibration cgF1 before and after."""

    presence_shift: float
    class_scale: float
    cgf1_before: float
    cgf1_after: float
    scenes: int
    score_exponent: float = 1.0
    nms_iou: float = 1.0
    mask_refine_radius: float = 0.0
    # The reported presence is sigmoid(presence_scale x logit + presence_bias) (1, 0: as is).
    presence_scale: float = 1.0
    presence_bias: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        """The point in words, as the CLI and the demo print it (:func:`describe_point`)."""
        return describe_point(self.as_dict())


def describe_point(point: Mapping[str, float | int]) -> str:
    """``presence +0.5, class x1.25, score exponent 0.43, mask NMS at IoU 0.3, mask refinement
    radius 8`` from an :meth:`OperatingPoint.as_dict` (a record without the refinement: off).
    A presence calibration other than the identity adds ``, reported presence sigmoid(1.20 x
    logit -3.40)``."""
    nms = float(point.get("nms_iou", 1.0))
    radius = float(point.get("mask_refine_radius", 0.0))
    a = float(point.get("presence_scale", 1.0))
    b = float(point.get("presence_bias", 0.0))
    reported = (
        "" if (a, b) == (1.0, 0.0) else f", reported presence sigmoid({a:.2f} x logit {b:+.2f})"
    )
    return (
        f"presence {float(point['presence_shift']):+.1f}, class "
        f"x{float(point['class_scale']):.2f}, score exponent "
        f"{float(point.get('score_exponent', 1.0)):.2f}, mask NMS "
        f"{'off' if nms >= 1 else f'at IoU {nms:g}'}, mask refinement "
        f"{'off' if radius <= 0 else f'radius {radius:g}'}{reported}"
    )


def calibration_scenes(count: int, size: int) -> list[Scene]:
    """The fixed calibration scenes: seeds ``CALIBRATION_SEED ..``."""
    return [make_scene(CALIBRATION_SEED + k, size=size) for k in range(count)]


def exponent_for(threshold: float) -> float:
    """The score exponent that moves the 0.5 point to ``threshold`` on the plain product."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    return math.log(0.5) / math.log(threshold)


@dataclass
class _Pair:
    gt: list[mask_ops.RLE]
    pred: list[mask_ops.RLE]
    class_logit: np.ndarray
    presence_logit: float
    ious: np.ndarray
    # IoU of each predicted mask with each (the same order, best first): for NMS.
    self_ious: np.ndarray


def _logit(p: np.ndarray | float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(q / (1 - q))


def _collect(proposer: Sam3Proposer, items: Sequence[GroundTruthImage]) -> list[_Pair]:
    """Every pair of ``items`` through ``proposer`` (which keeps every query: score threshold
    0, exponent 1, no NMS)."""
    pairs: list[_Pair] = []
    for gt, found in proposals_with_truth(proposer, items):
        presence = max(float(found.presence), 1e-12)
        # score = sigmoid(class) x presence: the class probability is score / presence.
        class_p = np.asarray(found.scores, dtype=np.float64) / presence
        pred = list(found.masks)
        pairs.append(
            _Pair(
                gt=gt,
                pred=pred,
                class_logit=_logit(class_p),
                presence_logit=float(_logit(presence)),
                # Every grid point scores the same masks: their IoUs once.
                ious=mask_ops.iou_matrix(pred, gt)
                if gt and pred
                else np.zeros((len(pred), len(gt))),
                self_ious=mask_ops.iou_matrix(pred, pred),
            )
        )
    return pairs


def _suppressed(pair: _Pair, nms: float) -> _Pair:
    """The pair with the masks the proposer's NMS at ``nms`` would drop left out (the masks are
    best first: :func:`annotator.masks.nms`'s greedy pass over them)."""
    if nms >= 1.0 or len(pair.pred) < 2:
        return pair
    kept: list[int] = []
    for index in range(len(pair.pred)):
        if not kept or pair.self_ious[index, kept].max() <= nms:
            kept.append(index)
    return _Pair(
        gt=pair.gt,
        pred=[pair.pred[i] for i in kept],
        class_logit=pair.class_logit[kept],
        presence_logit=pair.presence_logit,
        ious=pair.ious[kept],
        self_ious=pair.self_ious[np.ix_(kept, kept)],
    )


class _Table:
    """The calibration pairs as count tables for a fast grid search. Any shift, temperature and
    exponent keeps each pair's ranking (its masks are best first), so the masks a threshold
    keeps are a prefix of them: ``tp[p, k]`` are pair ``p``'s true positives (per IoU
    threshold) when its first ``k`` masks are kept, for every ``k``."""

    def __init__(self, pairs: Sequence[_Pair]) -> None:
        self.pairs = list(pairs)
        longest = max((len(p.pred) for p in self.pairs), default=0)
        self.gt = np.array([len(p.gt) for p in self.pairs], dtype=np.int64)
        self.tp = np.zeros((len(self.pairs), longest + 1, len(IOU_THRESHOLDS)), dtype=np.int64)
        for index, pair in enumerate(self.pairs):
            n = len(pair.pred)
            for k in range(1, n + 1):
                prefix = PairEval(
                    gt=pair.gt, pred=pair.pred, scores=[1.0] * k + [0.0] * (n - k), ious=pair.ious
                )
                self.tp[index, k] = pair_counts(prefix).tp
            self.tp[index, n + 1 :] = self.tp[index, n]
        # Every mask's class logit and its pair's presence logit, flat.
        self.owner = np.repeat(np.arange(len(self.pairs)), [len(p.pred) for p in self.pairs])
        self.class_logit = np.concatenate(
            [np.asarray(p.class_logit, dtype=np.float64) for p in self.pairs] or [np.zeros(0)]
        )
        self.presence_logit = np.array([p.presence_logit for p in self.pairs], dtype=np.float64)

    def score(self, delta: float, scale: float, threshold: float = 0.5) -> float:
        """cgF1 with ``delta``, ``scale`` and the 0.5 rule moved to ``threshold`` on the plain
        product (``product ** gamma >= 0.5`` is ``product >= threshold``)."""
        presence = 1 / (1 + np.exp(-np.clip(self.presence_logit + delta, -10, 10)))
        classes = 1 / (1 + np.exp(-np.clip(self.class_logit * scale, -12, 12)))
        passing = classes * presence[self.owner] >= threshold
        kept = np.bincount(self.owner[passing], minlength=len(self.pairs))
        tp = self.tp[np.arange(len(self.pairs)), kept]
        return cgf1_from_counts(self.gt, kept, tp).cgf1


def _best_point(
    table: _Table,
    start: tuple[float, float, float, float],
    deltas: Sequence[float],
    scales: Sequence[float],
    thresholds: Sequence[float],
) -> tuple[float, float, float, float]:
    """``(cgF1, delta, scale, threshold)``: the best grid point, or ``start`` (a cgF1 and its
    point) when none beats it; ties go to the smallest change from ``(0, 1, 0.5)``."""

    def change(delta: float, scale: float, threshold: float) -> float:
        return abs(delta) + abs(scale - 1) + abs(exponent_for(threshold) - 1)

    best = start
    for delta in deltas:
        for scale in scales:
            for threshold in thresholds:
                value = table.score(delta, scale, threshold)
                if value > best[0] + 1e-9 or (
                    abs(value - best[0]) <= 1e-9
                    and change(delta, scale, threshold) < change(*best[1:])
                ):
                    best = (value, delta, scale, threshold)
    return best


def fit_presence_calibration(logits: np.ndarray, present: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of the logistic fit ``P(present) = sigmoid(a x logit + b)`` with Platt's
    targets: ``(n+ + 1) / (n+ + 2)`` for a present pair and ``1 / (n- + 2)`` for an absent one
    (each pair enters as two weighted rows, present and absent), so a logit that separates the
    pairs completely (a few calibration images, a well trained head) gets a finite fit that
    stays short of certainty. ``a`` is never negative: a logit that orders the pairs the wrong
    way carries no evidence, and the fit is then the base rate (``a`` 0). With pairs of one kind
    only, nothing can be fitted: the identity ``(1, 0)``."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    labels = np.asarray(present, dtype=bool).reshape(-1)
    if len(x) != len(labels):
        raise ValueError(f"{len(x)} logits but {len(labels)} labels")
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return 1.0, 0.0
    target = np.where(labels, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    rows = np.concatenate([x, x])[:, None]
    outcome = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    weight = np.concatenate([target, 1 - target])
    fit = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)
    fit.fit(rows, outcome, sample_weight=weight)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if a < 0:
        rate = positives / len(labels)
        return 0.0, math.log(rate / (1 - rate))
    return a, b


def fit_operating_point(
    model_dir: Path,
    scenes: Sequence[Scene | GroundTruthImage],
    *,
    device: str = "cpu",
    deltas: Sequence[float] = DELTAS,
    scales: Sequence[float] = SCALES,
    thresholds: Sequence[float] = THRESHOLDS,
    nms_ious: Sequence[float] = NMS_IOUS,
    refine_radii: Sequence[float] = REFINE_RADII,
) -> OperatingPoint:
    """The grid point ``(nms, delta, scale, threshold)`` with the best cgF1 (at the 0.5 rule,
    the exponent moving it to ``threshold``) on ``scenes`` (synthetic scenes or labelled
    images); ties go to the lighter NMS (none first), then to the smallest change from
    ``(0, 1, 0.5)``. The cgF1 of each point comes from count tables built once per NMS IoU
    (:class:`_Table`), the same figure :func:`annotator.metrics.cgf1` gives. Then the mask
    refinement: each radius of ``refine_radii`` measured at that point, the best one (strictly
    better than none; ties to the smaller) kept, and ``(delta, scale, threshold)`` fitted
    again on its masks. Last, the presence calibration at the chosen shift
    (:func:`fit_presence_calibration` on every pair: has it instances?)."""
    from annotator.miners.sam3 import Sam3Proposer

    items = [GroundTruthImage.of_scene(s) for s in scenes]
    with Sam3Proposer(
        str(model_dir), device=device, score_threshold=0.0, score_exponent=1.0, nms_iou=1.0,
        mask_refine_radius=0.0, presence_scale=1.0, presence_bias=0.0,
    ) as proposer:  # fmt: skip
        # The network runs once over the items; the refined pass below reuses its outputs.
        proposer.keep_outputs()
        pairs = _collect(proposer, items)
        before = _Table(pairs).score(0.0, 1.0)
        best, nms = (before, 0.0, 1.0, 0.5), 1.0
        # No NMS first, then lighter ones: a heavier one must score strictly better to be chosen.
        for candidate in sorted({1.0, *nms_ious}, reverse=True):
            table = _Table([_suppressed(p, candidate) for p in pairs])
            start = (table.score(0.0, 1.0), 0.0, 1.0, 0.5)
            found = _best_point(table, start, deltas, scales, thresholds)
            if candidate == 1.0 or found[0] > best[0] + 1e-9:
                best, nms = found, candidate
        radius = _best_radius(model_dir, items, device, best, nms, refine_radii)
        if radius > 0:
            # Refined masks move which masks are true positives: fit the point again on them.
            refined_pairs = _collect(proposer.with_settings(mask_refine_radius=radius), items)
            refined = _Table([_suppressed(p, nms) for p in refined_pairs])
            best = _best_point(refined, (refined.score(*best[1:]), *best[1:]), deltas, scales,
                               thresholds)  # fmt: skip
    # The presence does not depend on NMS or refinement: every pair of the first run.
    shifted = np.array([p.presence_logit for p in pairs], dtype=np.float64) + best[1]
    presence_scale, presence_bias = fit_presence_calibration(
        shifted, np.array([bool(p.gt) for p in pairs])
    )
    return OperatingPoint(
        presence_shift=best[1],
        class_scale=best[2],
        cgf1_before=before,
        cgf1_after=best[0],
        scenes=len(scenes),
        score_exponent=exponent_for(best[3]),
        nms_iou=nms,
        mask_refine_radius=radius,
        presence_scale=presence_scale,
        presence_bias=presence_bias,
    )


def _best_radius(
    model_dir: Path,
    items: Sequence[GroundTruthImage],
    device: str,
    point: tuple[float, float, float, float],
    nms: float,
    radii: Sequence[float],
) -> float:
    """The refinement radius of ``radii`` (0: none) with the best cgF1 at ``point`` (``(cgF1,
    delta, scale, threshold)``) and ``nms``: each measured through the proposer on a copy of
    the model with the point applied, so only the masks the point keeps are refined (the
    network once, its outputs kept for every radius); a larger radius must score strictly
    better."""
    import tempfile

    from annotator.miners.sam3 import Sam3Proposer

    candidates = sorted({0.0, *radii})
    if candidates == [0.0]:
        return 0.0
    _, delta, scale, threshold = point
    best, chosen = -1.0, 0.0
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(model_dir, copy)
        apply_operating_point(copy, OperatingPoint(delta, scale, 0.0, 0.0, len(items)))
        with Sam3Proposer(
            str(copy), device=device, score_exponent=exponent_for(threshold), nms_iou=nms
        ) as proposer:
            proposer.keep_outputs()
            for radius in candidates:
                refined = proposer.with_settings(mask_refine_radius=radius)
                value = evaluate_scenes(refined, items).cgf1
                if value > best + 1e-9:
                    best, chosen = value, radius
    return chosen


def apply_operating_point(model_dir: Path, point: OperatingPoint) -> None:
    """Write ``point``'s shift and temperature into the weights of ``model_dir`` (in place) and
    record it, exponent, NMS IoU and refinement radius included, in
    ``<model_dir>/calibration.json`` (which the ``sam3`` proposer reads)."""
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    tensors = load_file(str(path))
    bias = "detr_decoder.presence_head.layer3.bias"
    weight, proj_bias = "dot_product_scoring.text_proj.weight", "dot_product_scoring.text_proj.bias"
    missing = [k for k in (bias, weight, proj_bias) if k not in tensors]
    if missing:
        raise ValueError(f"{model_dir} is not a SAM 3 checkpoint with {', '.join(missing)}")
    tensors[bias] = tensors[bias] + point.presence_shift
    tensors[weight] = tensors[weight] * point.class_scale
    tensors[proj_bias] = tensors[proj_bias] * point.class_scale
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)
    (model_dir / "calibration.json").write_text(json.dumps(point.as_dict(), indent=2) + "\n")
