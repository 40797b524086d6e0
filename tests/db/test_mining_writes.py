"""The stage writes of annotator.db.mining, on both backends: what they store, not how."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.orm import Session

from annotator.db import mining
from annotator.db.models import (
    Concept,
    Dataset,
    Image,
    Job,
    JobItem,
    JobItemStatus,
    JobKind,
    JobStatus,
    Pair,
    PairOrigin,
    Proposal,
    Verification,
    VerificationKind,
)
from annotator.db.session import session_factory


def _pairs(session: Session, n: int) -> tuple[int, list[int]]:
    """A running job and ``n`` pairs of one image."""
    dataset = Dataset(name="d")
    session.add(dataset)
    session.flush()
    image = Image(dataset_id=dataset.id, file_name="a.jpg", uri="a.jpg", width=4, height=4)
    session.add(image)
    job = Job(dataset_id=dataset.id, kind=JobKind.MINE, status=JobStatus.RUNNING, config={})
    session.add(job)
    session.flush()
    pairs = []
    for i in range(n):
        concept = Concept(text=f"thing {i}")
        session.add(concept)
        session.flush()
        pair = Pair(
            dataset_id=dataset.id, image_id=image.id, concept_id=concept.id,
            origin=PairOrigin.CAPTION, job_id=job.id,
        )  # fmt: skip
        session.add(pair)
        session.flush()
        pairs.append(pair.id)
    return job.id, pairs


def test_inserts_store_every_column_skip_conflicts_and_fill_defaults(engine: Engine) -> None:
    """Proposals and verifications as the stages write them: enums, NULLs, floats, long
    texts; rows that conflict (with stored rows or within the batch) are skipped; columns the
    rows leave out get their defaults."""
    with session_factory(engine)() as session:
        job_id, pairs = _pairs(session, 2)
        rows = [
            {
                "pair_id": pairs[k % 2], "job_id": job_id if k else None, "rle_counts": "x" * 5000,
                "bbox_x": 0.5 * k, "bbox_y": 1.0, "bbox_w": 2.25, "bbox_h": 3.0, "area": k + 1,
                "score": 0.125, "presence": None if k == 3 else 0.75, "model_version": "v1",
                "rank": k // 2,
            }
            for k in range(6)
        ]  # fmt: skip
        before = datetime.now(UTC)
        mining.add_proposals(session, rows)
        mining.add_proposals(session, [*rows[:2], {**rows[4], "rank": 9}])  # two conflicts
        session.flush()
        stored = session.scalars(select(Proposal).order_by(Proposal.id)).all()
        assert len(stored) == 7
        for row, proposal in zip([*rows, {**rows[4], "rank": 9}], stored, strict=True):
            for key, value in row.items():
                assert getattr(proposal, key) == value, key
            created = proposal.created_at
            if created.tzinfo is None:  # SQLite keeps no zone: the value is UTC
                created = created.replace(tzinfo=UTC)
            assert created >= before
        ids = [p.id for p in stored]
        verifications = [
            {
                "pair_id": pairs[0], "proposal_id": ids[k], "kind": VerificationKind.MV,
                "label": "accept", "p_accept": 0.5, "model_version": "m", "job_id": job_id,
            }
            for k in (0, 2, 2)  # the last one conflicts with the one before it
        ] + [
            {
                "pair_id": pairs[0], "proposal_id": None, "kind": VerificationKind.EV,
                "label": "reject", "p_accept": 0.25, "model_version": "m", "job_id": job_id,
            }
        ]  # fmt: skip
        mining.add_verifications(session, verifications)
        mining.add_verifications(session, verifications[3:])  # the EV conflicts on its index
        session.flush()
        got = session.execute(
            select(Verification.proposal_id, Verification.kind, Verification.label)
            .order_by(Verification.id)
        ).all()  # fmt: skip
        assert got == [
            (ids[0], VerificationKind.MV, "accept"),
            (ids[2], VerificationKind.MV, "accept"),
            (None, VerificationKind.EV, "reject"),
        ]


def test_inserts_refuse_what_the_columns_refuse(engine: Engine) -> None:
    """A value too long for its column is refused, not cut; an unknown enum value is
    refused."""
    with session_factory(engine)() as session:
        job_id, pairs = _pairs(session, 1)
        row = {
            "pair_id": pairs[0], "proposal_id": None, "kind": VerificationKind.EV,
            "label": "accept", "p_accept": 0.5, "model_version": "m" * 300, "job_id": job_id,
        }  # fmt: skip
        if engine.dialect.name == "postgresql":  # SQLite does not check VARCHAR lengths
            with pytest.raises(DBAPIError), session.begin_nested():
                mining.add_verifications(session, [row])
        with pytest.raises(StatementError), session.begin_nested():
            mining.insert_ignore_where(
                session, Verification, [{**row, "model_version": "m", "kind": "nonsense"}],
                ["pair_id", "kind", "model_version"], "proposal_id IS NULL",
            )  # fmt: skip


def test_job_items_are_claimed_settled_and_found_ready(engine: Engine) -> None:
    with session_factory(engine)() as session:
        job_id, _ = _pairs(session, 1)
        image_ids = []
        for i in range(3):
            image = Image(dataset_id=1, file_name=f"{i}.jpg", uri=f"{i}.jpg", width=4, height=4)
            session.add(image)
            session.flush()
            image_ids.append(image.id)
        mining.insert_ignore_where(
            session, JobItem,
            [{"job_id": job_id, "image_id": i, "stage": s, "status": JobItemStatus.PENDING}
             for i in image_ids for s in ("ingest", "caption")],
            ["job_id", "image_id", "stage"],
        )  # fmt: skip
        session.flush()
        assert mining.claim_items(session, job_id, image_ids[:2], "ingest") == set(image_ids[:2])
        assert mining.claim_items(session, job_id, image_ids[:2], "ingest") == set(image_ids[:2])
        mining.set_items(session, job_id, image_ids[:1], "ingest", JobItemStatus.DONE)
        session.flush()
        items = {
            (i.image_id, i.stage): (i.status, i.attempts, i.error)
            for i in session.scalars(select(JobItem))
        }
        assert items[(image_ids[0], "ingest")] == (JobItemStatus.DONE, 2, None)
        assert items[(image_ids[1], "ingest")] == (JobItemStatus.RUNNING, 2, None)
        assert items[(image_ids[2], "ingest")] == (JobItemStatus.PENDING, 0, None)
        assert mining.ready_items_of(session, job_id, "caption", "ingest", image_ids) == [
            image_ids[0]
        ]
        assert mining.ready_items_of(session, job_id, "caption", "ingest", []) == []
        # The job is read once per session; a later read is the same object.
        job = mining.get_job(session, job_id)
        assert mining.get_job(session, job_id) is job
        with pytest.raises(mining.NotFoundError):
            mining.get_job(session, job_id + 100)


def test_pair_states_are_set_by_id(engine: Engine) -> None:
    """The rows' columns are set on their pairs, ``updated_at`` moves on, others stay."""
    from annotator.db.models import PairState

    with session_factory(engine)() as session:
        _, pairs = _pairs(session, 3)
        session.commit()
        before = {p.id: p.updated_at for p in session.scalars(select(Pair))}
        mining.set_pair_states(
            session,
            [
                {"id": pairs[0], "state": PairState.VERIFIED},
                {"id": pairs[2], "state": PairState.VERIFIED},
            ],
        )
        mining.set_pair_states(
            session,
            [{"id": pairs[2], "state": PairState.IN_REVIEW, "is_exhaustive": None,
              "state_reason": "ev: 50% sure"}],
        )  # fmt: skip
        mining.set_pair_states(session, [])
        session.commit()
        got = {
            p.id: (p.state, p.is_exhaustive, p.state_reason, p.updated_at > before[p.id])
            for p in session.scalars(select(Pair))
        }
        assert got == {
            pairs[0]: (PairState.VERIFIED, None, None, True),
            pairs[1]: (PairState.PENDING, None, None, False),
            pairs[2]: (PairState.IN_REVIEW, None, "ev: 50% sure", True),
        }


def test_job_thresholds_read_each_jobs_routing_and_its_auto_accept_flag(engine: Engine) -> None:
    """What the verifier insights compare scores with: a job's accept_above and reject_below,
    accept_above infinite where its MV auto-accept was off (no score is in the auto-accept
    band), the defaults for a job whose config names no thresholds."""
    import math

    from annotator.db import stats
    from annotator.db.models import Dataset, Job, JobKind, JobStatus

    with session_factory(engine)() as session:
        dataset = Dataset(name="d")
        session.add(dataset)
        session.flush()
        configs = [
            {"routing": {"accept_above": 0.7, "reject_below": 0.3}},
            {"routing": {"accept_above": 0.7, "reject_below": 0.3, "auto_accept": False}},
            {},
        ]
        jobs = [
            Job(dataset_id=dataset.id, kind=JobKind.MINE, status=JobStatus.DONE, config=c)
            for c in configs
        ]
        session.add_all(jobs)
        session.flush()
        found = stats.job_thresholds(session, [j.id for j in jobs] + [jobs[0].id])
        assert found == {
            jobs[0].id: (0.7, 0.3),
            jobs[1].id: (math.inf, 0.3),
            jobs[2].id: (0.9, 0.1),
        }
