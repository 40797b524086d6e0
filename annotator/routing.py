"""Routing: verifier scores -> accept / reject / review decisions, each with its reason. Pure.

A pair (image, phrase) is decided as a whole, either by the machines or by a person, never half
and half: the review tool shows a person every proposal of the pair, so an automatic annotation
beside a pending review would be decided twice.

Per mask (MV ``p_accept``): ``p >= accept_above`` accepted, ``p <= reject_below`` rejected, in
between uncertain. Per pair (EV ``p_accept``): when some mask is accepted, EV was asked whether
the accepted masks cover every instance (exhaustivity); when none is (or the pair is a hard
negative), EV was asked whether the phrase is absent. Then:

=====================================  ===============================================
masks                                   pair
=====================================  ===============================================
any uncertain                           review
some accepted, EV >= ev_accept_above    positive, exhaustive; accepted masks -> annotations
some accepted, EV <= ev_reject_below    review (or positive, not exhaustive, when
                                        ``review_non_exhaustive`` is off)
none accepted, EV >= ev_absent_above    negative (verified absent) where
                                        ``auto_negative_named``; else review
none accepted, EV says "ungroundable"   ungroundable
  with EV <= ev_reject_below
anything else                           review
=====================================  ===============================================

A hard-negative pair never gets automatic masks: it is a negative when EV confirms absence and a
review otherwise. The absence rule has its own threshold, ``ev_absent_above`` (default
``ev_accept_above``), and ``auto_negative`` false turns it off (every pair EV would declare
absent goes to a person). A *named* pair (its phrase came from the image's caption or alt-text,
a person or an import: every origin but ``hard_negative``) is declared absent without a person
only with ``auto_negative_named``: off by default, since a named phrase EV calls absent is most
often one the proposer missed, and where EV reads the proposer's own scores a negative label
would teach the next proposer its own miss.

:func:`fit_accept_threshold` / :func:`fit_reject_threshold` choose thresholds on reviewed
proposals for a target precision (:func:`fitted_thresholds`), and :func:`fitted_absence` the
absence threshold on reviewed pairs.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

__all__ = [
    "EvQuestion",
    "MaskDecision",
    "MaskScore",
    "PairDecision",
    "PairOutcome",
    "PairScores",
    "Thresholds",
    "ev_question",
    "fit_accept_threshold",
    "fit_reject_threshold",
    "fitted_absence",
    "fitted_thresholds",
    "mask_decision",
    "route_pair",
]


class MaskDecision(enum.StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    UNCERTAIN = "uncertain"


class PairOutcome(enum.StrEnum):
    """Where a pair goes; the values are ``PairState`` values."""

    POSITIVE = "positive"
    NEGATIVE = "negative"
    REVIEW = "in_review"
    UNGROUNDABLE = "ungroundable"


class EvQuestion(enum.StrEnum):
    EXHAUSTIVITY = "exhaustivity"  # do the accepted masks cover every instance?
    ABSENCE = "absence"  # is the phrase absent from the image?


@dataclass(frozen=True)
class Thresholds:
    """MV and EV thresholds on ``p_accept`` (``reject_below < accept_above``).

    ``auto_accept`` false: MV accepts no mask, whatever its score (a mask above
    ``reject_below`` is uncertain): what a target precision that no threshold is shown to
    reach asks for. EV keeps its thresholds. ``ev_absent_above``: the EV threshold of the
    absence question (default ``ev_accept_above``); ``auto_negative`` false: EV declares no
    pair absent (such pairs go to a person); ``auto_negative_named`` false: only hard
    negatives are declared absent without a person (see the module docstring)."""

    accept_above: float = 0.9
    reject_below: float = 0.1
    ev_accept_above: float | None = None
    ev_reject_below: float | None = None
    review_non_exhaustive: bool = True
    auto_accept: bool = True
    ev_absent_above: float | None = None
    auto_negative: bool = True
    auto_negative_named: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.reject_below < self.accept_above <= 1.0:
            raise ValueError(
                f"need 0 <= reject_below < accept_above <= 1, got {self.reject_below} and "
                f"{self.accept_above}"
            )
        if not 0.0 <= self.ev_low < self.ev_high <= 1.0:
            raise ValueError(
                f"need 0 <= ev_reject_below < ev_accept_above <= 1, got {self.ev_low} and "
                f"{self.ev_high}"
            )
        if not self.ev_low < self.ev_absent <= 1.0:
            raise ValueError(
                f"need ev_reject_below < ev_absent_above <= 1, got {self.ev_low} and "
                f"{self.ev_absent}"
            )

    @property
    def ev_high(self) -> float:
        return self.accept_above if self.ev_accept_above is None else self.ev_accept_above

    @property
    def ev_low(self) -> float:
        return self.reject_below if self.ev_reject_below is None else self.ev_reject_below

    @property
    def ev_absent(self) -> float:
        return self.ev_high if self.ev_absent_above is None else self.ev_absent_above

    def absent_rule(self, ev: float) -> tuple[bool, str]:
        """Whether EV's absence score ``ev`` declares the phrase absent, and the rule in words."""
        name = "ev_accept_above" if self.ev_absent_above is None else "ev_absent_above"
        if not self.auto_negative:
            return False, f"EV absent p={_f(ev)}, EV auto-negative off"
        if ev >= self.ev_absent:
            return True, f"EV absent p={_f(ev)} >= {name} {_f(self.ev_absent)}"
        return False, f"EV absent p={_f(ev)} < {name} {_f(self.ev_absent)}"


@dataclass(frozen=True)
class MaskScore:
    """One proposal of a pair and its MV verdict."""

    proposal_id: int
    p_accept: float
    label: str = ""


@dataclass(frozen=True)
class PairScores:
    """What routing knows about one pair. ``ev_p_accept`` is ``None`` when EV did not run."""

    pair_id: int
    masks: Sequence[MaskScore] = ()
    ev_p_accept: float | None = None
    ev_label: str = ""
    hard_negative: bool = False


@dataclass(frozen=True)
class PairDecision:
    """The routed pair: its outcome, exhaustivity flag, the masks to accept, and why."""

    pair_id: int
    outcome: PairOutcome
    is_exhaustive: bool | None
    accepted: tuple[int, ...] = ()  # proposal ids that become annotations (source auto)
    mask_decisions: dict[int, MaskDecision] = field(default_factory=dict)
    reason: str = ""


def mask_decision(p_accept: float, t: Thresholds) -> MaskDecision:
    """accept / reject / uncertain for one MV score."""
    if t.auto_accept and p_accept >= t.accept_above:
        return MaskDecision.ACCEPT
    if p_accept <= t.reject_below:
        return MaskDecision.REJECT
    return MaskDecision.UNCERTAIN


def ev_question(mv_scores: Sequence[float], t: Thresholds, *, hard_negative: bool) -> EvQuestion:
    """Which EV question a pair gets: exhaustivity when some mask would be accepted."""
    if hard_negative or not any(mask_decision(p, t) == MaskDecision.ACCEPT for p in mv_scores):
        return EvQuestion.ABSENCE
    return EvQuestion.EXHAUSTIVITY


def _f(p: float) -> str:
    return f"{p:.3f}"


def route_pair(scores: PairScores, t: Thresholds) -> PairDecision:
    """Decide one pair (see the module docstring for the table)."""
    decisions = {m.proposal_id: mask_decision(m.p_accept, t) for m in scores.masks}
    accepted = tuple(m.proposal_id for m in scores.masks if decisions[m.proposal_id] == "accept")
    uncertain = [m for m in scores.masks if decisions[m.proposal_id] == MaskDecision.UNCERTAIN]
    ev = scores.ev_p_accept
    n = len(scores.masks)

    def decide(outcome: PairOutcome, reason: str, exhaustive: bool | None = None) -> PairDecision:
        keep = accepted if outcome == PairOutcome.POSITIVE else ()
        return PairDecision(scores.pair_id, outcome, exhaustive, keep, decisions, reason)

    if scores.hard_negative:
        if ev is None:
            return decide(PairOutcome.REVIEW, "hard negative not confirmed absent: no EV score")
        absent, rule = t.absent_rule(ev)
        if absent:
            return decide(PairOutcome.NEGATIVE, f"hard negative: {rule}", True)
        return decide(PairOutcome.REVIEW, f"hard negative not confirmed absent: {rule}")

    if uncertain:
        scores_text = ", ".join(_f(m.p_accept) for m in uncertain[:5])
        band = (
            f"in ({_f(t.reject_below)}, {_f(t.accept_above)})"
            if t.auto_accept
            else f"> reject_below {_f(t.reject_below)} (MV auto-accept off)"
        )
        return decide(
            PairOutcome.REVIEW,
            f"{len(uncertain)} of {n} masks uncertain: MV p {band}: {scores_text}",
        )
    if ev is None:
        return decide(PairOutcome.REVIEW, "no EV score")

    if accepted:
        head = f"{len(accepted)} of {n} masks MV p >= accept_above {_f(t.accept_above)}"
        if ev >= t.ev_high:
            return decide(
                PairOutcome.POSITIVE,
                f"{head}; EV exhaustive p={_f(ev)} >= ev_accept_above {_f(t.ev_high)}",
                True,
            )
        if ev <= t.ev_low and not t.review_non_exhaustive:
            return decide(
                PairOutcome.POSITIVE,
                f"{head}; EV not exhaustive p={_f(ev)} <= ev_reject_below {_f(t.ev_low)}",
                False,
            )
        return decide(
            PairOutcome.REVIEW,
            f"{head}; EV exhaustive p={_f(ev)} < ev_accept_above {_f(t.ev_high)}",
        )

    head = f"all {n} masks MV p <= reject_below {_f(t.reject_below)}" if n else "no masks proposed"
    absent, rule = t.absent_rule(ev)
    if absent and not t.auto_negative_named:
        return decide(
            PairOutcome.REVIEW,
            f"{head}; {rule}, but the phrase was named for this image: a person decides "
            "(auto_negative_named off)",
        )
    if absent:
        return decide(PairOutcome.NEGATIVE, f"{head}; {rule}", True)
    if ev <= t.ev_low and scores.ev_label == "ungroundable":
        return decide(
            PairOutcome.UNGROUNDABLE,
            f"{head}; EV answered ungroundable (absent p={_f(ev)} <= {_f(t.ev_low)})",
        )
    return decide(PairOutcome.REVIEW, f"{head}; {rule}")


# ---------------------------------------------------------------------------- fitted thresholds


def _check(scores: Sequence[float], labels: Sequence[bool], target: float) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target}")


def fit_accept_threshold(
    scores: Sequence[float],
    accepted: Sequence[bool],
    target_precision: float,
    min_support: int = 20,
) -> float | None:
    """The lowest threshold ``t`` such that the reviewed masks with ``p >= t`` were accepted by
    people at a rate of at least ``target_precision``, over at least ``min_support`` masks.

    Ties are kept together (a cut never separates equal scores). ``None`` when no threshold
    reaches the target with enough support.
    """
    _check(scores, accepted, target_precision)
    pairs = sorted(zip(scores, accepted, strict=True), key=lambda x: -x[0])
    best: float | None = None
    hits = 0
    for k, (score, ok) in enumerate(pairs):
        hits += bool(ok)
        if k + 1 < len(pairs) and pairs[k + 1][0] == score:
            continue
        n = k + 1
        if n >= min_support and hits / n >= target_precision:
            best = float(score)
    return best


def fit_reject_threshold(
    scores: Sequence[float],
    accepted: Sequence[bool],
    target_precision: float,
    min_support: int = 20,
) -> float | None:
    """The highest threshold ``t`` such that the reviewed masks with ``p <= t`` were rejected by
    people at a rate of at least ``target_precision`` over at least ``min_support`` masks."""
    _check(scores, accepted, target_precision)
    pairs = sorted(zip(scores, accepted, strict=True), key=lambda x: x[0])
    best: float | None = None
    misses = 0
    for k, (score, ok) in enumerate(pairs):
        misses += not ok
        if k + 1 < len(pairs) and pairs[k + 1][0] == score:
            continue
        n = k + 1
        if n >= min_support and misses / n >= target_precision:
            best = float(score)
    return best


def fitted_thresholds(
    scores: Sequence[float],
    accepted: Sequence[bool],
    target_precision: float,
    *,
    default: Thresholds,
    min_support: int = 20,
) -> tuple[Thresholds, str]:
    """MV thresholds for ``target_precision`` fitted on reviewed masks, with a note saying how.

    The reject side keeps its default when it cannot be fitted. The accept side cannot fall back
    to a default: no threshold is shown to reach the target, so MV auto-accept is off
    (``auto_accept`` false; masks above ``reject_below`` go to a person). The accept threshold
    is never below the reject threshold.
    """
    hi = fit_accept_threshold(scores, accepted, target_precision, min_support)
    lo = fit_reject_threshold(scores, accepted, target_precision, min_support)
    accept_above = default.accept_above if hi is None else hi
    reject_below = default.reject_below if lo is None else lo
    if reject_below >= accept_above:
        # The reviewed scores do not separate the classes at this precision: keep the defaults.
        accept_above, reject_below = default.accept_above, default.reject_below
        hi = lo = None
    parts = [
        f"accept_above fitted {accept_above:.3f}"
        if hi is not None
        else "no accept_above reaches it: MV auto-accept off",
        f"reject_below {'fitted' if lo is not None else 'default'} {reject_below:.3f}",
    ]
    note = f"target precision {target_precision:.3f} on {len(scores)} reviewed masks: " + ", ".join(
        parts
    )
    fitted = replace(
        default, accept_above=accept_above, reject_below=reject_below, auto_accept=hi is not None
    )
    return fitted, note


def fitted_absence(
    scores: Sequence[float],
    absent: Sequence[bool],
    target_precision: float,
    *,
    default: Thresholds,
    min_support: int = 20,
) -> tuple[Thresholds, str]:
    """The EV absence threshold for ``target_precision``, fitted on reviewed pairs EV asked the
    absence question (``scores``: its absent p; ``absent``: what the person found), with a note
    saying how: the lowest threshold whose pairs at or above it were absent at the target rate
    over at least ``min_support`` pairs (:func:`fit_accept_threshold`). With fewer than
    ``min_support`` such pairs the configured threshold stays; with enough and none reaching
    the target, EV auto-negative is off (``auto_negative`` false: those pairs go to a person).
    The fitted threshold is kept above ``ev_reject_below``."""
    n = len(scores)
    head = f"EV absence: target precision {target_precision:.3f} on {n} reviewed pairs: "
    if n < min_support:
        return default, (
            f"{head}fewer than {min_support}, absent threshold {default.ev_absent:.3f} as "
            "configured"
        )
    found = fit_accept_threshold(scores, absent, target_precision, min_support)
    if found is None:
        off = replace(default, auto_negative=False)
        return off, f"{head}no threshold reaches it: EV auto-negative off"
    threshold = max(found, math.nextafter(default.ev_low, 1.0))
    fitted = replace(default, ev_absent_above=threshold, auto_negative=True)
    return fitted, f"{head}ev_absent_above fitted {threshold:.3f}"
