"""``annotator demo``: the whole data engine, offline, on the synthetic world.

One round (``rounds=1``, the starter proposer):

1. **Images.** Synthetic scenes are written as PNG files with their alt-text (JSONL) and added to
   the dataset through the ``images add`` service.
2. **Warm-up.** A first mining job over ``warmup_images`` images (alt-text -> offline parser ->
   proposer -> proposer-score verifier) routes *every* pair to review, and the simulated
   reviewer answers them: the reviews a calibrated verifier needs (accepts and rejects across
   the whole score range).
3. **Calibrated verifier.** Fitted on those reviews (``annotator train verifier``), with the
   auto-accept threshold chosen for ``target_precision`` on held-out reviews.
4. **Mining.** The main job over the other images: MV by the calibrated verifier, EV by the
   proposer-score verifier; routing auto-accepts, auto-rejects and sends the rest to review.
5. **Review.** The simulated reviewer answers the review queue.
6. **Export** COCO and SA-Co, measure, print the summary, write ``report.html``.

With ``rounds=N`` (the flywheel), round 1 starts from the weaker starter snapshot; after each
round the proposer is fine-tuned on every accepted label so far (``annotator train proposer``)
and the calibrated verifier refitted on every review, and the next round mines new scenes
with both. Each round's proposer is also measured on the same held-out scenes.

Nothing here stands in for a model: the proposer is a real (small) SAM 3, the verifiers are the
product's; only the reviewer is simulated, from the ground truth the world drew.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotator import masks as mask_ops
from annotator.datasets.synthetic import Scene, make_scene
from annotator.db import simulation as sim_db
from annotator.db.models import PairState
from annotator.db.session import get_engine, session_scope
from annotator.demo.reviewer import (
    NEGATIVE_PAIR_S,
    POSITIVE_PAIR_S,
    ReviewTally,
    answer_all,
)
from annotator.errors import InvalidInputError
from annotator.metrics import PairEval, cgf1, match_ious

__all__ = ["DemoSettings", "RoundResult", "run_demo"]

# SAM 3 paper, Table 14: seconds per image-phrase pair with the AI verifiers (human-only times:
# annotator.demo.reviewer.NEGATIVE_PAIR_S / POSITIVE_PAIR_S).
PAPER_NEGATIVE_WITH_S = 6.0
PAPER_POSITIVE_WITH_S = 152.0
DATASET = "demo"
# Demo scenes: apart from the seeds the starter is trained on (0..), measured on (held-out,
# 1_000_000..) and has its operating point fitted on (calibration, 2_000_000..; a fine-tuned
# round's too), so no round mines, or fine-tunes on, a scene those figures are made from.
SCENE_SEED = 3_000_000


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("out/demo")
    rounds: int = 1
    images: int = 48  # per round
    warmup_images: int = 16  # of round 1, every pair reviewed
    eval_scenes: int = 60  # held-out scenes each round's proposer is measured on
    target_precision: float = 0.95
    finetune_steps: int = 300
    seed: int = 0
    device: str = "cpu"
    proposer_model: Path | None = None  # default: the starter (rounds=1) or its weak snapshot
    score_floor: float = 0.05  # proposals below this score are not kept
    report_images: int = 12


@dataclass
class RoundResult:
    round: int
    proposer: str
    verifier: str
    threshold_source: str
    images: int
    pairs: int
    proposals_cgf1: dict[str, float]
    heldout_cgf1: dict[str, float]
    auto_accepted_masks: int
    auto_accepted_correct: int
    auto_negative_pairs: int
    auto_negative_correct: int
    auto_positive_pairs: int
    reviewed_pairs: int
    review: ReviewTally
    human_s_with: float
    human_s_without: float
    paper_s_with: float
    gt_positive_pairs: int
    gt_negative_pairs: int
    warmup: ReviewTally | None = None
    calibration: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    job_id: int = 0

    @property
    def human_share(self) -> float:
        return self.reviewed_pairs / self.pairs if self.pairs else 0.0

    @property
    def auto_precision(self) -> float | None:
        if not self.auto_accepted_masks:
            return None
        return self.auto_accepted_correct / self.auto_accepted_masks

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "proposer": self.proposer,
            "verifier": self.verifier,
            "threshold_source": self.threshold_source,
            "images": self.images,
            "pairs": self.pairs,
            "proposals": self.proposals_cgf1,
            "heldout": self.heldout_cgf1,
            "auto_accepted_masks": self.auto_accepted_masks,
            "auto_accept_precision": self.auto_precision,
            "auto_negative_pairs": self.auto_negative_pairs,
            "auto_negative_correct": self.auto_negative_correct,
            "auto_positive_pairs": self.auto_positive_pairs,
            "reviewed_pairs": self.reviewed_pairs,
            "human_share": self.human_share,
            "human_hours_with_verifier": self.human_s_with / 3600,
            "human_hours_without_verifier": self.human_s_without / 3600,
            "paper_rate_hours_with_verifier": self.paper_s_with / 3600,
            "review": self.review.__dict__,
            "calibration": self.calibration,
            "timings_s": self.timings,
        }


Log = Callable[[str], None]


def _scene_size() -> int:
    from annotator.training.starter import SCENE_SIZE

    return SCENE_SIZE


def scene_seeds(settings: DemoSettings, round_no: int) -> list[int]:
    """The seeds of a round's synthetic scenes (``SCENE_SEED``.., by ``settings.seed``)."""
    first = SCENE_SEED + settings.seed * 100_000 + (round_no - 1) * settings.images
    return list(range(first, first + settings.images))


def _write_scenes(directory: Path, seeds: list[int]) -> tuple[list[Scene], Path]:
    directory.mkdir(parents=True, exist_ok=True)
    scenes = [make_scene(s, size=_scene_size()) for s in seeds]
    lines = []
    for scene in scenes:
        scene.image.save(directory / scene.file_name)
        lines.append(json.dumps({"file_name": scene.file_name, "alt_text": scene.alt_text}))
    alt = directory / "alt_text.jsonl"
    alt.write_text("\n".join(lines) + "\n")
    return scenes, alt


def _mine(engine: Any, config: Any, image_ids: list[int]) -> tuple[int, str]:
    from annotator.pipeline.runner import run_job_inline
    from annotator.services.jobs import create_mining_job

    with session_scope(engine) as session:
        job = create_mining_job(session, DATASET, config.model_copy(update={"images": image_ids}))
        job_id = job.id
        source = str(job.config.get("routing", {}).get("threshold_source", ""))
    status = run_job_inline(engine, job_id)
    if status.value != "done":
        raise RuntimeError(f"mining job {job_id} ended {status.value}")
    return job_id, source


def _truth(scenes: dict[str, Scene]) -> Callable[[str, str], list[np.ndarray]]:
    def truth(file_name: str, phrase: str) -> list[np.ndarray]:
        return scenes[file_name].masks_of(phrase)

    return truth


def _measure(
    session: Any, job_id: int, scenes: dict[str, Scene]
) -> tuple[list[sim_db.JobPair], dict[str, float], dict[str, int]]:
    """cgF1 of the job's proposals against the world, and the correctness of routing."""
    pairs = sim_db.job_pairs(session, job_id)
    evals = []
    counts = {
        "auto_masks": 0, "auto_masks_correct": 0, "auto_neg": 0, "auto_neg_correct": 0,
        "auto_pos": 0, "reviewed": 0, "gt_pos": 0, "gt_neg": 0, "reviewed_pos": 0,
        "reviewed_neg": 0,
    }  # fmt: skip
    for pair in pairs:
        size = [pair.height, pair.width]
        instances = scenes[pair.file_name].masks_of(pair.phrase)
        gt = mask_ops.encode_many(np.stack(instances)) if instances else []
        pred: list[mask_ops.RLE] = [{"size": size, "counts": c} for c, _ in pair.proposals]
        evals.append(PairEval(gt=gt, pred=pred, scores=[s for _, s in pair.proposals]))
        present = bool(instances)
        counts["gt_pos" if present else "gt_neg"] += 1
        if pair.reviewed:
            counts["reviewed"] += 1
            counts["reviewed_pos" if present else "reviewed_neg"] += 1
            continue
        if pair.state == PairState.NEGATIVE:
            counts["auto_neg"] += 1
            counts["auto_neg_correct"] += int(not present)
        elif pair.state == PairState.POSITIVE:
            counts["auto_pos"] += 1
        if pair.auto:
            auto: list[mask_ops.RLE] = [{"size": size, "counts": c} for c in pair.auto]
            counts["auto_masks"] += len(auto)
            counts["auto_masks_correct"] += int((match_ious(gt, auto) >= 0.5).sum())
    result = cgf1(evals)
    return pairs, _figures(result), counts


def _figures(result: Any) -> dict[str, float]:
    return {
        "cgF1": round(result.cgf1, 2),
        "pmF1": round(result.pmf1, 4),
        "IL_MCC": round(result.il_mcc, 4),
        "pairs": result.pairs,
    }


def _heldout(model: Path, count: int, device: str) -> dict[str, float]:
    from annotator.miners.sam3 import Sam3Proposer
    from annotator.training.evaluate import evaluate_scenes, held_out_scenes

    with Sam3Proposer(str(model), device=device) as proposer:
        result = evaluate_scenes(proposer, held_out_scenes(count, _scene_size()))
    return _figures(result)


def run_demo(settings: DemoSettings, log: Log = print) -> list[RoundResult]:
    """Run the demo in ``settings.out`` (wiped first) and return one result per round."""
    from annotator.db import migrate
    from annotator.pipeline.config import BackendSpec, MiningConfig, RoutingConfig
    from annotator.services.calibration import fit_verifier
    from annotator.services.images import add_images, read_alt_text
    from annotator.starter import starter_model_dir, weak_model_dir

    out = settings.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    url = f"sqlite:///{out / 'annotator.db'}"
    migrate.upgrade(url)
    engine = get_engine(url)

    default_model = starter_model_dir() if settings.rounds == 1 else weak_model_dir()
    model = (settings.proposer_model or default_model).resolve()
    verifier_path = out / "models" / "calibrated-verifier.joblib"
    results: list[RoundResult] = []
    world: dict[str, Scene] = {}
    proposer_options = {"score_threshold": settings.score_floor, "max_instances": 8}
    for round_no in range(1, settings.rounds + 1):
        timings: dict[str, float] = {}
        began = time.monotonic()
        log(f"[bold]round {round_no}[/]: proposer {model.name}")
        seeds = scene_seeds(settings, round_no)
        scenes, alt = _write_scenes(out / "images" / f"round{round_no}", seeds)
        world.update({s.file_name: s for s in scenes})
        with session_scope(engine) as session:
            added = add_images(
                session, DATASET, [str(alt.parent)], alt_text=read_alt_text(alt), recursive=False
            )
        log(f"  {added.added} synthetic scenes added with their alt-text ({alt})")
        with session_scope(engine) as session:
            ids = sim_db.image_ids(session, DATASET, [s.file_name for s in scenes])
        timings["images"] = time.monotonic() - began

        proposer = BackendSpec(name="sam3", model=str(model), options=proposer_options)
        parser = BackendSpec(name="offline")
        scores = BackendSpec(name="scores")
        warmup_tally: ReviewTally | None = None
        calibration = ""
        main_ids = ids
        if round_no == 1:
            t = time.monotonic()
            warm = ids[: settings.warmup_images]
            main_ids = ids[settings.warmup_images :]
            everything_to_review = RoutingConfig(
                accept_above=1.0, reject_below=0.0, ev_accept_above=1.0, ev_reject_below=0.0,
                threshold_source="warm-up: every pair to review",
            )  # fmt: skip
            config = MiningConfig(
                proposer=proposer, parser=parser, verifier=scores, device=settings.device,
                routing=everything_to_review,
            )  # fmt: skip
            _mine(engine, config, warm)
            with session_scope(engine) as session:
                warmup_tally = answer_all(session, DATASET, _truth(world))
            log(
                f"  warm-up: {len(warm)} images, {warmup_tally.tasks} pairs all reviewed by the "
                f"[yellow]SIMULATED reviewer[/] ({warmup_tally.accepted} masks accepted, "
                f"{warmup_tally.fixed} fixed, {warmup_tally.rejected} rejected)"
            )
            timings["warmup"] = time.monotonic() - t
        t = time.monotonic()
        try:
            with session_scope(engine) as session:
                report = fit_verifier(
                    session, DATASET, verifier_path, target_precision=settings.target_precision
                )
            calibration = report.summary()
            log(f"  calibrated verifier fitted on {report.n_reviews} reviewed masks: {calibration}")
        except InvalidInputError as exc:
            # Too few reviews (or of one kind only): route on the proposer's own scores.
            verifier_path.unlink(missing_ok=True)
            calibration = f"not fitted ({exc}); MV routed on the proposer's scores"
            log(f"  [yellow]calibrated verifier not fitted[/]: {exc}")
        timings["calibrate"] = time.monotonic() - t

        t = time.monotonic()
        if verifier_path.exists():
            verifier = BackendSpec(name="calibrated", model=str(verifier_path))
            verifier_name = "calibrated (MV) + proposer scores (EV)"
            routing = RoutingConfig(
                target_precision=settings.target_precision, reject_below=0.1,
                ev_accept_above=0.9, ev_reject_below=0.1,
            )  # fmt: skip
        else:
            verifier, verifier_name = scores, "proposer scores (MV and EV)"
            routing = RoutingConfig(accept_above=0.9, reject_below=0.1)
        config = MiningConfig(
            proposer=proposer, parser=parser, verifier=verifier,
            pair_verifier=scores if verifier is not scores else None,
            device=settings.device, routing=routing,
        )  # fmt: skip
        job_id, source = _mine(engine, config, main_ids)
        timings["mine"] = time.monotonic() - t
        with session_scope(engine) as session:
            pairs, proposals_cgf1, counts = _measure(session, job_id, world)
        t = time.monotonic()
        with session_scope(engine) as session:
            tally = answer_all(session, DATASET, _truth(world))
        timings["review"] = time.monotonic() - t
        t = time.monotonic()
        heldout = _heldout(model, settings.eval_scenes, settings.device)
        timings["heldout_eval"] = time.monotonic() - t
        human_with = (
            counts["reviewed_pos"] * POSITIVE_PAIR_S + counts["reviewed_neg"] * NEGATIVE_PAIR_S
        )
        human_without = counts["gt_pos"] * POSITIVE_PAIR_S + counts["gt_neg"] * NEGATIVE_PAIR_S
        paper_with = (
            counts["gt_pos"] * PAPER_POSITIVE_WITH_S + counts["gt_neg"] * PAPER_NEGATIVE_WITH_S
        )
        result = RoundResult(
            round=round_no, proposer=model.name, verifier=verifier_name,
            threshold_source=source, images=len(main_ids), pairs=len(pairs),
            proposals_cgf1=proposals_cgf1, heldout_cgf1=heldout,
            auto_accepted_masks=counts["auto_masks"],
            auto_accepted_correct=counts["auto_masks_correct"],
            auto_negative_pairs=counts["auto_neg"],
            auto_negative_correct=counts["auto_neg_correct"],
            auto_positive_pairs=counts["auto_pos"], reviewed_pairs=counts["reviewed"],
            review=tally, human_s_with=human_with, human_s_without=human_without,
            paper_s_with=paper_with, gt_positive_pairs=counts["gt_pos"],
            gt_negative_pairs=counts["gt_neg"], warmup=warmup_tally, calibration=calibration,
            timings=timings, job_id=job_id,
        )  # fmt: skip
        results.append(result)
        log(
            f"  mined {len(main_ids)} images: {len(pairs)} pairs, "
            f"{counts['reviewed']} to the [yellow]SIMULATED reviewer[/] "
            f"({tally.accepted} accepted, {tally.fixed} fixed, {tally.rejected} rejected, "
            f"{tally.drawn} drawn)"
        )
        if round_no < settings.rounds:
            t = time.monotonic()
            model = _retrain(engine, model, out / "models" / f"proposer-round{round_no + 1}",
                             settings, log)  # fmt: skip
            timings["retrain"] = time.monotonic() - t
        timings["round"] = time.monotonic() - began

    with session_scope(engine) as session:
        _export(session, out, log)
    from annotator.demo.report import write_report

    write_report(engine, out / "report.html", results, world, settings.report_images)
    (out / "summary.json").write_text(
        json.dumps([r.as_dict() for r in results], indent=2, default=str) + "\n"
    )
    return results


def _retrain(engine: Any, model: Path, out: Path, settings: DemoSettings, log: Log) -> Path:
    """Fine-tune ``model`` on every accepted label of the dataset (``train proposer``)."""
    from annotator.miners.sam3 import Preprocessing, _image_processor_config
    from annotator.training.calibrate import describe_point
    from annotator.training.database import dataset_examples
    from annotator.training.starter import calibrate_model
    from annotator.training.trainer import TrainSettings, train

    preprocessing = Preprocessing.from_config(_image_processor_config(str(model)))
    with session_scope(engine) as session:
        examples, stats = dataset_examples(session, DATASET, preprocessing)
    settings_ = TrainSettings(
        steps=settings.finetune_steps, lr=3e-4, warmup_steps=20, seed=settings.seed,
        device=settings.device, checkpoint_every=0,
    )  # fmt: skip
    result = train(model, examples, out, settings_, resume=False)
    log(
        f"  proposer fine-tuned on {stats.positives} positive pairs ({stats.masks} masks) and "
        f"{stats.negatives} negative pairs of {len(examples)} images: {settings.finetune_steps} "
        f"steps, loss {result.first_loss:.2f} -> {result.last_loss:.2f}, "
        f"{result.elapsed_s:.0f} s -> {out.name}"
    )
    # Its operating point, as the starter's was fitted: on separate scenes of the same world.
    point = calibrate_model(out, device=settings.device)
    log(
        f"  operating point fitted on {point['scenes']} separate scenes: "
        f"{describe_point(point)} (cgF1 there {point['cgf1_before']:.1f} -> "
        f"{point['cgf1_after']:.1f})"
    )
    return out


def _export(session: Any, out: Path, log: Log) -> None:
    from annotator.services.exporting import export_dataset

    for fmt in ("coco", "saco"):
        path = out / f"{DATASET}.{fmt}.json"
        with path.open("wb") as fh:
            result = export_dataset(session, DATASET, fmt, fh)
        counts = ", ".join(f"{v:,} {k}" for k, v in result.counts.items())
        log(f"exported {path} ({counts})")
