"""``annotator worker``: start a Celery worker on the configured broker and database.

GPU queue: one process per GPU (``--pool solo``, concurrency 1), so the models a job uses are
loaded once in that process and stay there (``annotator.pipeline.backends.get_backends``).
Run one worker per GPU, each seeing its own device (``CUDA_VISIBLE_DEVICES``). CPU queue:
prefork with one process per core by default.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from annotator.config import get_settings
from annotator.errors import ConfigError
from workers.app import GPU_QUEUE, QUEUES, bind_settings


def worker_argv(
    queues: Sequence[str],
    concurrency: int | None = None,
    pool: str | None = None,
    loglevel: str = "INFO",
    hostname: str | None = None,
) -> list[str]:
    """The ``celery worker`` arguments for these queues (defaults: see the module docstring)."""
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise ConfigError(f"unknown queue(s) {unknown or list(queues)}: use {', '.join(QUEUES)}")
    if concurrency is None:
        concurrency = 1 if GPU_QUEUE in queues else (os.cpu_count() or 1)
    if concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if pool is None:
        pool = "solo" if concurrency == 1 else "prefork"
    if pool == "solo" and concurrency != 1:
        raise ConfigError("--pool solo runs one task at a time: use --concurrency 1")
    name = hostname or f"{'-'.join(queues)}.{os.getpid()}@{socket.gethostname()}"
    return [
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--loglevel={loglevel}",
        f"--hostname={name}",
        # Revocation is a job-status check, not worker state: no need to sync at startup.
        "--without-mingle",
        "--without-gossip",
    ]


def run_worker(argv: list[str]) -> None:
    """Check the broker setting and the schema, then run the worker until it is stopped."""
    from annotator.db.migrate import ensure_current
    from annotator.db.session import get_engine

    settings = get_settings()
    if not settings.broker_url:
        raise ConfigError("set ANNOTATOR_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to run workers")
    engine = get_engine(settings.database_url)
    ensure_current(engine)
    # No pooled connection may cross the fork into pool processes.
    engine.dispose()
    app = bind_settings(settings)
    import workers.tasks  # noqa: F401  (registers the tasks)

    app.worker_main(argv)
