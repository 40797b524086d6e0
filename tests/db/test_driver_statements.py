"""On PostgreSQL the stage tasks' statements go to the driver as SQL text
(``annotator.db.mining._on_postgresql``): they read and write exactly what the SQLAlchemy
statements used elsewhere do. Each is run both ways on the same rows (the SQLAlchemy way by
telling ``mining`` it is not on PostgreSQL), writes in a savepoint rolled back in between."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotator.db import mining
from annotator.db.models import (
    Caption,
    Concept,
    Dataset,
    Image,
    ImageStatus,
    Job,
    JobItem,
    JobItemStatus,
    JobKind,
    JobStatus,
    Pair,
    PairOrigin,
    PairState,
    Proposal,
    Verification,
    VerificationKind,
)
from annotator.db.session import make_engine, session_factory
from tests.conftest import _truncate_all


@pytest.fixture
def session(postgres_url: str) -> Iterator[Session]:
    """A session on the suite's PostgreSQL database (the driver statements are its own),
    emptied afterwards."""
    engine = make_engine(postgres_url)
    try:
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()
        _truncate_all(postgres_url)


def _both(
    session: Session, monkeypatch: pytest.MonkeyPatch, read: Callable[[], Any]
) -> tuple[Any, Any]:
    """``read()`` through the driver statements, then through SQLAlchemy's (each in a fresh
    view of the session: nothing kept from the other)."""
    session.info.clear()
    fast = read()
    session.info.clear()
    with monkeypatch.context() as patch:
        patch.setattr(mining, "_on_postgresql", lambda _: False)
        generic = read()
    session.info.clear()
    return fast, generic


def _world(session: Session) -> dict[str, Any]:
    """A job in the middle of its work: items at every status, pairs of this job, of no job,
    of a stopped job and of another running job, in every state and origin, proposals and
    verifications of two model versions, captions of two captioners."""
    dataset = Dataset(name="d")
    session.add(dataset)
    session.flush()
    images: list[Image] = []
    for i in range(5):
        images.append(
            Image(
                dataset_id=dataset.id, file_name=f"{i}.jpg", uri=f"/data/{i}.jpg",
                sha256=None if i == 3 else f"{i:064x}", width=None if i == 3 else 640,
                height=None if i == 3 else 480, alt_text="a red car" if i % 2 else None,
                status=ImageStatus.PENDING if i == 3 else ImageStatus.READY,
            )
        )  # fmt: skip
    session.add_all(images)
    config = {"batch_size": 3, "hard_negatives": False, "nested": {"a": [1, 2.5, None]}}
    job = Job(dataset_id=dataset.id, kind=JobKind.MINE, status=JobStatus.RUNNING, config=config)
    stopped = Job(dataset_id=dataset.id, kind=JobKind.MINE, status=JobStatus.CANCELLED, config={})
    other = Job(dataset_id=dataset.id, kind=JobKind.MINE, status=JobStatus.RUNNING, config={})
    session.add_all([job, stopped, other])
    session.flush()
    ids = [image.id for image in images]
    statuses = list(JobItemStatus)
    for k, image_id in enumerate(ids):
        for s, stage in enumerate(("ingest", "caption", "parse")):
            session.add(
                JobItem(
                    job_id=job.id, image_id=image_id, stage=stage, attempts=k % 3,
                    status=statuses[(k + 2 * s) % len(statuses)], error=f"e{k}" if k % 2 else None,
                )
            )  # fmt: skip
    concepts = [Concept(text=text) for text in ("cat", "red car", "tabby cat", "dog")]
    session.add_all(concepts)
    session.flush()
    owners = [job.id, None, stopped.id, other.id, job.id]
    states, origins = list(PairState), list(PairOrigin)
    pairs: list[Pair] = []
    for k, image_id in enumerate(ids):
        for c, concept in enumerate(concepts):
            pairs.append(
                Pair(
                    dataset_id=dataset.id, image_id=image_id, concept_id=concept.id,
                    origin=origins[(k + c) % len(origins)],
                    state=PairState.PENDING if c < 2 else states[(k + c) % len(states)],
                    job_id=owners[(k + c) % len(owners)],
                )
            )  # fmt: skip
    session.add_all(pairs)
    session.flush()
    for p, pair in enumerate(pairs):
        for version in ("m@1", "m@2"):
            for rank in range(p % 3):
                proposal = Proposal(
                    pair_id=pair.id, job_id=job.id, rle_counts=f"{p}R{rank}{version}" * 30,
                    bbox_x=0.5 * p, bbox_y=1.25, bbox_w=3.0, bbox_h=4.0, area=7 + rank,
                    score=1 / (p + 2), presence=None if p % 4 == 0 else 0.75,
                    model_version=version, rank=rank,
                )  # fmt: skip
                session.add(proposal)
                session.flush()
                session.add(
                    Verification(
                        pair_id=pair.id, proposal_id=proposal.id, kind=VerificationKind.MV,
                        label="accept" if rank else "reject", p_accept=1 / (rank + 3),
                        model_version="v@1" if version == "m@1" else "v@2",
                    )
                )  # fmt: skip
        session.add(
            Verification(
                pair_id=pair.id, proposal_id=None, kind=VerificationKind.EV, label="accept",
                p_accept=0.125 * (p % 8), model_version="ev@1" if p % 2 else "v@1",
            )
        )  # fmt: skip
    for k, image_id in enumerate(ids[:4]):
        session.add(Caption(image_id=image_id, text=f"caption {k}", model_version="cap@1"))
        session.add(Caption(image_id=image_id, text=f"other {k}", model_version="cap@2"))
    session.flush()
    return {
        "job": job.id, "images": ids, "pairs": [p.id for p in pairs], "dataset": dataset.id,
        "config": config,
    }  # fmt: skip


def test_reads_are_those_of_the_sqlalchemy_statements(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(session)
    job, images, pairs = world["job"], world["images"], world["pairs"]
    missing = max(images) + 100
    reads: dict[str, Callable[[], Any]] = {
        "job_row": lambda: mining.job_row(session, job),
        "image_rows": lambda: mining.image_rows(session, [*images, missing]),
        "images_with_sha256": lambda: mining.images_with_sha256(
            session, world["dataset"], [f"{i:064x}" for i in range(6)] + ["x"]
        ),
        "captions_many": lambda: mining.captions_many(session, [*images, missing], "cap@1"),
        "job_pairs_many": lambda: mining.job_pairs_many(session, images, job),
        "job_pairs_many states": lambda: mining.job_pairs_many(
            session, images[1:], job, [PairState.PENDING, PairState.VERIFIED]
        ),
        "proposals_of": lambda: mining.proposals_of(session, [*pairs, 10**9], "m@2"),
        "verifications_of": lambda: mining.verifications_of(session, pairs, "v@1", "ev@1"),
        "ready_items_of": lambda: mining.ready_items_of(
            session, job, "caption", "ingest", [*images, missing]
        ),
        "ready_items_of parse": lambda: mining.ready_items_of(
            session, job, "parse", "caption", images[::-1]
        ),
        "status_and_unfinished": lambda: mining.status_and_unfinished(session, job),
    }
    for name, read in reads.items():
        fast, generic = _both(session, monkeypatch, read)
        assert fast == generic, name
        assert fast, name  # something was read
    # Empty inputs read nothing, either way.
    for read in (
        lambda: mining.image_rows(session, []),
        lambda: mining.captions_many(session, [], "cap@1"),
        lambda: mining.job_pairs_many(session, [], job),
        lambda: mining.proposals_of(session, [], "m@1"),
        lambda: mining.verifications_of(session, [], "v@1", "ev@1"),
        lambda: mining.images_with_sha256(session, world["dataset"], []),
    ):
        fast, generic = _both(session, monkeypatch, read)
        assert fast == generic and fast in ({}, ({}, {}))
    assert mining.job_row(session, job) == mining.JobRow(
        job, JobStatus.RUNNING, world["dataset"], world["config"]
    )
    with pytest.raises(mining.NotFoundError):
        mining.job_row(session, missing)
    with pytest.raises(mining.NotFoundError):
        mining.status_and_unfinished(session, missing)


def _table(session: Session, model: type[JobItem] | type[Pair]) -> list[tuple[Any, ...]]:
    columns = [c for c in model.__table__.columns if c.name != "updated_at"]
    return [tuple(row) for row in session.execute(select(*columns).order_by(model.id))]


def _touched(
    session: Session, model: type[JobItem] | type[Pair], before: dict[int, Any]
) -> set[int]:
    """The rows whose ``updated_at`` moved since ``before`` ({id: updated_at})."""
    now = {i: moment for i, moment in session.execute(select(model.id, model.updated_at))}
    return {i for i, moment in now.items() if moment != before[i]}


def test_writes_change_the_rows_the_sqlalchemy_statements_change(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(session)
    session.commit()
    job, images = world["job"], world["images"]
    writes: dict[str, tuple[type[JobItem] | type[Pair], Callable[[], Any]]] = {
        "claim_items": (JobItem, lambda: mining.claim_items(session, job, images, "caption")),
        "set_items": (
            JobItem,
            lambda: mining.set_items(session, job, images[1:4], "ingest", JobItemStatus.DONE),
        ),
        "adopt_pending_pairs_many": (
            Pair,
            lambda: mining.adopt_pending_pairs_many(session, images[:4], job),
        ),
    }
    for name, (model, write) in writes.items():
        before = _table(session, model)
        stamps = {i: moment for i, moment in session.execute(select(model.id, model.updated_at))}
        outcome: list[tuple[Any, list[tuple[Any, ...]], set[int]]] = []
        for generic in (False, True):
            with session.begin_nested() as savepoint, monkeypatch.context() as patch:
                if generic:
                    patch.setattr(mining, "_on_postgresql", lambda _: False)
                result = write()
                session.flush()
                session.expire_all()
                outcome.append((result, _table(session, model), _touched(session, model, stamps)))
                savepoint.rollback()
        assert outcome[0] == outcome[1], name
        assert outcome[0][1] != before and outcome[0][2], name  # the write changed something
        assert _table(session, model) == before  # rolled back
