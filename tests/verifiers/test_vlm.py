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
