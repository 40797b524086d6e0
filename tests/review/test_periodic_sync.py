"""The periodic review sync: ``annotator.review.sync`` (workers/tasks.py) against a real Label
Studio 1.23.2 and PostgreSQL, and ``annotator beat`` + ``annotator worker`` as subprocesses on
the real Redis, started exactly as docker-compose.yml starts them.

Every webhook here goes nowhere (``public_url`` points at a closed port), so whatever lands in
the dataset was brought home by the sync.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import Engine, func, select, text

from annotator.config import Settings, get_settings
from annotator.db.models import Annotation, Pair, PairState, Review, ReviewTask
from annotator.db.session import get_engine, session_scope
from annotator.errors import ExternalServiceError
from annotator.integrations import label_studio as ls
from annotator.services.review import push_dataset
from tests.review.conftest import WEBHOOK_SECRET, LabelStudioServer, free_port
from tests.review.factories import MadePair, make_review_pairs
from tests.workers.conftest import REDIS_URL, Workers
from workers.tasks import sync_reviews, sync_reviews_task

pytestmark = [pytest.mark.label_studio, pytest.mark.postgres]

# The suite's Redis, another database than the worker tests' (no flush of theirs).
BROKER_URL = urlsplit(REDIS_URL)._replace(path="/12").geturl()


@pytest.fixture
def settings(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, label_studio: LabelStudioServer
) -> Settings:
    """This process's settings (what the task reads): the suite's database, the test Label
    Studio, and a webhook URL where nobody listens."""
    env = {
        "ANNOTATOR_DATABASE_URL": postgres_url,
        "ANNOTATOR_LABEL_STUDIO_URL": label_studio.url,
        "ANNOTATOR_LABEL_STUDIO_TOKEN": label_studio.token,
        "ANNOTATOR_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ANNOTATOR_PUBLIC_URL": f"http://127.0.0.1:{free_port()}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_engine.cache_clear()
    return get_settings()


def _pushed(
    engine: Engine, tmp_path: Path, client: ls.SDKClient, settings: Settings, n_pairs: int = 2
) -> tuple[str, list[MadePair], dict[int, int]]:
    """A new dataset with ``n_pairs`` review tasks, pushed: (name, pairs, task id -> LS id)."""
    name = f"sync-{uuid.uuid4().hex[:8]}"
    with session_scope(engine) as session:
        made = make_review_pairs(session, tmp_path / name, dataset=name, n_pairs=n_pairs)
    push_dataset(engine, name, client, settings=settings)
    with session_scope(engine) as session:
        tasks = session.scalars(
            select(ReviewTask).where(ReviewTask.id.in_(m.task_id for m in made))
        )
        ids = {t.id: int(t.external_id or 0) for t in tasks}
    return name, made, ids


def _review(client: ls.SDKClient, made: Sequence[MadePair], ids: dict[int, int]) -> None:
    """A reviewer keeps every proposal of every task and answers "yes"."""
    for m in made:
        result = [ls.brush_region(ls.region_id(p), mask) for p, mask in m.proposals.items()]
        client.create_annotation(ids[m.task_id], [*result, ls.exhaustivity_result("yes")])


def _human_annotations(engine: Engine, made: Sequence[MadePair]) -> int:
    with session_scope(engine) as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Annotation)
                .where(
                    Annotation.pair_id.in_([m.pair_id for m in made]),
                    Annotation.superseded_at.is_(None),
                )
            )
            or 0
        )


def _reviews(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Review)) or 0


class _DownFor:
    """The real client, except that Label Studio is unreachable for one project."""

    def __init__(self, client: ls.SDKClient, project_id: int) -> None:
        self.client, self.project_id = client, project_id
        self.base_url = client.base_url

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.client, attr)

    def iter_annotation_keys(self, project_id: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
        if project_id == self.project_id:
            raise ExternalServiceError(f"Label Studio at {self.base_url} is unreachable")
        return self.client.iter_annotation_keys(project_id, **kwargs)


def _project_id(engine: Engine, name: str) -> int:
    with session_scope(engine) as session:
        return int(
            session.execute(
                text(
                    "SELECT p.external_id FROM review_projects p JOIN datasets d "
                    "ON d.id = p.dataset_id WHERE d.name = :name"
                ),
                {"name": name},
            ).scalar_one()
        )


def test_sync_task_brings_reviews_home_dataset_by_dataset(
    settings: Settings,
    label_studio: LabelStudioServer,
    ls_client: ls.SDKClient,
    pg_engine: Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, made1, ids1 = _pushed(pg_engine, tmp_path, ls_client, settings)
    second, made2, ids2 = _pushed(pg_engine, tmp_path, ls_client, settings)
    _review(ls_client, made1, ids1)
    _review(ls_client, made2, ids2)
    assert _reviews(pg_engine) == 0  # the webhooks went nowhere

    # Label Studio down: each dataset's failure is reported and logged, nothing is written.
    down = ls.SDKClient(f"http://127.0.0.1:{free_port()}", label_studio.token, max_retries=0)
    with caplog.at_level(logging.ERROR, logger="workers.tasks"):
        outcomes = sync_reviews(engine=pg_engine, client=down)
    assert [(o.name, o.ok) for o in outcomes] == [(first, False), (second, False)]
    assert all("unreachable" in (o.error or "") for o in outcomes)
    assert f"review sync of {first!r} failed" in caplog.text
    assert _reviews(pg_engine) == 0

    # One project unreachable: the other dataset is synced all the same.
    half_down: Any = _DownFor(ls_client, _project_id(pg_engine, first))
    outcomes = sync_reviews(engine=pg_engine, client=half_down)
    assert [(o.name, o.ok) for o in outcomes] == [(first, False), (second, True)]
    assert _human_annotations(pg_engine, made1) == 0
    assert _human_annotations(pg_engine, made2) == sum(len(m.proposals) for m in made2)

    # The next run catches up on the first and finds nothing new in the second.
    outcomes = sync_reviews(engine=pg_engine, client=ls_client)
    results = {o.name: o.result for o in outcomes}
    assert results[first] is not None and results[first].applied == len(made1)
    assert results[second] is not None
    assert (results[second].applied, results[second].unchanged) == (0, len(made2))
    assert _human_annotations(pg_engine, made1) == sum(len(m.proposals) for m in made1)
    with session_scope(pg_engine) as session:
        for m in [*made1, *made2]:
            pair = session.get(Pair, m.pair_id)
            assert pair is not None and pair.state == PairState.POSITIVE and pair.is_exhaustive

    # Only the datasets asked for; a dataset whose sync runs elsewhere is skipped.
    dataset_id = outcomes[0].dataset_id
    assert [o.name for o in sync_reviews([dataset_id], engine=pg_engine, client=ls_client)] == [
        first
    ]
    with pg_engine.connect() as other:
        lock = text("SELECT pg_advisory_xact_lock(:ns, :id)")
        other.execute(lock, {"ns": 0x5EC0, "id": dataset_id})
        outcome = sync_reviews(engine=pg_engine, client=ls_client)[0]
        assert outcome.busy and outcome.result is None
        other.rollback()

    # The Celery task itself (eager): configured client and database, same outcome.
    before = _reviews(pg_engine)
    assert sync_reviews_task.apply().successful()
    assert _reviews(pg_engine) == before


def test_sync_task_without_label_studio_settings_reports_it(
    settings: Settings,
    ls_client: ls.SDKClient,
    pg_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, _, _ = _pushed(pg_engine, tmp_path, ls_client, settings, n_pairs=1)
    monkeypatch.delenv("ANNOTATOR_LABEL_STUDIO_URL")
    get_settings.cache_clear()
    (outcome,) = sync_reviews(engine=pg_engine)
    assert outcome.name == name and "ANNOTATOR_LABEL_STUDIO_URL" in (outcome.error or "")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_beat_and_a_worker_sync_periodically(
    settings: Settings,
    postgres_url: str,
    ls_client: ls.SDKClient,
    pg_engine: Engine,
    tmp_path: Path,
) -> None:
    """``annotator beat`` (a 1 s period) and ``annotator worker --queues cpu``, both as in
    docker-compose.yml, on the real Redis: a reviewer's decisions land within seconds."""
    _, made, ids = _pushed(pg_engine, tmp_path, ls_client, settings)
    broker = redis.Redis.from_url(BROKER_URL, socket_timeout=5)
    broker.flushdb()
    env = {
        "ANNOTATOR_DATABASE_URL": postgres_url,
        "ANNOTATOR_BROKER_URL": BROKER_URL,
        "ANNOTATOR_LABEL_STUDIO_URL": settings.label_studio_url or "",
        "ANNOTATOR_LABEL_STUDIO_TOKEN": settings.label_studio_token or "",
        "ANNOTATOR_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ANNOTATOR_PUBLIC_URL": settings.public_url,
        "ANNOTATOR_REVIEW_SYNC_INTERVAL_S": "1",
    }
    heartbeat = tmp_path / "beat.heartbeat"
    processes = Workers(env, tmp_path)
    try:
        worker = processes.start("worker-cpu", ["--concurrency", "1"])
        processes.wait_ready(worker)
        beat = processes.start("beat", ["--heartbeat-file", str(heartbeat)])
        _review(ls_client, made, ids)
        started = time.monotonic()
        expected = sum(len(m.proposals) for m in made)
        while _human_annotations(pg_engine, made) < expected:
            if time.monotonic() - started > 30 or beat.proc.poll() is not None:
                raise AssertionError(f"no sync within 30 s:\n{processes.logs_text()}")
            time.sleep(0.25)
        assert heartbeat.exists() and time.time() - heartbeat.stat().st_mtime < 30
        assert "Sending due task review-sync (annotator.review.sync)" in beat.log_text()
        assert "annotator.review.sync" in worker.log_text()
        with session_scope(pg_engine) as session:
            states = session.scalars(select(Pair.state).where(Pair.id.in_(m.pair_id for m in made)))
            assert set(states) == {PairState.POSITIVE}
    finally:
        processes.stop_all()
        with contextlib.suppress(redis.exceptions.RedisError):
            broker.flushdb()
        broker.close()
