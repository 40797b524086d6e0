"""Proposer-score verifier (``"scores"``): MV and EV read from the proposer's own numbers.

No VLM weights can be downloaded offline, and a verifier that invents judgements would be
worse than none. This one says only what the proposer already measured, so its answers are
exactly as good as the proposer's calibration:

* **MV** (is this mask a correct instance?): ``p_accept`` = the proposer's instance score
  (SAM 3: ``sigmoid(logit) * sigmoid(presence)``). Needs
  :class:`~annotator.verifiers.calibrated.FeaturedMaskQuery`.
* **EV, absence question** (no mask shown: is the phrase absent?): ``p_accept`` =
  ``1 - presence``, the proposer's probability that the phrase is not in the image (a
  calibrated one where the model directory records a presence calibration:
  :mod:`annotator.training.calibrate`); when the proposer kept no instance at all (so no
  presence was recorded), ``1 - score_floor``: every instance scored below the floor the
  proposer keeps.
* **EV, exhaustivity question** (masks shown: do they cover every instance?): ``p_accept`` =
  ``1 -`` the best score among the pair's proposals that are *not* shown, i.e. how unlikely the
  strongest left-out candidate is to be a missed instance.

EV needs :class:`FeaturedPairQuery` (the pipeline's verify stage builds them). Use it alone
(routing on proposer scores with thresholds) or as the ``pair_verifier`` of the calibrated
verifier, which learns MV from reviews.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from annotator.backends import MaskQuery, NothingToLoad, PairQuery, Verdict
from annotator.errors import InvalidInputError
from annotator.verifiers.calibrated import FeaturedMaskQuery

__all__ = ["FeaturedPairQuery", "ScoreVerifier"]


@dataclass
class FeaturedPairQuery(PairQuery):
    """An EV query with the proposer's numbers for the pair.

    ``presence``: the proposer's presence probability (``None`` when it kept no instance);
    ``unshown_scores``: scores of the pair's proposals not among ``masks``; ``score_floor``:
    instances scoring below it were not kept by the proposer.
    """

    presence: float | None = None
    unshown_scores: list[float] = field(default_factory=list)
    score_floor: float = 0.5


class ScoreVerifier(NothingToLoad):
    """MV and EV from the proposer's scores (see the module docstring). No model to load."""

    name = "scores"

    def __init__(self, model: str | None = None, *, device: str | None = None) -> None:
        # Nothing to load or place: accepted so the pipeline constructs it like the others.
        del model, device

    @property
    def model_version(self) -> str:
        return "proposer-scores@1"

    def verify_masks(self, queries: Sequence[MaskQuery]) -> list[Verdict]:
        verdicts = []
        for query in queries:
            if not isinstance(query, FeaturedMaskQuery):
                raise InvalidInputError(
                    "the scores verifier reads the proposer's score: pass FeaturedMaskQuery"
                )
            p = min(max(float(query.features.score), 0.0), 1.0)
            verdicts.append(Verdict(label="accept" if p >= 0.5 else "reject", p_accept=p))
        return verdicts

    def verify_pairs(self, queries: Sequence[PairQuery]) -> list[Verdict]:
        verdicts = []
        for query in queries:
            if not isinstance(query, FeaturedPairQuery):
                raise InvalidInputError(
                    "the scores verifier reads the proposer's presence: pass FeaturedPairQuery"
                )
            if query.masks:
                best_left = max(query.unshown_scores, default=0.0)
                p = 1.0 - best_left
                label = "exhaustive" if p >= 0.5 else "not_exhaustive"
            else:
                presence = query.presence if query.presence is not None else query.score_floor
                p = 1.0 - presence
                label = "absent" if p >= 0.5 else "present"
            verdicts.append(Verdict(label=label, p_accept=min(max(p, 0.0), 1.0)))
        return verdicts
