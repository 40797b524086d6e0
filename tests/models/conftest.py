"""Fixtures shared by model-backend tests: tiny checkpoints built once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.models.tiny import build_tiny_sam3


@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-initialised SAM 3 checkpoint directory (model, tokenizer, processor)."""
    return build_tiny_sam3(tmp_path_factory.mktemp("tiny-sam3"), seed=0)


@pytest.fixture(scope="session")
def scene() -> Image.Image:
    """A non-square 120 x 200 RGB image with a few flat shapes on noise."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 60, size=(120, 200, 3), dtype=np.uint8)
    pixels[20:70, 30:90] = (220, 40, 40)
    pixels[60:110, 120:190] = (40, 200, 60)
    return Image.fromarray(pixels)
