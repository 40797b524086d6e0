"""Calibrated verifier: learned from synthetic reviews whose truth is known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator import masks
from annotator.backends import MaskQuery, PairQuery, PhraseProposals, Verdict, resolve_backend
from annotator.errors import ConfigError, InvalidInputError, ModelLoadError
from annotator.verifiers.calibrated import (
    CalibratedVerifier,
    FeaturedMaskQuery,
    ProposalFeatures,
    proposal_features,
    stability_score,
)


def review_history(n: int, seed: int) -> tuple[list[ProposalFeatures], list[bool]]:
    """Proposals with a hidden quality; a reviewer accepts with probability sigmoid(4 q).

    The features are noisy views of the quality (score, VLM p_accept, stability), plus
    uninformative ones; some VLM/stability values are missing.
    """
    rng = np.random.default_rng(seed)
    quality = rng.normal(0.0, 1.0, n)
    accepted = rng.random(n) < 1.0 / (1.0 + np.exp(-4.0 * quality))
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    score = sig(1.5 * quality + rng.normal(0, 1.0, n))
    vlm = sig(1.0 * quality + rng.normal(0, 1.2, n))
    stability = np.clip(0.8 + 0.1 * quality + rng.normal(0, 0.1, n), 0, 1)
    features = [
        ProposalFeatures(
            score=float(score[i]),
            presence=float(rng.uniform(0.3, 1.0)),
            area_fraction=float(rng.uniform(0.001, 0.5)),
            fill_ratio=float(rng.uniform(0.3, 1.0)),
            max_iou_same_pair=float(rng.uniform(0, 0.4)),
            rank=int(rng.integers(0, 5)),
            stability=float(stability[i]) if rng.random() > 0.3 else None,
            vlm_p_accept=float(vlm[i]) if rng.random() > 0.2 else None,
        )
        for i in range(n)
    ]
    return features, [bool(a) for a in accepted]


def test_reaches_target_precision_on_fresh_reviews(tmp_path: Path) -> None:
    assert resolve_backend("verifier", "calibrated") is CalibratedVerifier
    features, labels = review_history(1000, seed=0)
    verifier = CalibratedVerifier()
    report = verifier.fit(features, labels, target_precision=0.9)
    assert report.reached and report.n_holdout == 300 and report.n_train == 700
    assert report.expected_precision >= 0.9
    assert 0.2 < report.expected_recall <= 1.0
    assert "expected precision" in report.summary()

    # Fresh reviews from the same process: the auto-accepted set keeps (about) the target.
    fresh_features, fresh_labels = review_history(5000, seed=1)
    verdicts = verifier.verify_masks(
        [FeaturedMaskQuery(Image.new("RGB", (2, 2)), "dog", _tiny_rle(), f) for f in fresh_features]
    )
    accepted = np.asarray([v.label == "accept" for v in verdicts])
    truth = np.asarray(fresh_labels)
    assert all(0.0 <= v.p_accept <= 1.0 for v in verdicts)
    assert truth[accepted].mean() >= 0.87  # target 0.9, minus the held-out set's sampling error
    assert accepted.sum() / truth.sum() == pytest.approx(report.expected_recall, abs=0.1)
    assert {v.label for v in verdicts} == {"accept", "review"}

    # Save / load round trip: same predictions, version from the file's hash.
    path = verifier.save(tmp_path / "calibrated.joblib")
    with CalibratedVerifier(path) as loaded:
        assert loaded.model_version.startswith("calibrated@") and loaded.model_version != (
            "calibrated@unfitted"
        )
        np.testing.assert_allclose(
            loaded.predict(fresh_features[:50]), verifier.predict(fresh_features[:50])
        )
        assert loaded.threshold == verifier.threshold and loaded.report == report


def test_boosting_model_also_fits() -> None:
    features, labels = review_history(400, seed=2)
    report = CalibratedVerifier(kind="boosting").fit(features, labels, target_precision=0.85)
    assert report.n_reviews == 400
    assert not report.reached or report.expected_precision >= 0.85


def test_refuses_too_few_reviews_or_one_class() -> None:
    features, labels = review_history(49, seed=3)
    with pytest.raises(InvalidInputError, match=r"at least 50 reviewed proposals.*has 49"):
        CalibratedVerifier().fit(features, labels)
    features, _ = review_history(200, seed=4)
    with pytest.raises(InvalidInputError, match=r"200 \(200 accepted, 0 rejected\)"):
        CalibratedVerifier().fit(features, [True] * 200)


def test_unreachable_target_auto_accepts_nothing() -> None:
    rng = np.random.default_rng(5)
    features, _ = review_history(300, seed=5)
    labels = [bool(v) for v in rng.random(300) < 0.5]  # labels unrelated to the features
    verifier = CalibratedVerifier()
    report = verifier.fit(features, labels, target_precision=0.99)
    assert not report.reached and math.isinf(report.threshold)
    assert "not reached" in report.summary()
    assert report.expected_recall == 0.0


def test_queries_without_features_and_pairs_are_refused_clearly() -> None:
    features, labels = review_history(200, seed=6)
    verifier = CalibratedVerifier()
    with pytest.raises(ConfigError, match="not fitted"):
        verifier.predict(features[:1])
    verifier.fit(features, labels, target_precision=0.8)
    with pytest.raises(InvalidInputError, match="FeaturedMaskQuery"):
        verifier.verify_masks([MaskQuery(Image.new("RGB", (2, 2)), "dog", _tiny_rle())])
    with pytest.raises(ConfigError, match="pair_verifier"):
        verifier.verify_pairs([PairQuery(Image.new("RGB", (2, 2)), "dog")])

    class Stub:
        def verify_pairs(self, queries: list[PairQuery]) -> list[Verdict]:
            return [Verdict("accept", 0.9) for _ in queries]

    verifier.pair_verifier = Stub()  # type: ignore[assignment]
    assert verifier.verify_pairs([PairQuery(Image.new("RGB", (2, 2)), "dog")]) == [
        Verdict("accept", 0.9)
    ]
    with pytest.raises(ModelLoadError, match="no calibrated verifier"):
        CalibratedVerifier("/nonexistent/calibrated.joblib").load()


def _tiny_rle() -> masks.RLE:
    return masks.encode(np.ones((2, 2), dtype=bool))


def test_proposal_features_and_stability() -> None:
    stack = np.zeros((2, 10, 10), dtype=bool)
    stack[0, 0:4, 0:5] = True  # 20 px, box 5x4
    stack[1, 0:4, 0:4] = True  # 16 px, inside the first
    proposals = PhraseProposals(
        phrase="dog",
        masks=masks.encode_many(stack),
        boxes=np.zeros((2, 4), np.float32),
        scores=np.asarray([0.9, 0.4], np.float32),
        presence=0.8,
    )
    first = proposal_features(proposals, 0, vlm_p_accept=0.7)
    assert first.score == pytest.approx(0.9) and first.presence == pytest.approx(0.8)
    assert first.area_fraction == pytest.approx(0.2)
    assert first.fill_ratio == pytest.approx(1.0)
    assert first.max_iou_same_pair == pytest.approx(16 / 20)
    assert first.rank == 0 and first.stability is None and first.vlm_p_accept == 0.7
    assert math.isnan(first.vector()[6])
    probs = np.zeros((4, 4))
    probs[:2, :2] = 0.9
    probs[2, :2] = 0.52  # only above the low threshold
    assert stability_score(probs) == pytest.approx(4 / 6)
