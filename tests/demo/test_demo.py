"""``annotator demo`` end to end at a small size (two rounds: the flywheel path too)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from sqlalchemy import select

from annotator.db.models import Annotation, AnnotationSource, Review
from annotator.db.session import get_engine, session_scope
from annotator.demo.reviewer import SIMULATED_REVIEWER
from annotator.demo.run import DemoSettings, run_demo
from annotator.errors import InvalidInputError


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    out = tmp_path / "demo"
    lines: list[str] = []
    results = run_demo(
        DemoSettings(
            out=out, rounds=2, images=10, warmup_images=6, eval_scenes=4, finetune_steps=4,
            report_images=2,
        ),
        log=lines.append,
    )  # fmt: skip
    assert [r.round for r in results] == [1, 2]
    assert any("SIMULATED reviewer" in line for line in lines)
    for r in results:
        assert r.pairs > 0
        assert r.reviewed_pairs + r.auto_negative_pairs + r.auto_positive_pairs <= r.pairs
        assert 0.0 <= r.human_share <= 1.0
        assert r.human_s_with <= r.human_s_without
        assert set(r.heldout_cgf1) >= {"cgF1", "pmF1", "IL_MCC"}
    assert results[1].proposer == "proposer-round2"
    assert (out / "models" / "proposer-round2" / "model.safetensors").is_file()

    for name in ("demo.coco.json", "demo.saco.json"):
        coco = COCO(str(out / name))
        for ann in coco.dataset["annotations"]:
            assert coco.annToMask(ann).sum() > 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 2
    report = (out / "report.html").read_text()
    assert "SIMULATED reviewer" in report and "data:image/png;base64," in report
    assert "http://" not in report and "https://" not in report

    # Reviews went through the review data model, as a Label Studio sync writes them.
    engine = get_engine(f"sqlite:///{out / 'annotator.db'}")
    with session_scope(engine) as session:
        reviews = list(session.scalars(select(Review)))
        assert reviews and all(r.reviewer == SIMULATED_REVIEWER for r in reviews)
        human = list(
            session.scalars(select(Annotation).where(Annotation.source == AnnotationSource.HUMAN))
        )
        assert human and all(a.review_id is not None for a in human)

    # The same dataset through the training commands a user runs on real data.
    from typer.testing import CliRunner

    from annotator.cli import app
    from annotator.config import get_settings

    get_settings.cache_clear()
    get_engine.cache_clear()
    runner = CliRunner()
    url = f"sqlite:///{out / 'annotator.db'}"
    result = runner.invoke(
        app,
        [
            "--database-url", url, "train", "proposer", "demo", "--out", str(tmp_path / "p"),
            "--init", str(out / "models" / "proposer-round2"), "--steps", "2", "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "positive pairs" in result.output and (tmp_path / "p" / "model.safetensors").is_file()
    # 20 labelled images: the default share (0.2) sets 4 aside, too few to fit an operating
    # point on; the command says so and writes no calibration.json.
    assert "4 more set aside for calibration" in result.output
    assert "operating point not fitted" in result.output
    assert not (tmp_path / "p" / "calibration.json").exists()
    result = runner.invoke(
        app,
        [
            "--database-url", url, "train", "proposer", "demo", "--out", str(tmp_path / "p2"),
            "--init", str(out / "models" / "proposer-round2"), "--steps", "2", "--device", "cpu",
            "--calibration-share", "0.6",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "operating point fitted on 12 set-aside images" in result.output, result.output
    recorded = json.loads((tmp_path / "p2" / "calibration.json").read_text())
    assert {"score_exponent", "nms_iou"} <= set(recorded)
    with session_scope(engine) as session:
        from annotator.miners.sam3 import Preprocessing, _image_processor_config
        from annotator.training.database import split_dataset_examples

        preprocessing = Preprocessing.from_config(_image_processor_config(str(tmp_path / "p")))
        examples, held, stats = split_dataset_examples(
            session, "demo", preprocessing, calibration_share=0.25, seed=3
        )
        assert (len(examples), len(held), stats.calibration_images) == (15, 5, 5)
        again = split_dataset_examples(
            session, "demo", preprocessing, calibration_share=0.25, seed=3
        )[1]
        assert [np.asarray(h.image).tobytes() for h in held] == [
            np.asarray(h.image).tobytes() for h in again
        ]  # the same images for the same seed: a resumed run calibrates on what it set aside
        # Set aside at full size (the masks the image's own), for the fit to score.
        assert all(
            m.shape == (item.image.height, item.image.width)
            for item in held
            for _, masks in item.phrases
            for m in masks
        )
        with pytest.raises(InvalidInputError, match="calibration share"):
            split_dataset_examples(session, "demo", preprocessing, calibration_share=1.0)
    result = runner.invoke(
        app, ["--database-url", url, "train", "verifier", "demo", "--out", str(tmp_path / "v")]
    )
    # Fitted, or refused with the reason (too few accepted masks from a weak proposer).
    text = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 0 or "needs at least" in text, text
    get_settings.cache_clear()
    get_engine.cache_clear()


@pytest.mark.parametrize(
    ("args", "images"),
    [
        ([], 48),
        (["--rounds", "2"], 128),
        (["--rounds", "3", "--images", "20"], 20),
        (["--images", "8"], 8),
    ],
)
def test_demo_scenes_per_round_default_to_more_for_the_flywheel(
    args: list[str], images: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One round mines 48 scenes; a flywheel round 128 (enough reviews to refit the verifier);
    --images always wins."""
    from typer.testing import CliRunner

    from annotator.cli import app
    from annotator.demo import run

    seen: list[DemoSettings] = []

    def record(settings: DemoSettings, log: object) -> list[object]:
        seen.append(settings)
        return []

    monkeypatch.setattr(run, "run_demo", record)
    monkeypatch.setattr("annotator.cli_demo._summary", lambda results: "")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "d"), *args])
    assert result.exit_code == 0, result.output
    assert [s.images for s in seen] == [images]


def test_demo_scenes_are_none_the_starter_is_trained_measured_or_calibrated_on() -> None:
    """The demo mines (and the flywheel fine-tunes on) scenes apart from the starter's training
    scenes, its held-out scenes and the calibration scenes every operating point is fitted on:
    a fine-tuned round calibrated on its own training scenes would report a flattering fit."""
    from annotator.demo.run import scene_seeds
    from annotator.training.calibrate import CALIBRATION_SEED
    from annotator.training.evaluate import HELD_OUT_SEED
    from annotator.training.starter import CALIBRATION_SCENES, HELD_OUT_SCENES

    settings = DemoSettings(rounds=3, images=128)
    demo = {s for r in (1, 2, 3) for s in scene_seeds(settings, r)}
    assert len(demo) == 3 * 128
    assert scene_seeds(settings, 2)[0] == scene_seeds(settings, 1)[-1] + 1
    for other in (
        range(0, 3000),  # `annotator train starter --scenes 3000`
        range(HELD_OUT_SEED, HELD_OUT_SEED + HELD_OUT_SCENES),
        range(CALIBRATION_SEED, CALIBRATION_SEED + CALIBRATION_SCENES),
    ):
        assert demo.isdisjoint(other)
    assert set(scene_seeds(DemoSettings(seed=1), 1)).isdisjoint(scene_seeds(DemoSettings(), 1))


def test_the_summary_states_the_threshold_source_in_a_clause() -> None:
    from annotator.cli_demo import _absence_text, _threshold_text

    off = (
        "calibrated verifier: target precision 0.950 not reached on 34 held-out reviews; target "
        "precision 0.950 on 0 reviewed masks: no accept_above reaches it: MV auto-accept off, "
        "reject_below default 0.100 (verifier calibrated@fa38b82c)"
    )
    assert _threshold_text(off) == (
        "calibrated verifier: target precision 0.950 not reached on 34 held-out reviews: "
        "MV auto-accept off"
    )
    fitted = "calibrated verifier: precision 1.000 (target 0.950) on 178 held-out reviews"
    assert _threshold_text(fitted) == fitted
    absence = (
        "EV absence: target precision 0.950 on 525 reviewed pairs: ev_absent_above fitted 0.454 "
        "(EV proposer-scores@1)"
    )
    assert _threshold_text(f"{fitted}; {absence}") == fitted
    assert _absence_text(f"{fitted}; {absence}") == (
        "target precision 0.950 on 525 reviewed pairs: ev_absent_above fitted 0.454"
    )
    assert _absence_text(off) == "-"
    assert _threshold_text("configured") == "configured"


def test_the_flywheel_line_gives_the_human_time_per_mined_image() -> None:
    from types import SimpleNamespace

    from annotator.cli_demo import _flywheel_text

    first = SimpleNamespace(
        heldout_cgf1={"cgF1": 36.09}, human_share=1.0, human_s_with=23.95 * 3600, images=112
    )
    last = SimpleNamespace(
        heldout_cgf1={"cgF1": 39.85}, human_share=0.6821, human_s_with=20.79 * 3600, images=128
    )
    assert _flywheel_text(first, last) == (
        "flywheel: held-out cgF1 36.1 -> 39.9, share of pairs needing a person 100% -> 68%, "
        "est. human time per mined image 0.214 h -> 0.162 h"
    )
