"""cgF1 / pmF1 / IL_MCC on hand-made cases whose values are worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from annotator import masks
from annotator.cli import app
from annotator.errors import InvalidInputError
from annotator.evaluation import evaluate_files
from annotator.metrics import PairEval, cgf1, mcc
from tests.factories import saco_dataset, write_json


def box(y0: int, x0: int, h: int, w: int, size: tuple[int, int] = (40, 40)) -> masks.RLE:
    m = np.zeros(size, bool)
    m[y0 : y0 + h, x0 : x0 + w] = True
    return masks.encode(m)


A, B = box(0, 0, 10, 10), box(20, 20, 10, 10)


def test_perfect_predictions_score_100() -> None:
    pairs = [
        PairEval(gt=[A, B], pred=[B, A], scores=[0.9, 0.8]),
        PairEval(gt=[A], pred=[A], scores=[0.99]),
        PairEval(gt=[], pred=[], scores=[]),  # a correctly empty negative
    ]
    r = cgf1(pairs)
    assert r.cgf1 == pytest.approx(100.0)
    assert (r.pmf1, r.il_mcc) == (pytest.approx(1.0), pytest.approx(1.0))
    assert r.il_counts == {"TP": 2, "TN": 1, "FP": 0, "FN": 0}


def test_false_alarm_on_a_negative_hurts_only_the_image_level() -> None:
    pairs = [
        PairEval(gt=[A], pred=[A], scores=[0.9]),
        PairEval(gt=[B], pred=[B], scores=[0.9]),
        PairEval(gt=[], pred=[], scores=[]),
        PairEval(gt=[], pred=[A], scores=[0.7]),  # IL false positive
    ]
    r = cgf1(pairs)
    assert r.pmf1 == pytest.approx(1.0)
    assert r.il_mcc == pytest.approx(2 / math.sqrt(12))  # TP 2, TN 1, FP 1, FN 0
    assert r.cgf1 == pytest.approx(100 * 2 / math.sqrt(12))
    assert r.precision == pytest.approx(2 / 3)  # plain precision does count that FP


def test_low_scores_are_dropped() -> None:
    r = cgf1([PairEval(gt=[A], pred=[A, B], scores=[0.9, 0.49]), PairEval([], [B], [0.2])])
    assert r.pmf1 == pytest.approx(1.0)
    assert r.il_counts == {"TP": 1, "TN": 1, "FP": 0, "FN": 0}


def test_iou_thresholds_are_averaged() -> None:
    gt = box(0, 0, 10, 10)
    pred = box(0, 0, 8, 9)  # 72 pixels inside the 100 of gt: IoU 0.72
    r = cgf1([PairEval([gt], [pred], [0.9]), PairEval([], [], [])])
    # TP at 0.50..0.70 (5 thresholds), nothing at 0.75..0.95.
    assert r.pmf1_at == pytest.approx([1.0] * 5 + [0.0] * 5)
    assert r.pmf1 == pytest.approx(0.5)
    assert r.cgf1 == pytest.approx(50.0)


def test_matching_is_one_to_one() -> None:
    r = cgf1([PairEval(gt=[A, B], pred=[A, A], scores=[0.9, 0.9]), PairEval([], [], [])])
    # One TP, one FP (the duplicate), one FN (B): P = R = 1/2.
    assert r.pmf1 == pytest.approx(0.5)


def test_hungarian_beats_greedy() -> None:
    g1, g2 = box(0, 0, 10, 20), box(0, 10, 10, 20)
    p1 = box(0, 6, 10, 20)  # IoU 0.54 with g1, 0.67 with g2: greedy gives it g2
    p2 = box(0, 12, 10, 18)  # IoU 0.9 with g2, 0.27 with g1: greedy leaves it unmatched at 0.5
    r = cgf1([PairEval([g1, g2], [p1, p2], [0.9, 0.8]), PairEval([], [], [])])
    # The best one-to-one matching (p1-g1, p2-g2) matches both at IoU 0.5.
    assert r.pmf1_at[0] == pytest.approx(1.0)
    assert r.pmf1_at[1] == pytest.approx(0.5)  # at 0.55 only p2-g2 survives


def test_crowd_ground_truth_is_ignored() -> None:
    r = cgf1(
        [PairEval(gt=[A, B], pred=[A], scores=[0.9], gt_crowd=[False, True]), PairEval([], [], [])]
    )
    assert r.pmf1 == pytest.approx(1.0)


def test_mcc_degenerate_is_zero() -> None:
    assert mcc(3, 0, 0, 0) == 0.0
    assert mcc(1, 1, 0, 0) == pytest.approx(1.0)


def test_eval_files_and_cli(tmp_path: Path) -> None:
    gt = saco_dataset()
    preds = [
        {"image_id": a["image_id"], "segmentation": a["segmentation"], "score": 0.95}
        for a in gt["annotations"]
    ]
    gt_path = write_json(tmp_path / "gt.json", gt)
    pred_path = write_json(tmp_path / "pred.json", preds)
    r = evaluate_files(gt_path, pred_path)
    exhaustive = sum(1 for p in gt["images"] if p["is_instance_exhaustive"])
    assert r.pairs == exhaustive == 6
    assert r.cgf1 == pytest.approx(100.0)

    out = CliRunner().invoke(
        app, ["eval", "--gt", str(gt_path), "--pred", str(pred_path), "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["cgF1"] == pytest.approx(100.0)

    preds[0]["image_id"] = 999
    write_json(pred_path, preds)
    with pytest.raises(InvalidInputError, match=r"predictions\[0\]: image_id 999 is not a pair of"):
        evaluate_files(gt_path, pred_path)


def test_known_ious_give_the_same_result() -> None:
    """A caller that passes the IoU matrix (pred x gt, crowd included) gets the figures the
    masks give, at any score threshold."""
    g1, g2 = box(0, 0, 10, 20), box(0, 10, 10, 20)
    preds = [box(0, 6, 10, 20), box(0, 12, 10, 18), A]
    pairs = [
        PairEval([g1, g2, A], preds, [0.9, 0.4, 0.6], gt_crowd=[False, False, True]),
        PairEval([], [B], [0.45]),
    ]
    known = [
        PairEval(p.gt, p.pred, p.scores, p.gt_crowd, masks.iou_matrix(p.pred, p.gt))
        if p.gt
        else PairEval(p.gt, p.pred, p.scores, ious=np.zeros((len(p.pred), 0)))
        for p in pairs
    ]
    for threshold in (0.5, 0.42, 0.3):
        plain = cgf1(pairs, score_threshold=threshold)
        cached = cgf1(known, score_threshold=threshold)
        assert cached.as_dict() == plain.as_dict() and cached.pmf1_at == plain.pmf1_at
