"""A SIMULATED reviewer: answers review tasks from the synthetic world's ground truth.

This is a stand-in for a person, for the offline demo only. It knows every instance of every
phrase (the world drew them), and answers each review task the way a careful annotator would in
Label Studio: a proposal that matches an instance well (IoU >= ``accept_iou``) is accepted as is,
one that overlaps an instance is fixed (its pixels replaced by the instance), others are
rejected, missing instances are drawn, and the exhaustivity question is answered ("yes", or
"absent" when the phrase names nothing). The answer is written as a Label Studio annotation and
applied by :func:`annotator.services.review.apply_annotation`: the same code, rows and states as
a real reviewer's decision synced from Label Studio (reviews accept/reject/fix, annotations with
``source=human`` and ``review_id``), with the reviewer named ``SIMULATED_REVIEWER``.

``lead_time_s`` is not measured (nobody worked): it is the SAM 3 paper's per-pair human time
(Table 14: 30 s for a negative pair, 207 s for a positive one), so the demo's time estimates
add up the paper's figures, not ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from scipy.optimize import linear_sum_assignment
from sqlalchemy.orm import Session

from annotator import masks as mask_ops
from annotator.db import repositories as repo
from annotator.db import reviews as rr
from annotator.db import simulation as sim_db
from annotator.integrations import label_studio as ls
from annotator.services.review import apply_annotation

__all__ = ["NEGATIVE_PAIR_S", "POSITIVE_PAIR_S", "SIMULATED_REVIEWER", "ReviewTally", "answer_all"]

SIMULATED_REVIEWER = "simulated reviewer (synthetic ground truth)"
# SAM 3 paper, Table 14: human seconds per image-phrase pair without AI verifiers.
NEGATIVE_PAIR_S = 30.0
POSITIVE_PAIR_S = 207.0

# Ground truth of an image: phrase -> (N, H, W) bool instance masks (empty when absent).
GroundTruth = Callable[[str, str], list[np.ndarray]]


@dataclass
class ReviewTally:
    tasks: int = 0
    accepted: int = 0
    fixed: int = 0
    rejected: int = 0
    drawn: int = 0  # missing instances drawn by hand
    negatives: int = 0
    positives: int = 0
    lead_time_s: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)


def _decide(
    proposals: list[np.ndarray], truth: list[np.ndarray], accept_iou: float, fix_iou: float
) -> tuple[dict[int, tuple[str, np.ndarray]], list[np.ndarray]]:
    """Per proposal index: (``accept`` | ``fix`` | ``reject``, the mask to submit); and the
    instances no proposal covers (to draw)."""
    decisions: dict[int, tuple[str, np.ndarray]] = {
        k: ("reject", m) for k, m in enumerate(proposals)
    }
    if not truth:
        return decisions, []
    covered: set[int] = set()
    if proposals:
        ious = mask_ops.iou_matrix(
            mask_ops.encode_many(np.stack(proposals)), mask_ops.encode_many(np.stack(truth))
        )
        rows, cols = linear_sum_assignment(-ious)
        for r, c in zip(rows, cols, strict=True):
            if ious[r, c] >= accept_iou:
                decisions[int(r)] = ("accept", proposals[r])
                covered.add(int(c))
            elif ious[r, c] >= fix_iou:
                decisions[int(r)] = ("fix", truth[c])
                covered.add(int(c))
    return decisions, [t for j, t in enumerate(truth) if j not in covered]


def answer_all(
    session: Session,
    dataset: str,
    truth: GroundTruth,
    *,
    accept_iou: float = 0.8,
    fix_iou: float = 0.3,
) -> ReviewTally:
    """Answer every unanswered review task of ``dataset``; ``truth(file_name, phrase)`` gives
    the instances. Only flushes (the caller commits)."""
    dataset_id = repo.get_dataset(session, dataset).id
    tally = ReviewTally()
    tasks = sim_db.open_review_tasks(session, dataset_id)
    contents = rr.task_contents(session, [t.id for t in tasks])
    names = sim_db.image_names(session, [c.image_id for c in contents.values()])
    for task in tasks:
        content = contents.get(task.id)
        if content is None:
            continue
        size = [content.height, content.width]
        proposal_masks = [
            mask_ops.decode({"size": size, "counts": p.counts}) for p in content.proposals
        ]
        instances = truth(names[content.image_id], content.phrase)
        decisions, missing = _decide(proposal_masks, instances, accept_iou, fix_iou)
        result: list[dict[str, object]] = []
        for k, proposal in enumerate(content.proposals):
            action, mask = decisions[k]
            region = ls.region_id(proposal.id)
            result.append(ls.brush_region(region, mask))
            if action == "reject":
                result.append(ls.region_choice(region, "reject"))
            counter = {"accept": "accepted", "fix": "fixed", "reject": "rejected"}[action]
            setattr(tally, counter, getattr(tally, counter) + 1)
        for j, mask in enumerate(missing):
            result.append(ls.brush_region(f"drawn{j}", mask))
            tally.drawn += 1
        present = bool(instances)
        result.append(
            ls.exhaustivity_result(ls.Exhaustivity.YES if present else ls.Exhaustivity.ABSENT)
        )
        result.append(ls.note_result(f"answered by the {SIMULATED_REVIEWER}"))
        lead_time = POSITIVE_PAIR_S if present else NEGATIVE_PAIR_S
        raw = {
            "id": task.id,
            "task": task.id,
            "updated_at": datetime.now(UTC).isoformat(),
            "result": result,
            "lead_time": lead_time,
            "was_cancelled": False,
        }
        outcome = apply_annotation(session, task, raw)
        tally.outcomes[outcome] = tally.outcomes.get(outcome, 0) + 1
        for row in rr.reviews_of_external(session, task.id, str(task.id)):
            row.reviewer = SIMULATED_REVIEWER
        tally.tasks += 1
        tally.lead_time_s += lead_time
        if present:
            tally.positives += 1
        else:
            tally.negatives += 1
    session.flush()
    return tally
