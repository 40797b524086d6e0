"""Benchmark: streaming COCO/SA-Co export from PostgreSQL vs a naive build-a-dict export.

Seeds synthetic datasets of realistic shape (640x480 images, ~10 masks per image, RLEs of real
ellipse/polygon masks) with COPY, then runs each export in a fresh subprocess and reports
annotations/s and the process's peak RSS.

    .venv/bin/python bench/export.py                       # 100k and 1M annotations
    .venv/bin/python bench/export.py --sizes 10000 --keep  # quick run, keep the database
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator import machine, masks  # noqa: E402

ADMIN_URL = os.environ.get(
    "ANNOTATOR_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
H, W = 480, 640
MASKS_PER_IMAGE = 10
PAIRS_PER_IMAGE = 4  # 3 positive pairs + 1 negative


def rle_pool(
    n: int = 256, seed: int = 0
) -> list[tuple[str, int, tuple[float, float, float, float]]]:
    """Real COCO RLEs of ellipses and rotated boxes of many sizes (like instance masks)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    pool = []
    for i in range(n):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        ry, rx = rng.uniform(5, 120), rng.uniform(5, 160)
        if i % 2:
            m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            t = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
            v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
            m = (np.abs(u) <= rx) & (np.abs(v) <= ry)
        rle = masks.encode(m)
        x, y, w, h = masks.bbox(rle)
        pool.append((rle["counts"], masks.area(rle), (x, y, w, h)))
    return pool


def seed(url: str, name: str, n_annotations: int) -> None:
    """Create dataset ``name`` with ``n_annotations`` masks using COPY (fast)."""
    import psycopg

    pool = rle_pool()
    n_images = max(1, n_annotations // MASKS_PER_IMAGE)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO datasets (name, created_at) VALUES (%s, now()) RETURNING id", (name,)
        )
        row = cur.fetchone()
        assert row is not None
        ds = row[0]
        cur.execute(
            "INSERT INTO concepts (text, created_at) SELECT 'concept ' || g, now() "
            "FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING"
        )
        cur.execute("SELECT id FROM concepts ORDER BY id LIMIT 1000")
        concepts = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT coalesce(max(id), 0) FROM images")
        img0 = cur.fetchone()[0]  # type: ignore[index]
        with cur.copy(
            "COPY images (id, dataset_id, file_name, uri, width, height, status, created_at) "
            "FROM STDIN"
        ) as copy:
            for i in range(n_images):
                f = f"{name}/{i:08d}.jpg"
                copy.write_row((img0 + i + 1, ds, f, f, W, H, "ready", "2026-01-01"))
        cur.execute("SELECT coalesce(max(id), 0) FROM pairs")
        pair0 = cur.fetchone()[0]  # type: ignore[index]
        pair_id = pair0
        with cur.copy(
            "COPY pairs (id, dataset_id, image_id, concept_id, origin, state, is_exhaustive, "
            "is_pixel_exhaustive, created_at, updated_at) FROM STDIN"
        ) as copy:
            for i in range(n_images):
                for k in range(PAIRS_PER_IMAGE):
                    pair_id += 1
                    state = "negative" if k == PAIRS_PER_IMAGE - 1 else "positive"
                    concept = concepts[(i * 7 + k * 131) % len(concepts)]
                    copy.write_row(
                        (
                            pair_id,
                            ds,
                            img0 + i + 1,
                            concept,
                            "caption",
                            state,
                            k != 1,
                            k == 0,
                            "2026-01-01",
                            "2026-01-01",
                        )
                    )
        cur.execute("SELECT coalesce(max(id), 0) FROM annotations")
        ann0 = cur.fetchone()[0]  # type: ignore[index]
        with cur.copy(
            "COPY annotations (id, dataset_id, pair_id, rle_counts, bbox_x, bbox_y, bbox_w, "
            "bbox_h, area, iscrowd, source, score, model_version, created_at) FROM STDIN"
        ) as copy:
            for j in range(n_annotations):
                image = j // MASKS_PER_IMAGE
                pair = pair0 + image * PAIRS_PER_IMAGE + (j % (PAIRS_PER_IMAGE - 1)) + 1
                counts, area, (x, y, w, h) = pool[j % len(pool)]
                copy.write_row(
                    (
                        ann0 + j + 1,
                        ds,
                        pair,
                        counts,
                        x,
                        y,
                        w,
                        h,
                        area,
                        False,
                        "import",
                        0.5 + (j % 50) / 100,
                        "sam3@bench",
                        "2026-01-01",
                    )
                )
        for table, col in (("images", "id"), ("pairs", "id"), ("annotations", "id")):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{col}'), "
                f"(SELECT max({col}) FROM {table}))"
            )
        conn.commit()
        cur.execute("ANALYZE")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of process ``pid`` (a local server backend)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_streaming(url: str, name: str, fmt: str, out: str) -> dict[str, float]:
    from annotator.db.session import make_engine, session_scope
    from annotator.services.exporting import export_dataset

    engine = make_engine(url)
    with session_scope(engine, snapshot=True) as session, open(out, "wb") as fh:
        backend = int(session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        cpu0, server0, start = cpu_seconds(), cpu_seconds(backend), time.perf_counter()
        result = export_dataset(session, name, fmt, fh)
        seconds = time.perf_counter() - start
        cpu, server = cpu_seconds() - cpu0, cpu_seconds(backend) - server0
    return {
        "seconds": seconds,
        "annotations": result.counts["annotations"],
        "client_cpu_s": cpu,
        "server_cpu_s": server,
    }


def child_naive(url: str, name: str, fmt: str, out: str) -> dict[str, float]:
    """The usual way: fetch every row, build the whole COCO dict, json.dump it."""
    from sqlalchemy import text

    from annotator.db.session import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        backend = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        cpu0, server0, start = cpu_seconds(), cpu_seconds(backend), time.perf_counter()
        ds = conn.execute(text("SELECT id FROM datasets WHERE name = :n"), {"n": name}).scalar_one()
        images = conn.execute(
            text(
                "SELECT id, file_name, width, height FROM images WHERE dataset_id = :d ORDER BY id"
            ),
            {"d": ds},
        ).fetchall()
        pairs = conn.execute(
            text(
                "SELECT image_id, concept_id, state, is_exhaustive FROM pairs WHERE dataset_id = :d"
            ),
            {"d": ds},
        ).fetchall()
        cats = conn.execute(
            text(
                "SELECT DISTINCT c.id, c.text FROM concepts c JOIN pairs p ON p.concept_id = c.id "
                "WHERE p.dataset_id = :d ORDER BY c.id"
            ),
            {"d": ds},
        ).fetchall()
        anns = conn.execute(
            text(
                "SELECT a.id, p.image_id, p.concept_id, a.rle_counts, i.height, i.width, a.area, "
                "a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, a.iscrowd, a.source, a.score, "
                "a.model_version FROM annotations a JOIN pairs p ON p.id = a.pair_id "
                "JOIN images i ON i.id = p.image_id WHERE a.dataset_id = :d "
                "AND a.superseded_at IS NULL AND p.state = 'positive' ORDER BY a.id"
            ),
            {"d": ds},
        ).fetchall()
        server = cpu_seconds(backend) - server0
    neg: dict[int, list[int]] = {}
    nex: dict[int, list[int]] = {}
    for image_id, concept_id, state, exh in pairs:
        if state == "negative":
            neg.setdefault(image_id, []).append(concept_id)
        elif state == "positive" and not exh:
            nex.setdefault(image_id, []).append(concept_id)
    doc = {
        "info": {"dataset": name},
        "images": [
            {
                "id": i,
                "file_name": f,
                "width": w,
                "height": h,
                "neg_category_ids": neg.get(i, []),
                "not_exhaustive_category_ids": nex.get(i, []),
            }
            for i, f, w, h in images
        ],
        "categories": [{"id": c, "name": t} for c, t in cats],
        "annotations": [
            {
                "id": a,
                "image_id": im,
                "category_id": c,
                "segmentation": {"size": [h, w], "counts": rc},
                "area": ar,
                "bbox": [x, y, bw, bh],
                "iscrowd": int(cr),
                "source": s,
                "score": sc,
                "model_version": mv,
            }
            for a, im, c, rc, h, w, ar, x, y, bw, bh, cr, s, sc, mv in anns
        ],
    }
    with open(out, "w") as fh:
        json.dump(doc, fh)
    return {
        "seconds": time.perf_counter() - start,
        "annotations": len(anns),
        "client_cpu_s": cpu_seconds() - cpu0,
        "server_cpu_s": server,
    }


def run_child(kind: str, url: str, name: str, fmt: str, out: str) -> dict[str, float]:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--url",
            url,
            "--name",
            name,
            "--fmt",
            fmt,
            "--out",
            out,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="100000,1000000", help="annotation counts, comma-separated"
    )
    parser.add_argument("--formats", default="coco,saco")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive export")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--fmt", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        fn = child_streaming if args.child == "streaming" else child_naive
        stats = fn(args.url, args.name, args.fmt, args.out)
        # ru_maxrss is KiB on Linux.
        stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(stats))
        return

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from annotator.db import migrate

    sizes = [int(s) for s in args.sizes.split(",")]
    db = f"annotator_bench_{os.getpid()}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    url = make_url(ADMIN_URL).set(database=db).render_as_string(hide_password=False)
    rows = []
    try:
        migrate.upgrade(url)
        for n in sizes:
            t = time.perf_counter()
            seed(url, f"bench_{n}", n)
            print(f"seeded {n:,} annotations in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_export_{os.getpid()}.json"
        for n in sizes:
            for fmt in args.formats.split(","):
                kinds = ["streaming"] + ([] if args.no_naive or fmt != "coco" else ["naive"])
                for kind in kinds:
                    stats = run_child(kind, url, f"bench_{n}", fmt, str(out))
                    size_mb = out.stat().st_size / 1e6
                    rows.append((kind, fmt, n, stats, size_mb))
                    print(f"{kind} {fmt} {n:,}: {stats}", file=sys.stderr)
        out.unlink(missing_ok=True)
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()

    print()
    print(
        f"machine: {machine.describe()}, "
        f"Python {platform.python_version()}, PostgreSQL on 127.0.0.1"
    )
    print(
        f"{'export':<10} {'format':<6} {'annotations':>12} {'seconds':>8} {'ann/s':>10} "
        f"{'client CPU s':>12} {'server CPU s':>12} "
        f"{'peak RSS MB':>12} {'file MB':>8}"
    )
    for kind, fmt, _n, stats, size_mb in rows:
        rate = stats["annotations"] / stats["seconds"]
        print(
            f"{kind:<10} {fmt:<6} {int(stats['annotations']):>12,} {stats['seconds']:>8.2f} "
            f"{rate:>10,.0f} {stats['client_cpu_s']:>12.2f} {stats['server_cpu_s']:>12.2f} "
            f"{stats['peak_rss_mb']:>12.0f} {size_mb:>8.0f}"
        )
    print(
        "client/server CPU s: CPU time of the export process and of its PostgreSQL backend "
        "(parallel query workers not counted); with other load on the machine, wall time "
        "grows but these do not."
    )
    uptime = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average during the run (1/5/15 min): {' '.join(uptime)}")
    print(f"\nreproduce: .venv/bin/python bench/export.py --sizes {args.sizes}")


if __name__ == "__main__":
    main()
