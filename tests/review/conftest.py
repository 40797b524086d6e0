"""A real Label Studio 1.23.2 and our API, for the review tests.

``label_studio`` (session): installs Label Studio into ``.ls-venv`` if missing (~70-90 s, once)
and starts it with ``scripts/label_studio.sh`` on a free 127.0.0.1 port (first start on an empty
data directory ~76 s of migrations; the data directory ``.ls/test-data`` is kept between runs, so
later starts take seconds). Set ``ANNOTATOR_TEST_LABEL_STUDIO_URL`` (and ``..._TOKEN``) to use a
server that is already running instead.

``api_server`` (session): our FastAPI app under uvicorn in a thread on another free port, on the
suite's PostgreSQL database, so Label Studio's webhooks and image requests reach it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, text

from annotator.config import Settings
from annotator.db.models import Base
from annotator.db.session import make_engine
from annotator.integrations.label_studio import SDKClient
from web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
LS_TOKEN = "annotator-test-token"
LS_USER = "reviewer@example.com"
WEBHOOK_SECRET = "test-webhook-secret"
START_TIMEOUT_S = 480  # install (~90 s) + first start (~76 s), with room for slow machines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LabelStudioServer:
    url: str
    token: str
    username: str

    def client(self) -> SDKClient:
        return SDKClient(self.url, self.token)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    external = os.environ.get("ANNOTATOR_TEST_LABEL_STUDIO_URL")
    if external:
        token = os.environ.get("ANNOTATOR_TEST_LABEL_STUDIO_TOKEN", LS_TOKEN)
        yield LabelStudioServer(external.rstrip("/"), token, LS_USER)
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("label-studio") / "label-studio.log"
    env = {
        **os.environ,
        "LS_PORT": str(port),
        "LS_DATA_DIR": str(ROOT / ".ls" / "test-data"),
        "LS_USERNAME": LS_USER,
        "LS_PASSWORD": "reviewer-password",
        "LS_TOKEN": LS_TOKEN,
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "label_studio.sh"), "start"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"Label Studio did not come up on {url}:\n{tail}")
            time.sleep(1)
        yield LabelStudioServer(url, LS_TOKEN, LS_USER)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass(frozen=True)
class ApiServer:
    url: str
    settings: Settings


@pytest.fixture(scope="session")
def api_server(postgres_url: str, label_studio: LabelStudioServer) -> Iterator[ApiServer]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(
        database_url=postgres_url,
        webhook_secret=WEBHOOK_SECRET,
        public_url=url,
        label_studio_url=label_studio.url,
        label_studio_token=label_studio.token,
        media_root=ROOT / "media-unused",
    )
    engine = make_engine(postgres_url)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"the API server did not start on {url}")
        time.sleep(0.05)
    try:
        yield ApiServer(url, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """The suite's PostgreSQL database (the one the API server uses), emptied afterwards."""
    engine = make_engine(postgres_url)
    yield engine
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def ls_client(label_studio: LabelStudioServer) -> SDKClient:
    return label_studio.client()
