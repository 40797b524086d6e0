"""Calibrated verifier (``"calibrated"``): mask acceptance learned from this engine's reviews.

Every human review of a proposal (accept / reject) is a labelled example of the features the
engine already has for it: the proposer's score and presence, the mask's size and shape, how much
it overlaps other masks of the same pair, how stable it is under mask-threshold shifts (when the
proposer can say), and the VLM verifier's ``p_accept`` (when it ran). A small scikit-learn model
maps those features to a calibrated probability of acceptance, and :meth:`CalibratedVerifier.fit`
picks the auto-accept threshold that reaches a target precision on reviews held out from training,
reporting the precision and recall it measured there.

How it plugs into the :class:`~annotator.backends.Verifier` protocol: a bare
:class:`~annotator.backends.MaskQuery` (image, phrase, mask) does not carry the proposer's
numbers, so MV queries must be :class:`FeaturedMaskQuery` (a ``MaskQuery`` plus
:class:`ProposalFeatures`, built with :func:`proposal_features`); a plain ``MaskQuery`` is refused
rather than judged on made-up values. EV (pairs) is not learned here: pass ``pair_verifier``
(e.g. the VLM verifier) to answer it, otherwise ``verify_pairs`` raises.

Saved models are joblib files (pickles): load only files this engine wrote.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np

from annotator import masks as mask_ops
from annotator.backends import MaskQuery, PairQuery, Verdict, Verifier
from annotator.errors import ConfigError, InvalidInputError, ModelLoadError

if TYPE_CHECKING:
    from annotator.backends import PhraseProposals
    from annotator.masks import RLE

__all__ = [
    "MIN_REVIEWS",
    "CalibratedVerifier",
    "CalibrationReport",
    "FeaturedMaskQuery",
    "ProposalFeatures",
    "proposal_features",
    "proposal_features_all",
    "stability_score",
]

MIN_REVIEWS = 50  # fewer reviews than this cannot support a threshold for a target precision
MIN_PER_CLASS = 10
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ProposalFeatures:
    """What the engine knows about one proposed mask, as model inputs.

    ``None`` means unknown (the proposer gave no mask probabilities, the VLM verifier did not
    run); the model sees it as missing (imputed, with a missing-indicator feature).
    """

    score: float  # proposer's instance score in [0, 1] (detection x presence for SAM 3)
    presence: float  # proposer's image-level presence probability for the phrase
    area_fraction: float  # mask area / image area
    fill_ratio: float  # mask area / its box area (1 = box-shaped, small = thin or scattered)
    max_iou_same_pair: float  # largest IoU with another mask of the same (image, phrase)
    rank: int  # 0 = the proposer's best instance of the phrase
    stability: float | None = None  # IoU of the mask at threshold +-delta (see stability_score)
    vlm_p_accept: float | None = None  # the VLM verifier's MV p_accept

    def vector(self) -> list[float]:
        """The features in :func:`feature_names` order; ``None`` -> ``nan``."""
        return [math.nan if v is None else float(v) for v in asdict(self).values()]


def feature_names() -> list[str]:
    """Column names of :meth:`ProposalFeatures.vector`."""
    return [f.name for f in fields(ProposalFeatures)]


@dataclass
class FeaturedMaskQuery(MaskQuery):
    """An MV query together with its proposal's features (what the calibrated verifier needs)."""

    features: ProposalFeatures


def stability_score(mask_probs: np.ndarray, threshold: float = 0.5, delta: float = 0.05) -> float:
    """IoU between the mask at ``threshold + delta`` and at ``threshold - delta`` (as in SAM).

    Args:
        mask_probs: ``(H, W)`` float mask probabilities.
    """
    high = mask_probs > threshold + delta
    low = mask_probs > threshold - delta
    union = int(low.sum())
    return float(high.sum()) / union if union else 0.0


def proposal_features(
    proposals: PhraseProposals,
    index: int,
    *,
    stability: float | None = None,
    vlm_p_accept: float | None = None,
) -> ProposalFeatures:
    """Features of ``proposals.masks[index]`` (pure; the IoU matrix is computed on the RLEs)."""
    rle: RLE = proposals.masks[index]
    height, width = rle["size"]
    area = mask_ops.area(rle)
    _, _, bw, bh = mask_ops.bbox(rle)
    others = [m for j, m in enumerate(proposals.masks) if j != index]
    max_iou = float(mask_ops.iou_matrix([rle], others).max()) if others else 0.0
    return ProposalFeatures(
        score=float(proposals.scores[index]),
        presence=float(proposals.presence),
        area_fraction=area / float(height * width) if height * width else 0.0,
        fill_ratio=area / (bw * bh) if bw * bh else 0.0,
        max_iou_same_pair=max_iou,
        rank=index,
        stability=stability,
        vlm_p_accept=vlm_p_accept,
    )


def proposal_features_all(proposals: PhraseProposals) -> list[ProposalFeatures]:
    """:func:`proposal_features` of every mask of ``proposals``, in order: one IoU matrix for
    the whole set and one area / box call, instead of one per mask."""
    rles: list[RLE] = list(proposals.masks)
    if not rles:
        return []
    height, width = rles[0]["size"]
    areas = mask_ops.areas(rles)
    boxes = mask_ops.bboxes(rles)
    box_areas = boxes[:, 2] * boxes[:, 3]
    if len(rles) > 1:
        ious = mask_ops.iou_matrix(rles, rles)
        np.fill_diagonal(ious, -np.inf)
        max_iou = ious.max(axis=1)
    else:
        max_iou = np.zeros(1)
    image_area = float(height * width)
    presence = float(proposals.presence)
    return [
        ProposalFeatures(
            score=float(proposals.scores[k]),
            presence=presence,
            area_fraction=float(areas[k]) / image_area if image_area else 0.0,
            fill_ratio=float(areas[k]) / float(box_areas[k]) if box_areas[k] else 0.0,
            max_iou_same_pair=float(max_iou[k]),
            rank=k,
        )
        for k in range(len(rles))
    ]


@dataclass(frozen=True)
class CalibrationReport:
    """What :meth:`CalibratedVerifier.fit` measured on the held-out reviews.

    ``threshold``: auto-accept when ``p_accept >= threshold`` (``inf`` when no threshold reached
    the target: nothing is auto-accepted). ``expected_precision`` / ``expected_recall``: of the
    auto-accepted masks among held-out reviews at that threshold (recall = share of the truly
    accepted masks that are auto-accepted). ``brier``: mean squared error of ``p_accept``.
    """

    n_reviews: int
    n_train: int
    n_holdout: int
    holdout_accept_rate: float
    target_precision: float
    threshold: float
    reached: bool
    expected_precision: float
    expected_recall: float
    auto_accepted: int
    brier: float

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if not self.reached:
            return (
                f"target precision {self.target_precision:.2f} not reached on {self.n_holdout} "
                f"held-out reviews: nothing will be auto-accepted"
            )
        return (
            f"auto-accept p >= {self.threshold:.3f}: expected precision "
            f"{self.expected_precision:.3f}, recall {self.expected_recall:.3f} "
            f"({self.auto_accepted}/{self.n_holdout} held-out reviews auto-accepted)"
        )


def _build_model(kind: str, n_samples: int, seed: int) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        # Well calibrated by construction; missing features imputed + flagged.
        return make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=1.0, max_iter=1000),
        )
    if kind == "boosting":
        boosted = HistGradientBoostingClassifier(
            max_iter=150, learning_rate=0.05, max_depth=3, random_state=seed
        )
        # Isotonic needs many reviews to be stable; Platt scaling below that.
        method = "isotonic" if n_samples >= 1000 else "sigmoid"
        return CalibratedClassifierCV(boosted, method=method, cv=3)
    raise ValueError(f"unknown model kind {kind!r}: use 'logistic' or 'boosting'")


def _pick_threshold(
    probs: np.ndarray, labels: np.ndarray, target: float, min_support: int
) -> tuple[float, float, float, int]:
    """Lowest threshold whose auto-accepted set (``p >= t``) has precision >= target.

    Returns (threshold, precision, recall, n_accepted); threshold ``inf`` if none qualifies.
    """
    order = np.argsort(-probs, kind="stable")
    sorted_probs, sorted_labels = probs[order], labels[order]
    true_pos = np.cumsum(sorted_labels)
    positives = max(int(labels.sum()), 1)
    best: tuple[float, float, float, int] = (math.inf, 1.0, 0.0, 0)
    for k in range(len(sorted_probs)):
        # Only cut between distinct scores: all ties go in together.
        if k + 1 < len(sorted_probs) and sorted_probs[k + 1] == sorted_probs[k]:
            continue
        n_accepted = k + 1
        precision = true_pos[k] / n_accepted
        if n_accepted >= min_support and precision >= target:
            best = (float(sorted_probs[k]), float(precision), true_pos[k] / positives, n_accepted)
    return best


class CalibratedVerifier:
    """MV verifier learned from human reviews; thresholds for a target precision.

    Args:
        model: path of a saved calibrator (``.joblib``) to load; ``None`` for a new, unfitted
            one (call :meth:`fit`, then :meth:`save`).
        kind: ``"logistic"`` (default; robust with a few hundred reviews) or ``"boosting"``
            (gradient-boosted trees + calibration; for thousands).
        pair_verifier: answers EV questions (this model only judges masks).
    """

    name = "calibrated"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        kind: Literal["logistic", "boosting"] = "logistic",
        pair_verifier: Verifier | None = None,
        seed: int = 0,
    ) -> None:
        self.path = Path(model).expanduser() if model is not None else None
        self.kind = kind
        self.pair_verifier = pair_verifier
        self.seed = seed
        self._estimator: Any = None
        self.threshold: float = math.inf
        self.report: CalibrationReport | None = None
        self._version: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        """``"calibrated@<hash>"``: a hash of the fitted model file (or ``unfitted``)."""
        if self._version is None:
            if self.path is not None and self.path.is_file():
                digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:8]
                self._version = f"calibrated@{digest}"
            else:
                return "calibrated@unfitted"
        return self._version

    @property
    def is_fitted(self) -> bool:
        """Whether a model is ready (fitted here or loaded)."""
        return self._estimator is not None

    def load(self) -> None:
        """Load the saved calibrator named by ``model`` (idempotent)."""
        if self._estimator is not None or self.path is None:
            return
        import joblib  # type: ignore[import-untyped]

        if not self.path.is_file():
            raise ModelLoadError(
                f"no calibrated verifier at {str(self.path)!r}: fit one on reviewed proposals "
                "and save it there first"
            )
        try:
            state = joblib.load(self.path)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the calibrated verifier {str(self.path)!r}: {exc}"
            ) from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
            raise ModelLoadError(
                f"{str(self.path)!r} is not a calibrated-verifier file of format {FORMAT_VERSION}; "
                "fit and save it again with this version"
            )
        if state["features"] != feature_names():
            raise ModelLoadError(
                f"{str(self.path)!r} was fitted on features {state['features']}, this code uses "
                f"{feature_names()}; fit it again"
            )
        self._estimator = state["estimator"]
        self.threshold = float(state["threshold"])
        self.kind = state["kind"]
        self.report = CalibrationReport(**state["report"])

    def __enter__(self) -> Self:
        self.load()
        if self.pair_verifier is not None:
            self.pair_verifier.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.pair_verifier is not None:
            self.pair_verifier.__exit__(exc_type, exc, tb)

    # -- training --------------------------------------------------------------------------------

    def fit(
        self,
        features: Sequence[ProposalFeatures],
        labels: Sequence[bool],
        target_precision: float = 0.95,
        *,
        holdout_fraction: float = 0.3,
        min_support: int = 5,
    ) -> CalibrationReport:
        """Fit on reviewed proposals and choose the auto-accept threshold.

        Args:
            features: one per reviewed proposal.
            labels: ``True`` = the reviewer accepted the mask (as is), ``False`` = rejected.
            target_precision: wanted precision of auto-accepted masks.
            holdout_fraction: share of reviews (stratified) kept out of training, on which the
                threshold is chosen and precision/recall are measured.
            min_support: a threshold must auto-accept at least this many held-out reviews.

        Raises:
            InvalidInputError: fewer than :data:`MIN_REVIEWS` reviews, fewer than
                :data:`MIN_PER_CLASS` accepts or rejects, or mismatched lengths.
        """
        from sklearn.model_selection import train_test_split

        if len(features) != len(labels):
            raise InvalidInputError(f"{len(features)} feature rows but {len(labels)} labels")
        if not 0.0 < target_precision <= 1.0:
            raise InvalidInputError(f"target_precision must be in (0, 1], got {target_precision}")
        y = np.asarray([bool(v) for v in labels], dtype=np.int64)
        accepts, rejects = int(y.sum()), int(len(y) - y.sum())
        if len(y) < MIN_REVIEWS or min(accepts, rejects) < MIN_PER_CLASS:
            raise InvalidInputError(
                f"the calibrated verifier needs at least {MIN_REVIEWS} reviewed proposals with at "
                f"least {MIN_PER_CLASS} accepts and {MIN_PER_CLASS} rejects; it has {len(y)} "
                f"({accepts} accepted, {rejects} rejected). Route more proposals to review "
                "(or lower the accept threshold for a while) and fit again"
            )
        x = np.asarray([f.vector() for f in features], dtype=np.float64)
        x_train, x_hold, y_train, y_hold = train_test_split(
            x, y, test_size=holdout_fraction, stratify=y, random_state=self.seed
        )
        estimator = _build_model(self.kind, len(y_train), self.seed)
        estimator.fit(x_train, y_train)
        probs = estimator.predict_proba(x_hold)[:, 1]
        threshold, precision, recall, n_accepted = _pick_threshold(
            probs, y_hold, target_precision, min_support
        )
        self._estimator = estimator
        self.threshold = threshold
        self._version = None
        self.report = CalibrationReport(
            n_reviews=len(y),
            n_train=len(y_train),
            n_holdout=len(y_hold),
            holdout_accept_rate=float(y_hold.mean()),
            target_precision=target_precision,
            threshold=threshold,
            reached=math.isfinite(threshold),
            expected_precision=precision if math.isfinite(threshold) else math.nan,
            expected_recall=recall,
            auto_accepted=n_accepted,
            brier=float(np.mean((probs - y_hold) ** 2)),
        )
        return self.report

    def save(self, path: str | Path | None = None) -> Path:
        """Write the fitted model, threshold and report (joblib) and return the path."""
        import joblib

        if self._estimator is None or self.report is None:
            raise InvalidInputError("fit the calibrated verifier before saving it")
        target = Path(path).expanduser() if path is not None else self.path
        if target is None:
            raise InvalidInputError("no path to save the calibrated verifier to")
        target.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "features": feature_names(),
            "estimator": self._estimator,
            "threshold": self.threshold,
            "report": asdict(self.report),
        }
        joblib.dump(state, target)
        self.path = target
        self._version = None
        return target

    # -- inference -------------------------------------------------------------------------------

    def predict(self, features: Sequence[ProposalFeatures]) -> np.ndarray:
        """Calibrated ``p_accept`` per proposal, ``(N,)`` float64 in [0, 1]."""
        self.load()
        if self._estimator is None:
            raise ConfigError("the calibrated verifier is not fitted: fit it or give a saved model")
        if not features:
            return np.zeros(0, dtype=np.float64)
        x = np.asarray([f.vector() for f in features], dtype=np.float64)
        return np.asarray(self._estimator.predict_proba(x)[:, 1], dtype=np.float64)

    def verify_masks(self, queries: Sequence[MaskQuery]) -> list[Verdict]:
        """MV verdicts for :class:`FeaturedMaskQuery` items: ``accept`` at or above the fitted
        threshold, else ``review`` (the model never claims a reject it was not fitted for)."""
        featured: list[ProposalFeatures] = []
        for query in queries:
            if not isinstance(query, FeaturedMaskQuery):
                raise InvalidInputError(
                    "the calibrated verifier needs the proposal's features: pass "
                    "FeaturedMaskQuery(image, phrase, mask, features=proposal_features(...))"
                )
            featured.append(query.features)
        probs = self.predict(featured)
        return [
            Verdict(label="accept" if p >= self.threshold else "review", p_accept=float(p))
            for p in probs
        ]

    def verify_pairs(self, queries: Sequence[PairQuery]) -> list[Verdict]:
        """EV verdicts from ``pair_verifier`` (this model does not learn EV)."""
        if self.pair_verifier is None:
            raise ConfigError(
                "the calibrated verifier judges masks only; give it a pair_verifier (e.g. the "
                "vlm verifier) to answer exhaustivity questions"
            )
        return self.pair_verifier.verify_pairs(queries)
