"""Bad inputs fail their own job item (with the reason) and never the job; odd but valid image
modes are ingested upright and in RGB."""

from __future__ import annotations

import io
import socket
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import Engine, select

from annotator.db import repositories as repo
from annotator.db.models import Image, ImageStatus, JobItem, JobItemStatus, JobStatus
from annotator.db.session import session_scope
from annotator.pipeline.config import MiningConfig
from annotator.pipeline.runner import launch_job
from annotator.pipeline.stages import STAGES
from tests.pipeline.conftest import scene


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    buf = io.BytesIO()
    PILImage.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_inputs(root: Path) -> dict[str, str]:
    """file_name -> uri of every case."""
    root.mkdir(parents=True)
    good = root / "good.png"
    scene(1).save(good)
    cases: dict[str, str] = {"good.png": str(good)}

    def put(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        cases[name] = str(root / name)

    whole = good.read_bytes()
    put("truncated.png", whole[: len(whole) // 2])
    put("empty.jpg", b"")
    put("text.jpg", b"this is not an image, whatever its name says\n")
    put("bomb.png", png_header_only(50_000, 50_000))
    put("copy-of-good.png", whole)
    cases["http://127.0.0.1/unreachable.png"] = f"http://127.0.0.1:{closed_port()}/x.png"
    cases["missing.png"] = str(root / "missing.png")
    # Valid oddities.
    rgb = np.asarray(scene(5))
    buf = io.BytesIO()
    PILImage.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    put("cmyk.jpg", buf.getvalue())
    buf = io.BytesIO()
    PILImage.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(
        buf, format="PNG"
    )
    put("gray16.png", buf.getvalue())
    buf = io.BytesIO()
    PILImage.fromarray(rgb).convert("P", palette=PILImage.Palette.ADAPTIVE).save(
        buf, format="GIF", transparency=0
    )
    put("palette.gif", buf.getvalue())
    buf = io.BytesIO()
    PILImage.fromarray(rgb).convert("LA").save(buf, format="PNG")
    put("alpha.png", buf.getvalue())
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", exif=exif.tobytes())
    put("rotated.jpg", buf.getvalue())
    return cases


def test_bad_images_fail_their_items_and_the_job_finishes(
    engine: Engine, tmp_path: Path, make_config: Callable[..., MiningConfig]
) -> None:
    cases = write_inputs(tmp_path / "in")
    with session_scope(engine) as session:
        dataset = repo.create_dataset(session, "mixed")
        for name, uri in cases.items():
            session.add(Image(dataset_id=dataset.id, file_name=name, uri=uri, alt_text="a red car"))
    config = make_config(scripted=True, captioner=False)
    job_id, status = launch_job(engine, "mixed", config)
    assert status == JobStatus.DONE
    with session_scope(engine) as session:
        images = {i.file_name: i for i in session.scalars(select(Image))}
        items = session.scalars(select(JobItem).where(JobItem.job_id == job_id)).all()
        by_image: dict[str, dict[str, JobItem]] = {}
        for item in items:
            by_image.setdefault(images_by_id(images)[item.image_id], {})[item.stage] = item
        expected = {
            "truncated.png": "corrupt",
            "empty.jpg": "empty file (0 bytes)",
            "text.jpg": "not an image format",
            "bomb.png": "decompression bomb",
            "copy-of-good.png": "same bytes",
            "http://127.0.0.1/unreachable.png": "cannot download",
            "missing.png": "file not found",
        }
        for name, reason in expected.items():
            ingest = by_image[name]["ingest"]
            assert ingest.status == JobItemStatus.FAILED, name
            assert reason in (ingest.error or ""), (name, ingest.error)
            assert images[name].status == ImageStatus.FAILED and reason in (
                images[name].error or ""
            )
            later = [by_image[name][s] for s in config.stages if s != "ingest"]
            assert all(
                i.status == JobItemStatus.SKIPPED and i.error == "skipped: ingest failed"
                for i in later
            )
        sizes = {
            "good.png": (64, 48), "cmyk.jpg": (64, 48), "gray16.png": (64, 48),
            "palette.gif": (64, 48), "alpha.png": (64, 48), "rotated.jpg": (48, 64),
        }  # fmt: skip
        for name, size in sizes.items():
            assert images[name].status == ImageStatus.READY, (name, images[name].error)
            assert (images[name].width, images[name].height) == size, name
            assert {i.status for i in by_image[name].values()} == {JobItemStatus.DONE}, name
    assert len(STAGES) == 6


def images_by_id(images: dict[str, Image]) -> dict[int, str]:
    return {i.id: name for name, i in images.items()}


@pytest.mark.parametrize("batch_size", [1, 8])
def test_duplicate_bytes_within_a_batch_and_across_jobs(
    engine: Engine,
    tmp_path: Path,
    make_config: Callable[..., MiningConfig],
    batch_size: int,
) -> None:
    """The first image (by id) with given bytes keeps them, whether its copies share its batch
    or come in a later job; the others fail as duplicates of it."""
    folder = tmp_path / "in"
    folder.mkdir()
    first = np.asarray(scene(0), dtype=np.uint8)
    for name, pixels in (("a.png", first), ("b.png", first), ("c.png", first[::-1].copy())):
        PILImage.fromarray(pixels).save(folder / name)
    config = make_config(scripted=True, captioner=False, batch_size=batch_size)
    with session_scope(engine) as session:
        dataset = repo.create_dataset(session, "dups")
        for name in ("a.png", "b.png", "c.png"):
            session.add(Image(dataset_id=dataset.id, file_name=name, uri=str(folder / name)))
    assert launch_job(engine, "dups", config)[1] == JobStatus.DONE
    with session_scope(engine) as session:
        dataset = repo.get_dataset(session, "dups")
        session.add(Image(dataset_id=dataset.id, file_name="d.png", uri=str(folder / "a.png")))
    assert launch_job(engine, "dups", config)[1] == JobStatus.DONE
    with session_scope(engine) as session:
        images = {i.file_name: i for i in session.scalars(select(Image))}
        ready = {n for n, i in images.items() if i.status == ImageStatus.READY}
        assert ready == {"a.png", "c.png"}
        for name in ("b.png", "d.png"):
            assert f"same bytes (sha256 {images['a.png'].sha256[:12]}) as image " in (
                images[name].error or ""
            )
            assert (images[name].error or "").endswith(f"as image {images['a.png'].id}")
