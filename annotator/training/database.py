"""Training examples from a dataset's accepted labels (see :func:`dataset_examples`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from annotator import masks as mask_ops
from annotator import media
from annotator.db import repositories as repo
from annotator.db import training as training_db
from annotator.images import load_image
from annotator.miners.sam3 import Preprocessing
from annotator.training.data import Example, resize_example

__all__ = ["ExampleStats", "dataset_examples"]


@dataclass
class ExampleStats:
    positives: int = 0
    negatives: int = 0
    masks: int = 0
    skipped_not_exhaustive: int = 0
    skipped_images: int = 0


def dataset_examples(
    session: Session, name: str, preprocessing: Preprocessing
) -> tuple[list[Example], ExampleStats]:
    """One :class:`Example` per image of dataset ``name`` that has accepted labels.

    Positives: pairs in state ``positive`` that are instance-exhaustive (or not known not to
    be), with their current (not superseded) annotations, automatic and human; a positive pair
    known not to be exhaustive is left out, since its unlabelled instances would be taught as
    background. Negatives: pairs in state ``negative`` (verified absent). Crowd annotations are
    left out. An image that cannot be read is skipped and counted.
    """
    dataset = repo.get_dataset(session, name)
    stats = ExampleStats()
    examples: list[Example] = []
    for image in training_db.labelled_images(session, dataset.id):
        phrases: list[tuple[str, list[np.ndarray]]] = []
        for pair in image.pairs:
            if pair.positive and pair.is_exhaustive is False:
                stats.skipped_not_exhaustive += 1
                continue
            if pair.positive:
                size = [image.height, image.width]
                decoded = [mask_ops.decode({"size": size, "counts": c}) for c in pair.counts]
                if not decoded:
                    continue
                phrases.append((pair.phrase, decoded))
                stats.positives += 1
                stats.masks += len(decoded)
            else:
                phrases.append((pair.phrase, []))
                stats.negatives += 1
        if not phrases:
            continue
        try:
            picture = load_image(media.local_path(image.uri))
        except Exception:
            stats.skipped_images += 1
            continue
        examples.append(resize_example(picture, phrases, preprocessing))
    return examples, stats
