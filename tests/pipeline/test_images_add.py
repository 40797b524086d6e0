"""`annotator images add`: files, directories, URLs from a local HTTP server, alt-text, dedup;
and the job commands end to end through the CLI."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select
from typer.testing import CliRunner

from annotator.cli import app
from annotator.db.models import Image, ImageStatus, Job
from annotator.db.session import session_scope
from annotator.errors import InvalidInputError
from annotator.pipeline.config import MiningConfig
from annotator.services.images import add_images, read_alt_text
from tests.pipeline.conftest import scene


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on 127.0.0.1 serving a temporary directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))

    class Quiet(handler.func):  # type: ignore[name-defined,misc]
        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _images(engine: Engine) -> dict[str, Image]:
    with session_scope(engine) as session:
        return {i.file_name: i for i in session.scalars(select(Image))}


def test_files_directories_and_alt_text(
    engine: Engine, image_dir: Path, alt_text_file: Path, tmp_path: Path
) -> None:
    (image_dir / ".hidden").mkdir()
    scene(9).save(image_dir / ".hidden" / "x.png")
    (tmp_path / "dup").mkdir()
    (tmp_path / "dup" / "again.png").write_bytes((image_dir / "a.png").read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with session_scope(engine) as session:
        result = add_images(
            session, "shapes",
            [str(image_dir), str(tmp_path / "dup" / "again.png"), str(tmp_path / "broken.png"),
             str(tmp_path / "nope.png"), str(tmp_path / "dup")],
            alt_text=read_alt_text(alt_text_file) | {"nothing.png": "a dog"},
        )  # fmt: skip
    assert result.dataset_created and result.added == 4
    assert result.duplicates == 2  # again.png (same bytes as a.png), given twice
    assert result.alt_texts == 3 and result.alt_text_unmatched == ["nothing.png"]
    failed = dict(result.failed)
    assert (
        "not an image format" in failed[str(tmp_path / "broken.png")]
        or "corrupt" in failed[str(tmp_path / "broken.png")]
    )
    assert failed[str(tmp_path / "nope.png")] == "no such file or directory"
    images = _images(engine)
    assert set(images) == {"a.png", "b.png", "sub/c.png", "d.jpg"}  # no notes.txt, no .hidden
    a = images["a.png"]
    assert a.uri == str((image_dir / "a.png").resolve()) and a.status == ImageStatus.PENDING
    assert (
        a.sha256
        and (a.width, a.height) == (64, 48)
        and a.alt_text == "a red car and a striped umbrella"
    )
    assert images["d.jpg"].alt_text is None

    # Adding again changes nothing; --no-recursive leaves sub/ out; --copy stores under media.
    with session_scope(engine) as session:
        again = add_images(session, "shapes", [str(image_dir)])
        flat = add_images(session, "flat", [str(image_dir)], recursive=False, copy=True)
    assert again.added == 0 and again.duplicates == 4
    assert flat.added == 3
    copied = [i for i in _images(engine).values() if i.dataset_id != a.dataset_id]
    assert all("/media/" in i.uri and Path(i.uri).is_file() for i in copied)


def test_urls_from_a_local_server(
    engine: Engine, http_root: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, root = http_root
    scene(1).save(root / "one.png")
    scene(2).save(root / "two.jpg")
    (root / "big.png").write_bytes(b"\x89PNG" + b"\0" * 50_000)
    monkeypatch.setenv("ANNOTATOR_DOWNLOAD_MAX_BYTES", "30000")
    from annotator.config import get_settings

    get_settings.cache_clear()
    with session_scope(engine) as session:
        result = add_images(
            session, "web",
            [f"{base}/one.png", f"{base}/missing.png", f"{base}/big.png", f"{base}/one.png"],
            alt_text={f"{base}/one.png": "a red car"},
        )  # fmt: skip
        later = add_images(session, "web", [f"{base}/two.jpg"], download=False)
    assert result.added == 1 and result.duplicates == 1 and later.added == 1
    failed = dict(result.failed)
    assert failed[f"{base}/missing.png"] == "HTTP 404"
    assert (
        "over the download limit" in failed[f"{base}/big.png"]
        or "exceeds the download limit" in failed[f"{base}/big.png"]
    )
    images = _images(engine)
    one = images[f"{base}/one.png"]
    assert Path(one.uri).is_file() and one.sha256 and one.alt_text == "a red car"
    assert Path(one.uri).read_bytes() == (root / "one.png").read_bytes()
    two = images[f"{base}/two.jpg"]
    assert two.uri == f"{base}/two.jpg" and two.sha256 is None  # fetched by ingest


def test_alt_text_file_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "alt.jsonl"
    bad.write_text('{"file_name": "a.png", "alt_text": "x"}\n\n{"alt_text": "y"}\n')
    with pytest.raises(InvalidInputError, match=r"alt.jsonl:3: needs a 'file_name' or 'uri'"):
        read_alt_text(bad)
    bad.write_text("not json\n")
    with pytest.raises(InvalidInputError, match=r"alt.jsonl:1: not JSON"):
        read_alt_text(bad)


def test_cli_images_add_mine_and_jobs(
    db_url: str,
    image_dir: Path,
    alt_text_file: Path,
    make_config: Callable[..., MiningConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = make_config(scripted=True, captioner=False)
    monkeypatch.setenv("ANNOTATOR_DATABASE_URL", db_url)
    monkeypatch.setenv("ANNOTATOR_DEVICE", "cpu")
    from annotator.config import get_settings

    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    out = run("images", "add", "shapes", str(image_dir), "--alt-text", str(alt_text_file))
    assert "4 added" in out and "alt-text on 3" in out
    proposer = config.proposer
    out = run(
        "mine", "shapes", "--proposer-model", proposer.model or "", "--captioner", "none",
        "--verifier", "tests.pipeline.fakes:ScriptedVerifier", "--verifier-model", "v1",
        "--accept-above", "0.8", "--reject-below", "0.2",
        "-o", "proposer.score_threshold=0.2", "-o", "proposer.max_instances=3",
    )  # fmt: skip
    assert "job 1 done" in out and "pairs to review" in out
    out = run("jobs", "list")
    assert "shapes" in out and "done" in out
    out = run("jobs", "show", "1")
    assert "route" in out and "accept_above 0.8" in out
    result = runner.invoke(app, ["jobs", "cancel", "1"])
    assert result.exit_code == 1 and "already done" in result.output
    result = runner.invoke(app, ["jobs", "resume", "1"])
    assert result.exit_code == 1 and "nothing left to run" in result.output
    result = runner.invoke(app, ["mine", "shapes", "--captioner", "none"])
    assert result.exit_code == 1 and "no new images" in result.output
    # --auto-negative-named reaches the job's routing (off by default, as job 1 shows).
    out = run(
        "mine", "shapes", "--images", "all", "--proposer-model", proposer.model or "",
        "--captioner", "none", "--verifier", "tests.pipeline.fakes:ScriptedVerifier",
        "--verifier-model", "v1", "--auto-negative-named",
    )  # fmt: skip
    assert "job 2 done" in out
    engine = create_engine(db_url)
    try:
        with session_scope(engine) as session:
            named = {
                job.id: job.config["routing"]["auto_negative_named"]
                for job in session.query(Job).order_by(Job.id)
            }
    finally:
        engine.dispose()
    assert named == {1: False, 2: True}
    result = runner.invoke(
        app, ["mine", "shapes", "--accept-above", "0.1", "--reject-below", "0.5"]
    )
    assert result.exit_code == 1 and "reject_below" in result.output
    _ = json
