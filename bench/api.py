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
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
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

from annotator import machine  # noqa: E402

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


def start_server(
    url: str, media: Path, port: int, workers: int, *, shared_socket: bool = False
) -> subprocess.Popen[bytes]:
    """``annotator serve``'s server (web.serve: a SO_REUSEPORT socket per worker), or with
    ``shared_socket`` uvicorn's own workers sharing one socket (for comparison)."""
    env = {**os.environ, "ANNOTATOR_DATABASE_URL": url, "ANNOTATOR_MEDIA_ROOT": str(media)}
    env.pop("ANNOTATOR_BROKER_URL", None)
    server = ["uvicorn", "web.app:create_app", "--factory"] if shared_socket else ["web.serve"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            *server,
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


def _ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def _machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds spent by the server (uvicorn and its workers), by the PostgreSQL backends
    of the benchmark database, and by the whole machine, between ``start()`` and ``stop()``."""

    def __init__(self, server_pid: int, url: str) -> None:
        self.server_pid = server_pid
        self.url = url
        self.tick = os.sysconf("SC_CLK_TCK")

    def _backends(self) -> list[int]:
        import psycopg

        dsn = self.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            ).fetchall()
        return [r[0] for r in rows]

    def _server(self) -> list[int]:
        return [self.server_pid, *_children(self.server_pid)]

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.server0 = {p: _ticks(p) for p in self._server()}
        self.pg0 = {p: _ticks(p) for p in self._backends()}
        self.machine0 = _machine_busy()

    def stop(self) -> dict[str, float]:
        machine1 = _machine_busy()
        server = sum(_ticks(p) - self.server0.get(p, 0) for p in self._server())
        pg = sum(_ticks(p) - self.pg0.get(p, 0) for p in self._backends())
        busy = machine1[0] - self.machine0[0]
        total = machine1[1] - self.machine0[1]
        return {
            "server_s": server / self.tick,
            "postgres_s": pg / self.tick,
            "machine_s": busy / self.tick,
            "machine_busy": busy / total if total else 0.0,
        }


def drive(
    port: int,
    headers: list[str],
    paths: list[str],
    clients: int,
    seconds: float,
    max_requests: int,
    meter: CpuMeter,
) -> dict[str, object]:
    """Closed loop from bench/loadgen.py in its own process: ``clients`` keep-alive
    connections, each sending its next request when the last answered, until ``seconds``
    passed or ``max_requests`` were sent. The load generator's answer plus the CPU used."""
    with tempfile.TemporaryDirectory() as tmp:
        paths_file = Path(tmp) / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "loadgen.py"),
            "--port",
            str(port),
            "--paths",
            str(paths_file),
            "--clients",
            str(clients),
            "--seconds",
            str(seconds),
            "--max-requests",
            str(max_requests),
            "--out",
            str(out),
        ]
        for h in headers:
            cmd += ["--header", h]
        meter.start()
        subprocess.run(cmd, check=True)
        cpu = meter.stop()
        result: dict[str, object] = json.loads(out.read_text())
    result.update(cpu)
    return result


def bench_inputs(url: str, name: str) -> tuple[int, list[int], dict[str, list[int]], str]:
    """(job id, image ids, pair ids of the 5 commonest concepts, a new reviewer token) of a
    seeded benchmark database."""
    from annotator.db.session import make_engine, session_scope
    from annotator.services.users import add_user

    engine = make_engine(url)
    with session_scope(engine) as session:
        token = add_user(session, f"bench-{uuid.uuid4().hex[:8]}", "reviewer")
        job = session.execute(
            text(
                "SELECT j.id FROM jobs j JOIN datasets d ON d.id = j.dataset_id"
                " WHERE d.name = :n AND j.kind = 'mine' ORDER BY j.id LIMIT 1"
            ),
            {"n": name},
        ).scalar_one()
        image_ids = list(
            session.scalars(
                text(
                    "SELECT i.id FROM images i JOIN datasets d ON d.id = i.dataset_id"
                    " WHERE d.name = :n ORDER BY i.id"
                ),
                {"n": name},
            )
        )
        concepts = list(
            session.scalars(
                text(
                    "SELECT c.text FROM concepts c JOIN pairs p ON p.concept_id = c.id "
                    "GROUP BY c.text ORDER BY count(*) DESC, c.text LIMIT 5"
                )
            )
        )
        pair_ids = {
            c: list(
                session.scalars(
                    text(
                        "SELECT p.id FROM pairs p JOIN concepts c ON c.id = p.concept_id "
                        "WHERE c.text = :t ORDER BY p.id"
                    ),
                    {"t": c},
                )
            )
            for c in concepts
        }
    engine.dispose()
    return job, image_ids, pair_ids, token


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--annotations", type=int, default=1_000_000)
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 50], help="Concurrent clients (runs)."
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="Per endpoint.")
    parser.add_argument("--max-requests", type=int, default=100_000, help="Per endpoint.")
    parser.add_argument("--workers", type=int, default=2, help="Server worker processes.")
    parser.add_argument(
        "--shared-socket",
        action="store_true",
        help="Run uvicorn's own --workers (one shared socket) instead of web.serve.",
    )
    parser.add_argument("--files", type=int, default=300, help="Real image files (thumbnails).")
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    parser.add_argument(
        "--database",
        help="Reuse a database seeded (and kept) by an earlier run instead of seeding one.",
    )
    parser.add_argument(
        "--only", nargs="+", help="Only these endpoints (names as in the table, e.g. progress)."
    )
    args = parser.parse_args()

    from annotator.db import migrate

    name = "bench"
    media = ROOT / "out" / "bench-api-media"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    created = None
    if args.database:
        url = args.database
    else:
        created = f"annotator_bench_api_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{created}"'))
        url = make_url(ADMIN_URL).set(database=created).render_as_string(hide_password=False)
    proc = None
    try:
        if created:
            migrate.upgrade(url)
            t0 = time.perf_counter()
            _export_bench().seed(url, name, args.annotations)  # type: ignore[attr-defined]
            seed_job_and_files(url, name, media, args.files)
            print(f"seeded {args.annotations:,} annotations in {time.perf_counter() - t0:.0f} s")
        job, image_ids, pair_ids, token = bench_inputs(url, name)

        port = 8765
        proc = start_server(url, media, port, args.workers, shared_socket=args.shared_socket)
        rng = random.Random(0)
        with_files = image_ids[: args.files]

        def concept_page() -> str:
            c = rng.choice(list(pair_ids))
            cursor = rng.choice(pair_ids[c]) + 1
            return f"/api/v1/datasets/{name}/browse?concept={c.replace(' ', '+')}&before={cursor}"

        endpoints = {
            "progress": [f"/api/v1/jobs/{job}/progress"],
            "browse (concept)": [concept_page() for _ in range(2000)],
            "browse (images)": [
                f"/api/v1/datasets/{name}/browse?before={rng.choice(image_ids) + 1}"
                for _ in range(2000)
            ],
            "browse page (HTML)": [
                f"/browse/{name}?concept={c.replace(' ', '+')}" for c in list(pair_ids)[:1]
            ],
            "image view": [f"/api/v1/images/{rng.choice(image_ids)}" for _ in range(2000)],
            "thumbnail": [f"/api/v1/images/{i}/thumbnail?size=256" for i in with_files],
        }
        if args.only:
            endpoints = {k: v for k, v in endpoints.items() if k in args.only}
        bearer = [f"Authorization: Bearer {token}"]
        cookie = [f"Cookie: annotator_token={token}"]
        # Warm up: thumbnails made once, caches and connection pools filled.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as warm:
            auth = {"Authorization": f"Bearer {token}"}
            for path in [*endpoints.get("thumbnail", []), f"/api/v1/jobs/{job}/progress"]:
                assert warm.get(path, headers=auth).status_code == 200, path
        meter = CpuMeter(proc.pid, url)
        for k in ("progress", "browse (images)"):
            if k in endpoints:
                drive(port, bearer, endpoints[k], max(args.clients), 2.0, 10**6, meter)
        load = os.getloadavg()
        for clients in args.clients:
            rows = []
            for endpoint, paths in endpoints.items():
                headers = cookie if endpoint.endswith("(HTML)") else bearer
                r = drive(port, headers, paths, clients, args.seconds, args.max_requests, meter)
                lat = np.array(r["latencies_s"]) * 1000
                n = len(lat)
                rows.append(
                    (
                        endpoint,
                        n,
                        int(r["errors"]),  # type: ignore[call-overload]
                        float(np.percentile(lat, 50)),
                        float(np.percentile(lat, 99)),
                        n / float(r["wall_s"]),  # type: ignore[arg-type]
                        1000 * float(r["server_s"]) / n,  # type: ignore[arg-type]
                        1000 * float(r["postgres_s"]) / n,  # type: ignore[arg-type]
                        1000 * float(r["cpu_s"]) / n,  # type: ignore[arg-type]
                        1000 * float(r["machine_s"]) / n,  # type: ignore[arg-type]
                        100 * float(r["machine_busy"]),  # type: ignore[arg-type]
                    )
                )
                print(f"  {clients} clients, {endpoint}: {n:,} requests", flush=True)
            print()
            print(
                f"{args.annotations:,} annotations; {clients} concurrent client(s), closed loop, "
                f"{args.seconds:.0f} s per endpoint; server workers: {args.workers}"
                f"{' (uvicorn, one shared socket)' if args.shared_socket else ''}; "
                f"{machine.describe()}; "
                f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            )
            print()
            print(
                "| endpoint | requests | errors | p50 ms | p99 ms | requests/s "
                "| CPU ms/request: server | postgres | load generator | machine | machine busy |"
            )
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for row in rows:
                e, n, errors, p50, p99, rps, srv, pg, gen, mach, busy = row
                print(
                    f"| {e} | {n:,} | {errors} | {p50:.1f} | {p99:.1f} | {rps:,.0f} "
                    f"| {srv:.2f} | {pg:.2f} | {gen:.3f} | {mach:.2f} | {busy:.0f}% |"
                )
            print()
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        if created and not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)'))
        elif created:
            print(f"kept database {url} (rerun with --database {url})")
        admin.dispose()


if __name__ == "__main__":
    main()
