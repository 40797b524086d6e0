"""Training examples from a dataset's accepted labels (see :func:`dataset_examples`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from annotator import masks as mask_ops
from annotator import media
from annotator.db import repositories as repo
from annotator.db import training as training_db
from annotator.errors import InvalidInputError
from annotator.images import load_image
from annotator.miners.sam3 import Preprocessing
from annotator.training.data import Example, resize_example
from annotator.training.evaluate import GroundTruthImage

__all__ = ["MAX_CALIBRATION_IMAGES", "ExampleStats", "dataset_examples", "split_dataset_examples"]


@dataclass
class ExampleStats:
    positives: int = 0
    negatives: int = 0
    masks: int = 0
    skipped_not_exhaustive: int = 0
    skipped_images: int = 0
    # Labelled images set aside to fit the operating point on (not trained on).
    calibration_images: int = 0


# At most this many labelled images are set aside for calibration (their full-size masks are
# kept in memory until the fit).
MAX_CALIBRATION_IMAGES = 200


def dataset_examples(
    session: Session, name: str, preprocessing: Preprocessing
) -> tuple[list[Example], ExampleStats]:
    """:func:`split_dataset_examples` with no calibration share: every labelled image."""
    examples, _, stats = split_dataset_examples(session, name, preprocessing)
    return examples, stats


def split_dataset_examples(
    session: Session,
    name: str,
    preprocessing: Preprocessing,
    *,
    calibration_share: float = 0.0,
    seed: int = 0,
) -> tuple[list[Example], list[GroundTruthImage], ExampleStats]:
    """One :class:`Example` per image of dataset ``name`` that has accepted labels, less a
    ``calibration_share`` of those images (chosen by ``seed``, at most
    :data:`MAX_CALIBRATION_IMAGES`) kept at full size as ``GroundTruthImage`` for fitting an
    operating point (:func:`annotator.training.calibrate.fit_operating_point`) on images the
    model is not trained on.

    Positives: pairs in state ``positive`` that are instance-exhaustive (or not known not to
    be), with their current (not superseded) annotations, automatic and human; a positive pair
    known not to be exhaustive is left out, since its unlabelled instances would be taught as
    background. Negatives: pairs in state ``negative`` (verified absent). Crowd annotations are
    left out. An image that cannot be read is skipped and counted.
    """
    if not 0.0 <= calibration_share < 1.0:
        raise InvalidInputError(f"calibration share must be in [0, 1), got {calibration_share}")
    dataset = repo.get_dataset(session, name)
    stats = ExampleStats()
    examples: list[Example] = []
    held_out: list[GroundTruthImage] = []
    images = training_db.labelled_images(session, dataset.id)
    count = min(MAX_CALIBRATION_IMAGES, int(len(images) * calibration_share))
    order = np.random.default_rng(seed).permutation(len(images))
    calibration = {images[int(k)].id for k in order[:count]}
    for image in images:
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
        if image.id in calibration:
            held_out.append(GroundTruthImage(picture, phrases))
            stats.calibration_images += 1
        else:
            examples.append(resize_example(picture, phrases, preprocessing))
    return examples, held_out, stats
