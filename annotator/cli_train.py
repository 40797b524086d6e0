"""CLI commands for training: ``train proposer`` (a dataset's accepted labels) and
``train starter`` (the synthetic world, from scratch).

Registered on the ``annotator`` app by :mod:`annotator.cli` (imported at its end).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from annotator.cli import app, console, err_console, handle_errors, ready_engine
from annotator.errors import InvalidInputError

# Fewest set-aside images an operating point is fitted on (fewer: no calibration.json).
MIN_CALIBRATION_IMAGES = 10

train_app = typer.Typer(help="Train the proposer.", no_args_is_help=True)
app.add_typer(train_app, name="train")


class TrainingBar:
    """A rich progress bar over steps, with the loss (smoothed) and learning rate."""

    def __init__(self, description: str) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn(description),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self.task = self.progress.add_task(description, total=None, note="")
        self.smoothed: float | None = None
        self.stage = "detector"
        # Not a terminal (a log file): a line every few steps instead of a redrawn bar.
        self.lines = not err_console.is_terminal

    def __call__(self, report: object) -> None:
        from annotator.training.trainer import StepReport

        assert isinstance(report, StepReport)
        if report.stage != self.stage:  # a new stage (the vision warm-up, then the detector)
            self.stage, self.smoothed = report.stage, None
            self.progress.reset(self.task)
        self.smoothed = (
            report.loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * report.loss
        )
        self.progress.update(
            self.task,
            completed=report.step,
            total=report.steps,
            note=f"{report.stage}  loss {self.smoothed:.3f}  lr {report.lr:.1e}",
        )
        if self.lines and (report.step % 50 == 0 or report.step == report.steps):
            terms = " ".join(f"{k} {v:.3f}" for k, v in report.terms.items())
            err_console.print(
                f"{report.stage} step {report.step}/{report.steps} loss {self.smoothed:.3f} "
                f"({terms}) lr {report.lr:.1e} {report.elapsed_s:.0f} s",
                highlight=False,
            )


def _settings(**kwargs: object) -> object:
    from annotator.training.trainer import TrainSettings

    return TrainSettings(**{k: v for k, v in kwargs.items() if v is not None})  # type: ignore[arg-type]


@train_app.command("proposer")
@handle_errors
def train_proposer(
    name: Annotated[str, typer.Argument(help="Dataset whose accepted labels to train on.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model directory.")],
    init: Annotated[
        Path | None,
        typer.Option(help="Model directory to fine-tune (default: the shipped starter)."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps.")] = 300,
    images_per_batch: Annotated[int, typer.Option(min=1)] = 8,
    phrases_per_image: Annotated[int, typer.Option(min=1)] = 4,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 2e-4,
    warmup_steps: Annotated[int, typer.Option(min=0)] = 20,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    checkpoint_every: Annotated[
        int, typer.Option(min=0, help="Save training state every N.")
    ] = 100,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from <out>/.training/.")
    ] = True,
    calibration_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of the labelled images (at most 200) set aside, not trained on, to fit "
            "the operating point on (presence shift, class temperature, score exponent, mask "
            "NMS, mask refinement, presence calibration -> calibration.json); fitted when at "
            f"least {MIN_CALIBRATION_IMAGES} images are set aside. 0: none.",
        ),
    ] = 0.2,
) -> None:
    """Fine-tune a SAM 3 proposer on a dataset's accepted labels.

    Examples are the dataset's instance-exhaustive positive pairs with their current masks
    (automatic and human) and its negative pairs (verified absent). A share of the labelled
    images is set aside to fit the model's operating point on after training. The result is a
    model directory for `annotator mine --proposer-model DIR`.
    """
    from annotator.db.session import session_scope
    from annotator.miners.sam3 import Preprocessing, _image_processor_config
    from annotator.starter import starter_model_dir
    from annotator.training.database import split_dataset_examples
    from annotator.training.trainer import TrainSettings, train

    source = init or starter_model_dir()
    preprocessing = Preprocessing.from_config(_image_processor_config(str(source)))
    with (
        console.status(f"reading the accepted labels of {name!r} ..."),
        session_scope(ready_engine()) as session,
    ):
        examples, held_out, stats = split_dataset_examples(
            session, name, preprocessing, calibration_share=calibration_share, seed=seed
        )
    console.print(
        f"{len(examples):,} images to train on ({stats.calibration_images:,} more set aside for "
        f"calibration), {stats.positives:,} positive pairs ({stats.masks:,} masks), "
        f"{stats.negatives:,} negative pairs; {stats.skipped_not_exhaustive:,} positive pairs "
        "left out (not instance-exhaustive)"
    )
    if not examples:
        raise InvalidInputError(
            f"dataset {name!r} has no labelled image to train on (positive or negative pairs "
            "with readable images)"
        )
    settings = _settings(
        steps=steps, images_per_batch=images_per_batch, phrases_per_image=phrases_per_image,
        lr=lr, warmup_steps=warmup_steps, seed=seed, device=device, threads=threads,
        checkpoint_every=checkpoint_every,
    )  # fmt: skip
    assert isinstance(settings, TrainSettings)
    bar = TrainingBar("training")
    with bar.progress:
        result = train(
            Path(source), examples, out, settings, resume=resume, progress=bar,
            metadata={"dataset": name, "init": str(source), "command": _command()},
        )  # fmt: skip
    console.print(
        f"wrote {out} ({result.steps} steps, loss {result.first_loss:.3f} -> "
        f"{result.last_loss:.3f}, {result.elapsed_s:.0f} s)"
    )
    if len(held_out) < MIN_CALIBRATION_IMAGES:
        console.print(
            f"[yellow]operating point not fitted[/]: {len(held_out)} images set aside, "
            f"{MIN_CALIBRATION_IMAGES} needed (--calibration-share); {out} has no "
            "calibration.json: its score is the plain product, without mask NMS or refinement"
        )
        return
    from annotator.training.calibrate import apply_operating_point, fit_operating_point

    with console.status(f"fitting the operating point on {len(held_out)} set-aside images ..."):
        point = fit_operating_point(out, held_out, device=device)
        apply_operating_point(out, point)
    console.print(
        f"operating point fitted on {point.scenes} set-aside images: {point.describe()} "
        f"(cgF1 there {point.cgf1_before:.1f} -> {point.cgf1_after:.1f}) -> "
        f"{out / 'calibration.json'}"
    )


@train_app.command("verifier")
@handle_errors
def train_verifier(
    name: Annotated[str, typer.Argument(help="Dataset whose human reviews to learn from.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .joblib file.")],
    target_precision: Annotated[
        float, typer.Option(help="Precision the auto-accept threshold is chosen for.")
    ] = 0.95,
    kind: Annotated[str, typer.Option(help="logistic or boosting.")] = "logistic",
) -> None:
    """Fit the calibrated verifier on a dataset's reviewed masks (accepted as is vs rejected
    or fixed), for `annotator mine --verifier calibrated --verifier-model FILE`."""
    from annotator.db.session import session_scope
    from annotator.services.calibration import fit_verifier

    with session_scope(ready_engine()) as session:
        report = fit_verifier(session, name, out, target_precision=target_precision, kind=kind)
    console.print(
        f"wrote {out}: fitted on {report.n_reviews:,} reviewed masks; {report.summary()}",
        highlight=False,
    )


@train_app.command("starter")
@handle_errors
def train_starter_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output model directory.")] = Path(
        "annotator/starter/sam3-shapes"
    ),
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps of the whole model.")] = 5000,
    vision_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="First, steps of the vision encoder alone on the dense colour/shape/texture "
            "loss (cheap: no detector).",
        ),
    ] = 2500,
    vision_images: Annotated[int, typer.Option(min=1, help="Images per vision step.")] = 16,
    vision_lr: Annotated[
        float, typer.Option(help="Peak learning rate of the vision steps.")
    ] = 3e-3,
    weak_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also keep the model after this many steps (<out>-weak; the flywheel demo's "
            "round 1 starts from it; 0: none).",
        ),
    ] = 1500,
    scenes: Annotated[int, typer.Option(min=1, help="Synthetic training scenes.")] = 3000,
    eval_scenes: Annotated[int, typer.Option(min=1, help="Held-out scenes to measure on.")] = 200,
    calibration_scenes: Annotated[
        int, typer.Option(min=1, help="Separate scenes the operating point is fitted on.")
    ] = 100,
    images_per_batch: Annotated[int, typer.Option(min=1)] = 8,
    phrases_per_image: Annotated[int, typer.Option(min=1)] = 4,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 5e-4,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from <out>/.training/.")
    ] = True,
) -> None:
    """Train the starter proposer from scratch on the synthetic world and measure it.

    Writes the model directory, a weaker snapshot (<out>-weak) and metrics.json (cgF1, pmF1,
    IL_MCC on held-out scenes) beside them.
    """
    from annotator.training.starter import train_starter
    from annotator.training.trainer import TrainSettings

    settings = _settings(
        images_per_batch=images_per_batch, phrases_per_image=phrases_per_image, lr=lr,
        seed=seed, device=device, threads=threads, vision_steps=vision_steps,
        vision_images=vision_images, vision_lr=vision_lr,
    )  # fmt: skip
    assert isinstance(settings, TrainSettings)
    bar = TrainingBar("training the starter")
    with bar.progress:
        result = train_starter(
            out, steps=steps, scenes=scenes, weak_steps=weak_steps or None, settings=settings,
            eval_scenes=eval_scenes, calibration_scenes=calibration_scenes, resume=resume,
            progress=bar, command=_command(),
        )  # fmt: skip
    m = result.metrics
    console.print(
        f"wrote {out}: cgF1 {m['model']['cgF1']:.1f}, pmF1 {m['model']['pmF1']:.3f}, "
        f"IL_MCC {m['model']['IL_MCC']:.3f} on {eval_scenes} held-out scenes "
        f"(trained {m['train_wall_s']:.0f} s)"
    )
    if "model_unrefined" in m:
        console.print(
            f"  the same without the mask refinement: cgF1 {m['model_unrefined']['cgF1']:.1f}, "
            f"pmF1 {m['model_unrefined']['pmF1']:.3f}"
        )
    if "weak" in m:
        console.print(f"weaker snapshot {result.weak}: cgF1 {m['weak']['cgF1']:.1f}")


def _command() -> str:
    return "annotator " + " ".join(shlex.quote(a) for a in sys.argv[1:])
