"""How a job's MV and EV-absence thresholds were chosen (said in ``routing.threshold_source``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from annotator.db import repositories as repo
from annotator.db.models import (
    Image,
    ImageStatus,
    Job,
    JobKind,
    JobStatus,
    Pair,
    PairOrigin,
    PairState,
    Proposal,
    ReviewTask,
    ReviewTaskStatus,
    Verification,
    VerificationKind,
)
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


def _reviewed_pairs(session: Session, answers: list[tuple[str, float, bool, float | None]]) -> None:
    """One job (routing 0.8 / 0.2) and, per answer ``(origin, EV absent p, truly absent, best
    MV p or None)``, a pair a person decided: its EV verdict, its proposal's MV verdict, a done
    review task and the state the person left."""
    dataset, _ = repo.get_or_create_dataset(session, "fit")
    concept = repo.ensure_concepts(session, ["red car"])["red car"]
    job = Job(
        kind=JobKind.MINE, dataset_id=dataset.id, status=JobStatus.DONE,
        config={"routing": {"accept_above": 0.8, "reject_below": 0.2}},
    )  # fmt: skip
    session.add(job)
    session.flush()
    for i, (origin, ev, absent, mv) in enumerate(answers):
        image = Image(
            dataset_id=dataset.id, file_name=f"{i}.png", uri=f"/nowhere/{i}.png",
            sha256=f"{i:064d}", width=8, height=8, status=ImageStatus.READY,
        )  # fmt: skip
        session.add(image)
        session.flush()
        pair = Pair(
            dataset_id=dataset.id, image_id=image.id, concept_id=concept,
            origin=PairOrigin(origin), job_id=job.id,
            state=PairState.NEGATIVE if absent else PairState.POSITIVE,
        )  # fmt: skip
        session.add(pair)
        session.flush()
        if mv is not None:
            proposal = Proposal(
                pair_id=pair.id, rle_counts="0", bbox_x=0, bbox_y=0, bbox_w=1, bbox_h=1, area=1,
                score=mv, presence=0.5, model_version="p@1", rank=0, job_id=job.id,
            )  # fmt: skip
            session.add(proposal)
            session.flush()
            session.add(
                Verification(
                    pair_id=pair.id, proposal_id=proposal.id, kind=VerificationKind.MV,
                    label="accept", p_accept=mv, model_version="proposer-scores@1",
                    job_id=job.id,
                )
            )  # fmt: skip
        session.add(
            Verification(
                pair_id=pair.id, kind=VerificationKind.EV, label="absent", p_accept=ev,
                model_version="proposer-scores@1", job_id=job.id,
            )
        )  # fmt: skip
        session.add(ReviewTask(pair_id=pair.id, status=ReviewTaskStatus.DONE))
    session.flush()


def test_the_absence_threshold_is_fitted_on_reviewed_pairs_routing_may_declare_absent(
    engine: Engine, make_config: Callable[..., MiningConfig]
) -> None:
    """The EV absence threshold for the target precision comes from the reviewed pairs EV was
    asked the absence question, of the kinds routing may declare absent: hard negatives by
    default. A pair whose accepted mask made EV judge exhaustivity, and a named pair, are not
    counted (unless named pairs may be declared absent)."""
    hard = [("hard_negative", 0.99 - i / 100, i != 3, 0.1) for i in range(24)]
    # Named pairs EV scored high that were present: they would sink the fit if counted.
    named = [("alt_text", 0.995, False, 0.1) for _ in range(4)]
    # A hard negative with an accepted mask was still asked absence; a named pair with an
    # accepted mask was asked exhaustivity (its p is not an absent p).
    exhaustive = [("alt_text", 0.999, False, 0.9)]
    with session_scope(engine) as session:
        _reviewed_pairs(session, hard + named + exhaustive)
    config = make_config(
        verifier=BackendSpec(name="scores"),
        routing={"accept_above": 0.8, "reject_below": 0.2, "target_precision": 0.95},
    )
    with session_scope(engine) as session:
        fitted = jobs.fit_absence(session, config).routing
    # 24 hard negatives from 0.99 down, the 4th present: 23 of 24 absent >= 0.95 at 0.76.
    assert fitted.auto_negative and fitted.ev_absent_above == pytest.approx(0.76)
    assert fitted.threshold_source.endswith(
        "EV absence: target precision 0.950 on 24 reviewed pairs: ev_absent_above fitted "
        "0.760 (EV proposer-scores@1)"
    )
    named_config = config.model_copy(
        update={"routing": config.routing.model_copy(update={"auto_negative_named": True})}
    )
    with session_scope(engine) as session:
        with_named = jobs.fit_absence(session, named_config).routing
    # The 4 present named pairs at 0.995 head the ranking: no threshold reaches 0.95.
    assert with_named.auto_negative is False
    assert "on 28 reviewed pairs: no threshold reaches it: EV auto-negative off" in (
        with_named.threshold_source
    )
    # fit_routing runs the MV fit first, then this one, into one threshold_source.
    with session_scope(engine) as session:
        both = jobs.fit_routing(session, config).routing
    assert both.ev_absent_above == pytest.approx(0.76) and "; EV absence:" in both.threshold_source
