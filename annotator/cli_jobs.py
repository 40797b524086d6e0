"""CLI commands for images and mining jobs: ``images add``, ``mine``, ``jobs ...``.

Registered on the ``annotator`` app by :mod:`annotator.cli` (imported at its end).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.table import Table

from annotator.cli import app, console, err_console, handle_errors, ready_engine
from annotator.errors import InvalidInputError

images_app = typer.Typer(help="Images of a dataset.", no_args_is_help=True)
jobs_app = typer.Typer(help="Mining jobs: list, show, cancel, resume.", no_args_is_help=True)
app.add_typer(images_app, name="images")
app.add_typer(jobs_app, name="jobs")

if TYPE_CHECKING:
    from annotator.services.jobs import JobProgress


# -------------------------------------------------------------------------------------- images


@images_app.command("add")
@handle_errors
def images_add(
    name: Annotated[str, typer.Argument(help="Dataset (created if it does not exist).")],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Image files, directories or http(s) URLs.", show_default=False),
    ] = None,
    alt_text: Annotated[
        Path | None,
        typer.Option(
            "--alt-text",
            help='JSONL: {"file_name" or "uri": ..., "alt_text": ...} per line (a concept source).',
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive/--no-recursive", help="Descend into sub-directories.")
    ] = True,
    copy: Annotated[
        bool,
        typer.Option("--copy/--no-copy", help="Copy local files under ANNOTATOR_MEDIA_ROOT."),
    ] = False,
    download: Annotated[
        bool,
        typer.Option(
            "--download/--no-download",
            help="Download URLs now (default) or record them for the ingest stage to fetch.",
        ),
    ] = True,
) -> None:
    """Add images from files, directories (image files, recursively) and URLs.

    Each bad input (missing, empty, not an image, too large, download failed) is reported and the
    rest are added. Images already in the dataset (same bytes) are skipped.
    """
    from annotator.db.session import session_scope
    from annotator.services.images import add_images, expand_inputs, read_alt_text

    paths = inputs or []
    if not paths and alt_text is None:
        raise InvalidInputError("give image files, directories or URLs (or --alt-text)")
    texts = read_alt_text(alt_text) if alt_text is not None else None
    engine = ready_engine()
    total = len(expand_inputs(paths)[0])
    with _bar() as bar, session_scope(engine) as session:
        task = bar.add_task("adding images", total=total)
        result = add_images(
            session, name, paths, alt_text=texts, recursive=recursive, copy=copy,
            download=download, progress=lambda n: bar.advance(task, n),
        )  # fmt: skip
    for source, reason in result.failed:
        err_console.print(f"[yellow]skipped[/] {source}: {reason}", highlight=False)
    created = " (new dataset)" if result.dataset_created else ""
    parts = [f"{result.added:,} added", f"{result.duplicates:,} already there"]
    if result.failed:
        parts.append(f"{len(result.failed):,} failed")
    if texts is not None:
        parts.append(f"alt-text on {result.alt_texts:,}")
    console.print(f"dataset {result.dataset!r}{created}: " + ", ".join(parts))
    if result.alt_text_unmatched:
        shown = ", ".join(result.alt_text_unmatched[:5])
        err_console.print(
            f"[yellow]warning:[/] {len(result.alt_text_unmatched)} alt-text entries match no "
            f"image: {shown}",
            highlight=False,
        )


def _bar() -> Progress:
    from annotator.cli import _progress

    return _progress()


# ---------------------------------------------------------------------------------------- mine


def _options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``-o proposer.score_threshold=0.3`` -> {"proposer": {"score_threshold": 0.3}}."""
    out: dict[str, dict[str, Any]] = {}
    for raw in pairs:
        key, sep, value = raw.partition("=")
        backend, dot, option = key.partition(".")
        if not sep or not dot or backend not in ("proposer", "captioner", "parser", "verifier"):
            raise InvalidInputError(
                f"--option {raw!r}: use BACKEND.NAME=VALUE with BACKEND one of proposer, "
                "captioner, parser, verifier"
            )
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(backend, {})[option] = parsed
    return out


class _StageBars:
    """Rich progress: one bar per stage plus the job's rate and ETA."""

    def __init__(self) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            console=err_console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, state: JobProgress) -> None:
        for stage in state.stages:
            note = ""
            if stage.failed:
                note = f"[red]{stage.failed} failed[/]"
            if stage.stage not in self.tasks:
                self.tasks[stage.stage] = self.progress.add_task(
                    stage.stage, total=stage.total, note=note
                )
            self.progress.update(
                self.tasks[stage.stage], completed=stage.finished, total=stage.total, note=note
            )
        summary = _rate_text(state)
        if "job" not in self.tasks:
            self.tasks["job"] = self.progress.add_task(
                f"job {state.job_id}", total=None, note=summary
            )
        self.progress.update(self.tasks["job"], note=summary)


def _rate_text(state: JobProgress) -> str:
    parts = [state.status.value, f"{state.images_finished}/{state.images} images"]
    if state.rate:
        parts.append(f"{state.rate:.2f} items/s")
    if state.eta_s is not None:
        parts.append(f"ETA {_duration(state.eta_s)}")
    parts.append(f"elapsed {_duration(state.elapsed_s)}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@app.command("mine")
@handle_errors
def mine(
    name: Annotated[str, typer.Argument(help="Dataset.")],
    proposer: Annotated[str | None, typer.Option(help="Mask proposer (sam3, sam3-native).")] = None,
    proposer_model: Annotated[str | None, typer.Option(help="Hub id or local dir.")] = None,
    captioner: Annotated[
        str | None, typer.Option(help="Captioner (vlm), or none: concepts from alt-text only.")
    ] = None,
    captioner_model: Annotated[str | None, typer.Option(help="Hub id or local dir.")] = None,
    parser: Annotated[str | None, typer.Option(help="Concept parser (offline, llm).")] = None,
    parser_model: Annotated[str | None, typer.Option(help="Hub id or local dir.")] = None,
    verifier: Annotated[str | None, typer.Option(help="Verifier (vlm, calibrated).")] = None,
    verifier_model: Annotated[
        str | None, typer.Option(help="Hub id, local dir, or a calibrated .joblib.")
    ] = None,
    pair_verifier: Annotated[
        str | None, typer.Option(help="EV verifier when --verifier judges masks only.")
    ] = None,
    pair_verifier_model: Annotated[str | None, typer.Option(help="Hub id or local dir.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    accept_above: Annotated[
        float | None, typer.Option(help="MV p_accept at or above: auto-accept (default 0.9).")
    ] = None,
    reject_below: Annotated[
        float | None, typer.Option(help="MV p_accept at or below: reject (default 0.1).")
    ] = None,
    target_precision: Annotated[
        float | None,
        typer.Option(
            help="Fit the MV thresholds on reviewed masks, and EV's absence threshold on "
            "reviewed pairs, for this precision."
        ),
    ] = None,
    auto_negative_named: Annotated[
        bool,
        typer.Option(
            "--auto-negative-named/--no-auto-negative-named",
            help="Let EV declare absent, without a person, a phrase named for the image "
            "(caption, alt-text), not only a hard negative. Off: such pairs go to a person.",
        ),
    ] = False,
    hard_negatives: Annotated[
        bool, typer.Option("--hard-negatives/--no-hard-negatives", help="Mine hard negatives.")
    ] = True,
    max_concepts: Annotated[int | None, typer.Option(help="Concepts per image at most.")] = None,
    images: Annotated[
        str, typer.Option(help="new (not in an earlier job), all, or comma-separated ids.")
    ] = "new",
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", help="Backend option BACKEND.NAME=VALUE (e.g. proposer.batch_size=8)."
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="With a broker, follow the job until it ends (without one it always runs here).",
        ),
    ] = False,
) -> None:
    """Run a mining job: ingest, caption, parse, propose, verify, route.

    Without ANNOTATOR_BROKER_URL the job runs in this process; with it, on Celery workers.
    """
    from annotator.config import get_settings
    from annotator.db.models import JobStatus
    from annotator.pipeline.config import BackendSpec, MiningConfig
    from annotator.pipeline.runner import launch_job, watch_job

    selection: Any = images
    if images not in ("new", "all"):
        try:
            selection = [int(part) for part in images.split(",") if part.strip()]
        except ValueError as exc:
            raise InvalidInputError(f"--images {images!r}: use new, all or ids like 1,2,3") from exc
    opts = _options(option or [])
    overrides: dict[str, Any] = {
        "proposer": proposer, "proposer_model": proposer_model,
        "captioner": captioner, "captioner_model": captioner_model,
        "parser": parser, "parser_model": parser_model,
        "verifier": verifier, "verifier_model": verifier_model,
        "device": device, "accept_above": accept_above, "reject_below": reject_below,
        "target_precision": target_precision, "hard_negatives": hard_negatives,
        "auto_negative_named": auto_negative_named,
        "max_concepts": max_concepts, "images": selection,
    }  # fmt: skip
    for backend, values in opts.items():
        overrides[f"{backend}_options"] = values
    if pair_verifier is not None:
        overrides["pair_verifier"] = BackendSpec(name=pair_verifier, model=pair_verifier_model)
    try:
        config = MiningConfig.from_settings(**overrides)
    except ValueError as exc:
        raise InvalidInputError(f"invalid job settings: {exc}") from exc
    engine = ready_engine()
    bars = _StageBars()
    with bars.progress:
        job_id, status = launch_job(
            engine,
            name,
            config,
            progress=bars,
            on_created=lambda j: err_console.print(f"job {j} created for dataset {name!r}"),
        )
        if wait and status not in (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED):
            status = watch_job(engine, job_id, bars)
    _print_outcome(engine, job_id)
    if get_settings().broker_url and not wait and status in (JobStatus.QUEUED, JobStatus.RUNNING):
        console.print(f"job {job_id} queued on the workers: `annotator jobs show {job_id}`")
    if status == JobStatus.FAILED:
        raise typer.Exit(1)


def _print_outcome(engine: Any, job_id: int) -> None:
    from annotator.db.session import session_scope
    from annotator.services.jobs import job_progress

    with session_scope(engine) as session:
        state = job_progress(session, job_id)
        from annotator.db import mining

        job = mining.get_job(session, job_id)
        counters = dict(job.counters or {})
    line = f"job {job_id} {state.status.value}: " + _counters_text(counters)
    console.print(line, highlight=False)
    if state.error:
        err_console.print(f"[bold red]error:[/] {state.error}", highlight=False)


def _counters_text(counters: dict[str, Any]) -> str:
    labels = [
        ("images", "images"), ("pairs_positive", "positive pairs"),
        ("pairs_negative", "negative pairs"), ("pairs_in_review", "pairs to review"),
        ("pairs_ungroundable", "ungroundable"), ("annotations_auto", "masks auto-accepted"),
        ("proposals", "proposals"),
    ]  # fmt: skip
    return ", ".join(f"{counters[k]:,} {label}" for k, label in labels if k in counters)


# ---------------------------------------------------------------------------------------- jobs


@jobs_app.command("list")
@handle_errors
def jobs_list(
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 20,
) -> None:
    """List jobs with their status and progress."""
    from annotator.db import mining
    from annotator.db.session import session_scope
    from annotator.services.jobs import job_progress, list_jobs

    table = Table("id", "kind", "dataset", "status", "images", "items done", "created")
    with session_scope(ready_engine()) as session:
        rows = list_jobs(session, limit)
        names = mining.dataset_names(session)
        for job in rows:
            state = job_progress(session, job.id)
            table.add_row(
                str(job.id), job.kind.value, names.get(job.dataset_id or -1, "-"),
                job.status.value, f"{state.images:,}", f"{state.finished:,}/{state.total:,}",
                job.created_at.strftime("%Y-%m-%d %H:%M"),
            )  # fmt: skip
    console.print(table if rows else "no jobs yet: `annotator mine NAME`")


@jobs_app.command("show")
@handle_errors
def jobs_show(job_id: Annotated[int, typer.Argument(help="Job id.")]) -> None:
    """Progress per stage, rate, ETA, outcome and the first failed items of a job."""
    from annotator.db import mining
    from annotator.db.session import session_scope
    from annotator.services.jobs import job_progress

    with session_scope(ready_engine()) as session:
        state = job_progress(session, job_id)
        job = mining.get_job(session, job_id)
        config = dict(job.config or {})
        counters = dict(job.counters or {})
        errors = mining.item_errors(session, job_id)
    table = Table("stage", "done", "failed", "skipped", "pending", title=f"job {job_id}")
    for s in state.stages:
        table.add_row(s.stage, f"{s.done:,}", f"{s.failed:,}", f"{s.skipped:,}", f"{s.pending:,}")
    console.print(table)
    console.print(_rate_text(state), highlight=False)
    routing = config.get("routing", {})
    accept = (
        f"accept_above {routing.get('accept_above')}"
        if routing.get("auto_accept", True)
        else "MV auto-accept off"
    )
    console.print(
        f"routing: {accept}, reject_below "
        f"{routing.get('reject_below')} ({routing.get('threshold_source', 'configured')})",
        highlight=False,
    )
    if counters:
        console.print(_counters_text(counters), highlight=False)
    if state.error:
        err_console.print(f"[bold red]error:[/] {state.error}", highlight=False)
    for image_id, file_name, stage, error in errors:
        err_console.print(f"[yellow]{stage}[/] image {image_id} ({file_name}): {error}")


@jobs_app.command("cancel")
@handle_errors
def jobs_cancel(job_id: Annotated[int, typer.Argument(help="Job id.")]) -> None:
    """Stop a job: no new item starts; finished items stay. Resume it later."""
    from annotator.config import get_settings
    from annotator.db.session import session_scope
    from annotator.services.jobs import cancel_job

    engine = ready_engine()
    if get_settings().broker_url:
        # Workers keep no state about a job: it is settled as cancelled now, and its queued
        # messages are dropped when consumed (workers.tasks.cancel_job).
        from workers.tasks import cancel_job as cancel_on_workers

        console.print(f"job {job_id} {cancel_on_workers(job_id, engine).value}")
        return
    with session_scope(engine) as session:
        status = cancel_job(session, job_id).status
    console.print(f"job {job_id} {status.value}")


@jobs_app.command("resume")
@handle_errors
def jobs_resume(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also run the failed images again.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow it (broker).")] = False,
) -> None:
    """Run the unfinished items of a job again (inline, or on the workers with a broker)."""
    from annotator.db.models import JobStatus
    from annotator.pipeline.runner import relaunch_job, watch_job

    engine = ready_engine()
    bars = _StageBars()
    with bars.progress:
        status = relaunch_job(engine, job_id, retry_failed=retry_failed, progress=bars)
        if wait and status not in (JobStatus.DONE, JobStatus.CANCELLED, JobStatus.FAILED):
            status = watch_job(engine, job_id, bars)
    _print_outcome(engine, job_id)
    if status == JobStatus.FAILED:
        raise typer.Exit(1)
