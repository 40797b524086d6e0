"""The dashboard in a real browser (Playwright driving Debian's Chromium, never a downloaded
one): log in, launch a small job on the tiny models (run in the server process), watch it reach
done, open an image with its masks drawn, hover a mask. Screenshots go to tests/artifacts/.

Chromium comes from `apt-get install chromium` (scripts/setup.sh installs it as root); without
it this test fails and says so rather than skipping."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from annotator import masks
from annotator.config import Settings
from annotator.db.session import make_engine, session_scope
from annotator.pipeline import stages
from annotator.pipeline.backends import clear_backends
from annotator.services.users import add_user
from tests.conftest import _truncate_all
from tests.models.tiny import build_tiny_sam3
from tests.pipeline import fakes
from tests.review.conftest import free_port
from tests.web.jobs_support import add_small_dataset, job_request
from web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
def server(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(base URL, engineer token, tiny SAM 3 dir): our app under uvicorn on PostgreSQL."""
    stages.clear_caches()
    fakes.reset()
    engine = make_engine(postgres_url)
    add_small_dataset(engine, tmp_path / "images")
    with session_scope(engine) as session:
        token = add_user(session, "erin", "engineer")
    tiny = build_tiny_sam3(tmp_path / "sam3", seed=0)
    port = free_port()
    settings = Settings(database_url=postgres_url, media_root=tmp_path / "media")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", token, tiny
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()
        stages.clear_caches()
        clear_backends()
        _truncate_all(postgres_url)


def test_dashboard_launch_watch_and_view_masks(server: tuple[str, str, Path]) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            "Chromium is needed at /usr/bin/chromium for the browser test: "
            "`apt-get update && apt-get install -y chromium chromium-driver` "
            "(scripts/setup.sh does it when run as root)"
        )
    from playwright.sync_api import expect, sync_playwright

    base, token, tiny = server
    body = job_request(tiny)  # also scripts the verifier in this (the server's) process
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            page.goto(f"{base}/dashboard")
            expect(page).to_have_url(f"{base}/login?next=%2Fdashboard")
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Dashboard")
            expect(page.locator("header .who")).to_contain_text("erin")

            page.click("#launch summary")
            form = page.locator("#launch-form")
            form.locator("input[name='proposer.name']").fill("sam3")
            form.locator("input[name='proposer.model']").fill(str(tiny))
            form.locator("input[name='proposer.options']").fill(
                json.dumps(body["proposer"]["options"])
            )
            form.locator("input[name='captioner.name']").fill("none")
            form.locator("input[name='parser.name']").fill("offline")
            form.locator("input[name='verifier.name']").fill(body["verifier"]["name"])
            form.locator("input[name='verifier.model']").fill("v1")
            form.locator("input[name='routing.accept_above']").fill("0.8")
            form.locator("input[name='routing.reject_below']").fill("0.2")
            form.locator("select[name=device]").select_option("cpu")
            form.locator("input[name=hard_negatives]").uncheck()
            page.click("#launch-button")
            expect(page.locator("#launch-result")).to_contain_text("launched job #", timeout=30_000)
            job_id = page.locator("#launch-result").get_attribute("data-job")
            assert job_id

            row = page.locator(f"#jobs tr[data-job='{job_id}']")
            expect(row).to_have_attribute("data-status", "done", timeout=180_000)
            expect(row).to_contain_text("3 / 3 images")
            # (Waiting with locators: the page's CSP forbids eval, which wait_for_function uses.)
            expect(page.locator("#plot-routing")).to_have_attribute("data-rendered", "1")
            # The plots were redrawn when the job ended: the routing pie has the job's pairs.
            expect(page.locator("#plot-routing")).to_contain_text("auto-accepted")
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            page.goto(f"{base}/dashboard/jobs/{job_id}")
            expect(page.locator("#job-status")).to_have_text("done")
            expect(page.locator("#stages tbody tr")).to_have_count(5)
            expect(page.locator("#job-images")).to_have_text("3 / 3")
            # Served disabled, enabled by job.js once their handlers are attached.
            expect(page.locator("#cancel-button")).to_be_enabled()
            expect(page.locator("#resume-button")).to_be_enabled()
            expect(page.locator("#plot-job-throughput")).to_have_attribute("data-rendered", "1")
            page.screenshot(path=str(ARTIFACTS / "job.png"), full_page=True)

            page.goto(f"{base}/browse/street")
            page.fill("#concept-input", "red car")
            page.click("#search-form button[type=submit]")
            tiles = page.locator("#results a.tile")
            expect(tiles).to_have_count(1)
            expect(tiles.first).to_contain_text("positive")
            tiles.first.click()
            expect(page.locator("#concepts")).to_contain_text("red car")
            canvas = page.locator("#masks")
            expect(canvas).to_have_attribute("data-instances", re.compile(r"^[1-9]"))
            drawn = page.evaluate(
                """() => { const c = document.getElementById('masks');
                           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                           let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                           return n; }"""
            )
            assert drawn > 0, "no mask pixel drawn on the canvas"
            # Hover a pixel of the red car's smallest mask (drawn on top), proposals hidden.
            page.locator("#show-proposals").uncheck()
            view = json.loads(page.locator("#image-data").text_content() or "{}")
            size = [view["image"]["height"], view["image"]["width"]]
            car = next(p for p in view["pairs"] if p["concept"] == "red car")
            mask = min(car["masks"], key=lambda m: m["area"])
            ys, xs = np.nonzero(masks.decode({"size": size, "counts": mask["counts"]}))
            y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
            box = canvas.bounding_box()
            assert box is not None
            scale = box["width"] / view["image"]["width"]
            page.mouse.move(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale)
            tooltip = page.locator("#tooltip")
            expect(tooltip).to_be_visible()
            expect(tooltip).to_contain_text("score")
            expect(tooltip).to_contain_text("source: auto")
            page.screenshot(path=str(ARTIFACTS / "image.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors


def test_no_downloaded_browser_is_used() -> None:
    # The test must run on the system Chromium; a Playwright-managed browser would mean a
    # download happened somewhere.
    cache = Path.home() / ".cache" / "ms-playwright"
    assert not cache.exists() or not any(cache.glob("chromium-*")), (
        "found a Playwright-downloaded Chromium in ~/.cache/ms-playwright"
    )
    assert shutil.which("chromium") or CHROMIUM.exists()
