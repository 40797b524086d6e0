"""How a job's MV thresholds were chosen is said in ``routing.threshold_source``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from annotator.db.session import session_scope
from annotator.pipeline.config import BackendSpec, MiningConfig
from annotator.services import jobs
from annotator.verifiers.calibrated import CalibratedVerifier
from tests.verifiers.test_calibrated import review_history


def test_an_unreached_calibrated_target_is_named_before_the_fallback(
    engine: Engine, make_config: Callable[..., MiningConfig], tmp_path: Path
) -> None:
    features, _ = review_history(300, seed=5)
    labels = [bool(v) for v in np.random.default_rng(5).random(300) < 0.5]  # no signal
    verifier = CalibratedVerifier()
    report = verifier.fit(features, labels, target_precision=0.99)
    assert not report.reached
    path = verifier.save(tmp_path / "cal.joblib")
    config = make_config(
        verifier=BackendSpec(name="calibrated", model=str(path)),
        routing={"accept_above": 0.8, "reject_below": 0.2, "target_precision": 0.99},
    )
    with session_scope(engine) as session:
        fitted = jobs.fit_routing(session, config)
    source = fitted.routing.threshold_source
    assert source.startswith(
        f"calibrated verifier: target precision 0.990 not reached on {report.n_holdout} "
        "held-out reviews; target precision 0.990 on 0 reviewed masks"
    ), source
    # Neither the verifier's own fit nor reviewed masks show a threshold reaching 0.99: MV
    # auto-accept is off rather than falling back to the configured 0.8.
    assert "no accept_above reaches it: MV auto-accept off" in source
    assert fitted.routing.auto_accept is False
    assert fitted.routing.reject_below == 0.2
