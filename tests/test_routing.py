"""Routing decisions on hand-made score sets, and thresholds fitted for a target precision."""

from __future__ import annotations

import pytest

from annotator.routing import (
    EvQuestion,
    MaskDecision,
    MaskScore,
    PairOutcome,
    PairScores,
    Thresholds,
    ev_question,
    fit_accept_threshold,
    fit_reject_threshold,
    fitted_absence,
    fitted_thresholds,
    mask_decision,
    route_pair,
)

T = Thresholds(accept_above=0.8, reject_below=0.2)
# The same, with EV free to declare a named phrase (not a hard negative) absent.
NAMED = Thresholds(accept_above=0.8, reject_below=0.2, auto_negative_named=True)


def pair(*mv: float, ev: float | None, label: str = "", hard_negative: bool = False) -> PairScores:
    return PairScores(
        pair_id=7,
        masks=[MaskScore(100 + i, p) for i, p in enumerate(mv)],
        ev_p_accept=ev,
        ev_label=label,
        hard_negative=hard_negative,
    )


def test_mask_decisions_at_the_thresholds_are_inclusive() -> None:
    assert mask_decision(0.8, T) == MaskDecision.ACCEPT
    assert mask_decision(0.79, T) == MaskDecision.UNCERTAIN
    assert mask_decision(0.2, T) == MaskDecision.REJECT
    assert mask_decision(float("nan"), T) == MaskDecision.UNCERTAIN  # no MV score: a person


@pytest.mark.parametrize(
    ("scores", "outcome", "exhaustive", "accepted", "reason"),
    [
        (pair(0.9, 0.85, ev=0.95), PairOutcome.POSITIVE, True, (100, 101),
         "2 of 2 masks MV p >= accept_above 0.800; EV exhaustive p=0.950 >= ev_accept_above 0.800"),
        (pair(0.9, 0.05, ev=0.95), PairOutcome.POSITIVE, True, (100,), "1 of 2 masks"),
        (pair(0.9, 0.5, ev=0.99), PairOutcome.REVIEW, None, (),
         "1 of 2 masks uncertain: MV p in (0.200, 0.800): 0.500"),
        (pair(0.9, ev=0.1), PairOutcome.REVIEW, None, (),
         "EV exhaustive p=0.100 < ev_accept_above"),
        (pair(0.9, ev=0.5), PairOutcome.REVIEW, None, (), "EV exhaustive p=0.500"),
        (pair(0.1, 0.0, ev=0.9), PairOutcome.NEGATIVE, True, (),
         "all 2 masks MV p <= reject_below 0.200; EV absent p=0.900 >= ev_accept_above 0.800"),
        (pair(ev=0.99), PairOutcome.NEGATIVE, True, (), "no masks proposed; EV absent p=0.990"),
        (pair(ev=0.4), PairOutcome.REVIEW, None, (), "no masks proposed; EV absent p=0.400 <"),
        (pair(ev=0.1, label="ungroundable"), PairOutcome.UNGROUNDABLE, None, (), "ungroundable"),
        (pair(ev=0.5, label="ungroundable"), PairOutcome.REVIEW, None, (), "EV absent p=0.500"),
        (pair(0.9, ev=None), PairOutcome.REVIEW, None, (), "no EV score"),
        (pair(0.99, ev=0.99, hard_negative=True), PairOutcome.NEGATIVE, True, (),
         "hard negative: EV absent p=0.990 >= ev_accept_above 0.800"),
        (pair(0.99, ev=0.5, hard_negative=True), PairOutcome.REVIEW, None, (),
         "hard negative not confirmed absent"),
    ],
)  # fmt: skip
def test_route_pair(
    scores: PairScores,
    outcome: PairOutcome,
    exhaustive: bool | None,
    accepted: tuple[int, ...],
    reason: str,
) -> None:
    decision = route_pair(scores, NAMED)
    assert decision.outcome == outcome
    assert decision.is_exhaustive is exhaustive
    assert decision.accepted == accepted
    assert reason in decision.reason
    assert set(decision.mask_decisions) == {m.proposal_id for m in scores.masks}


def test_non_exhaustive_positives_when_review_is_off_and_separate_ev_thresholds() -> None:
    lenient = Thresholds(accept_above=0.8, reject_below=0.2, review_non_exhaustive=False)
    decision = route_pair(pair(0.9, ev=0.1), lenient)
    assert decision.outcome == PairOutcome.POSITIVE and decision.is_exhaustive is False
    assert decision.accepted == (100,) and "EV not exhaustive p=0.100" in decision.reason
    strict_ev = Thresholds(accept_above=0.8, reject_below=0.2, ev_accept_above=0.99)
    assert route_pair(pair(0.9, ev=0.95), strict_ev).outcome == PairOutcome.REVIEW
    with pytest.raises(ValueError):
        Thresholds(accept_above=0.3, reject_below=0.5)
    with pytest.raises(ValueError):
        Thresholds(ev_accept_above=0.1, ev_reject_below=0.2)


def test_with_auto_accept_off_mv_accepts_no_mask() -> None:
    """Auto-accept off (a target precision no threshold is shown to reach): a mask of any
    score above reject_below is uncertain and its pair goes to a person; rejections and EV's
    negatives work as before, and EV asks about absence (no mask would be accepted)."""
    off = Thresholds(accept_above=0.8, reject_below=0.2, auto_accept=False)
    assert mask_decision(1.0, off) == MaskDecision.UNCERTAIN
    assert mask_decision(0.2, off) == MaskDecision.REJECT
    decision = route_pair(pair(1.0, 0.9, ev=0.99), off)
    assert decision.outcome == PairOutcome.REVIEW and decision.accepted == ()
    assert decision.reason == (
        "2 of 2 masks uncertain: MV p > reject_below 0.200 (MV auto-accept off): 1.000, 0.900"
    )
    negative = route_pair(pair(0.1, ev=0.9, hard_negative=True), off)
    assert negative.outcome == PairOutcome.NEGATIVE and negative.is_exhaustive is True
    assert ev_question([1.0], off, hard_negative=False) == EvQuestion.ABSENCE


def test_a_named_phrase_is_declared_absent_only_when_allowed() -> None:
    """By default EV declares absent only hard negatives: a phrase the image's text named that
    EV calls absent goes to a person, with the rule and why in the reason."""
    named = route_pair(pair(0.1, ev=0.95), T)
    assert named.outcome == PairOutcome.REVIEW and named.is_exhaustive is None
    assert named.reason == (
        "all 1 masks MV p <= reject_below 0.200; EV absent p=0.950 >= ev_accept_above 0.800, "
        "but the phrase was named for this image: a person decides (auto_negative_named off)"
    )
    assert route_pair(pair(ev=0.95), NAMED).outcome == PairOutcome.NEGATIVE
    assert route_pair(pair(0.1, ev=0.95, hard_negative=True), T).outcome == PairOutcome.NEGATIVE
    # Ungroundable is not a negative: unchanged.
    assert route_pair(pair(ev=0.1, label="ungroundable"), T).outcome == PairOutcome.UNGROUNDABLE


def test_the_absence_threshold_and_auto_negative_off() -> None:
    fitted = Thresholds(accept_above=0.8, reject_below=0.2, ev_absent_above=0.97)
    # The exhaustivity question keeps ev_accept_above; absence reads ev_absent_above.
    assert route_pair(pair(0.9, ev=0.85), fitted).outcome == PairOutcome.POSITIVE
    below = route_pair(pair(ev=0.95, hard_negative=True), fitted)
    assert below.outcome == PairOutcome.REVIEW
    assert below.reason == (
        "hard negative not confirmed absent: EV absent p=0.950 < ev_absent_above 0.970"
    )
    above = route_pair(pair(ev=0.97, hard_negative=True), fitted)
    assert above.outcome == PairOutcome.NEGATIVE
    assert above.reason == "hard negative: EV absent p=0.970 >= ev_absent_above 0.970"
    off = Thresholds(accept_above=0.8, reject_below=0.2, auto_negative=False)
    none = route_pair(pair(ev=1.0, hard_negative=True), off)
    assert none.outcome == PairOutcome.REVIEW
    assert (
        none.reason == "hard negative not confirmed absent: EV absent p=1.000, EV auto-negative off"
    )
    with pytest.raises(ValueError, match="ev_absent_above"):
        Thresholds(accept_above=0.8, reject_below=0.2, ev_absent_above=0.2)


def test_fitted_absence_for_a_target_precision() -> None:
    # 30 reviewed pairs: the 22 highest EV scores absent but one, then absent, present, ...
    scores = [1.0 - i / 100 for i in range(30)]
    absent = [i != 5 for i in range(22)] + [i % 2 == 0 for i in range(8)]
    fitted, note = fitted_absence(scores, absent, 0.95, default=T)
    assert fitted.auto_negative and fitted.ev_absent_above == pytest.approx(0.78)
    kept = [a for s, a in zip(scores, absent, strict=True) if s >= fitted.ev_absent]
    assert sum(kept) / len(kept) >= 0.95 and len(kept) >= 20
    assert note == (
        "EV absence: target precision 0.950 on 30 reviewed pairs: ev_absent_above fitted 0.780"
    )
    # The MV and exhaustivity thresholds are untouched.
    assert (fitted.accept_above, fitted.reject_below, fitted.ev_high) == (0.8, 0.2, 0.8)
    # Enough pairs, none reaching the target: auto-negative off.
    off, note = fitted_absence(scores, [i % 2 == 0 for i in range(30)], 0.95, default=T)
    assert off.auto_negative is False and note.endswith(
        "no threshold reaches it: EV auto-negative off"
    )
    # Too few: the configured threshold, said so.
    few, note = fitted_absence(scores[:5], absent[:5], 0.95, default=T)
    assert few == T and note.endswith(
        "on 5 reviewed pairs: fewer than 20, absent threshold 0.800 as configured"
    )


def test_ev_question_matches_what_routing_reads() -> None:
    assert ev_question([0.9, 0.1], T, hard_negative=False) == EvQuestion.EXHAUSTIVITY
    assert ev_question([0.7, 0.1], T, hard_negative=False) == EvQuestion.ABSENCE
    assert ev_question([], T, hard_negative=False) == EvQuestion.ABSENCE
    assert ev_question([0.99], T, hard_negative=True) == EvQuestion.ABSENCE


def test_fit_accept_threshold_reaches_the_target_with_support() -> None:
    # Scores 1.0 .. 0.01; people accepted everything above 0.6 and every other one below.
    scores = [i / 100 for i in range(100, 0, -1)]
    accepted = [s > 0.6 or i % 2 == 0 for i, s in enumerate(scores)]
    t = fit_accept_threshold(scores, accepted, 0.95, min_support=10)
    assert t is not None
    kept = [a for s, a in zip(scores, accepted, strict=True) if s >= t]
    assert sum(kept) / len(kept) >= 0.95
    # Lower by one step falls below the target.
    lower = [a for s, a in zip(scores, accepted, strict=True) if s >= t - 0.01]
    assert sum(lower) / len(lower) < 0.95 or t == min(scores)
    assert fit_accept_threshold(scores, accepted, 0.95, min_support=1000) is None
    # Ties stay together: three 0.9s, one of them rejected, cannot give precision 1.
    assert fit_accept_threshold([0.9, 0.9, 0.9], [True, False, True], 1.0, min_support=1) is None


def test_fit_reject_threshold_and_fitted_thresholds() -> None:
    scores = [0.05, 0.1, 0.15, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95]
    accepted = [False, False, False, False, True, True, True, True, True, True]
    assert fit_reject_threshold(scores, accepted, 1.0, min_support=2) == 0.2
    assert fit_accept_threshold(scores, accepted, 1.0, min_support=2) == 0.3
    fitted, note = fitted_thresholds(scores, accepted, 1.0, default=T, min_support=2)
    assert (fitted.accept_above, fitted.reject_below, fitted.auto_accept) == (0.3, 0.2, True)
    assert "accept_above fitted 0.300" in note and "10 reviewed masks" in note
    # No reviews: nothing shows a threshold reaching the target, so nothing is auto-accepted
    # (not the default 0.8, which nothing vouches for); the reject side keeps its default.
    none, note = fitted_thresholds([], [], 0.9, default=T)
    assert (none.accept_above, none.reject_below, none.auto_accept) == (0.8, 0.2, False)
    assert note == (
        "target precision 0.900 on 0 reviewed masks: no accept_above reaches it: MV auto-accept "
        "off, reject_below default 0.200"
    )
    # Only the reject side reaches the target: fitted, and still no auto-accept.
    rejects, note = fitted_thresholds(scores[:5], accepted[:5], 0.8, default=T, min_support=2)
    assert (rejects.reject_below, rejects.auto_accept) == (0.3, False)
    assert "reject_below fitted 0.300" in note
    with pytest.raises(ValueError):
        fit_accept_threshold([0.5], [True, False], 0.9)
