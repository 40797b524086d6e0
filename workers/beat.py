"""``annotator beat``: the one process that sends the periodic tasks (Celery beat).

Run exactly one per deployment, beside the workers: every beat process sends its own copy of
each periodic message. (Two would be harmless, a sync of a dataset already being synced is
skipped, but wasteful.) What it sends and how often is :func:`workers.app.beat_schedule`; the
workers run the tasks.

The schedule lives in code and settings, so beat keeps no schedule file: after a restart every
periodic task simply runs one period later. Instead it touches a heartbeat file at every wake-up
(at least every ``BEAT_MAX_LOOP_INTERVAL_S`` seconds); a health check reads its age.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from celery.beat import Scheduler

from annotator.config import get_settings
from annotator.errors import ConfigError
from workers.app import BEAT_MAX_LOOP_INTERVAL_S, app, beat_schedule, bind_settings

DEFAULT_HEARTBEAT = Path(tempfile.gettempdir()) / "annotator-beat.heartbeat"


class HeartbeatScheduler(Scheduler):
    """Celery's in-memory scheduler that touches :attr:`heartbeat_file` whenever it wakes up."""

    heartbeat_file: Path = DEFAULT_HEARTBEAT

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self.heartbeat_file.touch()
        return float(super().tick(*args, **kwargs))


def heartbeat_age_s(path: Path = DEFAULT_HEARTBEAT) -> float:
    """Seconds since beat last woke up (infinite when it never did)."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def run_beat(loglevel: str = "INFO", heartbeat_file: Path = DEFAULT_HEARTBEAT) -> None:
    """Check the broker setting, then send the periodic tasks until stopped."""
    settings = get_settings()
    if not settings.broker_url:
        raise ConfigError("set ANNOTATOR_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run beat")
    bind_settings(settings)
    app.conf.beat_schedule = beat_schedule(settings)
    heartbeat_file.parent.mkdir(parents=True, exist_ok=True)
    scheduler = type("Scheduler", (HeartbeatScheduler,), {"heartbeat_file": heartbeat_file})
    if not app.conf.beat_schedule:
        # Not an error: beat keeps running (and its heartbeat), with nothing to send.
        print("ANNOTATOR_REVIEW_SYNC_INTERVAL_S is 0: no periodic task is scheduled", flush=True)
    app.Beat(loglevel=loglevel, scheduler=scheduler, max_interval=BEAT_MAX_LOOP_INTERVAL_S).run()
