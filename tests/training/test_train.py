"""A short training run lowers the loss; checkpoints resume; the output loads in the backend."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from annotator.datasets.synthetic import make_scene, vocabulary
from annotator.miners.sam3 import Preprocessing, Sam3Proposer
from annotator.training.checkpoint import ModelSize, new_model_dir
from annotator.training.data import batches, synthetic_examples
from annotator.training.loss import SetCriterion
from annotator.training.trainer import (
    StepReport,
    TrainSettings,
    _forward,
    _targets,
    load_for_training,
    train,
)

TINY = ModelSize(
    image_size=112, hidden=32, heads=2, mlp=64, vit_layers=1, text_layers=1, text_length=8,
    encoder_layers=1, decoder_layers=1, queries=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_model_dir(tmp_path_factory.mktemp("init") / "model", vocabulary(), TINY, seed=0)


def _preprocessing(model_dir: Path) -> Preprocessing:
    config = json.loads((model_dir / "processor_config.json").read_text())
    return Preprocessing.from_config(config["image_processor"])


def _fixed_loss(model_dir: Path, examples: list) -> float:  # type: ignore[type-arg]
    model, tokenizer, preprocessing = load_for_training(model_dir, torch.device("cpu"))
    model.eval()
    batch = next(
        batches(examples, preprocessing, images_per_batch=4, phrases_per_image=4, seed=99,
                flip=False)
    )  # fmt: skip
    with torch.no_grad():
        outputs = _forward(model, tokenizer, batch, torch.device("cpu")).outputs
        return float(SetCriterion()(outputs, _targets(batch))["total"])


def test_short_training_lowers_the_loss(init_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    examples = synthetic_examples(0, 4, _preprocessing(init_dir))
    before = _fixed_loss(init_dir, examples)
    settings = TrainSettings(
        steps=40, images_per_batch=4, phrases_per_image=4, lr=2e-3, warmup_steps=5,
        checkpoint_every=0, device="cpu",
    )  # fmt: skip
    result = train(init_dir, examples, tmp_path / "out", settings, resume=False)
    after = _fixed_loss(tmp_path / "out", examples)
    assert after < 0.8 * before, (before, after)
    assert result.last_loss is not None and result.first_loss is not None
    # A standard model directory: transformers and the sam3 backend load it.
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    scene = make_scene(5, size=112)
    with Sam3Proposer(str(tmp_path / "out"), device="cpu", score_threshold=0.0) as proposer:
        found = proposer.propose(scene.image, ["red circle", "striped star"])
    assert [f.phrase for f in found] == ["red circle", "striped star"]


def test_resume_continues_where_it_stopped(init_dir: Path, tmp_path: Path) -> None:
    examples = synthetic_examples(0, 3, _preprocessing(init_dir))
    settings = TrainSettings(
        steps=6, images_per_batch=2, phrases_per_image=2, warmup_steps=2, device="cpu",
        checkpoint_every=2,
    )  # fmt: skip
    straight = train(init_dir, examples, tmp_path / "straight", settings, resume=False)

    def crash(report: StepReport) -> None:
        if report.step == 5:  # after the checkpoint of step 4
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        train(init_dir, examples, out, settings, resume=False, progress=crash)
    resumed = train(init_dir, examples, out, settings)
    assert resumed.resumed_from == 4
    # Same batches, same optimiser and schedule state: it ends where the straight run did.
    assert resumed.history[-1][0] == 6
    assert resumed.last_loss == pytest.approx(straight.last_loss, rel=1e-4)


def test_attention_init_redraws_only_the_detr_query_and_key_projections(tmp_path: Path) -> None:

    from safetensors.torch import load_file

    plain = load_file(str(new_model_dir(tmp_path / "a", vocabulary(), TINY) / "model.safetensors"))
    wide = load_file(
        str(
            new_model_dir(tmp_path / "b", vocabulary(), replace(TINY, attention_init=0.25))
            / "model.safetensors"
        )
    )
    qk = [
        k
        for k in plain
        if k.startswith(("detr_encoder.", "detr_decoder."))
        and k.endswith(("q_proj.weight", "k_proj.weight"))
    ]
    assert len(qk) >= 8  # self- and cross-attention of the encoder and decoder layers
    for key in qk:
        assert float(wide[key].std()) == pytest.approx(0.25, rel=0.2), key
        assert float(plain[key].std()) == pytest.approx(0.02, rel=0.3), key
    others = [k for k in plain if k not in qk]
    assert all(torch.equal(plain[k], wide[k]) for k in others)


def test_aux_outputs_are_the_decoder_layers_own_predictions(tmp_path: Path) -> None:

    model_dir = new_model_dir(tmp_path / "m", vocabulary(), replace(TINY, decoder_layers=3))
    model, tokenizer, preprocessing = load_for_training(model_dir, torch.device("cpu"))
    model.eval()
    examples = synthetic_examples(0, 2, preprocessing)
    batch = next(batches(examples, preprocessing, images_per_batch=2, phrases_per_image=3, seed=1))
    with torch.no_grad():
        outputs, layers, _ = _forward(model, tokenizer, batch, torch.device("cpu"), aux=True)
        plain, none, _ = _forward(model, tokenizer, batch, torch.device("cpu"))
    assert none == [] and len(layers) == 3
    rows, queries = outputs.pred_logits.shape
    for layer in layers:
        assert layer.pred_logits.shape == (rows, queries)
        assert layer.pred_boxes.shape == (rows, queries, 4)
        assert layer.presence_logits.shape == (rows, 1)
    # The last layer, recomputed from the hooked decoder states, is what the model returned.
    torch.testing.assert_close(layers[-1].pred_logits, outputs.pred_logits)
    torch.testing.assert_close(layers[-1].pred_boxes, outputs.pred_boxes)
    torch.testing.assert_close(layers[-1].presence_logits, outputs.presence_logits)
    torch.testing.assert_close(plain.pred_logits, outputs.pred_logits)
    # Earlier layers differ from the last (they are not copies of it).
    assert not torch.allclose(layers[0].pred_boxes, layers[-1].pred_boxes)


def test_attribute_targets_are_the_batch_maps_shares_cached(init_dir: Path) -> None:
    from annotator.training.data import SYNTHETIC_ATTRIBUTE_CLASSES
    from annotator.training.loss import attribute_shares
    from annotator.training.trainer import AttributeTargets

    examples = synthetic_examples(0, 6, _preprocessing(init_dir))
    targets = AttributeTargets(examples, SYNTHETIC_ATTRIBUTE_CLASSES)
    logits = [torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 8, 8)]
    stream = batches(examples, _preprocessing(init_dir), images_per_batch=6, phrases_per_image=1,
                     seed=3)  # fmt: skip
    flips = set()
    for _ in range(3):  # the same examples again, flipped or not: from the cache
        batch = next(stream)
        assert batch.attributes is not None and len(batch.sources) == 6
        flips |= {flipped for _, flipped in batch.sources}
        expected = attribute_shares(batch.attributes, SYNTHETIC_ATTRIBUTE_CLASSES,
                                    [(32, 32), (16, 16), (8, 8)])  # fmt: skip
        got = targets(batch, logits)
        assert len(got) == len(expected) == 3
        for mine_level, reference_level in zip(got, expected, strict=True):
            for mine, reference in zip(mine_level, reference_level, strict=True):
                # The same values in the same layout: the training is exactly the same.
                assert torch.equal(mine, reference)
                assert mine.stride() == reference.stride()
    assert flips == {True, False}
    # Shares: every position's classes of each attribute sum to one.
    totals = got[1][0].sum(1)
    torch.testing.assert_close(totals, torch.ones_like(totals))
    assert got[1][0].shape == (6, SYNTHETIC_ATTRIBUTE_CLASSES[0], 16, 16)


def test_synthetic_attribute_maps_follow_the_objects_and_the_flips(init_dir: Path) -> None:
    import numpy as np

    from annotator.datasets.synthetic import COLOURS, SHAPES, TEXTURES
    from annotator.training.data import SYNTHETIC_ATTRIBUTE_CLASSES, attribute_maps

    scene = make_scene(3, size=112)
    maps = attribute_maps(scene, (112, 112))
    assert maps.shape == (3, 112, 112)
    covered = np.zeros((112, 112), dtype=bool)
    for obj in scene.objects:
        values = {
            (int(a), int(b), int(c)) for a, b, c in zip(*(m[obj.mask] for m in maps), strict=True)
        }
        assert values == {
            (
                list(COLOURS).index(obj.colour) + 1,
                list(SHAPES).index(obj.shape) + 1,
                list(TEXTURES).index(obj.texture) + 1,
            )
        }
        covered |= obj.mask
    assert (maps[:, ~covered] == 0).all()  # background
    assert (len(COLOURS) + 1, len(SHAPES) + 1, len(TEXTURES) + 1) == SYNTHETIC_ATTRIBUTE_CLASSES
    # Batches carry the maps flipped with their image and masks.
    examples = synthetic_examples(0, 6, _preprocessing(init_dir))
    stream = batches(examples, _preprocessing(init_dir), images_per_batch=6, phrases_per_image=2,
                     seed=3)  # fmt: skip
    batch = next(stream)
    assert batch.attributes is not None and batch.attributes.shape == (6, 3, 112, 112)
    for b in range(6):
        fg = batch.attributes[b, 0] > 0
        rows = [r for r, i in enumerate(batch.image_index.tolist()) if i == b]
        for r in rows:
            if len(batch.masks[r]):  # every instance lies on object pixels
                assert bool(fg[batch.masks[r].amax(0) > 0].all())


def test_dense_loss_trains_its_head_and_resumes(init_dir: Path, tmp_path: Path) -> None:
    from annotator.training.data import SYNTHETIC_ATTRIBUTE_CLASSES
    from annotator.training.loss import LossWeights

    examples = synthetic_examples(0, 3, _preprocessing(init_dir))
    settings = TrainSettings(
        steps=4, images_per_batch=2, phrases_per_image=2, warmup_steps=1, device="cpu",
        checkpoint_every=2, weights=LossWeights(dense=1.0, aux=1.0),
        attribute_classes=SYNTHETIC_ATTRIBUTE_CLASSES,
    )  # fmt: skip
    seen: list[StepReport] = []
    straight = train(init_dir, examples, tmp_path / "a", settings, resume=False,
                     progress=seen.append)  # fmt: skip
    assert all("dense" in r.terms and r.terms["dense"] > 0 for r in seen)
    state = torch.load(tmp_path / "a" / ".training" / "state.pt", weights_only=False)
    assert "attribute_head" in state
    # The head is training state, not part of the model directory.
    names = set(load_file_keys(tmp_path / "a" / "model.safetensors"))
    assert not any("attribute_head" in n for n in names)

    def crash(report: StepReport) -> None:
        if report.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(init_dir, examples, tmp_path / "b", settings, resume=False, progress=crash)
    resumed = train(init_dir, examples, tmp_path / "b", settings)
    assert resumed.resumed_from == 2
    assert resumed.last_loss == pytest.approx(straight.last_loss, rel=1e-4)


def load_file_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def test_vision_warm_up_trains_only_the_vision_encoder_and_resumes(
    init_dir: Path, tmp_path: Path
) -> None:
    """``vision_steps`` first train the vision encoder alone on the dense loss (nothing else
    of the model moves), then the detector steps run; a crash in either stage resumes to the
    same weights as an uninterrupted run."""
    from safetensors.torch import load_file

    from annotator.training.data import SYNTHETIC_ATTRIBUTE_CLASSES
    from annotator.training.loss import LossWeights

    examples = synthetic_examples(0, 3, _preprocessing(init_dir))
    common = {
        "images_per_batch": 2, "phrases_per_image": 2, "warmup_steps": 1, "device": "cpu",
        "checkpoint_every": 2, "weights": LossWeights(dense=1.0),
        "attribute_classes": SYNTHETIC_ATTRIBUTE_CLASSES, "vision_steps": 4, "vision_images": 3,
    }  # fmt: skip
    seen: list[StepReport] = []
    only_vision = train(init_dir, examples, tmp_path / "v", TrainSettings(steps=0, **common),
                        resume=False, progress=seen.append)  # fmt: skip
    assert [(r.stage, r.step, r.steps) for r in seen] == [("vision", k, 4) for k in (1, 2, 3, 4)]
    assert only_vision.history == []
    before = load_file(str(init_dir / "model.safetensors"))
    after = load_file(str(tmp_path / "v" / "model.safetensors"))
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("vision_encoder.") for k in moved)

    settings = TrainSettings(steps=4, **common)
    straight = train(init_dir, examples, tmp_path / "a", settings, resume=False)
    assert [s for s, _ in straight.history] == [1, 2, 3, 4]
    for stage, step in (("vision", 3), ("detector", 3)):
        out = tmp_path / f"crash-{stage}"

        def crash(report: StepReport, stage: str = stage, step: int = step) -> None:
            if (report.stage, report.step) == (stage, step):
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(init_dir, examples, out, settings, resume=False, progress=crash)
        resumed = train(init_dir, examples, out, settings)
        assert resumed.resumed_from == (0 if stage == "vision" else 2)
        ours = load_file(str(out / "model.safetensors"))
        theirs = load_file(str(tmp_path / "a" / "model.safetensors"))
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value, rtol=1e-4, atol=1e-5)


def test_vision_warm_up_needs_the_dense_loss(init_dir: Path, tmp_path: Path) -> None:
    examples = synthetic_examples(0, 2, _preprocessing(init_dir))
    settings = TrainSettings(steps=1, images_per_batch=2, vision_steps=2, device="cpu")
    with pytest.raises(ValueError, match="vision_steps needs the dense attribute loss"):
        train(init_dir, examples, tmp_path / "x", settings, resume=False)


def test_patch_size_sets_the_grid_and_the_mask_size(tmp_path: Path) -> None:
    """``ModelSize.patch``: a finer patch gives a finer grid, FPN levels and masks; the image
    size must stay a multiple of patch x window."""

    from annotator.training.checkpoint import sam3_config

    fine = replace(TINY, patch=7)
    model_dir = new_model_dir(tmp_path / "fine", vocabulary(), fine)
    processor = json.loads((model_dir / "processor_config.json").read_text())["image_processor"]
    assert processor["mask_size"] == {"height": 64, "width": 64}
    config = sam3_config(fine, vocab_size=vocabulary_size_for(model_dir), bos=0, eos=1)
    assert config.vision_config.backbone_config.patch_size == 7
    assert config.vision_config.backbone_feature_sizes[-1] == [16, 16]
    with Sam3Proposer(str(model_dir), score_threshold=0.0) as proposer:
        found = proposer.propose(make_scene(0, size=112).image, ["red circle"])
    assert found[0].masks and found[0].masks[0]["size"] == [112, 112]
    with pytest.raises(ValueError, match="multiple of patch x window"):
        sam3_config(replace(TINY, patch=10), vocab_size=40, bos=0, eos=1)


def vocabulary_size_for(model_dir: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(model_dir)))


def test_mask_scale_sets_the_finest_level_and_the_mask_size(tmp_path: Path) -> None:
    """``ModelSize.mask_scale`` 2: FPN levels at 2x, 1x and 0.5x the grid, one upsampling
    convolution, the model's masks at twice the grid; the proposer still answers at the
    image's size. Other scales are refused."""

    from transformers import Sam3Model

    from annotator.training.checkpoint import sam3_config

    half = replace(TINY, mask_scale=2)
    grid = half.image_size // half.patch
    model_dir = new_model_dir(tmp_path / "half", vocabulary(), half)
    processor = json.loads((model_dir / "processor_config.json").read_text())["image_processor"]
    assert processor["mask_size"] == {"height": 2 * grid, "width": 2 * grid}
    config = sam3_config(half, vocab_size=vocabulary_size_for(model_dir), bos=0, eos=1)
    assert config.vision_config.scale_factors == [2.0, 1.0, 0.5]
    assert config.vision_config.backbone_feature_sizes == [[2 * grid] * 2, [grid] * 2]
    model = Sam3Model.from_pretrained(model_dir).eval()
    assert len(model.mask_decoder.pixel_decoder.conv_layers) == 1
    pixels = torch.zeros(1, 3, half.image_size, half.image_size)
    ids = torch.tensor([[0, 1]])
    with torch.no_grad():
        out = model(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids))
    assert tuple(out.pred_masks.shape[-2:]) == (2 * grid, 2 * grid)
    with Sam3Proposer(str(model_dir), score_threshold=0.0) as proposer:
        found = proposer.propose(make_scene(0, size=112).image, ["red circle"])
    assert found[0].masks and found[0].masks[0]["size"] == [112, 112]
    # The default (SAM 3's) stays as before: 4x, 2x, 1x, 0.5x and masks at 4x the grid.
    full = sam3_config(TINY, vocab_size=40, bos=0, eos=1)
    assert full.vision_config.scale_factors == [4.0, 2.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="mask_scale must be 2 or 4, not 3"):
        sam3_config(replace(TINY, mask_scale=3), vocab_size=40, bos=0, eos=1)
