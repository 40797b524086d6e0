"""SAM 3's set-prediction loss for ``Sam3Model`` outputs (DETR-style, with presence).

For each image-phrase row the model predicts ``Q`` queries: a logit (``pred_logits`` ``(N, Q)``),
a box (``pred_boxes`` ``(N, Q, 4)``, normalised xyxy), a mask (``pred_masks`` ``(N, Q, h, w)``
logits at 4x the patch grid) and, per row, a presence logit (``presence_logits`` ``(N, 1)``: is
the phrase in the image at all?) and a semantic map (``semantic_seg`` ``(N, 1, h, w)``).

1. **Matching.** Per row, the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``)
   assigns each ground-truth instance one query, minimising
   ``cost_class * focal_cost + cost_bbox * L1 + cost_giou * (-GIoU) + cost_dice * dice``.
   A negative row (phrase absent) has nothing to match.
2. **Terms** (each normalised by the number of ground-truth instances in the batch, at least 1):
   classification: sigmoid focal loss over every query (matched = 1, others and every query of
   a negative row = 0); box: L1 + (1 - GIoU) of matched queries; mask: sigmoid focal + dice of
   matched queries, the predicted logits upsampled (bilinear) to the target masks' resolution;
   presence: binary cross-entropy of the presence logit against "has instances"; semantic:
   binary cross-entropy of the semantic map against the union of the instances.

Scores at inference are ``sigmoid(logit) * sigmoid(presence)``, so the presence term teaches
recognition (is the concept there?) and the query terms teach localisation, as in the paper.

3. **Auxiliary decoder layers** (``LossWeights.aux`` > 0): as in DETR and SAM 3, every earlier
   decoder layer's logits, boxes and presence are supervised too (matched on their own, by class
   and box costs: the model predicts masks from the last layer only), each term scaled by
   ``aux``. The transformers model returns only the last layer's outputs, so the trainer collects
   the others (:class:`AuxOutputs`).
4. **Dense attributes** (``LossWeights.dense`` > 0, synthetic examples only): a 1x1 convolution
   per FPN level (:class:`AttributeHead`, a training-time head that is not part of the model
   directory) classifies every position of the vision features by what the image shows there
   (colour, shape, texture or background), a soft cross-entropy against each class's share of
   the position's pixels. A phrase names a colour or texture *and a shape*; shape is what a small
   ViT learns last from the sparse set-prediction signal, and per-pixel supervision of it is
   cheap (the vision pass runs once per image, not per phrase).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

__all__ = [
    "AttributeHead",
    "AuxOutputs",
    "LossWeights",
    "SetCriterion",
    "Target",
    "attribute_shares",
    "box_xyxy_from_masks",
    "dense_attribute_loss",
    "dice_loss",
    "generalized_box_iou",
    "match",
    "sigmoid_focal_loss",
]


@dataclass(frozen=True)
class Target:
    """Ground truth of one image-phrase row: ``masks`` ``(G, H, W)`` float in {0, 1} (any
    resolution; all rows of a batch the same) and ``boxes`` ``(G, 4)`` normalised xyxy. ``G = 0``
    for a negative (absent) phrase."""

    masks: torch.Tensor
    boxes: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.masks.shape[0])


@dataclass(frozen=True)
class LossWeights:
    """Weights of the terms in the total, and of the costs in the matching."""

    cls: float = 5.0
    bbox: float = 5.0
    giou: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    # Recognition (is the phrase here? which pixels?) is what a model trained from scratch learns
    # last; dense, text-conditioned semantic supervision teaches the text-image fusion fastest.
    presence: float = 5.0
    semantic: float = 10.0
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    cost_dice: float = 5.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Focusing exponent of the classification term alone (None: ``focal_gamma``). A lower one
    # pushes confident queries further: at 2 a matched query's probability plateaus well below
    # the 0.5 that inference and cgF1 keep.
    class_gamma: float | None = None
    # Scale of every earlier decoder layer's class, box and presence terms (0: last layer only).
    aux: float = 0.0
    # Weight of the dense attribute term (0: off; used only where examples have attribute maps).
    dense: float = 0.0


@dataclass(frozen=True)
class AuxOutputs:
    """One earlier decoder layer's predictions: ``pred_logits`` ``(N, Q)``, ``pred_boxes``
    ``(N, Q, 4)`` normalised xyxy, ``presence_logits`` ``(N, 1)``."""

    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    presence_logits: torch.Tensor


class AttributeHead(torch.nn.Module):
    """Per FPN level, a 1x1 convolution from the vision features to the logits of every
    attribute's classes (``classes``: how many per attribute, background included)."""

    def __init__(self, channels: int, classes: Sequence[int], levels: int) -> None:
        super().__init__()
        self.classes = tuple(int(c) for c in classes)
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv2d(channels, sum(self.classes), kernel_size=1) for _ in range(levels)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, features, strict=True)]


def attribute_shares(
    attributes: torch.Tensor, classes: Sequence[int], sizes: Sequence[tuple[int, int]]
) -> list[list[torch.Tensor]]:
    """``(B, A, H, W)`` int64 class maps -> per size, per attribute ``(B, n, h, w)``: each
    class's share of the position's pixels (adaptive average pooling of the one-hot maps), the
    targets of :func:`dense_attribute_loss`. Channels-last, as the pooling of the one-hot maps
    leaves them (the loss's reductions then add in the same order whichever way they were
    made)."""
    with torch.no_grad():
        onehots = [
            F.one_hot(attributes[:, a], n).permute(0, 3, 1, 2).float()
            for a, n in enumerate(classes)
        ]
        return [
            [
                F.adaptive_avg_pool2d(onehot, size).contiguous(memory_format=torch.channels_last)
                for onehot in onehots
            ]
            for size in sizes
        ]


def dense_attribute_loss(
    logits: Sequence[torch.Tensor],
    targets: torch.Tensor | Sequence[Sequence[torch.Tensor]],
    classes: Sequence[int],
) -> torch.Tensor:
    """Mean soft cross-entropy over levels and attributes: ``logits`` per level ``(B, sum(classes),
    h, w)``; ``targets`` the ``(B, A, H, W)`` int64 class maps at image resolution, pooled to each
    level as the share of each class in the position's pixels, or those shares per level and
    attribute (:func:`attribute_shares`)."""
    if isinstance(targets, torch.Tensor):
        sizes = [(int(level.shape[-2]), int(level.shape[-1])) for level in logits]
        targets = attribute_shares(targets, classes, sizes)
    total = logits[0].sum() * 0.0
    count = 0
    for level, shares in zip(logits, targets, strict=True):
        offset = 0
        for share, n in zip(shares, classes, strict=True):
            log_p = F.log_softmax(level[:, offset : offset + n].float(), dim=1)
            total = total - (share.to(log_p.device) * log_p).sum(1).mean()
            offset += n
            count += 1
    return total / max(count, 1)


def box_xyxy_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """``(G, H, W)`` masks -> ``(G, 4)`` normalised xyxy boxes of their pixels (zeros for an
    empty mask). The right/bottom edge is the last pixel + 1, as COCO boxes."""
    count, height, width = masks.shape
    boxes = torch.zeros(count, 4, dtype=torch.float32)
    for i in range(count):
        ys, xs = torch.nonzero(masks[i] > 0.5, as_tuple=True)
        if len(xs):
            boxes[i] = torch.tensor(
                [
                    xs.min() / width,
                    ys.min() / height,
                    (xs.max() + 1) / width,
                    (ys.max() + 1) / height,
                ]
            )
    return boxes


def generalized_box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(A, 4)`` x ``(B, 4)`` xyxy boxes -> ``(A, B)`` generalised IoU."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = inter / union.clamp(min=1e-7)
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    hull = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-7)


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Elementwise focal loss (RetinaNet) of logits against targets in [0, 1]."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(K, ...)`` mask logits and targets -> ``(K,)`` soft dice loss (1 - dice)."""
    prob = logits.sigmoid().flatten(1)
    flat = targets.flatten(1)
    numerator = 2 * (prob * flat).sum(1)
    denominator = prob.sum(1) + flat.sum(1)
    return 1 - (numerator + 1) / (denominator + 1)


def _dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(Q, P)`` logits, ``(G, P)`` targets -> ``(Q, G)`` pairwise dice loss."""
    prob = logits.sigmoid()
    numerator = 2 * prob @ targets.T
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@torch.no_grad()
def match(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    masks: torch.Tensor | None,
    target: Target,
    weights: LossWeights,
) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of one row: ``logits`` ``(Q,)``, ``boxes`` ``(Q, 4)``, ``masks``
    ``(Q, h, w)`` logits (``None``: no dice cost) against ``target``. Returns (query indices,
    target indices), each ``(min(Q, G),)`` int64. No gradient flows through the costs."""
    if target.count == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    prob = logits.float().sigmoid()[:, None]
    alpha, gamma = weights.focal_alpha, weights.focal_gamma
    neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    cost_class = (pos - neg).expand(-1, target.count)
    cost_bbox = torch.cdist(boxes.float(), target.boxes.float(), p=1)
    cost_giou = -generalized_box_iou(boxes.float(), target.boxes.float())
    cost = (
        weights.cost_class * cost_class
        + weights.cost_bbox * cost_bbox
        + weights.cost_giou * cost_giou
    )
    if masks is not None:
        size = masks.shape[-2:]
        small = F.interpolate(target.masks[None].float(), size=size, mode="bilinear")[0]
        cost = cost + weights.cost_dice * _dice_cost(masks.float().flatten(1), small.flatten(1))
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return rows.astype(np.int64), cols.astype(np.int64)


@dataclass
class SetCriterion:
    """The loss of a batch of ``Sam3Model`` outputs against one :class:`Target` per row."""

    weights: LossWeights = field(default_factory=LossWeights)

    def __call__(
        self, outputs: object, targets: list[Target], aux: Sequence[AuxOutputs] = ()
    ) -> dict[str, torch.Tensor]:
        """A dict of the weighted ``total`` and each unweighted term (``cls``, ``bbox``,
        ``giou``, ``mask``, ``dice``, ``presence``, ``semantic``, and with ``weights.aux`` > 0
        ``aux``: the earlier decoder layers' class, box and presence terms, weighted as the last
        layer's, summed)."""
        w = self.weights
        logits: torch.Tensor = outputs.pred_logits  # type: ignore[attr-defined]
        boxes: torch.Tensor = outputs.pred_boxes  # type: ignore[attr-defined]
        masks: torch.Tensor = outputs.pred_masks  # type: ignore[attr-defined]
        presence: torch.Tensor = outputs.presence_logits  # type: ignore[attr-defined]
        semantic: torch.Tensor | None = outputs.semantic_seg  # type: ignore[attr-defined]
        rows = logits.shape[0]
        if len(targets) != rows:
            raise ValueError(f"{rows} rows of outputs but {len(targets)} targets")
        device = logits.device
        n_instances = max(sum(t.count for t in targets), 1)
        present = torch.tensor(
            [1.0 if t.count else 0.0 for t in targets], device=device, dtype=torch.float32
        )

        terms, index, order = self._query_terms(logits, boxes, masks, targets, n_instances)
        zero = logits.sum() * 0.0
        if index is not None:
            gt_masks = torch.cat([t.masks[o] for t, o in zip(targets, order, strict=True)])
            gt_masks = gt_masks.to(device).float()
            matched = masks[index[:, 0], index[:, 1]].float()
            up = F.interpolate(
                matched[:, None], size=gt_masks.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
            terms["mask"] = (
                sigmoid_focal_loss(up, gt_masks, -1.0, w.focal_gamma).flatten(1).mean(1)
            ).sum() / n_instances
            terms["dice"] = dice_loss(up, gt_masks).sum() / n_instances
        else:
            terms["mask"] = terms["dice"] = zero

        terms["presence"] = F.binary_cross_entropy_with_logits(
            presence.float().reshape(-1), present
        )
        if semantic is not None and w.semantic > 0:
            size = semantic.shape[-2:]
            unions = []
            for target in targets:
                if target.count:
                    small = F.interpolate(target.masks[None].float(), size=size, mode="bilinear")
                    unions.append(small[0].amax(0).clamp(0, 1))
                else:
                    unions.append(torch.zeros(size))
            sem_target = torch.stack(unions).to(device)
            terms["semantic"] = F.binary_cross_entropy_with_logits(
                semantic.float()[:, 0], sem_target
            )
        else:
            terms["semantic"] = zero
        if w.aux > 0:
            terms["aux"] = zero
            for layer in aux:
                layer_terms, _, _ = self._query_terms(
                    layer.pred_logits, layer.pred_boxes, None, targets, n_instances
                )
                layer_presence = F.binary_cross_entropy_with_logits(
                    layer.presence_logits.float().reshape(-1), present
                )
                terms["aux"] = terms["aux"] + (
                    w.cls * layer_terms["cls"]
                    + w.bbox * layer_terms["bbox"]
                    + w.giou * layer_terms["giou"]
                    + w.presence * layer_presence
                )
        total = (
            w.cls * terms["cls"]
            + w.bbox * terms["bbox"]
            + w.giou * terms["giou"]
            + w.mask * terms["mask"]
            + w.dice * terms["dice"]
            + w.presence * terms["presence"]
            + w.semantic * terms["semantic"]
        )
        if "aux" in terms:
            total = total + w.aux * terms["aux"]
        return {"total": total, **terms}

    def _query_terms(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        masks: torch.Tensor | None,
        targets: list[Target],
        n_instances: int,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, list[torch.Tensor]]:
        """Match every row, then the class, L1 and GIoU terms. Returns the terms, the matched
        ``(row, query)`` pairs ``(M, 2)`` (``None`` when nothing matched) and, per row, the
        indices of its matched instances in the same order."""
        w = self.weights
        device = logits.device
        cls_targets = torch.zeros_like(logits)
        q_index: list[torch.Tensor] = []
        order: list[torch.Tensor] = []
        for r, target in enumerate(targets):
            row_masks = masks[r] if masks is not None else None
            qi, ti = match(logits[r], boxes[r], row_masks, target, w)
            order.append(torch.as_tensor(ti, dtype=torch.long))
            if len(qi) == 0:
                continue
            qi_t = torch.as_tensor(qi, device=device)
            cls_targets[r, qi_t] = 1.0
            q_index.append(torch.stack([torch.full_like(qi_t, r), qi_t], 1))
        terms: dict[str, torch.Tensor] = {
            "cls": sigmoid_focal_loss(
                logits.float(),
                cls_targets,
                w.focal_alpha,
                w.focal_gamma if w.class_gamma is None else w.class_gamma,
            ).sum()
            / n_instances
        }
        if not q_index:
            terms["bbox"] = terms["giou"] = logits.sum() * 0.0
            return terms, None, order
        index = torch.cat(q_index)
        matched_boxes = boxes[index[:, 0], index[:, 1]].float()
        gt_boxes = torch.cat([t.boxes[o] for t, o in zip(targets, order, strict=True)])
        gt_boxes = gt_boxes.to(device).float()
        terms["bbox"] = F.l1_loss(matched_boxes, gt_boxes, reduction="sum") / n_instances
        giou = torch.diag(generalized_box_iou(matched_boxes, gt_boxes))
        terms["giou"] = (1 - giou).sum() / n_instances
        return terms, index, order
