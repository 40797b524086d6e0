"""The set-prediction loss on hand-made outputs: matching, and each term's value."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch.testing import assert_close

from annotator.training.loss import (
    AuxOutputs,
    LossWeights,
    SetCriterion,
    Target,
    box_xyxy_from_masks,
    dice_loss,
    generalized_box_iou,
    match,
    sigmoid_focal_loss,
)


def test_generalized_box_iou_values() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
    # inter 1, union 7, hull 9: 1/7 - 2/9; identical: 1; disjoint: 0 - (12 - 8) / 12.
    assert_close(generalized_box_iou(a, b), torch.tensor([[1 / 7 - 2 / 9, 1.0, -1 / 3]]))


def test_dice_and_focal_values() -> None:
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    certain = torch.tensor([[20.0, 20.0, -20.0, -20.0]])
    assert_close(dice_loss(certain, target), torch.tensor([0.0]), atol=1e-6, rtol=0)
    half = torch.zeros(1, 4)  # p = 0.5 everywhere: dice = (2 * 1 + 1) / (2 + 2 + 1)
    assert_close(dice_loss(half, target), torch.tensor([1 - 3 / 5]))
    # p = 0.5, target 1: ce = ln 2, (1 - p_t)^2 = 1/4, alpha = 0.25.
    value = sigmoid_focal_loss(torch.zeros(1), torch.ones(1), alpha=0.25, gamma=2.0)
    assert_close(value, torch.tensor([0.25 * 0.25 * math.log(2)]))


def test_boxes_from_masks() -> None:
    masks = torch.zeros(2, 10, 20)
    masks[0, 2:5, 4:10] = 1
    assert_close(
        box_xyxy_from_masks(masks),
        torch.tensor([[4 / 20, 2 / 10, 10 / 20, 5 / 10], [0.0, 0.0, 0.0, 0.0]]),
    )


def _outputs(logits, boxes, masks, presence):  # type: ignore[no-untyped-def]
    return SimpleNamespace(
        pred_logits=logits, pred_boxes=boxes, pred_masks=masks, presence_logits=presence,
        semantic_seg=None,
    )  # fmt: skip


def test_hand_made_match_and_terms() -> None:
    # One positive row (one instance) and one negative row; 3 queries each.
    gt_mask = torch.zeros(1, 8, 8)
    gt_mask[0, 0:4, 0:4] = 1
    gt_box = box_xyxy_from_masks(gt_mask)  # (0, 0, 0.5, 0.5)
    perfect = torch.full((8, 8), -30.0)
    perfect[0:4, 0:4] = 30.0
    masks = torch.full((2, 3, 8, 8), -30.0)
    masks[0, 1] = perfect  # query 1 of row 0 is the instance
    boxes = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9]])
    boxes = torch.stack([boxes, boxes])
    logits = torch.tensor([[-5.0, 5.0, -5.0], [-5.0, -5.0, -5.0]])
    presence = torch.tensor([[4.0], [-4.0]])
    targets = [
        Target(masks=gt_mask, boxes=gt_box),
        Target(masks=torch.zeros(0, 8, 8), boxes=torch.zeros(0, 4)),
    ]
    weights = LossWeights(semantic=0.0)
    queries, instances = match(logits[0], boxes[0], masks[0], targets[0], weights)
    assert queries.tolist() == [1] and instances.tolist() == [0]
    assert match(logits[1], boxes[1], masks[1], targets[1], weights)[0].size == 0

    terms = SetCriterion(weights)(_outputs(logits, boxes, masks, presence), targets)
    assert_close(terms["bbox"], torch.tensor(0.0), atol=1e-6, rtol=0)
    assert_close(terms["giou"], torch.tensor(0.0), atol=1e-6, rtol=0)
    assert_close(terms["dice"], torch.tensor(0.0), atol=1e-5, rtol=0)
    assert terms["mask"] < 1e-6
    # cls: focal of logit 5 against 1 (query 1 of row 0) + five logits -5 against 0, / 1 instance.
    cls_targets = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected_cls = sigmoid_focal_loss(logits, cls_targets).sum()
    assert_close(terms["cls"], expected_cls)
    # presence: BCE of +4 against 1 and -4 against 0, averaged.
    assert_close(terms["presence"], torch.tensor(math.log1p(math.exp(-4.0))))
    total = (
        weights.cls * terms["cls"] + weights.presence * terms["presence"]
        + weights.mask * terms["mask"]
    )  # fmt: skip
    assert_close(terms["total"], total, atol=1e-5, rtol=1e-5)


def test_a_worse_match_costs_more() -> None:
    gt_mask = torch.zeros(1, 8, 8)
    gt_mask[0, 0:4, 0:4] = 1
    target = Target(masks=gt_mask, boxes=box_xyxy_from_masks(gt_mask))
    masks = torch.full((1, 1, 8, 8), -30.0)
    masks[0, 0, 0:4, 0:4] = 30.0
    good = torch.tensor([[[0.0, 0.0, 0.5, 0.5]]])
    off = torch.tensor([[[0.25, 0.25, 0.75, 0.75]]])
    presence = torch.tensor([[4.0]])
    logits = torch.tensor([[5.0]])
    criterion = SetCriterion(LossWeights(semantic=0.0))
    a = criterion(_outputs(logits, good, masks, presence), [target])
    b = criterion(_outputs(logits, off, masks, presence), [target])
    assert b["bbox"] > a["bbox"] and b["giou"] > a["giou"] and b["total"] > a["total"]


def test_aux_layers_add_their_class_box_and_presence_terms() -> None:
    gt_mask = torch.zeros(1, 8, 8)
    gt_mask[0, 0:4, 0:4] = 1
    target = Target(masks=gt_mask, boxes=box_xyxy_from_masks(gt_mask))
    masks = torch.full((1, 2, 8, 8), -30.0)
    masks[0, 0, 0:4, 0:4] = 30.0
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    logits = torch.tensor([[5.0, -5.0]])
    presence = torch.tensor([[4.0]])
    outputs = _outputs(logits, boxes, masks, presence)
    # An earlier layer that found the instance with its *second* query, box a bit off.
    layer = AuxOutputs(
        pred_logits=torch.tensor([[-1.0, 2.0]]),
        pred_boxes=torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.6]]]),
        presence_logits=torch.tensor([[1.0]]),
    )
    weights = LossWeights(semantic=0.0, aux=0.5)
    without = SetCriterion(LossWeights(semantic=0.0))(outputs, [target], [layer])
    assert "aux" not in without  # aux weight 0: earlier layers ignored
    terms = SetCriterion(weights)(outputs, [target], [layer])
    # Matched on its own: query 1 (the right box and the higher logit).
    cls = sigmoid_focal_loss(layer.pred_logits, torch.tensor([[0.0, 1.0]])).sum()
    bbox = torch.tensor(0.1)  # L1 of the matched box (y2 0.6 against 0.5)
    giou = 1 - (0.25 / 0.30)  # boxes nested: IoU = 0.25 / 0.30, hull = union
    presence_term = torch.tensor(math.log1p(math.exp(-1.0)))
    expected = (
        weights.cls * cls + weights.bbox * bbox + weights.giou * giou
        + weights.presence * presence_term
    )  # fmt: skip
    assert_close(terms["aux"], expected.float(), atol=1e-5, rtol=1e-5)
    assert_close(terms["total"], without["total"] + 0.5 * terms["aux"], atol=1e-4, rtol=1e-5)


def test_dense_attribute_loss_values() -> None:
    from annotator.training.loss import AttributeHead, dense_attribute_loss

    # One image 4x4: left half class 1 of attribute 0 (2 classes), all class 2 of attribute 1.
    attributes = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    attributes[0, 0, :, :2] = 1
    attributes[0, 1] = 2
    classes = (2, 3)
    # Level at full resolution with confident right answers: loss ~0.
    right = torch.full((1, 5, 4, 4), -20.0)
    right[0, 0, :, 2:] = 20.0  # attribute 0: class 0 on the right half
    right[0, 1, :, :2] = 20.0  # attribute 0: class 1 on the left half
    right[0, 4] = 20.0  # attribute 1: class 2 everywhere
    assert float(dense_attribute_loss([right], attributes, classes)) < 1e-6
    # Uniform logits: mean of log(2) and log(3).
    uniform = torch.zeros(1, 5, 4, 4)
    expected = (math.log(2) + math.log(3)) / 2
    assert_close(dense_attribute_loss([uniform], attributes, classes), torch.tensor(expected))
    # A 1x1 level sees the shares: half class 0 / half class 1 for attribute 0, so the best
    # it can do is a 50/50 prediction (loss log 2 for that attribute).
    coarse = torch.zeros(1, 5, 1, 1)
    coarse[0, 4] = 20.0
    assert_close(
        dense_attribute_loss([coarse], attributes, classes),
        torch.tensor(math.log(2) / 2),
        atol=1e-6,
        rtol=1e-5,
    )
    head = AttributeHead(channels=8, classes=classes, levels=2)
    out = head([torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 2, 2)])
    assert [tuple(o.shape) for o in out] == [(1, 5, 4, 4), (1, 5, 2, 2)]
