"""Benchmark: push review tasks to a real Label Studio 1.23.2 and sync reviewer annotations back.

Seeds N review tasks (640x480 images, M proposals each, MV/EV scores) in a fresh PostgreSQL
database, then measures:

* **push**: ``push_dataset`` (brush RLE encoding of every proposal + ``import_tasks`` in batches
  + commits): tasks/s and masks/s;
* **sync**: ``sync_dataset`` after a reviewer annotated every task through the API (8 masks kept,
  1 edited, 1 rejected per task, exhaustivity answered; webhooks pointed nowhere, so the sync does
  all the work): annotations applied/s (one reviewer annotation per task, M regions each) and
  masks/s;
* a second sync with nothing new (the periodic reconciliation's steady state).

First a table of the brush codec alone (ours and the SDK's, per mask). Starts Label Studio with
``scripts/label_studio.sh`` on a free port (data in ``.ls/bench-data``)
unless ``--label-studio-url`` names a running one.

    .venv/bin/python bench/review_sync.py                    # 1,000 tasks x 10 masks
    .venv/bin/python bench/review_sync.py --tasks 100        # quick run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator import machine, masks  # noqa: E402
from annotator.config import Settings  # noqa: E402
from annotator.db import migrate  # noqa: E402
from annotator.db import repositories as repo  # noqa: E402
from annotator.db.models import (  # noqa: E402
    Image,
    ImageStatus,
    Pair,
    PairOrigin,
    PairState,
    Proposal,
    ReviewTask,
    Verification,
    VerificationKind,
)
from annotator.db.session import make_engine, session_scope  # noqa: E402
from annotator.integrations import label_studio as ls  # noqa: E402
from annotator.services.review import push_dataset, sync_dataset  # noqa: E402

ADMIN_URL = os.environ.get(
    "ANNOTATOR_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
H, W = 480, 640
TOKEN = "annotator-bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def label_studio(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LS_PORT": str(port), "LS_DATA_DIR": str(ROOT / ".ls" / "bench-data"),
           "LS_TOKEN": TOKEN}  # fmt: skip
    log = open(ROOT / ".ls" / "bench.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "label_studio.sh"), "start"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 480
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"Label Studio did not start; see {ROOT / '.ls' / 'bench.log'}")
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def mask_pool(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    pool = []
    for _ in range(n):
        cy, cx = rng.uniform(40, H - 40), rng.uniform(40, W - 40)
        ry, rx = rng.uniform(8, 80), rng.uniform(8, 110)
        pool.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return pool


def seed(engine: object, name: str, n_tasks: int, per_task: int) -> None:
    pool = mask_pool(64)
    rles = [masks.encode(m) for m in pool]
    with session_scope(engine) as session:  # type: ignore[arg-type]
        ds = repo.create_dataset(session, name)
        concept = repo.ensure_concepts(session, ["thing"])["thing"]
        repo.bulk_insert(session, Image, [
            {"dataset_id": ds.id, "file_name": f"{i}.jpg", "uri": f"/nonexistent/{i}.jpg",
             "sha256": f"{i:064d}", "width": W, "height": H, "status": ImageStatus.READY}
            for i in range(n_tasks)
        ])  # fmt: skip
        image_ids = repo.images_by_file_name(session, ds.id, [f"{i}.jpg" for i in range(n_tasks)])
        repo.bulk_insert(session, Pair, [
            {"dataset_id": ds.id, "image_id": image_ids[f"{i}.jpg"].id, "concept_id": concept,
             "origin": PairOrigin.CAPTION, "state": PairState.IN_REVIEW}
            for i in range(n_tasks)
        ])  # fmt: skip
        pair_ids = sorted(
            repo.pair_ids(session, ds.id, [im.id for im in image_ids.values()]).values()
        )
        proposals = []
        for k, pid in enumerate(pair_ids):
            for r in range(per_task):
                rle = rles[(k * per_task + r) % len(rles)]
                x, y, w, h = masks.bbox(rle)
                proposals.append({
                    "pair_id": pid, "rle_counts": rle["counts"], "bbox_x": x, "bbox_y": y,
                    "bbox_w": w, "bbox_h": h, "area": masks.area(rle), "score": 0.5 + r / 40,
                    "model_version": "sam3-bench", "rank": r,
                })  # fmt: skip
        repo.bulk_insert(session, Proposal, proposals)
        from sqlalchemy import select

        rows = session.execute(select(Proposal.id, Proposal.pair_id)).all()
        repo.bulk_insert(session, Verification, [
            {"pair_id": p, "proposal_id": i, "kind": VerificationKind.MV, "label": "accept",
             "p_accept": 0.5, "model_version": "mv-bench"} for i, p in rows
        ] + [
            {"pair_id": p, "proposal_id": None, "kind": VerificationKind.EV, "label": "exhaustive",
             "p_accept": 0.4, "model_version": "ev-bench"} for p in pair_ids
        ])  # fmt: skip
        repo.bulk_insert(session, ReviewTask, [{"pair_id": p, "kind": "pair"} for p in pair_ids])


def annotate_all(client: ls.SDKClient, project_id: int) -> int:
    """Act as a reviewer on every task: keep 8 regions, edit 1, reject 1, answer exhaustivity."""
    n = 0
    for task in client.iter_tasks(project_id):
        full = client.get_task(task["id"])
        regions = full["predictions"][0]["result"]
        result = []
        for j, region in enumerate(regions):
            if j == 0:  # edited: decode, erase a band, re-encode (what a brush edit does)
                mask = masks.from_brush(region["value"]["rle"], H, W)
                ys = np.nonzero(mask)[0]
                mask[ys.min() : ys.min() + 3] = False
                result.append(ls.brush_region(region["id"], mask))
            else:
                result.append({k: region[k] for k in region if k not in ("score", "meta")})
                if j == 1:
                    result.append(ls.region_choice(region["id"], "reject"))
        result.append(ls.exhaustivity_result("yes"))
        client.create_annotation(task["id"], result, lead_time_s=20.0)
        n += 1
    return n


def codec_table(pool: list[np.ndarray], rounds: int = 3) -> None:
    """Brush RLE per mask of the pool: ours (annotator.masks) and the SDK's pure-Python codec,
    interleaved, best of ``rounds`` (the SDK only as a reference; it must give the same bytes)."""
    from label_studio_sdk.converter.brush import decode_rle, mask2rle

    def ours_encode(m: np.ndarray) -> list[int]:
        return masks.to_brush(m)

    def sdk_encode(m: np.ndarray) -> list[int]:
        return [int(v) for v in mask2rle(np.where(m, 255, 0).astype(np.uint8))]

    def ours_decode(rle: list[int]) -> np.ndarray:
        return masks.from_brush(rle, H, W)

    def sdk_decode(rle: list[int]) -> np.ndarray:
        return np.asarray(decode_rle(bytes(rle)).reshape(H, W, 4)[:, :, 3] >= 128)

    rles = [masks.to_brush(m) for m in pool]
    assert rles == [sdk_encode(m) for m in pool], "encoders disagree"
    best: dict[str, float] = {}
    for _ in range(rounds):
        for label, fn, inputs in (
            ("encode, annotator.masks", ours_encode, pool),
            ("encode, label_studio_sdk", sdk_encode, pool),
            ("decode, annotator.masks", ours_decode, rles),
            ("decode, label_studio_sdk", sdk_decode, rles),
        ):
            t0 = time.perf_counter()
            for x in inputs:
                fn(x)
            per = (time.perf_counter() - t0) / len(inputs) * 1000
            best[label] = min(best.get(label, per), per)
    print(f"brush RLE of {len(pool)} masks of {W}x{H} (ms per mask, best of {rounds})")
    for label, ms in best.items():
        print(f"  {label:<28}{ms:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--masks", type=int, default=10, help="proposals per task")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--label-studio-url")
    ap.add_argument("--token", default=TOKEN)
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = ap.parse_args()

    db = f"annotator_bench_review_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    url = make_url(ADMIN_URL).set(database=db).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        name = "bench"
        t0 = time.perf_counter()
        seed(engine, name, args.tasks, args.masks)
        print(f"seeded {args.tasks} tasks x {args.masks} masks in {time.perf_counter() - t0:.1f}s")
        codec_table(mask_pool(64))
        with label_studio(args.label_studio_url) as ls_url:
            client = ls.SDKClient(ls_url, args.token, timeout_s=300)
            settings = Settings(
                database_url=url,
                webhook_secret="bench",
                public_url=f"http://127.0.0.1:{free_port()}",  # webhooks go nowhere
                label_studio_url=ls_url,
                label_studio_token=args.token,
            )
            t0 = time.perf_counter()
            pushed = push_dataset(
                engine, name, client, settings=settings, batch_size=args.batch_size
            )
            t_push = time.perf_counter() - t0
            assert pushed.created == args.tasks, pushed

            t0 = time.perf_counter()
            repush = push_dataset(engine, name, client, settings=settings)
            t_repush = time.perf_counter() - t0
            assert repush.created == 0

            t0 = time.perf_counter()
            annotated = annotate_all(client, pushed.project_id)
            t_annotate = time.perf_counter() - t0

            t0 = time.perf_counter()
            with session_scope(engine) as session:
                synced = sync_dataset(session, name, client)
            t_sync = time.perf_counter() - t0
            assert synced.applied == annotated, synced

            t0 = time.perf_counter()
            with session_scope(engine) as session:
                again = sync_dataset(session, name, client)
            t_resync = time.perf_counter() - t0
            assert again.applied == 0 and again.unchanged == annotated
        engine.dispose()
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()

    n, m = args.tasks, args.tasks * args.masks
    print(f"\nmachine: {machine.describe()}, Python "
          f"{platform.python_version()}; Label Studio 1.23.2 (SQLite), PostgreSQL; "
          f"{n} tasks x {args.masks} masks of {W}x{H}, batches of {args.batch_size}")  # fmt: skip
    print(f"{'step':<34}{'seconds':>9}{'items/s':>11}{'masks/s':>10}")
    print("-" * 64)
    rows = [
        ("push (tasks)", t_push, n / t_push, m / t_push),
        ("push again (nothing new)", t_repush, float("nan"), float("nan")),
        ("reviewer annotates via API (tasks)", t_annotate, n / t_annotate, m / t_annotate),
        ("sync (annotations applied)", t_sync, annotated / t_sync, m / t_sync),
        ("sync again (nothing new)", t_resync, annotated / t_resync, m / t_resync),
    ]
    for label, secs, per_s, masks_s in rows:
        print(f"{label:<34}{secs:>9.2f}{per_s:>11.1f}{masks_s:>10.1f}")
    print(f"\nReproduce: python bench/review_sync.py --tasks {n} --masks {args.masks}")


if __name__ == "__main__":
    main()
