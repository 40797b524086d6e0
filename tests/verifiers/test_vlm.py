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


def test_option_probabilities_of_a_call_are_those_of_each_batch_alone(tiny_vlm: str) -> None:
    """The letters' probabilities are worked out for all of a call's questions at once: the
    same floats as per batch of questions (what the verifier did before), with questions of
    five, six and four options mixed, and a batch whose questions have fewer options than the
    call's longest."""
    counts = [5, 6, 4, 5, 4, 4, 4, 4, 6, 5, 5]
    images = [_image(seed) for seed in range(len(counts))]
    prompts = [f"Is this a thing number {seed % 3}? Answer A-F." for seed in range(len(counts))]
    with VlmVerifier(tiny_vlm, batch_size=4) as verifier:
        runtime = verifier._runtime
        assert runtime is not None
        expected: list[list[float]] = []
        chunks = runtime.encode_chunks(images, prompts, 4)
        for start, batch in zip(range(0, len(images), 4), chunks, strict=True):
            batch_counts = counts[start : start + 4]
            logits = runtime.batch_logits(batch)
            index, padding = verifier._letter_table(logits.device)
            widest = max(batch_counts)
            per_letter = torch.logsumexp(logits[:, index[:widest]] + padding[:widest], dim=2)
            rows: list[list[float]] = [[] for _ in batch_counts]
            for count in set(batch_counts):
                picked = [r for r, c in enumerate(batch_counts) if c == count]
                probs = torch.softmax(per_letter[picked, :count], dim=1).tolist()
                for r, row in zip(picked, probs, strict=True):
                    rows[r] = row
            expected += rows
        assert max(counts[4:8]) < max(counts)  # a batch narrower than the call
        assert verifier.option_probabilities(images, prompts, counts) == expected
        assert verifier.option_probabilities([], [], []) == []


def _processor_resized(verifier: VlmVerifier, image: Image.Image) -> np.ndarray:
    """``image`` as the verifier's image processor resizes it, (H, W, 3) uint8."""
    assert verifier._runtime is not None
    ip = verifier._runtime.processor.image_processor
    channels_first = np.asarray(image).transpose(2, 0, 1)
    return ip.resize(image=channels_first, size=ip.size, resample=ip.resample).transpose(1, 2, 0)


def test_ev_draws_boxes_at_the_model_size_and_uses_absent_question_without_masks(
    tiny_vlm: str,
) -> None:
    """The EV image is the processor's own resize of the photo (shortest edge 32: 40 x 30 ->
    42 x 32) with the boxes drawn on it at that size, 2 pixels wide there."""
    covered = PairQuery(_image(3), "dog", [_rle(5, 5, 20, 15), _rle(22, 10, 38, 28)])
    absent = PairQuery(_image(4), "cat", [])
    with VlmVerifier(tiny_vlm) as verifier:
        image, prompt = verifier.pair_inputs(covered)
        pixels = np.asarray(image)
        plain = _processor_resized(verifier, covered.image)
        assert pixels.shape == plain.shape == (32, 42, 3)
        # Box 1: x 5..20 -> 5.25..21 (columns 5..20), y 5..15 -> 5.3..16 (rows 5..15);
        # box 2: x 22..38 -> 23.1..39.9 (23..39), y 10..28 -> 10.7..29.9 (11..29).
        outline = np.zeros((32, 42), dtype=bool)
        for x0, y0, x1, y1 in ((5, 5, 21, 16), (23, 11, 40, 30)):
            outline[y0:y1, x0:x1] = True
            outline[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = False
        assert (pixels[outline] == BOX_COLOR).all()
        np.testing.assert_array_equal(pixels[~outline], plain[~outline])
        assert "2 red box(es)" in prompt and "F. " in prompt
        absent_image, absent_prompt = verifier.pair_inputs(absent)
        np.testing.assert_array_equal(
            np.asarray(absent_image), _processor_resized(verifier, absent.image)
        )
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


def test_ev_draws_at_full_resolution_for_processors_that_do_not_resize_in_one_step(
    tiny_vlm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from annotator.vlm import VlmRuntime

    monkeypatch.setattr(VlmRuntime, "model_sized", lambda self, image: None)
    covered = PairQuery(_image(3), "dog", [_rle(5, 5, 20, 15), _rle(22, 10, 38, 28)])
    with VlmVerifier(tiny_vlm) as verifier:
        pixels = np.asarray(verifier.pair_inputs(covered)[0])
    assert pixels.shape == (30, 40, 3)
    assert (pixels[5, 5:20] == BOX_COLOR).all() and (pixels[10, 22:38] == BOX_COLOR).all()


def test_a_photo_is_resized_once_for_its_caption_and_its_ev_questions(
    tiny_vlm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image processor's resize of a photo is kept per image object: the captioner and
    the EV questions of the same photo (on one worker) resize it once."""
    from annotator import vlm as vlm_module
    from annotator.miners.captioner import VlmCaptioner

    photo = _image(30, 64, 48)
    with VlmVerifier(tiny_vlm) as verifier, VlmCaptioner(tiny_vlm, max_new_tokens=2) as captioner:
        calls: list[tuple[int, int]] = []
        original = vlm_module._pil_resize

        def counted(image: Image.Image, *args: object) -> object:
            calls.append(image.size)
            return original(image, *args)

        captioner.caption([_image(31, 64, 48)])  # the prompt learnt (a processor call)
        monkeypatch.setattr(vlm_module, "_pil_resize", counted)
        captioner.caption([photo])
        queries = [PairQuery(photo, "dog", [_rle(5, 5, 20, 15, h=48, w=64)]),
                   PairQuery(photo, "cat", [])]  # fmt: skip
        verifier.verify_pairs(queries)
        verifier.pair_inputs(queries[0])
        assert calls == [(64, 48)]
        verifier.pair_inputs(PairQuery(_image(30, 64, 48), "dog", []))  # same pixels, new image
        assert len(calls) == 2


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
        # Photos the processor resizes (as captions send them): resized by its own resize
        # step, then the numpy steps.
        photos = [(_image(14, 50, 40), "Describe this photo ."), (_image(15, 20, 60), "Describe")]
        for inputs in (mv, ev, mv[:1], [mv[0], ev[0], mv[3]], photos, [photos[0], mv[1]]):
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


def test_new_prompts_of_a_batch_are_learnt_in_one_processor_call(
    tiny_vlm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompts a batch asks for the first time (of different lengths) are checked and
    tokenised in one processor call; each prompt's ids are those of a processor call on it
    alone."""
    queries = _mv_queries()
    with VlmVerifier(tiny_vlm) as verifier:
        runtime = verifier._runtime
        assert runtime is not None
        inputs = [verifier.mask_inputs(q) for q in queries]
        images, prompts = [i for i, _ in inputs], [p for _, p in inputs]
        assert len(set(prompts)) == 3
        runtime._fast = None
        processor = runtime.processor
        calls: list[int] = []

        class Counted:
            def __getattr__(self, name: str) -> object:
                return getattr(processor, name)

            def __call__(self, *args: object, **kwargs: object) -> object:
                calls.append(len(kwargs.get("text") or []))  # type: ignore[arg-type]
                return processor(*args, **kwargs)

        monkeypatch.setattr(runtime, "processor", Counted())
        runtime.encode(images, prompts)
        assert calls == [3]
        fast = runtime._fast
        assert fast is not None and fast.enabled
        for image, prompt in zip(images, prompts, strict=True):
            alone = processor(
                images=[[Image.fromarray(np.asarray(image))]],
                text=[runtime.chat_text(prompt)],
                return_tensors="pt",
            )
            shape = tuple(alone["pixel_values"].shape[1:])
            learnt = fast._ids[(runtime.chat_text(prompt), shape)]
            assert learnt.tolist() == alone["input_ids"][0].tolist()
        runtime.encode(images, prompts)
        assert calls == [3]  # nothing new: no processor call


def test_new_prompts_of_a_call_are_learnt_in_one_processor_call_for_all_its_chunks(
    tiny_vlm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``encode_chunks`` learns every prompt new to the call in one processor call (not one
    per chunk that asks a new one); each chunk is still exactly the processor's tensors, and
    each prompt's ids are those of a processor call on it alone."""
    queries = _mv_queries()
    with VlmVerifier(tiny_vlm) as verifier:
        runtime = verifier._runtime
        assert runtime is not None
        inputs = [verifier.mask_inputs(q) for q in queries]
        images, prompts = [i for i, _ in inputs], [p for _, p in inputs]
        runtime._fast = None
        processor = runtime.processor
        calls: list[int] = []

        class Counted:
            def __getattr__(self, name: str) -> object:
                return getattr(processor, name)

            def __call__(self, *args: object, **kwargs: object) -> object:
                calls.append(len(kwargs.get("text") or []))  # type: ignore[arg-type]
                return processor(*args, **kwargs)

        monkeypatch.setattr(runtime, "processor", Counted())
        chunks = runtime.encode_chunks(images, prompts, 2)  # "dog" x2, "dog" + umbrella, "cat" x2
        assert calls == [3]
        monkeypatch.setattr(runtime, "processor", processor)
        for start, chunk in zip(range(0, len(images), 2), chunks, strict=True):
            reference = runtime.encode_with_processor(
                images[start : start + 2], prompts[start : start + 2]
            )
            _assert_same_inputs(chunk, reference)
        fast = runtime._fast
        assert fast is not None and fast.enabled
        for image, prompt in zip(images, prompts, strict=True):
            alone = processor(
                images=[[Image.fromarray(np.asarray(image))]],
                text=[runtime.chat_text(prompt)],
                return_tensors="pt",
            )
            shape = tuple(alone["pixel_values"].shape[1:])
            learnt = fast._ids[(runtime.chat_text(prompt), shape)]
            assert learnt.tolist() == alone["input_ids"][0].tolist()
        monkeypatch.setattr(runtime, "processor", Counted())
        runtime.encode_chunks(images, prompts, 2)
        assert calls == [3]  # nothing new: no processor call


@pytest.mark.parametrize("setting", ["fixed size", "padded"])
def test_fast_inputs_follow_other_image_processor_settings(tiny_vlm: str, setting: str) -> None:
    """A processor that resizes to a fixed size without cropping (the resize and the numpy
    steps rebuilt), or one that pads to a square first (the pixels from its image part): the
    token ids from the cache; either way its exact tensors."""
    import copy

    import torch

    from annotator.vlm import FastInputs, _numpy_pixels

    with VlmVerifier(tiny_vlm) as verifier:
        assert verifier._runtime is not None
        processor = copy.deepcopy(verifier._runtime.processor)
    image_processor = processor.image_processor
    if setting == "fixed size":
        image_processor.size = {"height": 32, "width": 32}
        image_processor.do_center_crop = False
        image_processor.image_mean = 0.5
    else:
        image_processor.do_pad = True
    images = [_image(20, 70, 32), _image(21, 33, 40)]
    texts = [
        processor.apply_chat_template(user_message(p), add_generation_prompt=True)
        for p in ("Is it a dog ?", "Is it a red cat or a dog ?")
    ]
    rebuilt = _numpy_pixels(image_processor, images, {})
    if setting == "fixed size":
        assert rebuilt is not None
        assert torch.equal(
            torch.from_numpy(rebuilt),
            processor(images=[[i] for i in images], return_tensors="pt")["pixel_values"],
        )
    else:
        assert rebuilt is None
    fast = FastInputs(processor)
    for _ in range(2):  # learning the prompts, then from the cache
        out = fast.encode(images, texts, {})
        reference = processor(
            images=[[i] for i in images], text=texts, padding=True, padding_side="left",
            return_tensors="pt",
        )  # fmt: skip
        _assert_same_inputs(out, reference)
    assert fast.enabled


@pytest.mark.parametrize(
    "steps",
    [
        {},
        {"do_rescale": False},
        {"do_normalize": False},
        {"do_rescale": False, "do_normalize": False},
        {"image_mean": [0.1, 0.9, 0.3], "image_std": 0.7, "rescale_factor": 1 / 127},
    ],
)
def test_numpy_pixels_per_level_tables_are_the_processors_values(
    tiny_vlm: str, steps: dict[str, object]
) -> None:
    """The rescale/normalize steps read off per-channel tables of the 256 levels: bit for bit
    the processor's float32 values, whichever steps it runs, for images of every level."""
    import copy

    import torch

    from annotator.vlm import _numpy_pixels

    with VlmVerifier(tiny_vlm) as verifier:
        assert verifier._runtime is not None
        processor = copy.deepcopy(verifier._runtime.processor)
    image_processor = processor.image_processor
    for name, value in steps.items():
        setattr(image_processor, name, value)
    every_level = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    images = [Image.fromarray(every_level.astype(np.uint8)).resize((40, 32)), _image(5, 50, 32)]
    rebuilt = _numpy_pixels(image_processor, images, {})
    assert rebuilt is not None and rebuilt.dtype == np.float32
    reference = processor(images=[[i] for i in images], return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.from_numpy(rebuilt), reference)


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
