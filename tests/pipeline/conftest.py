"""Fixtures of the pipeline tests: tiny checkpoints (built once), small images, job configs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import Engine

from annotator.pipeline import stages
from annotator.pipeline.backends import clear_backends
from annotator.pipeline.config import BackendSpec, MiningConfig
from tests.models.tiny import build_tiny_sam3
from tests.models.tiny_vlm import cached_tiny_vlm
from tests.pipeline import fakes

# Phrases the tiny tokenizers know (tests/models/tiny.py VOCAB_WORDS).
ALT_TEXTS = {
    "a.png": "a red car and a striped umbrella",
    "b.png": "a blue car near a tree",
    "sub/c.png": "a tabby cat on a wooden table",
}


@pytest.fixture(scope="session")
def tiny_sam3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sam3(tmp_path_factory.mktemp("pipeline-sam3"), seed=0)


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_tiny_vlm(tmp_path_factory)


@pytest.fixture(autouse=True)
def _fresh_pipeline_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ANNOTATOR_MEDIA_ROOT", str(tmp_path / "media"))
    stages.clear_caches()
    fakes.reset()
    yield
    stages.clear_caches()
    clear_backends()


def scene(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A small RGB image: noise with two flat rectangles."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    pixels[h // 5 : h // 2, w // 6 : w // 2] = (200, 40, 40)
    pixels[h // 2 : h - 4, w // 2 : w - 4] = (40, 180, 60)
    return Image.fromarray(pixels)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """a.png, b.png, sub/c.png, d.jpg (no alt-text) and a non-image file."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    scene(1).save(root / "a.png")
    scene(2).save(root / "b.png")
    scene(3).save(root / "sub" / "c.png")
    scene(4).save(root / "d.jpg", quality=90)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def alt_text_file(tmp_path: Path) -> Path:
    path = tmp_path / "alt.jsonl"
    path.write_text(
        "\n".join(json.dumps({"file_name": k, "alt_text": v}) for k, v in ALT_TEXTS.items())
    )
    return path


@pytest.fixture
def make_config(tiny_sam3: Path, tiny_vlm: Path) -> Callable[..., MiningConfig]:
    """A job config on the tiny models; ``scripted=True`` swaps in the scripted verifier."""

    def make(*, scripted: bool = False, captioner: bool = True, **overrides: Any) -> MiningConfig:
        verifier = (
            BackendSpec(name="tests.pipeline.fakes:ScriptedVerifier", model="v1")
            if scripted
            else BackendSpec(name="vlm", model=str(tiny_vlm), options={"batch_size": 16})
        )
        data: dict[str, Any] = {
            "proposer": BackendSpec(
                name="sam3",
                model=str(tiny_sam3),
                options={"score_threshold": 0.2, "max_instances": 5},
            ),
            "captioner": (
                BackendSpec(name="vlm", model=str(tiny_vlm), options={"max_new_tokens": 8})
                if captioner
                else None
            ),
            "parser": BackendSpec(name="offline"),
            "verifier": verifier,
            "device": "cpu",
            "routing": {"accept_above": 0.8, "reject_below": 0.2},
            "hard_negative_min_iou": 0.05,
        }
        data.update(overrides)
        return MiningConfig.model_validate(data)

    return make


def add_dataset(engine: Engine, name: str, image_dir: Path, alt_text_file: Path | None) -> None:
    from annotator.db.session import session_scope
    from annotator.services.images import add_images, read_alt_text

    texts = read_alt_text(alt_text_file) if alt_text_file else None
    with session_scope(engine) as session:
        result = add_images(session, name, [str(image_dir)], alt_text=texts)
    assert not result.failed, result.failed
