"""Mining jobs on real Celery workers (subprocesses), real Redis and real PostgreSQL.

Every job here is compared with the same job run in-process (``run_job_inline``): same images,
same tiny models, so the rows must be the same, whatever happened to the workers on the way.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from annotator.cli import app
from annotator.db.models import JobItem, JobItemStatus, JobStatus
from annotator.db.session import get_engine, session_scope
from annotator.pipeline.config import MiningConfig
from annotator.pipeline.runner import launch_job, relaunch_job
from annotator.services import jobs
from tests.workers.conftest import (
    POSTGRES_ONLY,
    Workers,
    add_dataset,
    queued,
    wait_for,
)
from tests.workers.snapshot import Snapshot, diff, snapshot
from workers.tasks import STAGE_QUEUES

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

JOB_TIMEOUT_S = 90
FINAL = (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED)


def _status(engine: Engine, job_id: int) -> JobStatus:
    with session_scope(engine) as session:
        return jobs.job_progress(session, job_id).status


def _finished_items(engine: Engine, job_id: int) -> int:
    with session_scope(engine) as session:
        return (
            session.scalar(
                select(func.count()).where(
                    JobItem.job_id == job_id, JobItem.status != JobItemStatus.PENDING
                )
            )
            or 0
        )


def _total_items(engine: Engine, job_id: int) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).where(JobItem.job_id == job_id)) or 0


def _wait_final(
    engine: Engine, job_id: int, workers: Workers, timeout: float = JOB_TIMEOUT_S
) -> None:
    wait_for(
        lambda: _status(engine, job_id) in FINAL,
        timeout,
        f"job {job_id} to finish",
        lambda: f"progress: {_progress(engine, job_id)}\n{workers.logs_text()}",
    )


def _progress(engine: Engine, job_id: int) -> Any:
    with session_scope(engine) as session:
        return jobs.job_progress(session, job_id)


_reference: dict[str, Snapshot] = {}


def reference_rows(
    monkeypatch: pytest.MonkeyPatch,
    config: dict[str, Any],
    image_dir: tuple[Any, dict[str, str]],
) -> Snapshot:
    """The rows of the job run in this process with no broker (computed once per session)."""
    if "rows" not in _reference:
        with monkeypatch.context() as m:
            m.delenv("ANNOTATOR_BROKER_URL")
            from annotator.config import get_settings

            get_settings.cache_clear()
            engine = get_engine()
            add_dataset("inline", image_dir)
            _, status = launch_job(engine, "inline", MiningConfig.model_validate(config))
            assert status == JobStatus.DONE
            _reference["rows"] = snapshot(engine, "inline")
        get_settings.cache_clear()
    return _reference["rows"]


def _launch(name: str, config: dict[str, Any], image_dir: Any) -> tuple[Engine, int]:
    engine = get_engine()
    add_dataset(name, image_dir)
    job_id, status = launch_job(engine, name, MiningConfig.model_validate(config))
    assert status == JobStatus.RUNNING  # enqueued, not run here
    return engine, job_id


def _assert_same_rows(engine: Engine, name: str, expected: Snapshot) -> None:
    got = snapshot(engine, name)
    assert got == expected, diff(expected, got)
    # The job produced real work (not an empty pipeline that trivially matches).
    assert got["proposals"] and got["verifications"] and got["captions"]


@POSTGRES_ONLY
def test_job_on_workers_gives_the_rows_of_the_inline_job(
    broker_env: dict[str, str],
    workers: Workers,
    redis_client: redis.Redis,
    mining_config: dict[str, Any],
    image_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = reference_rows(monkeypatch, mining_config, image_dir)
    workers.start_all()
    engine, job_id = _launch("celery", mining_config, image_dir)
    _wait_final(engine, job_id, workers)
    assert _status(engine, job_id) == JobStatus.DONE, workers.logs_text()
    _assert_same_rows(engine, "celery", expected)
    wait_for(lambda: queued(redis_client) == 0, 10, "the queues to drain", workers.logs_text)
    # Each stage ran on its queue's worker (Celery logs "Task <name>[<id>] received").
    logs = {w.name: w.log_text() for w in workers.started}
    for stage, queue in STAGE_QUEUES.items():
        ran_on = {name for name, log in logs.items() if f"Task annotator.stage.{stage}[" in log}
        assert ran_on == {f"worker-{queue}"}, (stage, ran_on)


def _unacked(client: redis.Redis) -> dict[str, str]:
    """Task id -> queue of the messages delivered to a worker and not acknowledged."""
    out = {}
    for raw in client.hvals("unacked"):
        message, _exchange, routing_key = json.loads(raw)
        out[message["headers"]["id"]] = routing_key
    return out


def _unacked_routing_keys(client: redis.Redis) -> list[str]:
    return list(_unacked(client).values())


@POSTGRES_ONLY
def test_kill_9_mid_job_then_a_new_worker_completes_it_exactly(
    broker_env: dict[str, str],
    workers: Workers,
    redis_client: redis.Redis,
    mining_config: dict[str, Any],
    image_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = reference_rows(monkeypatch, mining_config, image_dir)
    _cpu, gpu = workers.start_all()
    engine, job_id = _launch("crash", mining_config, image_dir)
    total = _total_items(engine, job_id)
    # Kill the GPU worker while it holds a message (a task in flight), past the first stages.
    wait_for(
        lambda: (
            _finished_items(engine, job_id) >= total // 4
            and "gpu" in _unacked_routing_keys(redis_client)
        ),
        JOB_TIMEOUT_S,
        "the GPU worker to be mid-task",
        workers.logs_text,
    )
    workers.kill9(gpu)
    assert _status(engine, job_id) == JobStatus.RUNNING
    # Its message was never acknowledged: Redis still holds it for redelivery.
    in_flight = [task_id for task_id, queue in _unacked(redis_client).items() if queue == "gpu"]
    assert in_flight
    # A new worker (same command) gets it back after the visibility timeout; no resume needed.
    replacement = workers.start("worker-gpu")
    workers.wait_ready(replacement)
    _wait_final(engine, job_id, workers)
    assert _status(engine, job_id) == JobStatus.DONE, workers.logs_text()
    assert any(f"[{task_id}] received" in replacement.log_text() for task_id in in_flight)
    _assert_same_rows(engine, "crash", expected)


def _resume_until_final(engine: Engine, job_id: int, workers: Workers, attempts: int = 3) -> None:
    """What an operator does after a broker outage: ``annotator jobs resume`` (again, if a
    message sent during the outage was lost after the first resume)."""
    for _ in range(attempts):
        if _status(engine, job_id) in FINAL:
            return
        relaunch_job(engine, job_id)
        try:
            _wait_final(engine, job_id, workers, timeout=JOB_TIMEOUT_S / attempts)
            return
        except AssertionError:
            continue
    _wait_final(engine, job_id, workers, timeout=1)


REDIS_RESTART = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def _redis_up() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


def _ensure_redis_running() -> None:
    if not _redis_up():
        subprocess.run(REDIS_RESTART, check=True, timeout=30)
    deadline = time.monotonic() + 20
    while not _redis_up():
        assert time.monotonic() < deadline, "Redis did not come back"
        time.sleep(0.1)


@POSTGRES_ONLY
def test_redis_restarted_mid_job_the_job_completes_after_resume(
    broker_env: dict[str, str],
    workers: Workers,
    redis_client: redis.Redis,
    mining_config: dict[str, Any],
    image_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = reference_rows(monkeypatch, mining_config, image_dir)
    workers.start_all()
    engine, job_id = _launch("outage", mining_config, image_dir)
    total = _total_items(engine, job_id)
    wait_for(
        lambda: _finished_items(engine, job_id) >= total // 4,
        JOB_TIMEOUT_S,
        "the job to be under way",
        workers.logs_text,
    )
    try:
        # Every queued and unacknowledged message is lost (no persistence).
        subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], timeout=30)
        assert not _redis_up()
        time.sleep(1.0)
    finally:
        _ensure_redis_running()
    assert _status(engine, job_id) == JobStatus.RUNNING

    # The workers reconnect by themselves; items in flight during the outage settle. Now and
    # then kombu's Redis transport exits instead (an AttributeError while restoring unacked
    # messages on the lost connection): the supervisor restarts such a worker (compose:
    # `restart: unless-stopped`), and so does this test. Either way nothing may be lost.
    def reconnected_or_exited() -> bool:
        return all(
            w.proc.poll() is not None or w.log_text().count(" Connected to redis://") >= 2
            for w in workers.started
        )

    wait_for(reconnected_or_exited, 60, "the workers to reconnect", workers.logs_text)
    for worker in [w for w in workers.started if w.proc.poll() is not None]:
        workers.wait_ready(workers.start(worker.name))
    _resume_until_final(engine, job_id, workers)
    assert _status(engine, job_id) == JobStatus.DONE, workers.logs_text()
    _assert_same_rows(engine, "outage", expected)


@POSTGRES_ONLY
def test_cancel_revokes_queued_work_and_resume_runs_only_what_is_left(
    broker_env: dict[str, str],
    workers: Workers,
    redis_client: redis.Redis,
    mining_config: dict[str, Any],
    image_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = reference_rows(monkeypatch, mining_config, image_dir)
    # No worker yet: the job's first items wait in the queue.
    engine, job_id = _launch("cancel", mining_config, image_dir)
    images = len(expected["images"])
    batch = MiningConfig.model_validate(mining_config).batch_size
    assert queued(redis_client) == -(-images // batch)  # one ingest message per batch of images
    result = CliRunner().invoke(app, ["jobs", "cancel", str(job_id)])
    assert result.exit_code == 0 and "cancelled" in result.output, result.output
    assert _status(engine, job_id) == JobStatus.CANCELLED
    workers.start_all()
    wait_for(lambda: queued(redis_client) == 0, 30, "the queued messages", workers.logs_text)
    # Every message was consumed and dropped: nothing ran, nothing else was sent.
    time.sleep(1.0)
    assert queued(redis_client) == 0
    assert _finished_items(engine, job_id) == 0
    assert _status(engine, job_id) == JobStatus.CANCELLED
    assert not snapshot(engine, "cancel")["captions"]

    result = CliRunner().invoke(app, ["jobs", "resume", str(job_id), "--wait"])
    assert result.exit_code == 0, result.output
    assert _status(engine, job_id) == JobStatus.DONE, workers.logs_text()
    _assert_same_rows(engine, "cancel", expected)
