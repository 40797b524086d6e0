"""Fit the calibrated verifier on a dataset's human reviews (``annotator train verifier``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from annotator.backends import PhraseProposals
from annotator.db import repositories as repo
from annotator.db import training as training_db
from annotator.verifiers.calibrated import (
    CalibratedVerifier,
    CalibrationReport,
    ProposalFeatures,
    proposal_features,
)

__all__ = ["fit_verifier", "reviewed_features"]


def reviewed_features(
    session: Session, name: str, model_version: str | None = None
) -> tuple[list[ProposalFeatures], list[bool]]:
    """Features of every reviewed proposal of dataset ``name`` (computed with the pair's other
    proposals, as the verify stage does) and the verdict: accepted as is, or not (rejected or
    fixed)."""
    dataset = repo.get_dataset(session, name)
    features: list[ProposalFeatures] = []
    labels: list[bool] = []
    for height, width, proposals in training_db.reviewed_pairs(
        session, dataset.id, model_version
    ).values():
        found = PhraseProposals(
            phrase="",
            masks=[{"size": [height, width], "counts": p.counts} for p in proposals],
            boxes=np.zeros((len(proposals), 4), dtype=np.float32),
            scores=np.asarray([p.score for p in proposals], dtype=np.float32),
            presence=float(proposals[0].presence if proposals[0].presence is not None else 1.0),
        )
        for k, proposal in enumerate(proposals):
            if proposal.accepted is None:
                continue
            features.append(proposal_features(found, k))
            labels.append(proposal.accepted)
    return features, labels


def fit_verifier(
    session: Session,
    name: str,
    out: Path,
    *,
    target_precision: float = 0.95,
    kind: str = "logistic",
    model_version: str | None = None,
    seed: int = 0,
) -> CalibrationReport:
    """Fit a :class:`CalibratedVerifier` on the reviews of dataset ``name`` and save it to
    ``out`` (joblib). Raises ``InvalidInputError`` when there are too few reviews."""
    features, labels = reviewed_features(session, name, model_version)
    verifier = CalibratedVerifier(kind=kind, seed=seed)  # type: ignore[arg-type]
    report = verifier.fit(features, labels, target_precision)
    verifier.save(out)
    return report
