"""The periodic tasks without a broker: the beat schedule that the settings make, the review
sync task's declaration, beat's heartbeat, and ``annotator beat`` refusing to start without a
broker. (tests/review/test_periodic_sync.py runs beat and a worker for real.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from celery import Celery
from pydantic import ValidationError
from typer.testing import CliRunner

from annotator.cli import app as cli
from annotator.config import Settings, get_settings
from workers.app import (
    BEAT_MAX_LOOP_INTERVAL_S,
    CPU_QUEUE,
    REVIEW_SYNC_TASK,
    TASK_QUEUES,
    beat_schedule,
    celery_config,
)
from workers.beat import HeartbeatScheduler, heartbeat_age_s
from workers.tasks import sync_reviews_task


def test_the_review_sync_runs_every_configured_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    (entry,) = beat_schedule(Settings()).values()
    assert entry == {
        "task": REVIEW_SYNC_TASK,
        "schedule": 300.0,
        # a tick that no worker took within one period is dropped: no backlog of syncs
        "options": {"queue": CPU_QUEUE, "expires": 300.0},
    }
    monkeypatch.setenv("ANNOTATOR_REVIEW_SYNC_INTERVAL_S", "42")
    get_settings.cache_clear()
    config = celery_config(get_settings())
    assert config["beat_schedule"]["review-sync"]["schedule"] == 42.0
    assert config["beat_max_loop_interval"] == BEAT_MAX_LOOP_INTERVAL_S
    assert beat_schedule(Settings(review_sync_interval_s=0)) == {}  # 0: off
    with pytest.raises(ValidationError):
        Settings(review_sync_interval_s=-1)


def test_the_review_sync_task_is_declared_like_every_task() -> None:
    assert sync_reviews_task.name == REVIEW_SYNC_TASK
    assert TASK_QUEUES[REVIEW_SYNC_TASK] == CPU_QUEUE
    assert sync_reviews_task.acks_late  # idempotent: a sync cut short runs again
    result = sync_reviews_task.apply(args=["dataset-name"])  # integer ids only
    assert result.failed() and isinstance(result.result, TypeError)


def test_beat_touches_its_heartbeat_at_every_wake_up(tmp_path: Path) -> None:
    path = tmp_path / "beat.heartbeat"
    assert heartbeat_age_s(path) == float("inf")
    quiet = Celery("heartbeat-test", set_as_current=False)
    quiet.conf.beat_schedule = {}
    scheduler_cls = type("Scheduler", (HeartbeatScheduler,), {"heartbeat_file": path})
    scheduler = scheduler_cls(app=quiet, max_interval=7)
    assert scheduler.tick() == 7  # nothing due: sleeps the longest it may
    assert heartbeat_age_s(path) < 5
    old = time.time() - 600
    os.utime(path, (old, old))
    assert heartbeat_age_s(path) > 500
    scheduler.tick()
    assert heartbeat_age_s(path) < 5


def test_beat_needs_a_broker() -> None:
    result = CliRunner().invoke(cli, ["beat"])
    assert result.exit_code == 1
    assert "ANNOTATOR_BROKER_URL" in result.output
