"""Benchmark: API latency and throughput at 50 concurrent clients, 1M annotations in PostgreSQL.

Seeds a database with ``bench/export.py``'s COPY seeder (100k images, 400k pairs, 1M masks),
adds a mining job over every image (600k job items in mixed states) and a few hundred real
image files, starts ``annotator serve``'s app under uvicorn on 127.0.0.1, and drives it from
``--clients`` concurrent keep-alive clients (closed loop: each sends its next request when the
last one answered) for ``--seconds`` per endpoint:

* ``progress``: ``GET /api/v1/jobs/{id}/progress`` of the 100k-image job;
* ``browse (concept)``: ``GET /api/v1/datasets/bench/browse?concept=...`` at random keyset
  cursors across a concept's pairs (deep pages included);
* ``browse (images)``: the image grid at random cursors across all 100k images;
* ``browse page (HTML)``: the server-rendered browser page of a concept;
* ``image view``: ``GET /api/v1/images/{id}`` (pairs and masks of an image);
* ``thumbnail``: ``GET /api/v1/images/{id}/thumbnail`` (cached JPEGs).

    .venv/bin/python bench/api.py                      # 1M annotations, 50 clients, 10 s each
    .venv/bin/python bench/api.py --annotations 100000 --seconds 5 --keep
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from PIL import Image as PILImage
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get(
    "ANNOTATOR_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
STAGES = ("ingest", "caption", "parse", "propose", "verify", "route")


def _export_bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_export", ROOT / "bench" / "export.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_job_and_files(url: str, name: str, media: Path, n_files: int) -> tuple[int, list[int]]:
    """A mining job over every image of ``name`` (items: the first 70% done, the rest pending)
    and ``n_files`` real 640x480 JPEGs behind the first images. Returns (job id, image ids)."""
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM datasets WHERE name = %s", (name,))
        ds = cur.fetchone()[0]  # type: ignore[index]
        cur.execute(
            "INSERT INTO jobs (kind, dataset_id, config, status, counters, created_at, started_at)"
            " VALUES ('mine', %s, %s, 'running', %s, now(), now() - interval '1 hour')"
            " RETURNING id",
            (
                ds,
                '{"proposer": {"name": "sam3"}, "captioner": {"name": "vlm"}, "parser": '
                '{"name": "offline"}, "verifier": {"name": "vlm"}}',
                '{"images": 0}',
            ),
        )
        job = cur.fetchone()[0]  # type: ignore[index]
        cur.execute("SELECT id FROM images WHERE dataset_id = %s ORDER BY id", (ds,))
        image_ids = [r[0] for r in cur.fetchall()]
        cur.execute(
            "UPDATE jobs SET counters = %s WHERE id = %s", (f'{{"images": {len(image_ids)}}}', job)
        )
        with cur.copy(
            "COPY job_items (job_id, image_id, stage, status, attempts, updated_at) FROM STDIN"
        ) as copy:
            cut = int(len(image_ids) * 0.7)
            for k, image_id in enumerate(image_ids):
                for s, stage in enumerate(STAGES):
                    done = k < cut or (s < 3 and k < cut + 1000)
                    copy.write_row(
                        (
                            job,
                            image_id,
                            stage,
                            "done" if done else "pending",
                            1 if done else 0,
                            "2026-01-01",
                        )
                    )
        media.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        files = []
        for i, image_id in enumerate(image_ids[:n_files]):
            path = media / f"bench_{i}.jpg"
            PILImage.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path)
            files.append((str(path), image_id))
        cur.executemany("UPDATE images SET uri = %s WHERE id = %s", files)
        cur.execute("ANALYZE")
        conn.commit()
    return job, image_ids


def start_server(url: str, media: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ANNOTATOR_DATABASE_URL": url, "ANNOTATOR_MEDIA_ROOT": str(media)}
    env.pop("ANNOTATOR_BROKER_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "web.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


async def drive(
    base: str, token: str, paths: list[str], clients: int, seconds: float, max_requests: int
) -> tuple[list[float], int, float]:
    """Closed loop: ``clients`` workers, each sending its next request when the last answered,
    until ``seconds`` passed or ``max_requests`` were sent. Returns (latencies s, errors, wall)."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as c:
        start = time.perf_counter()
        stop = start + seconds

        async def worker(seed: int) -> None:
            nonlocal errors, sent
            rng = random.Random(seed)
            while time.perf_counter() < stop and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                response = await c.get(rng.choice(paths))
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors += 1

        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--annotations", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="Per endpoint.")
    parser.add_argument("--max-requests", type=int, default=20_000, help="Per endpoint.")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes.")
    parser.add_argument("--files", type=int, default=300, help="Real image files (thumbnails).")
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    args = parser.parse_args()

    from annotator.db import migrate
    from annotator.db.session import make_engine, session_scope
    from annotator.services.users import add_user

    db = f"annotator_bench_api_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    url = make_url(ADMIN_URL).set(database=db).render_as_string(hide_password=False)
    media = ROOT / "out" / "bench-api-media"
    proc = None
    try:
        migrate.upgrade(url)
        t0 = time.perf_counter()
        _export_bench().seed(url, "bench", args.annotations)  # type: ignore[attr-defined]
        job, image_ids = seed_job_and_files(url, "bench", media, args.files)
        engine = make_engine(url)
        with session_scope(engine) as session:
            token = add_user(session, "bench", "reviewer")
            concepts = [
                r[0]
                for r in session.execute(
                    text(
                        "SELECT c.text FROM concepts c JOIN pairs p ON p.concept_id = c.id "
                        "GROUP BY c.text ORDER BY count(*) DESC LIMIT 50"
                    )
                )
            ]
            pair_ids = {
                c: [
                    r[0]
                    for r in session.execute(
                        text(
                            "SELECT p.id FROM pairs p JOIN concepts c ON c.id = p.concept_id "
                            "WHERE c.text = :t ORDER BY p.id"
                        ),
                        {"t": c},
                    )
                ]
                for c in concepts[:5]
            }
        engine.dispose()
        print(
            f"seeded {args.annotations:,} annotations, {len(image_ids):,} images, "
            f"{len(image_ids) * len(STAGES):,} job items in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )

        port = 8765
        base = f"http://127.0.0.1:{port}"
        proc = start_server(url, media, port, args.workers)
        rng = random.Random(0)
        with_files = image_ids[: args.files]

        def concept_page() -> str:
            c = rng.choice(list(pair_ids))
            ids = pair_ids[c]
            cursor = rng.choice(ids) + 1
            return f"/api/v1/datasets/bench/browse?concept={c.replace(' ', '+')}&before={cursor}"

        endpoints = {
            "progress": [f"/api/v1/jobs/{job}/progress"],
            "browse (concept)": [concept_page() for _ in range(2000)],
            "browse (images)": [
                f"/api/v1/datasets/bench/browse?before={rng.choice(image_ids) + 1}"
                for _ in range(2000)
            ],
            "browse page (HTML)": [
                f"/browse/bench?concept={rng.choice(list(pair_ids)).replace(' ', '+')}"
            ],
            "image view": [f"/api/v1/images/{rng.choice(image_ids)}" for _ in range(2000)],
            "thumbnail": [f"/api/v1/images/{i}/thumbnail?size=256" for i in with_files],
        }
        cookies_for_html = {"annotator_token": token}
        # Warm up: thumbnails made once, caches and connection pools filled.
        with httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            cookies=cookies_for_html,
            timeout=60,
        ) as warm:
            for path in endpoints["thumbnail"] + endpoints["progress"]:
                assert warm.get(path).status_code == 200, path
        rows = []
        for name, paths in endpoints.items():
            lat, errors, wall = asyncio.run(
                drive_with_cookie(
                    base,
                    token,
                    paths,
                    args.clients,
                    args.seconds,
                    args.max_requests,
                    cookie=name.endswith("(HTML)"),
                )
            )
            lat_ms = np.array(lat) * 1000
            rows.append(
                (
                    name,
                    len(lat),
                    errors,
                    float(np.percentile(lat_ms, 50)),
                    float(np.percentile(lat_ms, 99)),
                    len(lat) / wall,
                )
            )
            print(f"  {name}: {len(lat):,} requests", flush=True)
        print()
        print(
            f"{args.annotations:,} annotations; {args.clients} concurrent clients, closed loop, "
            f"{args.seconds:.0f} s per endpoint; uvicorn workers: {args.workers}; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        )
        print()
        print("| endpoint | requests | errors | p50 ms | p99 ms | requests/s |")
        print("|---|---|---|---|---|---|")
        for name, n, errors, p50, p99, rps in rows:
            print(f"| {name} | {n:,} | {errors} | {p50:.1f} | {p99:.1f} | {rps:,.0f} |")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        else:
            print(f"kept database {url}")
        admin.dispose()


async def drive_with_cookie(
    base: str,
    token: str,
    paths: list[str],
    clients: int,
    seconds: float,
    max_requests: int,
    *,
    cookie: bool,
) -> tuple[list[float], int, float]:
    if not cookie:
        return await drive(base, token, paths, clients, seconds, max_requests)
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, cookies={"annotator_token": token}, limits=limits, timeout=30
    ) as c:
        start = time.perf_counter()
        stop = start + seconds

        async def worker(seed: int) -> None:
            nonlocal errors, sent
            rng = random.Random(seed)
            while time.perf_counter() < stop and sent < max_requests:
                sent += 1
                t0 = time.perf_counter()
                response = await c.get(rng.choice(paths))
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    errors += 1

        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - start
    return latencies, errors, wall


if __name__ == "__main__":
    main()
