"""VLM captioner on a tiny random-initialised LLaVA loaded from a local directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.backends import Captioner, resolve_backend
from annotator.errors import ModelLoadError
from annotator.miners.captioner import VlmCaptioner
from tests.models.tiny_vlm import cached_tiny_vlm


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(cached_tiny_vlm(tmp_path_factory))


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (24, 48), (64, 64), (33, 21)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def test_batched_captions_equal_looped_and_are_deterministic(tiny_vlm: str) -> None:
    assert resolve_backend("captioner", "vlm") is VlmCaptioner
    images = _images()
    with VlmCaptioner(tiny_vlm, batch_size=3, max_new_tokens=6) as captioner:
        assert isinstance(captioner, Captioner)
        batched = captioner.caption(images)
        looped = captioner.caption_looped(images)
        again = captioner.caption(images)
    assert len(batched) == len(images)
    assert all(isinstance(c, str) and c for c in batched)
    assert batched == looped == again
    assert len(set(batched)) > 1  # different images, different (random-model) captions


def test_model_version_names_the_checkpoint(tiny_vlm: str) -> None:
    captioner = VlmCaptioner(tiny_vlm)
    name, _, digest = captioner.model_version.partition("@")
    assert name == Path(tiny_vlm).name
    assert len(digest) == 8 and digest != "unknown"


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"no weights|cannot load"):
        VlmCaptioner(str(tmp_path)).load()
