"""The CLI as a user runs it, on both backends: exit codes, output, files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from annotator.cli import app
from annotator.config import get_settings
from annotator.db.session import get_engine
from tests.factories import coco_dataset, saco_dataset, write_images, write_json

runner = CliRunner()


def run(url: str, *args: str, code: int = 0) -> str:
    get_settings.cache_clear()
    get_engine.cache_clear()
    result = runner.invoke(app, ["--database-url", url, *args])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == code, output
    return " ".join(output.split())


def test_help_lists_the_commands() -> None:
    out = runner.invoke(app, ["--help"]).output
    for command in ("db", "datasets", "import", "export", "versions"):
        assert command in out


def test_unmigrated_database_says_what_to_do(tmp_path: Path) -> None:
    out = run(f"sqlite:///{tmp_path}/new.db", "datasets", "list", code=1)
    assert "has no schema: run `annotator db upgrade` first" in out


def test_full_session(db_url: str, tmp_path: Path) -> None:
    out = run(db_url, "db", "upgrade")
    assert "database at revision" in out
    assert "no datasets yet" in run(db_url, "datasets", "list")
    run(db_url, "datasets", "create", "shapes", "--description", "test shapes")
    assert "already exists" in run(db_url, "datasets", "create", "shapes", code=1)

    data = coco_dataset()
    folder = write_images(tmp_path / "images", data)
    src = write_json(tmp_path / "coco.json", data)
    out = run(db_url, "import", "shapes", str(src), "--format", "coco", "--images", str(folder))
    assert "4 images added" in out and "10 masks" in out
    out = run(
        db_url, "import", "gold", str(write_json(tmp_path / "g.json", saco_dataset())), "-f", "saco"
    )
    assert "(new dataset)" in out and "3 negative pairs" in out

    listing = run(db_url, "datasets", "list")
    assert "shapes" in listing and "gold" in listing

    out_file = tmp_path / "out" / "shapes.json"
    out = run(db_url, "export", "shapes", "--format", "coco", "--out", str(out_file))
    assert "wrote" in out and "10 annotations" in out
    coco = COCO(str(out_file))
    assert len(coco.getAnnIds()) == 10
    assert not out_file.with_name("shapes.json.partial").exists()

    run(db_url, "versions", "create", "shapes", "v1", "--note", "first cut")
    assert "already exists" in run(db_url, "versions", "create", "shapes", "v1", code=1)
    assert "first cut" in run(db_url, "versions", "list", "shapes")
    a, b = tmp_path / "v1a.json", tmp_path / "v1b.json"
    run(db_url, "export", "shapes", "-f", "saco", "--out", str(a), "--version", "v1")
    run(
        db_url,
        "import",
        "shapes",
        str(write_json(tmp_path / "more.json", _renamed(coco_dataset(5)))),
    )
    out = run(db_url, "export", "shapes", "-f", "saco", "--out", str(b), "--version", "v1")
    assert "warning" not in out
    assert a.read_bytes() == b.read_bytes()
    assert json.loads(a.read_bytes())["info"] == {
        "dataset": "shapes",
        "version": "v1",
        "format": "saco",
    }


def test_errors_are_one_line_and_exit_1(db_url: str, tmp_path: Path) -> None:
    out = run(db_url, "export", "missing", "--out", str(tmp_path / "x.json"), code=1)
    assert "error: no dataset named 'missing'" in out
    assert not (tmp_path / "x.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    out = run(db_url, "import", "d", str(bad), code=1)
    assert f"error: {bad}: {bad} is not valid JSON" in out
    out = run(db_url, "import", "d", str(tmp_path / "absent.json"), code=1)
    assert "cannot read" in out
    out = run(db_url, "export", "d", "--out", str(tmp_path / "y.json"), "--format", "yaml", code=2)
    assert "unknown format 'yaml'" in out


def test_unreachable_postgres_is_reported(tmp_path: Path) -> None:
    out = run("postgresql://postgres@127.0.0.1:1/none", "datasets", "list", code=1)
    assert "error: cannot use the database" in out


def _renamed(data: dict) -> dict:  # type: ignore[type-arg]
    for img in data["images"]:
        img["file_name"] = "more_" + img["file_name"]
    return data


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
