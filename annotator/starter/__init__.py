"""The shipped starter proposer: a small SAM 3 (transformers ``Sam3Model``) trained from scratch
on the synthetic world by ``annotator train starter`` (see docs/benchmarks.md, "Starter model").

``sam3-shapes/`` is the model directory (config, safetensors, tokenizer, processor config) that
the ``sam3`` backend loads; ``sam3-shapes-weak/`` is the same run after fewer steps (the flywheel
demo starts round 1 from it); ``metrics.json`` holds their measured figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["recorded_metrics", "starter_model_dir", "weak_model_dir"]

_HERE = Path(__file__).resolve().parent


def starter_model_dir() -> Path:
    """The shipped starter model directory."""
    return _HERE / "sam3-shapes"


def weak_model_dir() -> Path:
    """The deliberately weaker snapshot of the same training run."""
    return _HERE / "sam3-shapes-weak"


def recorded_metrics() -> dict[str, Any]:
    """The figures recorded when the shipped models were trained (``metrics.json``)."""
    return dict(json.loads((_HERE / "metrics.json").read_text()))
