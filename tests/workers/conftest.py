"""Fixtures for the Celery tests: the real Redis (a dedicated database number, flushed), the
real PostgreSQL (the ``db_url`` fixture, ``postgresql`` only), tiny models saved to disk, a
small image set, and ``annotator worker`` subprocesses started exactly as docker-compose.yml
starts them (its ``command`` lines), always stopped in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml
from PIL import Image

from annotator.config import get_settings
from annotator.db.session import get_engine
from workers.app import QUEUES, queue_keys

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("ANNOTATOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
ANNOTATOR = str(Path(sys.executable).with_name("annotator"))
# Short, so a message of a killed worker comes back within seconds (production: 2 hours).
VISIBILITY_TIMEOUT_S = 4
WORKER_START_TIMEOUT_S = 90

# Every worker test needs PostgreSQL: workers are separate processes.
POSTGRES_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def compose_command(service: str) -> list[str]:
    """The ``annotator`` arguments docker-compose.yml gives ``service``."""
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return [str(a) for a in data["services"][service]["command"]]


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis is needed at {REDIS_URL} (set ANNOTATOR_TEST_REDIS_URL): {exc}")
    client.flushdb()
    try:
        yield client
    finally:
        with contextlib.suppress(redis.exceptions.RedisError):
            client.flushdb()
        client.close()


def queued(client: redis.Redis) -> int:
    """Messages waiting in the queues plus messages delivered and not yet acknowledged."""
    waiting = sum(int(client.llen(key)) for q in QUEUES for key in queue_keys(q))
    return waiting + int(client.hlen("unacked"))


@pytest.fixture
def broker_env(
    db_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Settings shared by this process and the workers: the test database, the test broker."""
    env = {
        "ANNOTATOR_DATABASE_URL": db_url,
        "ANNOTATOR_BROKER_URL": REDIS_URL,
        "ANNOTATOR_MEDIA_ROOT": str(tmp_path / "media"),
        "ANNOTATOR_DEVICE": "cpu",
        "ANNOTATOR_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        "ANNOTATOR_TASK_TIME_LIMIT_S": "120",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_engine.cache_clear()
    return env


@dataclass
class WorkerProcess:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Workers:
    """``annotator worker`` subprocesses, each in its own process group (so kill -9 takes the
    whole worker: the main process and any pool children)."""

    env: dict[str, str]
    logs: Path
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, service: str, extra_args: Sequence[str] = ()) -> WorkerProcess:
        """Start the ``annotator`` command of a docker-compose.yml service (``extra_args``
        appended: a later option overrides the same option of the compose command)."""
        argv = [ANNOTATOR, *compose_command(service), *extra_args]
        n = len(self.started)
        log = self.logs / f"{service}-{n}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(service, argv, log, proc)
        self.started.append(worker)
        return worker

    def start_all(self) -> list[WorkerProcess]:
        workers = [self.start("worker-cpu"), self.start("worker-gpu")]
        for worker in workers:
            self.wait_ready(worker)
        return workers

    def wait_ready(self, worker: WorkerProcess) -> None:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if " ready." in worker.log_text():
                return
            if worker.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{worker.name} did not start:\n{worker.log_text()[-4000:]}")

    def kill9(self, worker: WorkerProcess) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)

    def stop_all(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for any process group still there."""
        for worker in self.started:
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.proc.pid, signal.SIGTERM)
        for worker in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=10)

    def logs_text(self) -> str:
        return "\n".join(f"===== {w.name} {w.argv}\n{w.log_text()[-6000:]}" for w in self.started)


@pytest.fixture
def workers(broker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    manager = Workers(broker_env, tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()


# ------------------------------------------------------------------------------- models, data


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.models.tiny import build_tiny_sam3
    from tests.models.tiny_vlm import cached_tiny_vlm

    return {
        "sam3": build_tiny_sam3(tmp_path_factory.mktemp("w-sam3"), seed=0),
        "vlm": cached_tiny_vlm(tmp_path_factory),
    }


@pytest.fixture(scope="session")
def mining_config(tiny_model_dirs: dict[str, Path]) -> dict[str, Any]:
    """A job over every image with the tiny models (ids = local directories)."""
    return {
        "proposer": {
            "name": "sam3",
            "model": str(tiny_model_dirs["sam3"]),
            "options": {"score_threshold": 0.3, "max_instances": 4},
        },
        "captioner": {
            "name": "vlm",
            "model": str(tiny_model_dirs["vlm"]),
            "options": {"max_new_tokens": 8},
        },
        "parser": {"name": "offline"},
        "verifier": {"name": "vlm", "model": str(tiny_model_dirs["vlm"])},
        "device": "cpu",
        "images": "all",
        "routing": {"accept_above": 0.55, "reject_below": 0.45},
    }


ALT_TEXTS = [
    "a red car next to a striped umbrella",
    "a small dog on a wooden chair",
    None,  # captioned by the (tiny) captioner
    "a green tree behind a white house",
    "a black cat and a blue bicycle",
    "a yellow lamp on a metal table",
]


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Six small images with flat shapes on noise, and their alt-texts (one has none)."""
    directory = tmp_path_factory.mktemp("w-images")
    rng = np.random.default_rng(11)
    alt: dict[str, str] = {}
    for i, text in enumerate(ALT_TEXTS):
        pixels = rng.integers(0, 60, size=(96 + 8 * i, 128, 3), dtype=np.uint8)
        pixels[10 + i : 50 + i, 20:70] = (200, 30 + 20 * i, 40)
        pixels[40:90, 80 - i : 120 - i] = (30, 180, 60 + 15 * i)
        name = f"img{i}.png"
        Image.fromarray(pixels).save(directory / name)
        if text:
            alt[name] = text
    return directory, alt


def add_dataset(name: str, image_dir: tuple[Path, dict[str, str]]) -> None:
    from annotator.db.session import session_scope
    from annotator.services.images import add_images

    directory, alt = image_dir
    with session_scope() as session:
        add_images(session, name, [str(directory)], alt_text=alt)


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, on_fail: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_fail()}")
