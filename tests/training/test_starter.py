"""The shipped starter model: small, loadable by the backend, as good as recorded."""

from __future__ import annotations

import pytest
import torch

from annotator.starter import recorded_metrics, starter_model_dir, weak_model_dir
from annotator.training.starter import evaluate_model


def test_shipped_models_are_complete_and_small() -> None:
    for directory in (starter_model_dir(), weak_model_dir()):
        names = {p.name for p in directory.iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= (
            names
        )
    # What ships (training state under .training/ is git-ignored and left out of the wheel).
    total = sum(
        f.stat().st_size / 2**20
        for d in (starter_model_dir(), weak_model_dir())
        for f in d.iterdir()
        if f.is_file()
    )
    assert total < 20, f"the shipped models take {total:.1f} MB"


def test_starter_reaches_its_recorded_cgf1_through_the_backend() -> None:
    torch.set_num_threads(2)
    recorded = recorded_metrics()["check"]
    measured = evaluate_model(starter_model_dir(), scenes=recorded["held_out_scenes"])
    assert measured["cgF1"] == pytest.approx(recorded["cgF1"], abs=1.0)
    assert measured["pmF1"] == pytest.approx(recorded["pmF1"], abs=0.01)
    assert measured["IL_MCC"] == pytest.approx(recorded["IL_MCC"], abs=0.01)


def test_the_recorded_figures_separate_the_refinement() -> None:
    """metrics.json reports the network's own masks beside the refined ones, on the same pairs
    (same IL_MCC: refinement moves mask pixels, not which instances are kept)."""
    metrics = recorded_metrics()
    radius = metrics["calibration"]["model"].get("mask_refine_radius", 0.0)
    if radius <= 0:
        assert "model_unrefined" not in metrics
        return
    plain, refined = metrics["model_unrefined"], metrics["model"]
    assert plain["IL_MCC"] == refined["IL_MCC"] and plain["pairs"] == refined["pairs"]
    assert plain["held_out_scenes"] == refined["held_out_scenes"]
    measured = evaluate_model(starter_model_dir(), scenes=20, mask_refine_radius=0.0)
    assert measured["cgF1"] < evaluate_model(starter_model_dir(), scenes=20)["cgF1"]


def test_tokenizer_spells_every_world_word_and_phrase_as_whole_tokens(tmp_path) -> None:
    from annotator.datasets.synthetic import all_phrases, vocabulary
    from annotator.training.checkpoint import build_clip_style_tokenizer

    tokenizer = build_clip_style_tokenizer(tmp_path / "a", vocabulary(), max_length=8)
    for word in vocabulary():
        ids = tokenizer(word)["input_ids"]
        assert len(ids) == 3, (word, tokenizer.convert_ids_to_tokens(ids))  # start, word, end
    for phrase in all_phrases():
        assert len(tokenizer(phrase)["input_ids"]) == 2 + len(phrase.split()), phrase
    # Deterministic: the same words give the same files.
    build_clip_style_tokenizer(tmp_path / "b", list(reversed(vocabulary())), max_length=8)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_text()
    # Words outside the vocabulary still encode (characters), never fail.
    assert tokenizer("teal hexagon")["input_ids"][-1] == tokenizer.eos_token_id


def test_train_starter_command_writes_measured_calibrated_models(tmp_path) -> None:
    """``annotator train starter`` end to end at a tiny size: the vision warm-up, the whole
    model, the weak snapshot, both operating points and metrics.json beside them."""
    import json

    from typer.testing import CliRunner

    from annotator.cli import app
    from annotator.miners.sam3 import Sam3Proposer

    out = tmp_path / "starter" / "sam3-shapes"
    result = CliRunner().invoke(
        app,
        ["train", "starter", "--out", str(out), "--steps", "3", "--vision-steps", "2",
         "--weak-steps", "1", "--scenes", "4", "--eval-scenes", "2", "--calibration-scenes", "2",
         "--threads", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cgF1" in result.output and "weaker snapshot" in result.output
    metrics = json.loads((out.parent / "metrics.json").read_text())
    assert (metrics["steps"], metrics["vision_steps"], metrics["weak_steps"]) == (3, 2, 1)
    assert metrics["model"]["held_out_scenes"] == 2 and metrics["check"]["held_out_scenes"] == 40
    for directory, key in ((out, "model"), (out.with_name("sam3-shapes-weak"), "weak")):
        recorded = json.loads((directory / "calibration.json").read_text())
        assert recorded == metrics["calibration"][key] and recorded["scenes"] == 2
        assert recorded["score_exponent"] > 0 and 0 < recorded["nms_iou"] <= 1
        with Sam3Proposer(str(directory)) as proposer:
            proposer.load()
            assert proposer._exponent == recorded["score_exponent"]
            assert proposer._nms_iou == recorded["nms_iou"]
    # One run of the network served all three figures of the trained model: each is what a
    # measurement of its own gives.
    from annotator.training.starter import evaluate_model

    def figures(measured: dict) -> dict:
        return {k: v for k, v in measured.items() if k != "eval_s"}

    assert figures(metrics["model"]) == figures(evaluate_model(out, 2))
    assert figures(metrics["check"]) == figures(evaluate_model(out, 40))
    if "model_unrefined" in metrics:
        unrefined = evaluate_model(out, 2, mask_refine_radius=0.0)
        assert figures(metrics["model_unrefined"]) == figures(unrefined)
