"""The transformers SAM 3 proposer on a tiny random-initialised checkpoint loaded from disk."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from annotator import masks, modeling
from annotator.backends import MaskProposer, PhraseProposals, resolve_backend
from annotator.errors import ModelLoadError
from annotator.miners.sam3 import Preprocessing, Sam3Proposer
from tests.models.tiny import build_tiny_sam3

PHRASES = ["striped umbrella", "cat", "tabby cat", "red car", "white sneaker"]
# Random-init scores sit around 0.05-0.2 (see tiny.py); this keeps a few instances per phrase.
THRESHOLD = 0.1


def _assert_same(a: list[PhraseProposals], b: list[PhraseProposals], atol: float = 1e-5) -> None:
    assert [p.phrase for p in a] == [p.phrase for p in b]
    for left, right in zip(a, b, strict=True):
        assert len(left.masks) == len(right.masks), left.phrase
        np.testing.assert_allclose(left.scores, right.scores, atol=atol)
        np.testing.assert_allclose(left.boxes, right.boxes, atol=1e-3)
        assert abs(left.presence - right.presence) < atol
        if left.masks:
            ious = masks.iou_matrix(left.masks, right.masks)
            assert np.diag(ious).min() > 0.99, left.phrase


@pytest.fixture(scope="module")
def proposer(tiny_sam3_dir: Path) -> Sam3Proposer:
    with Sam3Proposer(str(tiny_sam3_dir), device="cpu", score_threshold=THRESHOLD) as loaded:
        yield loaded


def test_registered_and_satisfies_the_protocol(tiny_sam3_dir: Path) -> None:
    assert resolve_backend("proposer", "sam3") is Sam3Proposer
    assert isinstance(Sam3Proposer(str(tiny_sam3_dir)), MaskProposer)


def test_finds_instances_sized_to_the_original_image(
    proposer: Sam3Proposer, scene: Image.Image
) -> None:
    found = proposer.propose(scene, PHRASES)
    assert [p.phrase for p in found] == PHRASES
    assert sum(len(p.masks) for p in found) > 0, "threshold should keep some instances"
    for proposals in found:
        k = len(proposals.masks)
        assert proposals.boxes.shape == (k, 4) and proposals.boxes.dtype == np.float32
        assert proposals.scores.shape == (k,) and proposals.scores.dtype == np.float32
        assert np.all(proposals.scores > THRESHOLD) and np.all(proposals.scores <= 1)
        assert np.all(np.diff(proposals.scores) <= 0), "descending scores"
        assert 0.0 <= proposals.presence <= 1.0
        # score = sigmoid(logit) * presence, so no instance can outscore its phrase's presence
        assert np.all(proposals.scores <= proposals.presence + 1e-6)
        x, y, w, h = proposals.boxes.T if k else (np.zeros(0),) * 4
        assert np.all(x >= 0) and np.all(y >= 0) and np.all(w >= 0) and np.all(h >= 0)
        assert np.all(x + w <= 200 + 1e-3) and np.all(y + h <= 120 + 1e-3)
        for rle in proposals.masks:
            assert rle["size"] == [120, 200]
            assert isinstance(rle["counts"], str)


def test_batched_equals_looped(proposer: Sam3Proposer, scene: Image.Image) -> None:
    _assert_same(proposer.propose(scene, PHRASES), proposer.propose_looped(scene, PHRASES))


def test_batch_size_is_bounded_and_vision_runs_once(
    tiny_sam3_dir: Path, proposer: Sam3Proposer, scene: Image.Image
) -> None:
    small = Sam3Proposer(str(tiny_sam3_dir), device="cpu", score_threshold=THRESHOLD, batch_size=2)
    with small:
        model = small._model
        assert model is proposer._model, "weights are loaded once per process"
        detector_batches: list[int] = []
        vision_calls: list[int] = []
        hooks = [
            model.detr_decoder.register_forward_hook(
                lambda _m, _a, _kw, out: detector_batches.append(out.presence_logits.shape[1]),
                with_kwargs=True,
            ),
            model.vision_encoder.register_forward_hook(lambda *_: vision_calls.append(1)),
        ]
        try:
            found = small.propose(scene, PHRASES)
        finally:
            for hook in hooks:
                hook.remove()
    assert detector_batches == [2, 2, 1]
    assert vision_calls == [1]
    _assert_same(found, proposer.propose(scene, PHRASES))


def test_rle_is_exactly_the_thresholded_model_output(
    proposer: Sam3Proposer, scene: Image.Image
) -> None:
    """Recompute the official post-processing from the raw model output and compare."""
    found = proposer.propose(scene, PHRASES[:2])
    model = proposer._model
    assert model is not None and proposer._preprocessing is not None
    with torch.inference_mode():
        pixels = proposer._preprocessing(scene, torch.device("cpu"), torch.float32)
        ids, attention = proposer._tokenize(PHRASES[:2])
        out = model(
            pixel_values=pixels.expand(2, -1, -1, -1), input_ids=ids, attention_mask=attention
        )
    for index, proposals in enumerate(found):
        scores = out.pred_logits[index].sigmoid() * out.presence_logits[index].sigmoid()
        keep = torch.nonzero(scores > THRESHOLD).squeeze(1)
        keep = keep[scores[keep].argsort(descending=True)]
        np.testing.assert_allclose(proposals.scores, scores[keep].numpy(), atol=1e-5)
        probabilities = F.interpolate(
            out.pred_masks[index, keep].sigmoid()[None], size=(120, 200), mode="bilinear"
        )[0]
        expected = (probabilities > 0.5).numpy()
        decoded = masks.decode_many(proposals.masks) if proposals.masks else np.zeros((0, 120, 200))
        assert decoded.shape == expected.shape
        assert np.array_equal(decoded, expected)
        xyxy = out.pred_boxes[index, keep].numpy() * [200, 120, 200, 120]
        np.testing.assert_allclose(proposals.boxes[:, :2], xyxy[:, :2].clip(0), atol=1e-3)


def test_rle_from_device_boxes_equals_encoding_the_full_masks(proposer: Sam3Proposer) -> None:
    """``_masks_to_rle`` (boxes found on the device, only their pixels encoded) gives the very
    strings pycocotools gives for the full thresholded masks: blobs, empty and full masks,
    masks touching every border, single pixels, a batch split by the upsampling budget."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(9, 16, 16, generator=generator) * 4
    logits[0] = -10.0  # empty
    logits[1] = 10.0  # full
    logits[2] = -10.0
    logits[2, 0, :] = logits[2, -1, :] = logits[2, :, 0] = logits[2, :, -1] = 10.0  # borders
    logits[3] = -10.0
    logits[3, 7, 9] = 10.0  # a few pixels
    logits[4] = -10.0
    logits[4, :, 5:9] = 10.0  # full-height band
    logits[5] = -10.0
    logits[5, 10:, 12:] = 10.0  # bottom-right corner
    logits[6] = 0.0  # probabilities at the threshold, one just above it
    logits[6, 3, 12] = 1e-6
    for height, width in [(120, 200), (7, 5), (1, 1), (33, 480), (16, 16), (480, 640)]:
        resized = F.interpolate(
            logits.sigmoid()[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
        expected = masks.encode_many((resized > proposer.mask_threshold).numpy())
        assert proposer._masks_to_rle(logits, height, width) == expected


def test_mask_threshold_and_max_instances(tiny_sam3_dir: Path, scene: Image.Image) -> None:
    loose = Sam3Proposer(str(tiny_sam3_dir), device="cpu", score_threshold=0.0)
    strict = Sam3Proposer(
        str(tiny_sam3_dir), device="cpu", score_threshold=0.0, mask_threshold=0.9, max_instances=3
    )
    with loose, strict:
        everything = loose.propose(scene, ["cat"])[0]
        top = strict.propose(scene, ["cat"])[0]
    assert len(everything.masks) == 20  # all DETR queries of the tiny config
    assert len(top.masks) == 3
    np.testing.assert_allclose(top.scores, everything.scores[:3], atol=1e-6)
    loose_area = [masks.area(m) for m in everything.masks[:3]]
    strict_area = [masks.area(m) for m in top.masks]
    assert all(s <= a for s, a in zip(strict_area, loose_area, strict=True))
    assert sum(strict_area) < sum(loose_area)


def test_deterministic_across_runs_and_rebuilt_checkpoints(
    tmp_path: Path, tiny_sam3_dir: Path, proposer: Sam3Proposer, scene: Image.Image
) -> None:
    first = proposer.propose(scene, PHRASES)
    second = proposer.propose(scene, PHRASES)
    rebuilt = build_tiny_sam3(tmp_path / "again", seed=0)
    assert modeling.checkpoint_hash(str(rebuilt)) == modeling.checkpoint_hash(str(tiny_sam3_dir))
    with Sam3Proposer(str(rebuilt), device="cpu", score_threshold=THRESHOLD) as other:
        third = other.propose(scene, PHRASES)
    for a, b, c in zip(first, second, third, strict=True):
        assert a.masks == b.masks == c.masks
        assert np.array_equal(a.scores, b.scores) and np.array_equal(a.scores, c.scores)
        assert np.array_equal(a.boxes, c.boxes)


def test_image_modes_are_converted(proposer: Sam3Proposer, scene: Image.Image) -> None:
    rgb = proposer.propose(scene, ["cat"])[0]
    rgba = proposer.propose(scene.convert("RGBA"), ["cat"])[0]  # opaque: same pixels
    assert rgb.masks == rgba.masks
    gray = proposer.propose(scene.convert("L"), ["cat"])[0]
    assert all(m["size"] == [120, 200] for m in gray.masks)


def test_empty_phrase_list(proposer: Sam3Proposer, scene: Image.Image) -> None:
    assert proposer.propose(scene, []) == []


def test_phrases_are_tokenized_once_with_the_rows_of_a_batch_call(
    tiny_sam3_dir: Path,
) -> None:
    """A phrase's token ids and mask are kept after its first call: any batch of phrases,
    known or new, repeated or not, long enough to be cut, gets the tensors one tokenizer call
    on the whole batch gives; a reloaded proposer tokenizes again."""
    with Sam3Proposer(str(tiny_sam3_dir), device="cpu") as proposer:
        assert proposer._tokenizer is not None and proposer._model is not None
        tokenizer = proposer._tokenizer
        length = proposer._model.config.text_config.max_position_embeddings
        long = " ".join(["striped red umbrella"] * 20)
        calls = 0
        original = proposer._tokenizer

        def counting(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return original(*args, **kwargs)

        proposer._tokenizer = counting  # type: ignore[assignment]
        batches = [["cat", "red car"], ["red car", long, "cat", "cat"], ["tabby cat"], ["cat"]]
        for batch in batches:
            ids, mask = proposer._tokenize(batch)
            expected = tokenizer(
                batch, padding="max_length", truncation=True, max_length=length,
                return_tensors="pt",
            )  # fmt: skip
            assert ids.dtype == mask.dtype == torch.int64
            assert torch.equal(ids, expected["input_ids"]) and ids.shape == (len(batch), length)
            assert torch.equal(mask, expected["attention_mask"])
        assert calls == 3  # the last batch was known
        proposer.release()
        proposer.load()
        assert proposer._token_rows == {}


def test_model_version_names_the_checkpoint_and_its_hash(
    tmp_path: Path, tiny_sam3_dir: Path, proposer: Sam3Proposer
) -> None:
    digest = modeling.checkpoint_hash(str(tiny_sam3_dir))
    assert len(digest) == 8 and digest != "unknown"
    assert proposer.model_version == f"{tiny_sam3_dir.name}@{digest}"
    other = build_tiny_sam3(tmp_path / "seed1", seed=1)
    assert modeling.checkpoint_hash(str(other)) != digest


def test_preprocessing_matches_the_processor_config() -> None:
    config = {
        "size": {"height": 56, "width": 56},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "rescale_factor": 1 / 255,
    }
    prep = Preprocessing.from_config(config)
    white = Image.new("RGB", (90, 30), (255, 255, 255))
    pixels = prep(white, torch.device("cpu"), torch.float32)
    assert pixels.shape == (1, 3, 56, 56) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels, torch.ones_like(pixels))  # (1 - 0.5) / 0.5
    black = prep(Image.new("L", (10, 10)), torch.device("cpu"), torch.bfloat16)
    assert black.dtype == torch.bfloat16 and torch.all(black == -1)


def test_preprocessing_agrees_with_transformers_image_processor() -> None:
    """Only where torchvision loads (it does not with the CPU torch build on these machines)."""
    try:
        from transformers import Sam3ImageProcessor

        reference = Sam3ImageProcessor(size={"height": 112, "width": 112})
    except (ImportError, ModuleNotFoundError, RuntimeError):
        pytest.skip("Sam3ImageProcessor needs a working torchvision")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (70, 150, 3), dtype=np.uint8))
    expected = reference(images=image, return_tensors="pt")["pixel_values"]
    ours = Preprocessing.from_config(reference.to_dict())(image, torch.device("cpu"), torch.float32)
    torch.testing.assert_close(ours, expected, atol=2 / 255 / 0.5, rtol=0)


# -- errors that tell the user what to do ------------------------------------------------------


def test_offline_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as caught:
        Sam3Proposer("nobody-here/sam3-missing", device="cpu").load()
    message = str(caught.value)
    assert "nobody-here/sam3-missing" in message
    assert "huggingface-cli download nobody-here/sam3-missing --local-dir" in message
    assert "HF_HUB_OFFLINE" in message


def test_local_dir_without_weights(tmp_path: Path, tiny_sam3_dir: Path) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_sam3_dir / name, tmp_path / name)
    with pytest.raises(ModelLoadError) as caught:
        Sam3Proposer(str(tmp_path), device="cpu").load()
    message = str(caught.value)
    assert "has no weights" in message
    assert "config.json" in message and "tokenizer.json" in message  # what is there
    assert "model.safetensors" in message  # what is expected


def test_path_that_is_neither_dir_nor_hub_id(tmp_path: Path, tiny_sam3_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither a local directory nor a hub id"):
        Sam3Proposer(str(tmp_path / "no" / "such" / "dir"), device="cpu").load()
    with pytest.raises(ModelLoadError, match="is a file, not a directory"):
        Sam3Proposer(str(tiny_sam3_dir / "config.json"), device="cpu").load()


def test_gated_repo_message() -> None:
    def gated(source: str) -> None:
        # What transformers raises for a gated repo without access (utils/hub.py).
        raise OSError(
            "You are trying to access a gated repo.\nMake sure to have access to it at "
            f"https://huggingface.co/{source}.\n401 Client Error."
        )

    with pytest.raises(ModelLoadError) as caught:
        modeling.load_pretrained(gated, "facebook/sam3", what="the SAM 3 model")
    message = str(caught.value)
    assert "gated" in message and "https://huggingface.co/facebook/sam3" in message
    assert "huggingface-cli login" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_cuda_requested_without_cuda(tiny_sam3_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        Sam3Proposer(str(tiny_sam3_dir), device="cuda").load()
    assert modeling.resolve_device("auto") == torch.device("cpu")
    assert modeling.default_dtype(torch.device("cpu")) == torch.float32


def test_score_exponent_from_calibration_json(
    tiny_sam3_dir: Path, tmp_path: Path, scene: Image.Image
) -> None:
    """A model directory's calibration.json sets the score exponent: scores are the plain
    ones raised to it (same instances in the same order), and an explicit argument wins."""
    calibrated = tmp_path / "calibrated"
    shutil.copytree(tiny_sam3_dir, calibrated)
    (calibrated / "calibration.json").write_text('{"presence_shift": 0, "score_exponent": 0.5}')
    with Sam3Proposer(str(calibrated), device="cpu", score_threshold=0.0) as loaded:
        found = loaded.propose(scene, PHRASES[:2])
    with Sam3Proposer(
        str(calibrated), device="cpu", score_threshold=0.0, score_exponent=1.0
    ) as plain_proposer:
        plain = plain_proposer.propose(scene, PHRASES[:2])
    for exp, raw in zip(found, plain, strict=True):
        assert len(exp.masks) == len(raw.masks) > 0
        np.testing.assert_allclose(exp.scores, np.sqrt(raw.scores), rtol=1e-5)


def test_presence_calibration_from_calibration_json(
    tiny_sam3_dir: Path, tmp_path: Path, scene: Image.Image
) -> None:
    """calibration.json's presence calibration sets the presence each phrase reports
    (``sigmoid(a x logit + b)`` of the model's presence); the scores, masks and boxes stay the
    model's, and explicit arguments win."""
    calibrated = tmp_path / "calibrated"
    shutil.copytree(tiny_sam3_dir, calibrated)
    (calibrated / "calibration.json").write_text('{"presence_scale": 2.0, "presence_bias": -1.5}')
    with Sam3Proposer(str(calibrated), device="cpu", score_threshold=0.0) as loaded:
        found = loaded.propose(scene, PHRASES[:3])
        plain = loaded.with_settings(presence_scale=1.0, presence_bias=0.0).propose(
            scene, PHRASES[:3]
        )
    for reported, model in zip(found, plain, strict=True):
        assert reported.masks == model.masks and len(model.masks) > 0
        np.testing.assert_array_equal(reported.scores, model.scores)
        logit = math.log(model.presence / (1 - model.presence))
        assert reported.presence == pytest.approx(1 / (1 + math.exp(-(2.0 * logit - 1.5))))
        assert reported.presence != pytest.approx(model.presence)


def test_mask_nms_drops_overlapping_masks(
    tiny_sam3_dir: Path, tmp_path: Path, scene: Image.Image
) -> None:
    """With ``nms_iou`` (or calibration.json's) a phrase keeps the masks a greedy NMS keeps,
    best first, in the plain order; ``max_instances`` counts the survivors; 1 turns it off."""
    calibrated = tmp_path / "nms"
    shutil.copytree(tiny_sam3_dir, calibrated)
    (calibrated / "calibration.json").write_text('{"nms_iou": 0.2}')
    with Sam3Proposer(str(calibrated), device="cpu", score_threshold=0.0) as proposer:
        suppressed = proposer.propose(scene, PHRASES)
    with Sam3Proposer(
        str(calibrated), device="cpu", score_threshold=0.0, nms_iou=0.2, max_instances=2
    ) as proposer:
        capped = proposer.propose(scene, PHRASES)
    with Sam3Proposer(str(calibrated), device="cpu", score_threshold=0.0, nms_iou=1.0) as plain_:
        plain = plain_.propose(scene, PHRASES)
    dropped = 0
    for kept, cap, raw in zip(suppressed, capped, plain, strict=True):
        survivors = masks.nms(raw.masks, raw.scores.tolist(), 0.2)
        assert kept.masks == [raw.masks[i] for i in survivors]
        np.testing.assert_array_equal(kept.scores, raw.scores[survivors])
        np.testing.assert_array_equal(kept.boxes, raw.boxes[survivors])
        ious = masks.iou_matrix(kept.masks, kept.masks)
        assert (ious[~np.eye(len(kept.masks), dtype=bool)] <= 0.2).all()
        assert cap.masks == kept.masks[:2]
        dropped += len(raw.masks) - len(kept.masks)
    assert dropped > 0  # the random model's masks overlap: the test exercises suppression


def test_bad_nms_iou_is_refused() -> None:
    for value in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"nms_iou must be in \(0, 1\]"):
            Sam3Proposer("unused", nms_iou=value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"score_exponent": -1}', "must be positive"),
        ('{"score_exponent": "x"}', "number"),
        ('{"nms_iou": 2}', r"nms_iou must be in \(0, 1\]"),
        ('{"presence_scale": -1}', "presence_scale must be a finite number >= 0"),
        ('{"presence_bias": Infinity}', "presence_bias must be finite"),
        ("[1]", "not a calibration record"),
        ("{", "not a calibration record"),
    ],
)
def test_bad_calibration_json_is_reported(
    tiny_sam3_dir: Path, tmp_path: Path, content: str, message: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sam3_dir, broken)
    (broken / "calibration.json").write_text(content)
    with pytest.raises(ValueError, match=message) as caught, Sam3Proposer(str(broken)):
        pass
    assert "calibration.json" in str(caught.value)


def _equal(a: list[PhraseProposals], b: list[PhraseProposals]) -> None:
    assert [p.phrase for p in a] == [p.phrase for p in b]
    for left, right in zip(a, b, strict=True):
        assert left.masks == right.masks, left.phrase
        assert np.array_equal(left.scores, right.scores) and np.array_equal(left.boxes, right.boxes)
        assert left.presence == right.presence


def test_kept_outputs_serve_other_settings_exactly_without_the_network(
    tiny_sam3_dir: Path, scene: Image.Image
) -> None:
    """With ``keep_outputs`` an image comes back (the same object, the same phrases) without a
    forward, in this proposer and in those ``with_settings`` makes, and every setting gives
    exactly what a proposer built with it gives."""
    settings = [
        {"score_threshold": 0.0},
        {"score_threshold": 0.0, "nms_iou": 0.3},
        {"score_threshold": 0.05, "mask_refine_radius": 4.0, "score_exponent": 0.5},
        {"score_threshold": 0.0, "mask_threshold": 0.7, "max_instances": 2},
    ]
    fresh = []
    for options in settings:
        # The same batches as below (another batching rounds differently in the last bit).
        own = Sam3Proposer(str(tiny_sam3_dir), device="cpu", batch_size=2, **options)  # type: ignore[arg-type]
        with own:
            fresh.append(own.propose(scene, PHRASES))
    with Sam3Proposer(str(tiny_sam3_dir), device="cpu", batch_size=2) as proposer:
        model = proposer._model
        assert model is not None
        forwards: list[int] = []
        hook = model.detr_decoder.register_forward_hook(lambda *_: forwards.append(1))
        try:
            proposer.keep_outputs()
            first = proposer.propose(scene, PHRASES)
            assert len(forwards) == 3  # batches of 2, 2 and 1 phrases
            _equal(first, proposer.propose(scene, PHRASES))
            for options, expected in zip(settings, fresh, strict=True):
                _equal(proposer.with_settings(**options).propose(scene, PHRASES), expected)
            assert len(forwards) == 3, "kept outputs are reused"
            # Another image object (same pixels) or other phrase batches run the network.
            proposer.propose(scene.copy(), PHRASES[:2])
            proposer.propose(scene, PHRASES[1:3])
            assert len(forwards) == 5
        finally:
            hook.remove()
    assert proposer.score_threshold == 0.5, "with_settings leaves the original as it was"


def test_kept_outputs_respect_their_budget(tiny_sam3_dir: Path, scene: Image.Image) -> None:
    with Sam3Proposer(str(tiny_sam3_dir), device="cpu") as proposer:
        model = proposer._model
        assert model is not None
        forwards: list[int] = []
        hook = model.detr_decoder.register_forward_hook(lambda *_: forwards.append(1))
        try:
            proposer.keep_outputs(budget_bytes=0)
            proposer.propose(scene, ["cat"])
            proposer.propose(scene, ["cat"])
        finally:
            hook.remove()
    assert len(forwards) == 2, "nothing kept over the budget: computed again"
    with pytest.raises(ValueError, match="budget_bytes must be >= 0"):
        proposer.keep_outputs(budget_bytes=-1)


def test_with_settings_refuses_what_it_cannot_change(tiny_sam3_dir: Path) -> None:
    proposer = Sam3Proposer(str(tiny_sam3_dir), device="cpu")
    with pytest.raises(ValueError, match=r"post-processing only .* got batch_size, device"):
        proposer.with_settings(device="cuda", batch_size=4)
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\], got 1.5"):
        proposer.with_settings(score_threshold=1.5)
    with pytest.raises(ValueError, match="nms_iou"):
        proposer.with_settings(nms_iou=0.0)
    # Before loading: the settings take effect on load, calibration.json filling the rest.
    assert proposer.with_settings(mask_refine_radius=2.0).mask_refine_radius == 2.0
