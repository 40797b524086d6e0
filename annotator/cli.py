"""The ``annotator`` command line (typer). Every command opens one transaction and owns it."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from annotator.config import get_settings
from annotator.errors import AnnotatorError

app = typer.Typer(
    name="annotator",
    help="Human-in-the-loop data engine for open-vocabulary instance segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
datasets_app = typer.Typer(help="Datasets.", no_args_is_help=True)
versions_app = typer.Typer(help="Frozen dataset versions.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(datasets_app, name="datasets")
app.add_typer(versions_app, name="versions")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

FORMAT_HELP = "coco (instance segmentation, RLE) or saco (SA-Co image-phrase pairs)"


def handle_errors(func: F) -> F:
    """Print an ``AnnotatorError`` (or an unreachable database) as one line and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AnnotatorError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from exc
        except OperationalError as exc:
            url = get_settings().database_url
            err_console.print(
                f"[bold red]error:[/] cannot use the database {url}: {exc.orig}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def ready_engine() -> Engine:
    """The configured engine, after checking that its schema is current."""
    from annotator.db.migrate import ensure_current
    from annotator.db.session import get_engine

    engine = get_engine(get_settings().database_url)
    ensure_current(engine)
    return engine


@app.callback()
def main(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="ANNOTATOR_DATABASE_URL",
            help="Database URL (default sqlite:///./annotator.db).",
            show_envvar=True,
        ),
    ] = None,
) -> None:
    """Human-in-the-loop data engine for open-vocabulary instance segmentation."""
    if database_url:
        os.environ["ANNOTATOR_DATABASE_URL"] = database_url
        get_settings.cache_clear()


# ------------------------------------------------------------------------------------------ db


@db_app.command("upgrade")
@handle_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the schema to the newest revision."""
    from annotator.db import migrate

    url = get_settings().database_url
    migrate.upgrade(url, revision)
    console.print(f"database at revision {revision} ({_safe_url(url)})")


@db_app.command("downgrade")
@handle_errors
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")],
) -> None:
    """Migrate the schema down (``base`` drops every table)."""
    from annotator.db import migrate

    migrate.downgrade(get_settings().database_url, revision)
    console.print(f"database at revision {revision}")


@db_app.command("current")
@handle_errors
def db_current() -> None:
    """Show the schema revision of the database and of this code."""
    from annotator.db import migrate
    from annotator.db.session import get_engine

    engine = get_engine(get_settings().database_url)
    current = migrate.current_revision(engine)
    head = migrate.head_revision()
    console.print(f"database: {current or 'empty'}   code: {head}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# ------------------------------------------------------------------------------------ datasets


@datasets_app.command("create")
@handle_errors
def datasets_create(
    name: str,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
) -> None:
    """Create an empty dataset."""
    from annotator.db import repositories as repo
    from annotator.db.session import session_scope

    with session_scope(ready_engine()) as session:
        repo.create_dataset(session, name, description)
    console.print(f"created dataset {name!r}")


@datasets_app.command("list")
@handle_errors
def datasets_list() -> None:
    """List datasets with their counts."""
    from annotator.db import repositories as repo
    from annotator.db.session import session_scope

    with session_scope(ready_engine()) as session:
        rows = repo.list_datasets(session)
    table = Table("dataset", "images", "positive pairs", "negative pairs", "masks", "versions")
    for r in rows:
        table.add_row(
            r.name,
            *(f"{v:,}" for v in (r.images, r.positives, r.negatives, r.annotations)),
            str(r.versions),
        )
    console.print(table if rows else "no datasets yet: `annotator datasets create NAME`")


# ------------------------------------------------------------------------------ import/export


@app.command("import")
@handle_errors
def import_cmd(
    name: Annotated[str, typer.Argument(help="Dataset (created if it does not exist).")],
    file: Annotated[Path, typer.Argument(help="The COCO or SA-Co JSON file.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)] = "coco",
    images: Annotated[
        Path | None,
        typer.Option(help="Folder holding the images: each is found, hashed and size-checked."),
    ] = None,
) -> None:
    """Import a COCO or SA-Co file. All or nothing: a bad entry aborts with its name."""
    from annotator.db.session import session_scope
    from annotator.services.importing import locate_images, read_bundle, write_bundle

    engine = ready_engine()
    with console.status(f"reading {file} ..."):
        bundle = read_bundle(file, fmt)
        located = locate_images(bundle, images) if images is not None else None
    with (
        console.status(f"writing {bundle.num_annotations:,} masks ..."),
        session_scope(engine) as session,
    ):
        result = write_bundle(session, name, bundle, located)
    created = " (new dataset)" if result.dataset_created else ""
    console.print(
        f"imported into {result.dataset!r}{created}: {result.images_added:,} images added, "
        f"{result.images_reused:,} reused, {result.positives:,} positive and "
        f"{result.negatives:,} negative pairs, {result.annotations:,} masks"
    )


@app.command("export")
@handle_errors
def export_cmd(
    name: Annotated[str, typer.Argument(help="Dataset.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output JSON file.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)] = "coco",
    version: Annotated[
        str | None, typer.Option(help="Export this frozen version instead of the live dataset.")
    ] = None,
) -> None:
    """Export a dataset (or a version) as COCO or SA-Co, streaming."""
    from annotator.db.session import session_scope
    from annotator.services.exporting import count_annotations, export_dataset

    engine = ready_engine()
    if fmt not in ("coco", "saco"):
        raise typer.BadParameter(f"unknown format {fmt!r}: use coco or saco", param_hint="--format")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with session_scope(engine, snapshot=True) as session:
        total = count_annotations(session, name, version)
        with _progress() as progress, tmp.open("wb") as fh:
            task = progress.add_task("exporting masks", total=total)
            result = export_dataset(
                session, name, fmt, fh, version=version,
                progress=lambda n: progress.advance(task, n),
            )  # fmt: skip
    tmp.replace(out)
    counts = ", ".join(f"{v:,} {k}" for k, v in result.counts.items())
    console.print(f"wrote {out} ({fmt}; {counts}; sha256 {result.sha256[:16]})")
    if result.matches_version is False:
        err_console.print(
            f"[yellow]warning:[/] this export differs from the checksum recorded when version "
            f"{version!r} was frozen ({result.expected_sha256}); the export code has changed "
            "since, or the database was modified by hand"
        )


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=not sys.stderr.isatty(),
    )


@app.command("eval")
@handle_errors
def eval_cmd(
    gt: Annotated[Path, typer.Option("--gt", help="SA-Co ground truth JSON.")],
    pred: Annotated[
        Path, typer.Option("--pred", help="Predictions: COCO results with image_id = pair id.")
    ],
    score_threshold: Annotated[float, typer.Option(help="Predictions below are dropped.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """cgF1 / pmF1 / IL_MCC of predictions on the instance-exhaustive pairs of an SA-Co file."""
    from annotator.evaluation import evaluate_files

    result = evaluate_files(gt, pred, score_threshold=score_threshold)
    if as_json:
        typer.echo(json.dumps(result.as_dict()))
        return
    table = Table("metric", "value", title=f"{result.pairs:,} instance-exhaustive pairs")
    for key, value in result.as_dict().items():
        table.add_row(
            key,
            f"{value:.2f}"
            if key == "cgF1"
            else f"{value:.4f}"
            if isinstance(value, float)
            else str(value),
        )
    console.print(table)


# ------------------------------------------------------------------------------------ versions


@versions_app.command("create")
@handle_errors
def versions_create(
    name: Annotated[str, typer.Argument(help="Dataset.")],
    tag: Annotated[str, typer.Argument(help="Version tag, e.g. v1.")],
    note: Annotated[str | None, typer.Option(help="Free text.")] = None,
) -> None:
    """Freeze the accepted pairs and masks as a version (exports of it never change)."""
    from annotator.db.session import session_scope
    from annotator.services.versions import create_version

    with (
        console.status(f"freezing {name!r} as {tag!r} ..."),
        session_scope(ready_engine()) as session,
    ):
        version = create_version(session, name, tag, note)
        pairs, anns = version.num_pairs, version.num_annotations
    console.print(f"version {tag!r} of {name!r}: {pairs:,} pairs, {anns:,} masks")


@versions_app.command("list")
@handle_errors
def versions_list(name: Annotated[str, typer.Argument(help="Dataset.")]) -> None:
    """List the versions of a dataset."""
    from annotator.db.session import session_scope
    from annotator.services.versions import list_versions

    with session_scope(ready_engine()) as session:
        versions = list_versions(session, name)
        table = Table("tag", "created", "pairs", "masks", "coco sha256", "note")
        for v in versions:
            table.add_row(
                v.tag, v.created_at.strftime("%Y-%m-%d %H:%M"), f"{v.num_pairs:,}",
                f"{v.num_annotations:,}", (v.checksums.get("coco") or "")[:16], v.note or "",
            )  # fmt: skip
    console.print(table if versions else f"dataset {name!r} has no versions yet")


# -------------------------------------------------------------------------------------- worker


@app.command("worker")
@handle_errors
def worker_cmd(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated queues to consume: gpu, cpu.")
    ] = "gpu,cpu",
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", "-c", help="Processes (default: 1 with gpu, else one per core)."
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(help="Celery pool: solo (default at concurrency 1), prefork, threads."),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING ...")] = "INFO",
    hostname: Annotated[
        str | None, typer.Option(help="Worker name (default: queues.pid@host).")
    ] = None,
) -> None:
    """Run a Celery worker for mining jobs (needs ANNOTATOR_BROKER_URL). GPU: one per GPU."""
    from workers.worker import run_worker, worker_argv

    names = [q.strip() for q in queues.split(",") if q.strip()]
    run_worker(worker_argv(names, concurrency, pool, loglevel, hostname))


@app.command("beat")
@handle_errors
def beat_cmd(
    loglevel: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING ...")] = "INFO",
    heartbeat_file: Annotated[
        Path | None,
        typer.Option(help="Touched at every wake-up, for health checks (default: in /tmp)."),
    ] = None,
) -> None:
    """Send the periodic tasks to the workers (needs ANNOTATOR_BROKER_URL): the review sync
    from Label Studio every ANNOTATOR_REVIEW_SYNC_INTERVAL_S seconds (default 300; 0: off).
    Run exactly one beat per deployment, beside a worker of the cpu queue."""
    from workers.beat import DEFAULT_HEARTBEAT, run_beat

    run_beat(loglevel, heartbeat_file or DEFAULT_HEARTBEAT)


# images add, mine, jobs ...: defined in their own module, registered on `app` when imported.
from annotator import (  # noqa: E402, F401
    cli_demo,
    cli_jobs,
    cli_train,
    cli_users,
)

# -------------------------------------------------------------------------------------- review

review_app = typer.Typer(help="Human review in Label Studio.", no_args_is_help=True)
app.add_typer(review_app, name="review")


def _label_studio_client() -> Any:
    from annotator.integrations.label_studio import make_client

    settings = get_settings()
    return make_client(settings.label_studio_url, settings.label_studio_token)


@review_app.command("push")
@handle_errors
def review_push(
    name: Annotated[str, typer.Argument(help="Dataset.")],
    batch_size: Annotated[
        int, typer.Option(min=1, max=5000, help="Tasks per Label Studio import request.")
    ] = 100,
    recreate: Annotated[
        bool,
        typer.Option(
            "--recreate",
            help="If the dataset's project was deleted in Label Studio: make a new one and send "
            "again every task not reviewed yet (without it, that is an error).",
        ),
    ] = False,
) -> None:
    """Send the dataset's open review tasks to its Label Studio project (created on first use,
    with the webhook to ANNOTATOR_PUBLIC_URL). Running it again sends only new tasks.

    A project deleted in Label Studio stops the push with an error; --recreate replaces it
    (decisions already brought home are kept, reviewed tasks are not sent again)."""
    from annotator.services.review import push_dataset

    engine = ready_engine()
    client = _label_studio_client()
    with console.status(f"pushing review tasks of {name!r} to {client.base_url} ..."):
        result = push_dataset(engine, name, client, batch_size=batch_size, recreate=recreate)
    created = " (new project)" if result.project_created else ""
    if result.reopened:
        created = (
            f" (new project: the old one was deleted in Label Studio; {result.reopened:,} "
            "tasks it held unreviewed are sent again)"
        )
    console.print(
        f"Label Studio project {result.project_id}{created}: {result.created:,} tasks sent, "
        f"{result.adopted:,} adopted from an interrupted push, "
        f"{result.refreshed:,} image URLs renewed"
    )
    for problem in result.skipped:
        err_console.print(f"[yellow]skipped:[/] {problem}", highlight=False)


@review_app.command("sync")
@handle_errors
def review_sync(name: Annotated[str, typer.Argument(help="Dataset.")]) -> None:
    """Bring every reviewer decision in Label Studio home (whatever the webhook missed)."""
    from annotator.db.session import session_scope
    from annotator.services.review import sync_dataset

    engine = ready_engine()
    client = _label_studio_client()
    with (
        console.status(f"syncing reviews of {name!r} from {client.base_url} ..."),
        session_scope(engine) as session,
    ):
        result = sync_dataset(session, name, client)
    console.print(
        f"{result.tasks:,} tasks read: {result.applied:,} annotations applied, "
        f"{result.unchanged:,} unchanged, {result.deleted:,} deletions recorded, "
        f"{result.skipped:,} skipped by the reviewer"
    )
    if result.missing:
        ids = ", ".join(result.missing[:10]) + (" ..." if len(result.missing) > 10 else "")
        err_console.print(
            f"[yellow]warning:[/] {len(result.missing):,} sent tasks no longer exist in Label "
            f"Studio (ids {ids})",
            highlight=False,
        )


# --------------------------------------------------------------------------------------- serve


@app.command("serve")
@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (each with its own SO_REUSEPORT socket).")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the API (image URLs and the Label Studio webhook) with uvicorn."""
    from web.serve import serve as run_server

    ready_engine()  # refuse to start on a database that is not migrated
    run_server(host, port, workers, log_level)


if __name__ == "__main__":  # pragma: no cover
    app()
