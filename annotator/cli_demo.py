"""``annotator demo``: the data engine end to end, offline, on a synthetic world.

Registered on the ``annotator`` app by :mod:`annotator.cli` (imported at its end).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from annotator.cli import app, console, handle_errors

if TYPE_CHECKING:
    from annotator.demo.run import RoundResult

# Scenes per round: the one-round demo stays a quick look; a flywheel round needs enough
# reviewed pairs for the calibrated verifier to fit and then to be refitted (with 48 scenes a
# weak proposer's round gives it too few accepted masks).
ONE_ROUND_IMAGES = 48
FLYWHEEL_IMAGES = 128


@app.command("demo")
@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (wiped first).")] = Path(
        "out/demo"
    ),
    rounds: Annotated[
        int,
        typer.Option(
            min=1, help="Flywheel rounds: each after the first retrains the proposer and verifier."
        ),
    ] = 1,
    images: Annotated[
        int | None,
        typer.Option(
            min=4,
            help=f"Synthetic scenes per round (default {ONE_ROUND_IMAGES}; "
            f"{FLYWHEEL_IMAGES} with --rounds 2 or more: the flywheel needs enough reviews per "
            "round to refit the verifier).",
            show_default=False,
        ),
    ] = None,
    warmup_images: Annotated[
        int, typer.Option(min=1, help="Round-1 scenes reviewed in full to fit the verifier.")
    ] = 16,
    eval_scenes: Annotated[
        int, typer.Option(min=1, help="Held-out scenes each round's proposer is measured on.")
    ] = 60,
    target_precision: Annotated[
        float, typer.Option(help="Precision the auto-accepted masks are routed for.")
    ] = 0.95,
    finetune_steps: Annotated[int, typer.Option(min=1, help="Proposer steps per retrain.")] = 300,
    proposer_model: Annotated[
        Path | None,
        typer.Option(help="Start from this model directory (default: the shipped starter)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Which synthetic scenes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
) -> None:
    """Run the data engine offline on synthetic scenes and print what it did.

    Generates scenes with alt-text, mines them (offline parser -> starter SAM 3 proposer ->
    verifiers -> routing) into a SQLite database under --out, answers the review queue with a
    SIMULATED reviewer that reads the synthetic ground truth, exports COCO and SA-Co, and writes
    report.html. With --rounds 2 the proposer and verifier are retrained on round 1's labels.
    """
    from annotator.demo.run import DemoSettings, run_demo

    settings = DemoSettings(
        out=out, rounds=rounds,
        images=images or (ONE_ROUND_IMAGES if rounds == 1 else FLYWHEEL_IMAGES),
        warmup_images=warmup_images,
        eval_scenes=eval_scenes, target_precision=target_precision,
        finetune_steps=finetune_steps, proposer_model=proposer_model, seed=seed, device=device,
    )  # fmt: skip
    console.print(
        "[bold]annotator demo[/]: offline, SQLite, in-process. Review answers come from a "
        "[bold yellow]SIMULATED reviewer[/] driven by the synthetic ground truth, not a person."
    )
    began = time.monotonic()
    results = run_demo(settings, log=lambda line: console.print(line, highlight=False))
    console.print(_summary(results))
    if len(results) > 1:
        console.print(_flywheel_text(results[0], results[-1]), highlight=False)
    console.print(
        f"report: {out / 'report.html'}; exports: {out / 'demo.coco.json'}, "
        f"{out / 'demo.saco.json'}; database: {out / 'annotator.db'} "
        f"({time.monotonic() - began:.0f} s)",
        highlight=False,
    )
    console.print(
        "[dim]Human times: SAM 3 paper Table 14 per image-phrase pair (negatives 30 s -> 6 s with "
        "AI verifiers, positives 207 s -> 152 s, mix 50 s -> 23 s; 90 s from scratch). "
        "'with verifier' = pairs routed to a person x the paper's human-only time; "
        "'without' = every pair reviewed by a person.[/]"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _summary(results: list[RoundResult]) -> Table:
    table = Table(title="demo summary (review answers: SIMULATED reviewer)")
    table.add_column("")
    for r in results:
        table.add_column(f"round {r.round}", justify="right")

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("proposer", [r.proposer for r in results])
    row("images mined (after warm-up)", [str(r.images) for r in results])
    row("image-phrase pairs", [str(r.pairs) for r in results])
    row(
        "cgF1 of the proposals (pmF1 / IL_MCC)",
        [
            f"{r.proposals_cgf1['cgF1']:.1f} ({r.proposals_cgf1['pmF1']:.2f} / "
            f"{r.proposals_cgf1['IL_MCC']:.2f})"
            for r in results
        ],
    )
    row(
        "proposer cgF1, held-out scenes",
        [f"{r.heldout_cgf1['cgF1']:.1f}" for r in results],
    )
    row(
        "auto-accepted masks (precision, IoU>=0.5)",
        [f"{r.auto_accepted_masks} ({_pct(r.auto_precision)})" for r in results],
    )
    row(
        "auto-negative pairs (correct)",
        [f"{r.auto_negative_pairs} ({r.auto_negative_correct})" for r in results],
    )
    row(
        "pairs that needed a person",
        [f"{r.reviewed_pairs} ({_pct(r.human_share)})" for r in results],
    )
    row(
        "est. human time with verifier",
        [f"{r.human_s_with / 3600:.2f} h" for r in results],
    )
    row(
        "est. human time without verifier",
        [f"{r.human_s_without / 3600:.2f} h" for r in results],
    )
    row(
        "  (paper's AI-verifier rates: 6 s / 152 s)",
        [f"{r.paper_s_with / 3600:.2f} h" for r in results],
    )
    row("MV auto-accept threshold", [_threshold_text(r.threshold_source) for r in results])
    row("EV auto-negative threshold", [_absence_text(r.threshold_source) for r in results])
    return table


def _flywheel_text(first: RoundResult, last: RoundResult) -> str:
    """The flywheel in one line: held-out cgF1, share of pairs needing a person, and the
    estimated human time per mined image (the share depends on how many hard-negative pairs a
    proposer brings into its round; the time per image does not)."""

    def per_image(r: RoundResult) -> float:
        return r.human_s_with / 3600 / max(r.images, 1)

    return (
        f"flywheel: held-out cgF1 {first.heldout_cgf1['cgF1']:.1f} -> "
        f"{last.heldout_cgf1['cgF1']:.1f}, share of pairs needing a person "
        f"{100 * first.human_share:.0f}% -> {100 * last.human_share:.0f}%, est. human time per "
        f"mined image {per_image(first):.3f} h -> {per_image(last):.3f} h"
    )


def _threshold_text(source: str) -> str:
    """A routing ``threshold_source`` for the summary table: its first clause (the whole text
    is in summary.json), and whether MV auto-accept was off."""
    head = source.split(";")[0].split(" (verifier ")[0]
    if "MV auto-accept off" in source and "MV auto-accept off" not in head:
        head += ": MV auto-accept off"
    return head


def _absence_text(source: str) -> str:
    """The EV absence clause of a routing ``threshold_source`` for the summary table (how the
    threshold for declaring a hard negative absent was chosen), or ``-`` when it has none."""
    for clause in source.split("; "):
        if clause.startswith("EV absence: "):
            return clause.removeprefix("EV absence: ").split(" (EV ")[0]
    return "-"
