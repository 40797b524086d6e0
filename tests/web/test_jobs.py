"""Mining jobs through the API, run in the server process on the tiny models: launch, live
progress to done, the outcome in the browser API; cancel and resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from annotator.db.session import session_scope
from annotator.pipeline import stages
from annotator.pipeline.backends import clear_backends
from annotator.services import jobs
from tests.models.tiny import build_tiny_sam3
from tests.pipeline import fakes
from tests.web.conftest import Tokens, wait_for
from tests.web.jobs_support import add_small_dataset, job_request


@pytest.fixture(scope="session")
def tiny_sam3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam3(tmp_path_factory.mktemp("web-sam3"), seed=0)


@pytest.fixture(autouse=True)
def _fresh_pipeline() -> Iterator[None]:
    stages.clear_caches()
    fakes.reset()
    yield
    stages.clear_caches()
    clear_backends()


def test_launch_watch_and_browse_a_job(
    client: TestClient, tokens: Tokens, engine: Engine, tmp_path: Path, tiny_sam3: Path
) -> None:
    add_small_dataset(engine, tmp_path / "images")
    h = tokens.headers("engineer")
    body = job_request(tiny_sam3)
    body["routing"]["auto_negative_named"] = True
    refused = client.post("/api/v1/jobs", json=body, headers=tokens.headers("reviewer"))
    assert refused.status_code == 403
    launched = client.post("/api/v1/jobs", json=body, headers=h)
    assert launched.status_code == 202, launched.text
    job = launched.json()
    assert job["kind"] == "mine" and job["dataset"] == "street"
    assert job["config"]["routing"]["accept_above"] == 0.8
    assert job["config"]["routing"]["auto_negative_named"] is True
    assert job["config"]["proposer"]["model"] == str(tiny_sam3)
    final = wait_for(
        lambda: client.get(f"/api/v1/jobs/{job['id']}/progress", headers=h).json(),
        lambda p: p["status"] in ("done", "failed", "cancelled"),
        timeout_s=180,
    )
    assert final["status"] == "done", final
    assert final["images_finished"] == final["images"] == 3
    assert [s["stage"] for s in final["stages"]] == [
        "ingest",
        "parse",
        "propose",
        "verify",
        "route",
    ]
    assert all(s["pending"] == 0 for s in final["stages"])
    assert final["rate"] and final["rate"] > 0
    routing = client.get(f"/api/v1/stats/routing?job_id={job['id']}", headers=h).json()
    assert routing["pairs"]["auto_accepted"] >= 1
    cars = client.get("/api/v1/datasets/street/browse?concept=red+car", headers=h).json()
    (car,) = cars["items"]
    assert car["state"] == "positive" and car["masks"] >= 1
    view = client.get(f"/api/v1/images/{car['image_id']}", headers=h).json()
    masks = next(p for p in view["pairs"] if p["concept"] == "red car")["masks"]
    assert masks and all(m["source"] == "auto" and m["model_version"] for m in masks)
    throughput = client.get(f"/api/v1/jobs/{job['id']}/throughput", headers=h).json()
    assert sum(sum(v) for v in throughput["stages"].values()) == 3 * 5
    again = client.post("/api/v1/jobs", json=body, headers=h)
    assert again.status_code == 422 and "no new images" in again.json()["detail"]
    done = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=h)
    assert done.status_code == 409 and "already done" in done.json()["detail"]


def test_cancel_then_resume(
    client: TestClient, tokens: Tokens, engine: Engine, tmp_path: Path, tiny_sam3: Path
) -> None:
    add_small_dataset(engine, tmp_path / "images")
    h = tokens.headers("engineer")
    from annotator.pipeline.config import MiningConfig

    body = job_request(tiny_sam3)
    config = MiningConfig.model_validate({k: v for k, v in body.items() if k != "dataset"})
    with session_scope(engine) as session:  # queued, not started
        job_id = jobs.create_mining_job(session, "street", config).id
    cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=h)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    progress = client.get(f"/api/v1/jobs/{job_id}/progress", headers=h).json()
    assert progress["status"] == "cancelled" and progress["finished"] == 0
    resumed = client.post(f"/api/v1/jobs/{job_id}/resume", json={}, headers=h)
    assert resumed.status_code == 202 and resumed.json()["status"] == "queued"
    final = wait_for(
        lambda: client.get(f"/api/v1/jobs/{job_id}", headers=h).json(),
        lambda j: j["status"] in ("done", "failed"),
        timeout_s=180,
    )
    assert final["status"] == "done", final
    assert final["counters"]["pairs_positive"] >= 1
    nothing = client.post(f"/api/v1/jobs/{job_id}/resume", json={}, headers=h)
    assert nothing.status_code == 409 and "nothing left to run" in nothing.json()["detail"]
