"""A small dataset the tiny models can mine in seconds, and the job request that mines it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tests.pipeline import fakes
from tests.pipeline.conftest import scene

ALT = {
    "a.png": "a red car and a striped umbrella",
    "b.png": "a blue car near a tree",
    "c.png": "a tabby cat on a wooden table",
}


def add_small_dataset(engine: Engine, root: Path, name: str = "street") -> None:
    from annotator.db.session import session_scope
    from annotator.services.images import add_images

    root.mkdir(parents=True, exist_ok=True)
    for i, file in enumerate(ALT):
        scene(i + 1, size=(96, 72)).save(root / file)
    with session_scope(engine) as session:
        result = add_images(session, name, [str(root)], alt_text=dict(ALT))
    assert not result.failed, result.failed


def job_request(tiny_sam3: Path, dataset: str = "street") -> dict[str, Any]:
    """Tiny SAM 3, alt-text concepts (no captioner), the scripted verifier: red car masks are
    auto-accepted, the rest go wherever their scores send them."""
    fakes.MV_SCRIPT["red car"] = [0.95]
    fakes.EV_SCRIPT["red car"] = 0.95
    return {
        "dataset": dataset,
        "proposer": {
            "name": "sam3",
            "model": str(tiny_sam3),
            "options": {"score_threshold": 0.0, "max_instances": 3},
        },
        "captioner": {"name": "none"},
        "parser": {"name": "offline"},
        "verifier": {"name": "tests.pipeline.fakes:ScriptedVerifier", "model": "v1"},
        "device": "cpu",
        "routing": {"accept_above": 0.8, "reject_below": 0.2},
        "hard_negatives": False,
    }
