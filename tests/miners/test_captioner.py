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


def test_lean_greedy_loop_gives_generates_tokens(
    tiny_vlm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The captioner's decoding loop (VlmRuntime._greedy) gives token for token what HF
    ``generate(do_sample=False)`` gives: left-padded batches, early stop at EOS (finished rows
    padded), one token, many; HF ``generate`` is not called on that path. A generation config
    with anything besides plain greedy decoding (a repetition penalty) goes to ``generate``."""
    import torch

    from annotator.vlm import VlmRuntime

    runtime = VlmRuntime.load(tiny_vlm, "cpu")
    images = _images()
    prompts = ["describe this image", "a red car", "a", "the photo with a cat and a dog on it"]
    calls: list[int] = []
    original = runtime.model.generate

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(runtime.model, "generate", counted)
    batch = runtime.encode(images, prompts)
    assert not bool((batch["attention_mask"] == 1).all())  # the batch is padded
    for max_new_tokens in (1, 5, 12):
        lean = runtime.generate(images, prompts, max_new_tokens)
        assert not calls
        assert lean == runtime.generate_with_hf(images, prompts, max_new_tokens)
        assert calls and len(lean) == len(images)
        one = runtime.generate(images[:1], prompts[:1], max_new_tokens)
        assert one == runtime.generate_with_hf(images[:1], prompts[:1], max_new_tokens)
        calls.clear()

    # EOS: make tokens the random model emits end some rows early, and all rows.
    with torch.inference_mode():
        first = original(**batch, do_sample=False, max_new_tokens=6, pad_token_id=0)
    emitted = first[:, batch["input_ids"].shape[1] :]
    config = runtime.model.generation_config  # the process's cached model: restored after
    for eos in (int(emitted[0, 1]), [int(emitted[r, 2]) for r in range(len(images))]):
        monkeypatch.setattr(config, "eos_token_id", eos)
        runtime.__dict__.pop("_lean_plan", None)
        with torch.inference_mode():
            lean_tokens = runtime._greedy(runtime.encode(images, prompts), 6, 0)
            reference = original(**batch, do_sample=False, max_new_tokens=6, pad_token_id=0)
        assert lean_tokens is not None
        assert torch.equal(lean_tokens, reference[:, batch["input_ids"].shape[1] :])
    monkeypatch.undo()
    monkeypatch.setattr(runtime.model, "generate", counted)
    monkeypatch.setattr(config, "repetition_penalty", 1.3)
    runtime.__dict__.pop("_lean_plan", None)
    calls.clear()
    penalised = runtime.generate(images, prompts, 5)
    assert calls  # generate ran
    assert penalised == runtime.generate_with_hf(images, prompts, 5)
    runtime.__dict__.pop("_lean_plan", None)
