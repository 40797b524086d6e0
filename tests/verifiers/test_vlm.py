"""VLM verifier: MV/EV multiple choice read from next-token probabilities (tiny LLaVA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from annotator import masks
from annotator.backends import MaskQuery, PairQuery, Verifier, resolve_backend
from annotator.verifiers.render import BOX_COLOR
from annotator.verifiers.vlm import EV_ABSENT_OPTIONS, EV_OPTIONS, MV_OPTIONS, VlmVerifier
from annotator.vlm import user_message
from tests.models.tiny_vlm import cached_tiny_vlm


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(cached_tiny_vlm(tmp_path_factory))


def _image(seed: int, w: int = 40, h: int = 30) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _rle(x0: int, y0: int, x1: int, y1: int, h: int = 30, w: int = 40) -> masks.RLE:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return masks.encode(mask)


def _manual_option_probs(
    verifier: VlmVerifier, image: Image.Image, prompt: str, n: int
) -> list[float]:
    """One unpadded forward per question; softmax over the option letters' logits."""
    runtime = verifier._runtime
    assert runtime is not None
    text = runtime.processor.apply_chat_template(user_message(prompt), add_generation_prompt=True)
    batch = runtime.processor(images=[image], text=[text], return_tensors="pt")
    with torch.no_grad():
        logits = runtime.model(**batch).logits[0, -1]
    ids = runtime.tokenizer.convert_tokens_to_ids(list("ABCDEF"[:n]))
    return torch.softmax(logits[ids], dim=0).tolist()


def test_mv_p_accept_is_softmax_over_option_letters(tiny_vlm: str) -> None:
    assert resolve_backend("verifier", "vlm") is VlmVerifier
    queries = [
        MaskQuery(_image(0), "dog", _rle(5, 5, 20, 15)),
        MaskQuery(_image(1), "red car", _rle(0, 0, 40, 30)),
        MaskQuery(_image(2, 24, 48), "tree", _rle(2, 30, 10, 48, h=48, w=24)),
    ]
    with VlmVerifier(tiny_vlm, batch_size=2) as verifier:
        assert isinstance(verifier, Verifier)
        verdicts = verifier.verify_masks(queries)
        for query, verdict in zip(queries, verdicts, strict=True):
            image, prompt = verifier.mask_inputs(query)
            probs = _manual_option_probs(verifier, image, prompt, len(MV_OPTIONS))
            assert 0.0 <= verdict.p_accept <= 1.0
            assert verdict.p_accept == pytest.approx(probs[0] + probs[1], abs=1e-4)
            assert verdict.label == MV_OPTIONS[int(np.argmax(probs))].label
        # deterministic, and batching does not change the answer
        verifier.batch_size = 1
        assert [v.p_accept for v in verifier.verify_masks(queries)] == pytest.approx(
            [v.p_accept for v in verdicts], abs=1e-5
        )
    assert verifier.verify_masks([]) == []


def test_ev_renders_boxes_and_uses_absent_question_without_masks(tiny_vlm: str) -> None:
    covered = PairQuery(_image(3), "dog", [_rle(5, 5, 20, 15), _rle(22, 10, 38, 28)])
    absent = PairQuery(_image(4), "cat", [])
    with VlmVerifier(tiny_vlm) as verifier:
        image, prompt = verifier.pair_inputs(covered)
        pixels = np.asarray(image)
        assert (pixels[5, 5:20] == BOX_COLOR).all() and (pixels[10, 22:38] == BOX_COLOR).all()
        assert "2 red box(es)" in prompt and "F. " in prompt
        absent_image, absent_prompt = verifier.pair_inputs(absent)
        np.testing.assert_array_equal(np.asarray(absent_image), np.asarray(absent.image))
        assert "really absent" in absent_prompt and "E. " not in absent_prompt
        verdicts = verifier.verify_pairs([covered, absent])
        for (img, prm), options, verdict in zip(
            [(image, prompt), (absent_image, absent_prompt)],
            [EV_OPTIONS, EV_ABSENT_OPTIONS],
            verdicts,
            strict=True,
        ):
            probs = _manual_option_probs(verifier, img, prm, len(options))
            assert verdict.p_accept == pytest.approx(probs[0], abs=1e-4)
            assert verdict.label in {o.label for o in options}


# ------------------------------------------------------- model inputs without the processor


def _assert_same_inputs(fast: object, reference: object) -> None:
    assert set(fast) == set(reference)  # type: ignore[call-overload]
    for key in reference:  # type: ignore[attr-defined]
        a, b = fast[key], reference[key]  # type: ignore[index]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert torch.equal(a, b), key


def _mv_queries() -> list[MaskQuery]:
    """Masks of two images and three phrases (prompts of different lengths: left padding),
    small and large (different crop widths)."""
    first, second = _image(10, 64, 48), _image(11, 40, 30)
    return [
        MaskQuery(first, "dog", _rle(5, 5, 20, 15, h=48, w=64)),
        MaskQuery(first, "dog", _rle(0, 0, 64, 48, h=48, w=64)),
        MaskQuery(first, "dog", _rle(40, 30, 44, 33, h=48, w=64)),
        MaskQuery(first, "red striped umbrella", _rle(10, 20, 50, 40, h=48, w=64)),
        MaskQuery(second, "cat", _rle(1, 2, 39, 29)),
        MaskQuery(second, "cat", _rle(30, 20, 40, 30)),
    ]


def test_fast_inputs_are_exactly_the_processors(tiny_vlm: str) -> None:
    """MV renderings (already at the model's size: pixels in numpy) and EV images (resized:
    pixels from the image processor), mixed prompt lengths: the same tensors as the HF
    processor, and the same p_accept."""
    queries = _mv_queries()
    pairs = [
        PairQuery(_image(12), "dog", [_rle(5, 5, 20, 15), _rle(22, 10, 38, 28)]),
        PairQuery(_image(13, 50, 20), "cat", []),
    ]
    with VlmVerifier(tiny_vlm, batch_size=4) as verifier:
        runtime = verifier._runtime
        assert runtime is not None and runtime.fast_inputs
        mv = [verifier.mask_inputs(q) for q in queries]
        ev = [verifier.pair_inputs(q) for q in pairs]
        for inputs in (mv, ev, mv[:1], [mv[0], ev[0], mv[3]]):
            images, prompts = [i for i, _ in inputs], [p for _, p in inputs]
            _assert_same_inputs(
                runtime.encode(images, prompts), runtime.encode_with_processor(images, prompts)
            )
        fast = runtime._fast
        assert fast is not None and fast.enabled
        assert len(fast._ids) >= 5  # one processor call per prompt, not per question
        mv_fast = verifier.verify_masks(queries)
        ev_fast = verifier.verify_pairs(pairs)
        runtime.fast_inputs = False
        assert [v.p_accept for v in verifier.verify_masks(queries)] == [v.p_accept for v in mv_fast]
        assert verifier.verify_pairs(pairs) == ev_fast
    with VlmVerifier(tiny_vlm, fast_inputs=False) as verifier:
        assert verifier._runtime is not None and not verifier._runtime.fast_inputs


def test_fast_inputs_follow_other_image_processor_settings(tiny_vlm: str) -> None:
    """A processor that resizes to a fixed size without cropping: the pixels come from its
    image part (not rebuilt in numpy), the token ids from the cache; still its exact tensors."""
    import copy

    from annotator.vlm import FastInputs, _numpy_pixels

    with VlmVerifier(tiny_vlm) as verifier:
        assert verifier._runtime is not None
        processor = copy.deepcopy(verifier._runtime.processor)
    image_processor = processor.image_processor
    image_processor.size = {"height": 32, "width": 32}
    image_processor.do_center_crop = False
    image_processor.image_mean = 0.5
    images = [_image(20, 70, 32), _image(21, 33, 40)]
    texts = [
        processor.apply_chat_template(user_message(p), add_generation_prompt=True)
        for p in ("Is it a dog ?", "Is it a red cat or a dog ?")
    ]
    assert _numpy_pixels(image_processor, images, {}) is None
    fast = FastInputs(processor)
    for _ in range(2):  # learning the prompts, then from the cache
        out = fast.encode(images, texts, {})
        reference = processor(
            images=[[i] for i in images], text=texts, padding=True, padding_side="left",
            return_tensors="pt",
        )  # fmt: skip
        _assert_same_inputs(out, reference)
    assert fast.enabled


def test_fast_inputs_turn_off_when_they_would_differ(
    tiny_vlm: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The check against the processor on a new prompt: a fast path that would give other
    pixels turns itself off, and the processor's inputs are used."""
    from annotator import vlm as vlm_module

    original = vlm_module._numpy_pixels

    def shifted(*args: object) -> np.ndarray | None:
        values = original(*args)  # type: ignore[arg-type]
        return None if values is None else values + np.float32(1e-3)

    monkeypatch.setattr(vlm_module, "_numpy_pixels", shifted)
    queries = _mv_queries()[:2]
    with VlmVerifier(tiny_vlm) as verifier:
        runtime = verifier._runtime
        assert runtime is not None
        inputs = [verifier.mask_inputs(q) for q in queries]
        images, prompts = [i for i, _ in inputs], [p for _, p in inputs]
        with caplog.at_level("WARNING", logger="annotator.vlm"):
            batch = runtime.encode(images, prompts)
        assert runtime._fast is not None and not runtime._fast.enabled
        assert "pixel values differ" in caplog.text
        _assert_same_inputs(batch, runtime.encode_with_processor(images, prompts))


def test_fast_inputs_turn_off_for_processors_they_do_not_rebuild(
    tiny_vlm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A processor whose image part gives more than one pixel row per image (here: an extra
    ``image_sizes``, as LLaVA-NeXT's does): the fast path turns itself off at once, so the
    processor is not run twice per batch, and its inputs are used."""
    from annotator import vlm as vlm_module

    monkeypatch.setattr(vlm_module, "_numpy_pixels", lambda *args: None)
    with VlmVerifier(tiny_vlm) as verifier:
        runtime = verifier._runtime
        assert runtime is not None
        original = type(runtime.processor).__call__

        def with_sizes(self: object, *args: object, **kwargs: object) -> object:
            out = original(self, *args, **kwargs)  # type: ignore[arg-type]
            out["image_sizes"] = torch.ones((out["pixel_values"].shape[0], 2), dtype=torch.long)
            return out

        monkeypatch.setattr(type(runtime.processor), "__call__", with_sizes)
        inputs = [verifier.mask_inputs(q) for q in _mv_queries()[:3]]
        images, prompts = [i for i, _ in inputs], [p for _, p in inputs]
        batch = runtime.encode(images, prompts)
        assert runtime._fast is not None and not runtime._fast.enabled
        assert "image_sizes" in batch
        _assert_same_inputs(batch, runtime.encode_with_processor(images, prompts))
