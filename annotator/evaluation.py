"""Evaluate predictions against SA-Co ground truth from files (``annotator eval``).

Ground truth: an SA-Co JSON (pairs as ``images``, RLE annotations). Predictions: a COCO results
list (or an object with ``annotations``) whose ``image_id`` is the pair id, with ``segmentation``
(any COCO form) and ``score``. Only pairs with ``is_instance_exhaustive`` true are evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotator import masks
from annotator.errors import InvalidInputError
from annotator.formats.common import entry, load_json, require
from annotator.metrics import CgF1Result, PairEval, cgf1


@dataclass
class _Pair:
    gt: list[masks.RLE] = field(default_factory=list)
    gt_crowd: list[bool] = field(default_factory=list)
    pred: list[masks.RLE] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def _segmentation(item: dict[str, Any], size: tuple[int, int], where: str) -> masks.RLE:
    if "segmentation" not in item:
        raise InvalidInputError(f"{where}: missing field 'segmentation'")
    try:
        return masks.from_segmentation(item["segmentation"], *size)
    except ValueError as exc:
        raise InvalidInputError(f"{where}: {exc}") from exc


def evaluate_files(gt_path: Path, pred_path: Path, *, score_threshold: float = 0.5) -> CgF1Result:
    gt = load_json(gt_path)
    pred = load_json(pred_path)
    if not isinstance(gt, dict):
        raise InvalidInputError(f"{gt_path}: an SA-Co file must be a JSON object with 'images'")
    sizes: dict[Any, tuple[int, int]] = {}
    pairs: dict[Any, _Pair] = {}
    for i, item in enumerate(require(gt, "images", list, f"{gt_path}")):
        where = f"{gt_path}: {entry('images', i, item)}"
        pair_id = require(item, "id", (int, str), where)
        sizes[pair_id] = (require(item, "height", int, where), require(item, "width", int, where))
        if item.get("is_instance_exhaustive", False):
            pairs[pair_id] = _Pair()
    for i, ann in enumerate(gt.get("annotations", [])):
        where = f"{gt_path}: {entry('annotations', i, ann)}"
        pair_id = require(ann, "image_id", (int, str), where)
        if pair_id not in sizes:
            raise InvalidInputError(f"{where}: image_id {pair_id!r} is not in 'images'")
        if pair_id in pairs:
            pair = pairs[pair_id]
            pair.gt.append(_segmentation(ann, sizes[pair_id], where))
            pair.gt_crowd.append(bool(ann.get("iscrowd", 0)))
    results = pred.get("annotations") if isinstance(pred, dict) else pred
    if not isinstance(results, list):
        raise InvalidInputError(f"{pred_path}: expected a list of predictions")
    for i, det in enumerate(results):
        where = f"{pred_path}: {entry('predictions', i, det)}"
        pair_id = require(det, "image_id", (int, str), where)
        if pair_id not in sizes:
            raise InvalidInputError(f"{where}: image_id {pair_id!r} is not a pair of {gt_path}")
        score = require(det, "score", (int, float), where)
        if pair_id in pairs:
            pair = pairs[pair_id]
            pair.pred.append(_segmentation(det, sizes[pair_id], where))
            pair.scores.append(float(score))
    if not pairs:
        raise InvalidInputError(f"{gt_path}: no instance-exhaustive pairs to evaluate")
    return cgf1(
        [PairEval(p.gt, p.pred, p.scores, p.gt_crowd) for p in pairs.values()],
        score_threshold=score_threshold,
    )
