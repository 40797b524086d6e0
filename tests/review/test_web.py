"""The API pieces of review: signed image URLs, the webhook's secret, JSON errors, and
`annotator serve`; on SQLite and PostgreSQL, no Label Studio needed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from annotator.config import Settings
from annotator.db.models import ReviewTask
from annotator.db.session import session_scope
from annotator.integrations import label_studio as ls
from annotator.signing import sign_image, signed_image_url, verify_image
from tests.review.conftest import free_port
from tests.review.factories import MadePair, make_review_pairs
from web.app import create_app

SECRET = "web-test-secret"


def test_signatures_expire_and_bind_the_image() -> None:
    url, exp = signed_image_url("http://h:1/", 7, SECRET, 60, now=1000)
    assert url.startswith("http://h:1/images/7?exp=1060&sig=")
    sig = sign_image(7, exp, SECRET)
    assert verify_image(7, exp, sig, SECRET, now=1059)
    assert not verify_image(7, exp, sig, SECRET, now=1060)  # expired
    assert not verify_image(8, exp, sig, SECRET, now=1000)  # another image
    assert not verify_image(7, exp + 1, sig, SECRET, now=1000)  # extended
    assert not verify_image(7, exp, sig, "other-secret", now=1000)
    assert not verify_image(7, exp, sig[:-1] + "é", SECRET, now=1000)


@pytest.fixture
def made(engine: Engine, tmp_path: Path) -> list[MadePair]:
    with session_scope(engine) as session:
        return make_review_pairs(session, tmp_path / "images", n_pairs=1)


@pytest.fixture
def api(db_url: str, engine: Engine, tmp_path: Path) -> TestClient:
    settings = Settings(database_url=db_url, webhook_secret=SECRET, media_root=tmp_path / "media")
    return TestClient(create_app(settings, engine=engine))


def test_image_route(api: TestClient, made: list[MadePair], tmp_path: Path) -> None:
    image_id = made[0].image_id
    url, _ = signed_image_url("", image_id, SECRET, 60)
    answer = api.get(url)
    assert answer.status_code == 200
    assert answer.content == (tmp_path / "images" / "review_0.png").read_bytes()
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["access-control-allow-origin"] == "*"
    assert api.head(url).status_code == 200

    expired, _ = signed_image_url("", image_id, SECRET, -1)
    assert api.get(expired).status_code == 403
    assert api.get(expired).json()["detail"] == "invalid or expired image signature"
    assert api.get(f"/images/{image_id}").status_code == 422  # unsigned
    # Ids, never paths: anything else does not route or does not parse.
    assert api.get("/images/..%2F..%2Fetc%2Fpasswd?exp=1&sig=x").status_code in (404, 422)
    missing, _ = signed_image_url("", 999_999, SECRET, 60)
    assert api.get(missing).status_code == 404
    (tmp_path / "images" / "review_0.png").unlink()
    assert api.get(url).json()["detail"] == f"the file of image {image_id} is missing"


def test_webhook_needs_the_secret(api: TestClient, made: list[MadePair], engine: Engine) -> None:
    with session_scope(engine) as session:
        task = session.get(ReviewTask, made[0].task_id)
        assert task is not None
        task.external_id = "77"
    payload = {
        "action": "ANNOTATION_CREATED",
        "task": {"id": 77},
        "annotation": {
            "id": 5,
            "task": 77,
            "updated_at": "2026-11-21T10:00:00Z",
            "completed_by": 1,
            "result": [ls.exhaustivity_result("absent")],
        },
    }
    assert api.post(ls.WEBHOOK_PATH, json=payload).status_code == 401
    wrong = api.post(ls.WEBHOOK_PATH, json=payload, headers={ls.SECRET_HEADER: "x"})
    assert wrong.status_code == 401
    good = api.post(ls.WEBHOOK_PATH, json=payload, headers={ls.SECRET_HEADER: SECRET})
    assert good.status_code == 200 and good.json() == {
        "action": "ANNOTATION_CREATED",
        "outcomes": ["applied"],
    }
    bad = api.post(ls.WEBHOOK_PATH, json={"nothing": 1}, headers={ls.SECRET_HEADER: SECRET})
    assert bad.status_code == 422
    assert bad.json()["error"] == "InvalidInputError"


def test_serve_command_runs_the_api(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "ANNOTATOR_DATABASE_URL": db_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "annotator.cli", "serve", "--port", str(port),
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "annotator serve did not answer"
                time.sleep(0.2)
        assert answer.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
