"""Browsable data made directly in the database: images with files, decided pairs with masks
(auto, human, imported), negatives, pairs in review with proposals, and human reviews."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from annotator import masks
from annotator.db import repositories as repo
from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Image,
    ImageStatus,
    Job,
    JobKind,
    JobStatus,
    Pair,
    PairOrigin,
    PairState,
    Proposal,
    Review,
    ReviewAction,
    ReviewTask,
    ReviewTaskStatus,
    Verification,
    VerificationKind,
)


@dataclass
class Made:
    dataset: str
    image_ids: list[int] = field(default_factory=list)
    pair_ids: dict[str, list[int]] = field(default_factory=dict)  # state -> ids
    job_id: int = 0


def box_mask(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _rle_row(mask: np.ndarray) -> dict:
    rle = masks.encode(mask)
    x, y, w, h = masks.bbox(rle)
    return {
        "rle_counts": rle["counts"],
        "bbox_x": x,
        "bbox_y": y,
        "bbox_w": w,
        "bbox_h": h,
        "area": masks.area(rle),
    }


def make_browsable(
    session: Session, image_dir: Path, *, dataset: str = "shapes", n_images: int = 5
) -> Made:
    """``n_images`` images (64x48 PNG); on each: a positive "red car" pair (two auto masks, one
    reviewed by a person), a negative "tabby cat", and an "striped umbrella" pair in review with
    two proposals scored by MV. One mining job owns the pairs."""
    ds, _ = repo.get_or_create_dataset(session, dataset)
    concepts = repo.ensure_concepts(session, ["red car", "tabby cat", "striped umbrella"])
    job = Job(
        kind=JobKind.MINE,
        dataset_id=ds.id,
        status=JobStatus.DONE,
        config={"routing": {"accept_above": 0.8, "reject_below": 0.2}},
        counters={},
    )
    session.add(job)
    session.flush()
    made = Made(dataset, job_id=job.id)
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = 48, 64
    for i in range(n_images):
        path = image_dir / f"{dataset}_{i}.png"
        PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        image = Image(
            dataset_id=ds.id,
            file_name=path.name,
            uri=str(path),
            width=w,
            height=h,
            sha256=f"{i:064d}",
            status=ImageStatus.READY,
        )
        session.add(image)
        session.flush()
        made.image_ids.append(image.id)
        pos = Pair(
            dataset_id=ds.id,
            image_id=image.id,
            concept_id=concepts["red car"],
            origin=PairOrigin.CAPTION,
            state=PairState.POSITIVE,
            is_exhaustive=True,
            job_id=job.id,
            state_reason="MV accepted every mask",
        )
        neg = Pair(
            dataset_id=ds.id,
            image_id=image.id,
            concept_id=concepts["tabby cat"],
            origin=PairOrigin.HARD_NEGATIVE,
            state=PairState.NEGATIVE,
            is_exhaustive=True,
            job_id=job.id,
        )
        rev = Pair(
            dataset_id=ds.id,
            image_id=image.id,
            concept_id=concepts["striped umbrella"],
            origin=PairOrigin.CAPTION,
            state=PairState.IN_REVIEW,
            job_id=job.id,
        )
        session.add_all([pos, neg, rev])
        session.flush()
        for state, pair in (("positive", pos), ("negative", neg), ("in_review", rev)):
            made.pair_ids.setdefault(state, []).append(pair.id)
        task = ReviewTask(pair_id=rev.id, status=ReviewTaskStatus.PUSHED, external_id=f"t{i}")
        session.add(task)
        session.flush()
        for rank, (mask, p) in enumerate(
            [(box_mask(h, w, 5, 5, 20, 30), 0.9), (box_mask(h, w, 25, 35, 45, 60), 0.5)]
        ):
            for pair, version in ((pos, "sam3@test"), (rev, "sam3@test")):
                proposal = Proposal(
                    pair_id=pair.id,
                    job_id=job.id,
                    score=p,
                    presence=0.9,
                    model_version=version,
                    rank=rank,
                    **_rle_row(mask),
                )
                session.add(proposal)
                session.flush()
                session.add(
                    Verification(
                        pair_id=pair.id,
                        proposal_id=proposal.id,
                        kind=VerificationKind.MV,
                        p_accept=p,
                        job_id=job.id,
                        label="accept" if p >= 0.5 else "reject",
                        model_version="mv@test",
                    )
                )
                if pair is pos:
                    session.add(
                        Annotation(
                            dataset_id=ds.id,
                            pair_id=pos.id,
                            score=p,
                            source=AnnotationSource.AUTO,
                            proposal_id=proposal.id,
                            model_version=version,
                            **_rle_row(mask),
                        )
                    )
                else:
                    # A person judged the proposal: keeps the confident one, rejects the other.
                    session.add(
                        Review(
                            task_id=task.id,
                            proposal_id=proposal.id,
                            reviewer="alice",
                            external_id=f"a{i}",
                            action=ReviewAction.ACCEPT if p > 0.8 else ReviewAction.REJECT,
                        )
                    )
        session.add(
            Review(
                task_id=task.id,
                reviewer="alice",
                action=ReviewAction.ACCEPT,
                exhaustivity="some_missing",
                lead_time_s=10.0 + i,
                external_id=f"a{i}",
            )
        )
        session.flush()
    return made
