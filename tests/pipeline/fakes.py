"""Scripted backends for pipeline tests, named by dotted path in a job config.

They answer from tables instead of weights, so a test can say which pair must end up positive,
negative or in review and check the whole route there. The proposer stays the tiny SAM 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from annotator.backends import MaskQuery, NothingToLoad, PairQuery, Verdict

# phrase -> MV p_accept per mask rank (last value repeats); EV p_accept per phrase.
MV_SCRIPT: dict[str, list[float]] = {}
EV_SCRIPT: dict[str, float] = {}
DEFAULT_MV = 0.5
DEFAULT_EV = 0.5
CALLS: dict[str, int] = {"mv": 0, "ev": 0}
# Raise this many times before answering (transient failures).
FAILURES: dict[str, int] = {"verify": 0}


class ScriptedVerifier(NothingToLoad):
    """MV and EV verdicts looked up in MV_SCRIPT / EV_SCRIPT (``model`` is ignored)."""

    def __init__(self, model: str | None = None, *, device: str | None = None, **_: Any) -> None:
        self.model = model or "scripted"

    @property
    def model_version(self) -> str:
        return f"scripted-verifier@{self.model}"

    def verify_masks(self, queries: Sequence[MaskQuery]) -> list[Verdict]:
        if FAILURES["verify"] > 0:
            FAILURES["verify"] -= 1
            raise RuntimeError("CUDA out of memory (scripted)")
        out: list[Verdict] = []
        seen: dict[str, int] = {}
        for q in queries:
            rank = seen.get(q.phrase, 0)
            seen[q.phrase] = rank + 1
            script = MV_SCRIPT.get(q.phrase, [DEFAULT_MV])
            p = script[min(rank, len(script) - 1)]
            out.append(Verdict("accept" if p >= 0.5 else "reject", p))
        CALLS["mv"] += len(queries)
        return out

    def verify_pairs(self, queries: Sequence[PairQuery]) -> list[Verdict]:
        CALLS["ev"] += len(queries)
        return [
            Verdict("accept" if (p := EV_SCRIPT.get(q.phrase, DEFAULT_EV)) >= 0.5 else "reject", p)
            for q in queries
        ]


def reset() -> None:
    MV_SCRIPT.clear()
    EV_SCRIPT.clear()
    CALLS.update(mv=0, ev=0)
    FAILURES.update(verify=0)
