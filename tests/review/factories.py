"""Review tasks made directly in the database (images, pairs, proposals, verifications, tasks),
as the mining pipeline would leave them: pairs in review, one open task each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from annotator import masks
from annotator.db import repositories as repo
from annotator.db.models import (
    Image,
    ImageStatus,
    Pair,
    PairOrigin,
    PairState,
    Proposal,
    ReviewTask,
    Verification,
    VerificationKind,
)


@dataclass
class MadePair:
    pair_id: int
    task_id: int
    image_id: int
    phrase: str
    height: int
    width: int
    proposals: dict[int, np.ndarray] = field(default_factory=dict)  # id -> (H, W) bool


def blob(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An irregular blob (an ellipse with a bite taken out), never empty."""
    yy, xx = np.mgrid[:height, :width]
    cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
    ry, rx = rng.uniform(0.08, 0.2) * height, rng.uniform(0.08, 0.2) * width
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    mask &= ~(((yy - cy - ry / 2) / (ry / 3)) ** 2 + ((xx - cx) / (rx / 3)) ** 2 <= 1)
    mask[int(cy), int(cx)] = True
    return mask


def make_review_pairs(
    session: Session,
    image_dir: Path,
    *,
    dataset: str = "review",
    n_pairs: int = 3,
    n_proposals: int = 3,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
) -> list[MadePair]:
    """``n_pairs`` pairs (one image each) in review with ``n_proposals`` proposals, MV scores
    per proposal, an EV score per pair and an open review task."""
    rng = np.random.default_rng(seed)
    ds, _ = repo.get_or_create_dataset(session, dataset)
    height, width = size
    image_dir.mkdir(parents=True, exist_ok=True)
    phrases = ["red car", "striped umbrella", "white sneaker", "tabby cat", "green bottle"]
    concept_ids = repo.ensure_concepts(session, phrases)
    made: list[MadePair] = []
    for i in range(n_pairs):
        path = image_dir / f"{dataset}_{i}.png"
        pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        PILImage.fromarray(pixels).save(path)
        image = Image(
            dataset_id=ds.id,
            file_name=path.name,
            uri=str(path),
            sha256=f"{dataset}-{i:060d}"[-64:],
            width=width,
            height=height,
            status=ImageStatus.READY,
        )
        session.add(image)
        session.flush()
        phrase = phrases[i % len(phrases)]
        pair = Pair(
            dataset_id=ds.id,
            image_id=image.id,
            concept_id=concept_ids[phrase],
            origin=PairOrigin.CAPTION,
            state=PairState.IN_REVIEW,
        )
        session.add(pair)
        session.flush()
        entry = MadePair(pair.id, 0, image.id, phrase, height, width)
        for rank in range(n_proposals):
            mask = blob(height, width, rng)
            rle = masks.encode(mask)
            x, y, w, h = masks.bbox(rle)
            proposal = Proposal(
                pair_id=pair.id,
                rle_counts=rle["counts"],
                bbox_x=x,
                bbox_y=y,
                bbox_w=w,
                bbox_h=h,
                area=masks.area(rle),
                score=round(0.9 - 0.1 * rank, 3),
                presence=0.8,
                model_version="sam3-test@1",
                rank=rank,
            )
            session.add(proposal)
            session.flush()
            session.add(
                Verification(
                    pair_id=pair.id,
                    proposal_id=proposal.id,
                    kind=VerificationKind.MV,
                    label="accept",
                    p_accept=round(0.6 - 0.1 * rank, 3),
                    model_version="mv-test@1",
                )
            )
            entry.proposals[proposal.id] = mask
        session.add(
            Verification(
                pair_id=pair.id,
                kind=VerificationKind.EV,
                label="exhaustive",
                p_accept=0.45,
                model_version="ev-test@1",
            )
        )
        task = ReviewTask(pair_id=pair.id)
        session.add(task)
        session.flush()
        entry.task_id = task.id
        made.append(entry)
    return made
