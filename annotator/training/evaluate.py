"""cgF1 / pmF1 / IL_MCC of a proposer on synthetic scenes (positives and true negatives)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from annotator import masks as mask_ops
from annotator.backends import MaskProposer, PhraseProposals
from annotator.datasets.synthetic import Scene, make_scene
from annotator.metrics import CgF1Result, PairEval, cgf1

__all__ = [
    "HELD_OUT_SEED",
    "GroundTruthImage",
    "evaluate_scenes",
    "held_out_scenes",
    "proposals_with_truth",
]

# Seeds of held-out scenes start here; training scenes use small seeds (0 .. count - 1).
HELD_OUT_SEED = 1_000_000


@dataclass(frozen=True)
class GroundTruthImage:
    """An image with, per phrase, every instance mask (``(H, W)`` bool, the image's size; none
    for a phrase verified absent): what a proposer is measured and an operating point fitted
    on, from synthetic scenes or from a dataset's labelled images
    (:func:`annotator.training.database.split_dataset_examples`)."""

    image: Image.Image
    phrases: Sequence[tuple[str, Sequence[np.ndarray]]]

    @classmethod
    def of_scene(cls, scene: Scene | GroundTruthImage) -> GroundTruthImage:
        """A synthetic scene's present phrases and true negatives with their masks (a
        ``GroundTruthImage`` as it is)."""
        if isinstance(scene, GroundTruthImage):
            return scene
        phrases = [*scene.positives, *scene.negatives]
        return cls(scene.image, [(p, scene.masks_of(p)) for p in phrases])


def held_out_scenes(count: int, size: int) -> list[Scene]:
    """The fixed held-out scenes (never trained on): seeds ``HELD_OUT_SEED ..``."""
    return [make_scene(HELD_OUT_SEED + k, size=size) for k in range(count)]


def proposals_with_truth(
    proposer: MaskProposer, items: Iterable[GroundTruthImage]
) -> Iterator[tuple[list[mask_ops.RLE], PhraseProposals]]:
    """Every phrase of every item, in order: its instances as RLEs and what ``proposer``
    found (one ``propose`` call per image)."""
    for item in items:
        phrases = [phrase for phrase, _ in item.phrases]
        found_all = proposer.propose(item.image, phrases) if phrases else []
        for (_, instances), found in zip(item.phrases, found_all, strict=True):
            gt = mask_ops.encode_many(np.stack(list(instances))) if len(instances) else []
            yield gt, found


def evaluate_scenes(
    proposer: MaskProposer,
    scenes: Iterable[Scene | GroundTruthImage],
    *,
    progress: Callable[[int], None] | None = None,
) -> CgF1Result:
    """The proposer's cgF1 over every scene's present phrases and true negatives (or every
    phrase of a ``GroundTruthImage``).

    Every pair is instance-exhaustive by construction (the world knows every instance).
    """
    pairs: list[PairEval] = []
    for scene in scenes:
        for gt, found in proposals_with_truth(proposer, [GroundTruthImage.of_scene(scene)]):
            pairs.append(PairEval(gt=gt, pred=found.masks, scores=list(found.scores)))
        if progress is not None:
            progress(1)
    return cgf1(pairs)
