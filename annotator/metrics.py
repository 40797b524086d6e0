"""Concept-segmentation metrics of the SAM 3 paper (pure): cgF1 = pmF1 x IL_MCC (x100).

Unit of evaluation: an image-phrase *pair*. Only instance-exhaustive pairs count.

- Predictions scoring below ``score_threshold`` (0.5) are dropped.
- Per pair, predictions and non-crowd ground-truth masks are matched one-to-one by the
  Hungarian algorithm on mask IoU; at each IoU threshold t in 0.50:0.05:0.95 a match with
  IoU >= t is a true positive, unmatched predictions are false positives and unmatched ground
  truth false negatives. Crowd ground truth is ignored.
- pmF1 (positive micro F1): TP and FN summed over all pairs, FP only over pairs that have both
  ground truth and predictions (a false alarm on a negative pair is the image-level metric's
  business, not the mask metric's), averaged over thresholds.
- IL_MCC: Matthews correlation of image-level presence (has ground truth vs has predictions).
- cgF1 = 100 x pmF1 x IL_MCC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from annotator import masks
from annotator.masks import RLE

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
_EPS = 1e-12


@dataclass
class PairEval:
    """Ground truth and predictions of one image-phrase pair (all masks of the same size)."""

    gt: Sequence[RLE]
    pred: Sequence[RLE]
    scores: Sequence[float]
    gt_crowd: Sequence[bool] | None = None
    # Optional ``(len(pred), len(gt))`` mask IoUs of every prediction with every ground truth,
    # when the caller scores the same masks many times (e.g. under several score thresholds).
    ious: np.ndarray | None = None


@dataclass
class CgF1Result:
    cgf1: float
    pmf1: float
    il_mcc: float
    il_precision: float
    il_recall: float
    precision: float
    recall: float
    pairs: int
    # Per IoU threshold (same order as IOU_THRESHOLDS).
    pmf1_at: list[float] = field(default_factory=list)
    il_counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "cgF1": self.cgf1,
            "pmF1": self.pmf1,
            "IL_MCC": self.il_mcc,
            "IL_precision": self.il_precision,
            "IL_recall": self.il_recall,
            "precision": self.precision,
            "recall": self.recall,
            "pairs": self.pairs,
        }


def match_ious(
    gt: Sequence[RLE], pred: Sequence[RLE], ious: np.ndarray | None = None
) -> np.ndarray:
    """IoUs of the Hungarian one-to-one matching of ``pred`` to ``gt`` (max total IoU);
    shape ``(min(len(pred), len(gt)),)`` float64. ``ious``: their ``(len(pred), len(gt))``
    IoU matrix when already known."""
    if not gt or not pred:
        return np.zeros(0)
    if ious is None:
        ious = masks.iou_matrix(pred, gt)
    rows, cols = linear_sum_assignment(-ious)
    return np.asarray(ious[rows, cols], dtype=np.float64)


def _safe_div(a: float, b: float) -> float:
    return a / b if b > _EPS else 0.0


def _f1(p: float, r: float) -> float:
    return _safe_div(2 * p * r, p + r)


def mcc(tp: int, tn: int, fp: int, fn: int) -> float:
    """Matthews correlation coefficient (0 when undefined)."""
    denom = math.sqrt(float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn))
    return _safe_div(float(tp * tn - fp * fn), denom)


@dataclass(frozen=True)
class PairCounts:
    """What one pair adds to cgF1: its (non-crowd) ground truth and kept predictions, and the
    true positives at each IoU threshold (:func:`pair_counts`)."""

    gt: int
    pred: int
    tp: np.ndarray  # (len(iou_thresholds),)


def pair_counts(
    pair: PairEval,
    *,
    score_threshold: float = 0.5,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> PairCounts:
    """The pair's counts: predictions below ``score_threshold`` dropped, crowd ground truth
    ignored, the rest matched one-to-one (Hungarian on mask IoU)."""
    crowd = list(pair.gt_crowd) if pair.gt_crowd is not None else [False] * len(pair.gt)
    gt_index = [i for i, c in enumerate(crowd) if not c]
    kept = [i for i, s in enumerate(pair.scores) if s >= score_threshold]
    gt = [pair.gt[i] for i in gt_index]
    pred = [pair.pred[i] for i in kept]
    tp = np.zeros(len(iou_thresholds), dtype=np.int64)
    if gt and pred:
        known = None
        if pair.ious is not None:
            known = np.asarray(pair.ious)[np.ix_(kept, gt_index)]
        matched = match_ious(gt, pred, known)
        tp = (matched[None, :] >= iou_thresholds[:, None]).sum(axis=1)
    return PairCounts(gt=len(gt), pred=len(pred), tp=tp)


def cgf1_from_counts(
    gt: np.ndarray, pred: np.ndarray, tp: np.ndarray, *, iou_thresholds: int | None = None
) -> CgF1Result:
    """cgF1 of pairs given as arrays of their counts: ``gt`` and ``pred`` ``(P,)``, ``tp``
    ``(P, T)`` (:class:`PairCounts` stacked). What :func:`cgf1` computes, for callers that
    score the same pairs under many settings from counts they keep."""
    gt = np.asarray(gt, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    tp = np.asarray(tp, dtype=np.int64).reshape(len(gt), -1)
    n_t = tp.shape[1] if iou_thresholds is None else iou_thresholds
    has_gt, has_pred = gt > 0, pred > 0
    tp_sum = tp.sum(axis=0).astype(np.float64)
    fn = (gt[:, None] - tp).sum(axis=0)
    fp = (pred[:, None] - tp).sum(axis=0)  # all false positives (plain precision)
    both = has_gt & has_pred  # false positives on pairs with ground truth only
    pm_fp = (pred[both, None] - tp[both]).sum(axis=0)
    il = {
        "TP": int((has_gt & has_pred).sum()),
        "TN": int((~has_gt & ~has_pred).sum()),
        "FP": int((~has_gt & has_pred).sum()),
        "FN": int((has_gt & ~has_pred).sum()),
    }
    recall = np.array([_safe_div(t, t + f) for t, f in zip(tp_sum, fn, strict=True)])
    pm_precision = np.array([_safe_div(t, t + f) for t, f in zip(tp_sum, pm_fp, strict=True)])
    precision = np.array([_safe_div(t, t + f) for t, f in zip(tp_sum, fp, strict=True)])
    pmf1_at = [_f1(p, r) for p, r in zip(pm_precision, recall, strict=True)]
    pmf1 = float(np.mean(pmf1_at)) if n_t else 0.0
    il_mcc = mcc(il["TP"], il["TN"], il["FP"], il["FN"])
    return CgF1Result(
        cgf1=100.0 * pmf1 * il_mcc,
        pmf1=pmf1,
        il_mcc=il_mcc,
        il_precision=_safe_div(il["TP"], il["TP"] + il["FP"]),
        il_recall=_safe_div(il["TP"], il["TP"] + il["FN"]),
        precision=float(np.mean(precision)) if n_t else 0.0,
        recall=float(np.mean(recall)) if n_t else 0.0,
        pairs=len(gt),
        pmf1_at=pmf1_at,
        il_counts=il,
    )


def cgf1(
    pairs: Sequence[PairEval],
    *,
    score_threshold: float = 0.5,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> CgF1Result:
    """cgF1, pmF1 and IL_MCC over instance-exhaustive ``pairs`` (see the module docstring)."""
    counts = [
        pair_counts(p, score_threshold=score_threshold, iou_thresholds=iou_thresholds)
        for p in pairs
    ]
    n_t = len(iou_thresholds)
    return cgf1_from_counts(
        np.array([c.gt for c in counts], dtype=np.int64),
        np.array([c.pred for c in counts], dtype=np.int64),
        np.array([c.tp for c in counts], dtype=np.int64).reshape(len(counts), n_t),
        iou_thresholds=n_t,
    )
