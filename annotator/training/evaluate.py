"""cgF1 / pmF1 / IL_MCC of a proposer on synthetic scenes (positives and true negatives)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from annotator import masks as mask_ops
from annotator.backends import MaskProposer
from annotator.datasets.synthetic import Scene, make_scene
from annotator.metrics import CgF1Result, PairEval, cgf1

__all__ = ["HELD_OUT_SEED", "evaluate_scenes", "held_out_scenes"]

# Seeds of held-out scenes start here; training scenes use small seeds (0 .. count - 1).
HELD_OUT_SEED = 1_000_000


def held_out_scenes(count: int, size: int) -> list[Scene]:
    """The fixed held-out scenes (never trained on): seeds ``HELD_OUT_SEED ..``."""
    return [make_scene(HELD_OUT_SEED + k, size=size) for k in range(count)]


def evaluate_scenes(
    proposer: MaskProposer,
    scenes: Iterable[Scene],
    *,
    progress: Callable[[int], None] | None = None,
) -> CgF1Result:
    """The proposer's cgF1 over every scene's present phrases and true negatives.

    Every pair is instance-exhaustive by construction (the world knows every instance).
    """
    pairs: list[PairEval] = []
    for scene in scenes:
        phrases = [*scene.positives, *scene.negatives]
        found = proposer.propose(scene.image, phrases)
        for phrase, proposals in zip(phrases, found, strict=True):
            instances = scene.masks_of(phrase)
            gt = mask_ops.encode_many(np.stack(instances)) if instances else []
            pairs.append(PairEval(gt=gt, pred=proposals.masks, scores=list(proposals.scores)))
        if progress is not None:
            progress(1)
    return cgf1(pairs)
