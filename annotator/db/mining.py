"""Queries of mining jobs: jobs, job items, and what each stage reads and writes.

Like :mod:`annotator.db.repositories`, functions take a ``Session`` and only flush; the edge (the
in-process runner, a Celery task, a CLI command) commits. Writes are batched per image and use
INSERT ... ON CONFLICT DO NOTHING on the natural keys, so a stage that runs twice adds nothing.
"""

from __future__ import annotations

import enum
import functools
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    CursorResult,
    Table,
    and_,
    bindparam,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, aliased
from sqlalchemy.schema import ColumnDefault
from sqlalchemy.types import ARRAY, Boolean, Float, Integer, LargeBinary, String
from sqlalchemy.util.typing import TupleAny

from annotator.db.models import (
    Annotation,
    Base,
    Caption,
    Concept,
    Dataset,
    Image,
    ImageStatus,
    Job,
    JobItem,
    JobItemStatus,
    JobKind,
    JobStatus,
    Pair,
    PairOrigin,
    PairState,
    Proposal,
    Review,
    ReviewAction,
    ReviewTask,
    ReviewTaskStatus,
    Verification,
    VerificationKind,
    utcnow,
)
from annotator.db.repositories import chunks
from annotator.errors import NotFoundError

FINISHED = (JobItemStatus.DONE, JobItemStatus.FAILED, JobItemStatus.SKIPPED)
# A successor may run once its predecessor is done, or skipped because it was not needed
# (a failed image marks its later items skipped, so they are never pending).
PASSED = (JobItemStatus.DONE, JobItemStatus.SKIPPED)


def _on_postgresql(session: Session) -> bool:
    """Whether the session's database is PostgreSQL, where the statements every stage task
    runs go to the driver as SQL text (the ``_PG_*`` statements below).

    Through the ORM session a statement costs the worker ~100-400 us of CPU more than in the
    driver (compile-cache lookup, rendering the expanded ``IN`` lists anew per call, the ORM's
    execution and result layers), more than the statement itself; a stage task runs about ten.
    Ids travel as one array (``= ANY(%(ids)s)``): the statement's text stays the same whatever
    the number of ids, so the driver prepares it once per connection. Elsewhere (SQLite) the
    same queries run as SQLAlchemy statements; both give the same rows (tests/db)."""
    return session.get_bind().dialect.name == "postgresql"


def _driver(session: Session, sql: str, params: dict[str, Any]) -> CursorResult[*TupleAny]:
    """``sql`` (psycopg placeholders) with ``params`` on the session's connection, in its
    transaction; errors come out as SQLAlchemy's, as from ``session.execute``."""
    return session.connection().exec_driver_sql(sql, params)


def _values(*members: enum.Enum) -> str:
    """SQL literals of enumeration values: ``'a', 'b'``."""
    return ", ".join(f"'{member.value}'" for member in members)


def insert_ignore_where(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str],
    where: str | None = None,
) -> None:
    """INSERT ... ON CONFLICT (conflict) [WHERE where] DO NOTHING (``where``: the predicate of a
    partial unique index). Every row has the same keys.

    A Core insert into the model's table, not an ORM bulk insert: these rows are never loaded
    as objects, and the ORM's per-row bookkeeping costs more than the statement itself for a
    batch of masks. On PostgreSQL it is one statement whatever the number of rows: the
    columns travel as arrays, in binary (no quoting of long RLE strings), and ``unnest``
    makes the rows (:func:`_unnest_insert`); per-row parameters (an executemany) cost the
    client about three times as much.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    table = cast(Table, model.__table__)
    if dialect.name == "postgresql":
        unnest = _unnest_insert(table, tuple(rows[0]), tuple(conflict), where)
        if unnest is not None:
            sql, columns, defaults = unnest
            params = _array_params(sql, rows, columns)
            for i, default in enumerate(defaults):
                # One value per statement: its rows are written at the same moment.
                params[f"d{i}"] = [default()] * len(rows)
            session.connection().exec_driver_sql(sql, params)
            return
    maker = pg_insert if dialect.name == "postgresql" else sqlite_insert
    stmt = maker(table).on_conflict_do_nothing(
        index_elements=list(conflict), index_where=text(where) if where else None
    )
    session.execute(stmt, list(rows))


_Unnest = tuple[
    str,
    tuple[tuple[str, Callable[[Any], Any] | None], ...],
    tuple[Callable[[], Any], ...],
]


def _bind_processor(column: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """What a value of this column goes through before it is bound: the type's own bind
    processor (enums to their values), and for numbers the Python type (psycopg dumps a list
    of one type only; the array is cast to the column's type anyway)."""
    process = column.type.bind_processor(dialect)
    if process is not None:
        return cast(Callable[[Any], Any], process)
    affinity = column.type._type_affinity
    if issubclass(affinity, Float):
        return float
    if issubclass(affinity, Integer) and not issubclass(affinity, Boolean):
        return int
    return None


def _array_params(
    sql: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, Callable[[Any], Any] | None]],
) -> dict[str, Any]:
    """The rows' values column by column (``c0``, ``c1``, ...), each through its processor."""
    params: dict[str, Any] = {}
    for i, (key, process) in enumerate(columns):
        values = [row[key] for row in rows]
        if process is not None:
            try:
                values = [None if v is None else process(v) for v in values]
            except Exception as exc:  # as SQLAlchemy reports a value it cannot bind
                raise StatementError(str(exc), sql, None, exc) from exc
        params[f"c{i}"] = values
    return params


def _array_type(column: Any, dialect: Any) -> str | None:
    """The PostgreSQL array type the column's values travel as (``None``: not as an array)."""
    if column.type._type_affinity in (JSON, LargeBinary) or isinstance(column.type, ARRAY):
        return None
    if isinstance(column.type, String):
        # Not VARCHAR(n)[]: a cast would cut a long value, an insert refuses it.
        return "TEXT[]"
    return f"{column.type.compile(dialect=dialect)}[]"


def _column_default(
    column: Any, dialect: Any, default: Any | None = None
) -> Callable[[], Any] | None:
    """The value of a column's Python-side default (or the given one, its ``onupdate``) as a
    zero-argument function (bind processor applied); ``None`` for one that needs the row (a
    SQL expression, a function of the execution context)."""
    default = column.default if default is None else default
    if not isinstance(default, ColumnDefault):
        return None
    process = column.type.bind_processor(dialect)
    if default.is_scalar:
        value = default.arg if process is None else process(default.arg)
        return lambda: value
    if not default.is_callable:
        return None
    function = default.arg  # wrapped by SQLAlchemy to take the execution context
    try:
        function(None)
    except Exception:  # it reads the context: per row only
        return None
    if process is None:
        return lambda: function(None)
    return lambda: process(function(None))


def _key_arrays(
    table: Table, keys: tuple[str, ...], dialect: Any
) -> tuple[list[Any], list[str], list[tuple[str, Callable[[Any], Any] | None]]] | None:
    """For the rows' keys, in order: their columns, ``CAST(%(c<i>)b AS type[])`` parameters
    and ``(key, bind processor)`` pairs; ``None`` when a key is not a column of ``table`` or
    its type has no array type."""
    found: list[Any] = []
    casts: list[str] = []
    columns: list[tuple[str, Callable[[Any], Any] | None]] = []
    for i, key in enumerate(keys):
        column = table.c.get(key)
        array = None if column is None else _array_type(column, dialect)
        if column is None or array is None:
            return None
        found.append(column)
        casts.append(f"CAST(%(c{i})b AS {array})")
        columns.append((key, _bind_processor(column, dialect)))
    return found, casts, columns


@functools.lru_cache(maxsize=128)
def _unnest_insert(
    table: Table, keys: tuple[str, ...], conflict: tuple[str, ...], where: str | None
) -> _Unnest | None:
    """``INSERT INTO table (keys..., defaulted...) SELECT * FROM unnest(CAST(:c0 AS type[]),
    ...) ON CONFLICT ... DO NOTHING`` for rows with these keys, with each key's bind
    processor (enums to their values) and the Python-side defaults of the columns the rows
    leave out (computed once per statement); ``None`` where that does not apply (a column
    type with no array of it, a default that needs the row)."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    given = _key_arrays(table, keys, dialect)
    if given is None:
        return None
    names = [column.name for column in given[0]]
    casts, columns = given[1], given[2]
    defaults: list[Callable[[], Any]] = []
    for column in table.c:
        if column.name in names or column.default is None or column.primary_key:
            continue
        array = _array_type(column, dialect)
        make = _column_default(column, dialect)
        if array is None or make is None:
            return None
        names.append(column.name)
        casts.append(f"CAST(%(d{len(defaults)})b AS {array})")
        defaults.append(make)
    quote = dialect.identifier_preparer.quote
    # Driver-level SQL (psycopg's placeholders): a literal % in the predicate is written %%.
    predicate = "" if where is None else "WHERE " + where.replace("%", "%%") + " "
    sql = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
        f"({', '.join(quote(n) for n in names)}) SELECT * FROM unnest({', '.join(casts)}) "
        f"ON CONFLICT ({', '.join(quote(c) for c in conflict)}) {predicate}DO NOTHING"
    )
    return sql, tuple(columns), tuple(defaults)


# ---------------------------------------------------------------------------------------- jobs


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> Job:
    """The job (``for_update``: locked, read again). Without a lock, a job this session has
    already loaded is returned as it is, with no query: a SELECT would return that same object
    without refreshing it anyway, and stage tasks read the job three times per transaction.
    (The session keeps the jobs it read for its lifetime: its identity map holds objects
    weakly, so the callers' dropping it would cost a query.)"""
    if for_update:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    else:
        job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    session.info.setdefault("jobs", {})[job_id] = job
    return job


@dataclass(frozen=True)
class JobRow:
    """What a stage task reads of its job (three times per task): not loaded as an object."""

    id: int
    status: JobStatus
    dataset_id: int | None
    config: dict[str, Any]


_PG_JOB_ROW = "SELECT status, dataset_id, config FROM jobs WHERE id = %(job)s"


def job_row(session: Session, job_id: int) -> JobRow:
    """The job's status, dataset and config, as :func:`get_job` would give them: a job this
    session has loaded as an object is read off it (it may hold changes not written yet), else
    it is read once per session and kept (as :func:`get_job` keeps its objects)."""
    loaded: Job | None = session.info.get("jobs", {}).get(job_id)
    if loaded is not None:
        return JobRow(job_id, JobStatus(loaded.status), loaded.dataset_id, loaded.config)
    rows: dict[int, JobRow] = session.info.setdefault("job_rows", {})
    row = rows.get(job_id)
    if row is None:
        if _on_postgresql(session):
            found = _driver(session, _PG_JOB_ROW, {"job": job_id}).first()
        else:
            found = session.execute(
                select(Job.status, Job.dataset_id, Job.config).where(Job.id == job_id)
            ).first()
        if found is None:
            raise NotFoundError(f"no job {job_id}")
        status, dataset_id, config = found
        row = rows[job_id] = JobRow(job_id, JobStatus(status), dataset_id, config)
    return row


def dataset_names(session: Session) -> dict[int, str]:
    return {i: n for i, n in session.execute(select(Dataset.id, Dataset.name))}


def job_status(session: Session, job_id: int) -> JobStatus:
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    if status is None:
        raise NotFoundError(f"no job {job_id}")
    return JobStatus(status)


def list_jobs(session: Session, limit: int = 50) -> list[Job]:
    return list(session.scalars(select(Job).order_by(Job.id.desc()).limit(limit)))


def select_images(session: Session, dataset_id: int, selection: str | Sequence[int]) -> list[int]:
    """Image ids of a job, by id. ``"all"``: every image not failed at an earlier ingest;
    ``"new"``: those no earlier mining job has; a list: those ids (in the dataset)."""
    stmt = select(Image.id).where(Image.dataset_id == dataset_id)
    if isinstance(selection, str):
        stmt = stmt.where(Image.status != ImageStatus.FAILED)
        if selection == "new":
            earlier = (
                select(JobItem.id)
                .join(Job, Job.id == JobItem.job_id)
                .where(JobItem.image_id == Image.id, Job.kind == JobKind.MINE)
            )
            stmt = stmt.where(~exists(earlier))
        return list(session.scalars(stmt.order_by(Image.id)))
    wanted = sorted(set(selection))
    found: list[int] = []
    for part in chunks(wanted, 1000):
        found += session.scalars(stmt.where(Image.id.in_(part)).order_by(Image.id))
    missing = set(wanted) - set(found)
    if missing:
        raise NotFoundError(f"images not in the dataset: {sorted(missing)[:10]}")
    return found


def add_job_items(
    session: Session, job_id: int, image_ids: Sequence[int], stages: Sequence[str]
) -> None:
    rows = [
        {
            "job_id": job_id,
            "image_id": i,
            "stage": s,
            "status": JobItemStatus.PENDING,
            "attempts": 0,
        }
        for i in image_ids
        for s in stages
    ]
    for part in chunks(rows, 5000):
        insert_ignore_where(session, JobItem, part, ["job_id", "image_id", "stage"])


def item_status(session: Session, job_id: int, image_id: int, stage: str) -> JobItemStatus | None:
    status = session.scalar(
        select(JobItem.status).where(
            JobItem.job_id == job_id, JobItem.image_id == image_id, JobItem.stage == stage
        )
    )
    return None if status is None else JobItemStatus(status)


def claim_item(session: Session, job_id: int, image_id: int, stage: str) -> bool:
    """Count an attempt on a pending item; False when it is not pending (finished or absent).

    On PostgreSQL the UPDATE locks the row until the caller commits: a second worker running the
    same item waits, then finds it finished and returns early.
    """
    result = session.execute(
        update(JobItem)
        .where(
            JobItem.job_id == job_id,
            JobItem.image_id == image_id,
            JobItem.stage == stage,
            JobItem.status.in_((JobItemStatus.PENDING, JobItemStatus.RUNNING)),
        )
        .values(attempts=JobItem.attempts + 1, status=JobItemStatus.RUNNING)
        .returning(JobItem.id)
    )
    return result.first() is not None


def set_item(
    session: Session,
    job_id: int,
    image_id: int,
    stage: str,
    status: JobItemStatus,
    error: str | None = None,
) -> None:
    session.execute(
        update(JobItem)
        .where(JobItem.job_id == job_id, JobItem.image_id == image_id, JobItem.stage == stage)
        .values(status=status, error=error)
    )


# The statements every stage task runs, built once (Core statements on the table with bound
# parameters): building an ORM UPDATE per call, and the ORM's synchronisation of the session
# with it (no job item is loaded as an object where these run), cost more than executing it.
_ITEMS = cast(Table, JobItem.__table__)
# A batch's items: one job, one stage, the given images.
_BATCH_ITEMS = (
    _ITEMS.c.job_id == bindparam("b_job"),
    _ITEMS.c.stage == bindparam("b_stage"),
    _ITEMS.c.image_id.in_(bindparam("b_images", expanding=True)),
)
_CLAIM_ITEMS = (
    update(_ITEMS)
    .where(
        *_BATCH_ITEMS,
        _ITEMS.c.status.in_((JobItemStatus.PENDING, JobItemStatus.RUNNING)),
    )
    .values(attempts=_ITEMS.c.attempts + 1, status=JobItemStatus.RUNNING)
    .returning(_ITEMS.c.image_id)
)
_SET_ITEMS = (
    update(_ITEMS)
    .where(*_BATCH_ITEMS)
    .values(status=bindparam("b_status", type_=_ITEMS.c.status.type), error=None)
)


# The same on PostgreSQL (see _on_postgresql); ``updated_at`` is set as its ``onupdate`` sets
# it, once per statement.
_PG_BATCH_ITEMS = "job_id = %(job)s AND stage = %(stage)s AND image_id = ANY(%(images)s::bigint[])"
_PG_CLAIM_ITEMS = (
    f"UPDATE job_items SET attempts = attempts + 1, status = '{JobItemStatus.RUNNING.value}', "
    f"updated_at = %(now)s WHERE {_PG_BATCH_ITEMS} "
    f"AND status IN ({_values(JobItemStatus.PENDING, JobItemStatus.RUNNING)}) RETURNING image_id"
)
_PG_SET_ITEMS = (
    "UPDATE job_items SET status = %(status)s, error = NULL, updated_at = %(now)s "
    f"WHERE {_PG_BATCH_ITEMS}"
)


def claim_items(session: Session, job_id: int, image_ids: Sequence[int], stage: str) -> set[int]:
    """:func:`claim_item` for several images in one statement: the ids of those claimed."""
    if not image_ids:
        return set()
    if _on_postgresql(session):
        params = {"job": job_id, "stage": stage, "images": list(image_ids), "now": utcnow()}
        return set(_driver(session, _PG_CLAIM_ITEMS, params).scalars())
    result = session.execute(
        _CLAIM_ITEMS, {"b_job": job_id, "b_stage": stage, "b_images": list(image_ids)}
    )
    return set(result.scalars())


def set_items(
    session: Session, job_id: int, image_ids: Sequence[int], stage: str, status: JobItemStatus
) -> None:
    """:func:`set_item` (no error) for several images in one statement."""
    if not image_ids:
        return
    if _on_postgresql(session):
        params = {
            "job": job_id, "stage": stage, "images": list(image_ids),
            "status": JobItemStatus(status).value, "now": utcnow(),
        }  # fmt: skip
        _driver(session, _PG_SET_ITEMS, params)
        return
    session.execute(
        _SET_ITEMS,
        {"b_job": job_id, "b_stage": stage, "b_images": list(image_ids), "b_status": status},
    )


def count_failure(
    session: Session, job_id: int, image_id: int, stage: str, error: str, *, max_attempts: int
) -> JobItemStatus:
    """Record a failed attempt (the attempt itself was rolled back with the stage's writes):
    the item stays pending while attempts remain, else it is failed. Returns its new status."""
    item = session.scalar(
        select(JobItem)
        .where(JobItem.job_id == job_id, JobItem.image_id == image_id, JobItem.stage == stage)
        .with_for_update()
    )
    if item is None:
        raise NotFoundError(f"job {job_id} has no item (image {image_id}, stage {stage})")
    if item.status in FINISHED:
        return JobItemStatus(item.status)
    item.attempts += 1
    item.error = error
    item.status = JobItemStatus.FAILED if item.attempts >= max_attempts else JobItemStatus.PENDING
    session.flush()
    return JobItemStatus(item.status)


def fail_claimed_item(
    session: Session,
    job_id: int,
    image_id: int,
    stage: str,
    error: str,
    *,
    max_attempts: int,
) -> JobItemStatus:
    """An attempt of a claimed item (its attempt already counted by :func:`claim_items`) failed
    and none of its writes were made: the item goes back to pending while attempts remain, else
    it is failed. Returns its new status. (:func:`count_failure` is the same for an attempt
    whose transaction, claim included, was rolled back.)"""
    attempts = session.scalar(
        select(JobItem.attempts).where(
            JobItem.job_id == job_id, JobItem.image_id == image_id, JobItem.stage == stage
        )
    )
    status = JobItemStatus.FAILED if (attempts or 0) >= max_attempts else JobItemStatus.PENDING
    set_item(session, job_id, image_id, stage, status, error)
    return status


def skip_later(
    session: Session, job_id: int, image_id: int, stages: Sequence[str], reason: str
) -> None:
    """Mark the image's not yet finished items of ``stages`` skipped, with ``reason``."""
    if not stages:
        return
    session.execute(
        update(JobItem)
        .where(
            JobItem.job_id == job_id,
            JobItem.image_id == image_id,
            JobItem.stage.in_(list(stages)),
            JobItem.status.not_in(FINISHED),
        )
        .values(status=JobItemStatus.SKIPPED, error=reason)
    )


# Built once: constructing an aliased entity per call costs milliseconds of SQLAlchemy work
# (column adaptation), and this runs after every stage item of every job.
_READY_ITEM = aliased(JobItem, name="item")
_READY_PREVIOUS = aliased(JobItem, name="previous")


def ready_items(
    session: Session,
    job_id: int,
    stage: str,
    previous: str | None,
    *,
    image_id: int | None = None,
    image_ids: Sequence[int] | None = None,
    limit: int | None = None,
) -> list[int]:
    """Image ids whose ``stage`` item is pending and whose ``previous`` item has passed (of
    ``image_id`` / ``image_ids`` only, when given)."""
    item, prev = _READY_ITEM, _READY_PREVIOUS
    stmt = select(item.image_id).where(
        item.job_id == job_id,
        item.stage == stage,
        item.status.in_((JobItemStatus.PENDING, JobItemStatus.RUNNING)),
    )
    if image_id is not None:
        stmt = stmt.where(item.image_id == image_id)
    if image_ids is not None:
        stmt = stmt.where(item.image_id.in_(list(image_ids)))
    if previous is not None:
        stmt = stmt.join(
            prev,
            and_(
                prev.job_id == item.job_id, prev.image_id == item.image_id, prev.stage == previous
            ),
        ).where(prev.status.in_(PASSED))
    stmt = stmt.order_by(item.image_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


# ready_items for given images after a previous stage: what every stage task asks, built once.
_READY_OF_IMAGES = (
    select(_READY_ITEM.image_id)
    .join(
        _READY_PREVIOUS,
        and_(
            _READY_PREVIOUS.job_id == _READY_ITEM.job_id,
            _READY_PREVIOUS.image_id == _READY_ITEM.image_id,
            _READY_PREVIOUS.stage == bindparam("previous"),
        ),
    )
    .where(
        _READY_ITEM.job_id == bindparam("job_id"),
        _READY_ITEM.stage == bindparam("stage"),
        _READY_ITEM.status.in_((JobItemStatus.PENDING, JobItemStatus.RUNNING)),
        _READY_ITEM.image_id.in_(bindparam("image_ids", expanding=True)),
        _READY_PREVIOUS.status.in_(PASSED),
    )
    .order_by(_READY_ITEM.image_id)
)


_PG_READY_OF_IMAGES = (
    "SELECT item.image_id FROM job_items AS item JOIN job_items AS previous "
    "ON previous.job_id = item.job_id AND previous.image_id = item.image_id "
    "AND previous.stage = %(previous)s "
    "WHERE item.job_id = %(job)s AND item.stage = %(stage)s "
    f"AND item.status IN ({_values(JobItemStatus.PENDING, JobItemStatus.RUNNING)}) "
    "AND item.image_id = ANY(%(images)s::bigint[]) "
    f"AND previous.status IN ({_values(*PASSED)}) ORDER BY item.image_id"
)


def ready_items_of(
    session: Session, job_id: int, stage: str, previous: str, image_ids: Sequence[int]
) -> list[int]:
    """:func:`ready_items` of ``image_ids`` after ``previous`` (one prepared statement)."""
    if not image_ids:
        return []
    if _on_postgresql(session):
        params = {"job": job_id, "stage": stage, "previous": previous, "images": list(image_ids)}
        return list(_driver(session, _PG_READY_OF_IMAGES, params).scalars())
    params = {"job_id": job_id, "stage": stage, "previous": previous, "image_ids": list(image_ids)}
    return list(session.scalars(_READY_OF_IMAGES, params))


_PG_STATUS_AND_UNFINISHED = (
    "SELECT status, (SELECT count(*) FROM job_items WHERE job_id = %(job)s "
    f"AND status NOT IN ({_values(*FINISHED)})) FROM jobs WHERE id = %(job)s"
)


def status_and_unfinished(session: Session, job_id: int) -> tuple[JobStatus, int]:
    """The job's status and its number of unfinished items, read now (not the status this
    session may have read before), in one query."""
    if _on_postgresql(session):
        session.flush()  # what this session changed counts (the driver does not autoflush)
        found = _driver(session, _PG_STATUS_AND_UNFINISHED, {"job": job_id}).first()
        if found is None:
            raise NotFoundError(f"no job {job_id}")
        return JobStatus(found[0]), int(found[1])
    return job_status(session, job_id), unfinished_count(session, job_id)


def unfinished_count(session: Session, job_id: int, stage: str | None = None) -> int:
    stmt = select(func.count()).where(JobItem.job_id == job_id, JobItem.status.not_in(FINISHED))
    if stage is not None:
        stmt = stmt.where(JobItem.stage == stage)
    return session.scalar(stmt) or 0


def item_counts(session: Session, job_id: int) -> dict[str, dict[str, int]]:
    """{stage: {status: count}} of a job's items."""
    out: dict[str, dict[str, int]] = {}
    for stage, status, n in session.execute(
        select(JobItem.stage, JobItem.status, func.count())
        .where(JobItem.job_id == job_id)
        .group_by(JobItem.stage, JobItem.status)
    ):
        out.setdefault(stage, {})[JobItemStatus(status).value] = n
    return out


def last_item_update(session: Session, job_id: int) -> datetime | None:
    return session.scalar(select(func.max(JobItem.updated_at)).where(JobItem.job_id == job_id))


def item_errors(session: Session, job_id: int, limit: int = 20) -> list[tuple[int, str, str, str]]:
    """(image id, file name, stage, error) of failed items."""
    rows = session.execute(
        select(JobItem.image_id, Image.file_name, JobItem.stage, JobItem.error)
        .join(Image, Image.id == JobItem.image_id)
        .where(JobItem.job_id == job_id, JobItem.status == JobItemStatus.FAILED)
        .order_by(JobItem.image_id, JobItem.id)
        .limit(limit)
    )
    return [(i, f, s, e or "") for i, f, s, e in rows]


def reset_items(session: Session, job_id: int, *, failed: bool) -> int:
    """Make a job's unfinished items pending again (and, with ``failed``, its failed items and the
    items skipped because of them). Returns how many items will run."""
    session.execute(
        update(JobItem)
        .where(JobItem.job_id == job_id, JobItem.status == JobItemStatus.RUNNING)
        .values(status=JobItemStatus.PENDING)
    )
    if failed:
        failed_images = select(JobItem.image_id).where(
            JobItem.job_id == job_id, JobItem.status == JobItemStatus.FAILED
        )
        session.execute(
            update(JobItem)
            .where(
                JobItem.job_id == job_id,
                JobItem.image_id.in_(failed_images.scalar_subquery()),
                JobItem.status.in_((JobItemStatus.FAILED, JobItemStatus.SKIPPED)),
            )
            .values(status=JobItemStatus.PENDING, attempts=0, error=None)
        )
    return unfinished_count(session, job_id)


def job_outcome_counts(session: Session, job_id: int) -> dict[str, int]:
    """Pairs by state, annotations and review tasks of a job's pairs."""
    counts: dict[str, int] = {f"pairs_{PairState(s).value}": n for s, n in session.execute(
        select(Pair.state, func.count()).where(Pair.job_id == job_id).group_by(Pair.state)
    )}  # fmt: skip
    counts["proposals"] = session.scalar(select(func.count()).where(Proposal.job_id == job_id)) or 0
    counts["annotations_auto"] = (
        session.scalar(
            select(func.count())
            .select_from(Annotation)
            .join(Pair, Pair.id == Annotation.pair_id)
            .where(Pair.job_id == job_id, Annotation.source == "auto")
        )
        or 0
    )
    counts["review_tasks"] = (
        session.scalar(
            select(func.count())
            .select_from(ReviewTask)
            .join(Pair, Pair.id == ReviewTask.pair_id)
            .where(Pair.job_id == job_id)
        )
        or 0
    )
    return counts


# -------------------------------------------------------------------------------------- images


def get_image(session: Session, image_id: int) -> Image:
    image = session.get(Image, image_id)
    if image is None:
        raise NotFoundError(f"no image {image_id}")
    return image


def get_images(session: Session, image_ids: Sequence[int]) -> dict[int, Image]:
    """{id: image} of the ids that exist, in one query."""
    if not image_ids:
        return {}
    return {i.id: i for i in session.scalars(select(Image).where(Image.id.in_(list(image_ids))))}


@dataclass(frozen=True)
class ImageRow:
    """An image as the stages after ingest read it (they do not change it): not loaded as an
    object."""

    id: int
    dataset_id: int
    file_name: str
    uri: str
    sha256: str | None
    width: int | None
    height: int | None
    alt_text: str | None
    status: ImageStatus


_IMAGE_COLUMNS = (
    Image.id, Image.dataset_id, Image.file_name, Image.uri, Image.sha256, Image.width,
    Image.height, Image.alt_text, Image.status,
)  # fmt: skip
_PG_IMAGE_ROWS = (
    f"SELECT {', '.join(c.key for c in _IMAGE_COLUMNS)} FROM images "
    "WHERE id = ANY(%(images)s::bigint[])"
)


def image_rows(session: Session, image_ids: Sequence[int]) -> dict[int, ImageRow]:
    """{id: image} of the ids that exist, in one query (as :func:`get_images`, read only)."""
    if not image_ids:
        return {}
    found: Iterable[Sequence[Any]]
    if _on_postgresql(session):
        found = _driver(session, _PG_IMAGE_ROWS, {"images": list(image_ids)})
    else:
        found = session.execute(select(*_IMAGE_COLUMNS).where(Image.id.in_(list(image_ids))))
    out: dict[int, ImageRow] = {}
    for i, dataset_id, file_name, uri, sha256, width, height, alt_text, status in found:
        out[i] = ImageRow(
            i, dataset_id, file_name, uri, sha256, width, height, alt_text, ImageStatus(status)
        )
    return out


def images_by_uri(session: Session, dataset_id: int, uris: Sequence[str]) -> list[Image]:
    found: list[Image] = []
    for part in chunks(list(uris), 1000):
        found += session.scalars(
            select(Image).where(Image.dataset_id == dataset_id, Image.uri.in_(part))
        )
    return found


_PG_IMAGES_WITH_SHA256 = (
    "SELECT id, sha256 FROM images WHERE dataset_id = %(dataset)s "
    "AND sha256 = ANY(%(digests)s::text[]) ORDER BY id"
)


def images_with_sha256(
    session: Session, dataset_id: int, digests: Sequence[str]
) -> dict[str, list[int]]:
    """{sha256: ids of the dataset's images with those bytes} for these digests (one query)."""
    out: dict[str, list[int]] = {}
    if not digests:
        return out
    if _on_postgresql(session):
        params = {"dataset": dataset_id, "digests": sorted(set(digests))}
        for image_id, digest in _driver(session, _PG_IMAGES_WITH_SHA256, params):
            out.setdefault(digest, []).append(image_id)
        return out
    for part in chunks(sorted(set(digests)), 1000):
        for image_id, digest in session.execute(
            select(Image.id, Image.sha256)
            .where(Image.dataset_id == dataset_id, Image.sha256.in_(part))
            .order_by(Image.id)
        ):
            if digest is not None:
                out.setdefault(digest, []).append(image_id)
    return out


# ------------------------------------------------------------------------------------ captions


def add_caption(session: Session, image_id: int, caption: str, model_version: str) -> None:
    insert_ignore_where(
        session,
        Caption,
        [{"image_id": image_id, "text": caption, "model_version": model_version}],
        ["image_id", "model_version"],
    )


def captions_of(session: Session, image_id: int, model_version: str | None) -> list[str]:
    stmt = select(Caption.text).where(Caption.image_id == image_id)
    if model_version is not None:
        stmt = stmt.where(Caption.model_version == model_version)
    return list(session.scalars(stmt.order_by(Caption.id)))


_PG_CAPTIONS = (
    "SELECT image_id, text FROM captions WHERE image_id = ANY(%(images)s::bigint[]) "
    "AND model_version = %(version)s ORDER BY id"
)


def captions_many(
    session: Session, image_ids: Sequence[int], model_version: str
) -> dict[int, list[str]]:
    """:func:`captions_of` of several images in one query: {image id: captions}."""
    out: dict[int, list[str]] = {i: [] for i in image_ids}
    if image_ids and _on_postgresql(session):
        params = {"images": list(image_ids), "version": model_version}
        for image_id, caption in _driver(session, _PG_CAPTIONS, params):
            out[image_id].append(caption)
    elif image_ids:
        for image_id, caption in session.execute(
            select(Caption.image_id, Caption.text)
            .where(Caption.image_id.in_(list(image_ids)), Caption.model_version == model_version)
            .order_by(Caption.id)
        ):
            out[image_id].append(caption)
    return out


def add_captions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """:func:`add_caption` for several images (rows: image_id, text, model_version)."""
    insert_ignore_where(session, Caption, rows, ["image_id", "model_version"])


# --------------------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class PairRow:
    id: int
    concept_id: int
    phrase: str
    origin: PairOrigin
    state: PairState


def add_pairs(
    session: Session,
    dataset_id: int,
    image_id: int,
    job_id: int,
    concept_ids: Iterable[tuple[int, PairOrigin]],
    state: PairState = PairState.PENDING,
) -> None:
    rows = [
        {
            "dataset_id": dataset_id,
            "image_id": image_id,
            "concept_id": cid,
            "origin": origin,
            "state": state,
            "job_id": job_id,
        }
        for cid, origin in concept_ids
    ]
    insert_ignore_where(session, Pair, rows, ["image_id", "concept_id"])


def add_pairs_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """:func:`add_pairs` rows of several images in one insert (each row: dataset_id, image_id,
    concept_id, origin, state, job_id)."""
    for part in chunks(rows, 2000):
        insert_ignore_where(session, Pair, part, ["image_id", "concept_id"])


_PG_ADOPT_PENDING_PAIRS = (
    "UPDATE pairs SET job_id = %(job)s, updated_at = %(now)s "
    f"WHERE image_id = ANY(%(images)s::bigint[]) AND state = '{PairState.PENDING.value}' "
    "AND (job_id IS NULL OR job_id IN (SELECT id FROM jobs WHERE status IN "
    f"({_values(JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.DONE)})))"
)


def adopt_pending_pairs_many(session: Session, image_ids: Sequence[int], job_id: int) -> None:
    """:func:`adopt_pending_pairs` for several images in one statement."""
    if not image_ids:
        return
    if _on_postgresql(session):
        params = {"job": job_id, "images": list(image_ids), "now": utcnow()}
        _driver(session, _PG_ADOPT_PENDING_PAIRS, params)
        return
    stopped = select(Job.id).where(
        Job.status.in_((JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.DONE))
    )
    session.execute(
        update(Pair)
        .where(
            Pair.image_id.in_(list(image_ids)),
            Pair.state == PairState.PENDING,
            Pair.job_id.is_(None) | Pair.job_id.in_(stopped.scalar_subquery()),
        )
        .values(job_id=job_id)
    )


def adopt_pending_pairs(session: Session, image_id: int, job_id: int) -> None:
    """Pending pairs of the image that no running job owns (added by hand, or left by a job
    that was cancelled or failed before proposing them) join this job."""
    stopped = select(Job.id).where(
        Job.status.in_((JobStatus.CANCELLED, JobStatus.FAILED, JobStatus.DONE))
    )
    session.execute(
        update(Pair)
        .where(
            Pair.image_id == image_id,
            Pair.state == PairState.PENDING,
            Pair.job_id.is_(None) | Pair.job_id.in_(stopped.scalar_subquery()),
        )
        .values(job_id=job_id)
    )


def job_pairs(
    session: Session, image_id: int, job_id: int, states: Sequence[PairState] | None = None
) -> list[PairRow]:
    """The image's pairs that ``job_id`` owns, by pair id."""
    stmt = (
        select(Pair.id, Pair.concept_id, Concept.text, Pair.origin, Pair.state)
        .join(Concept, Concept.id == Pair.concept_id)
        .where(Pair.image_id == image_id, Pair.job_id == job_id)
    )
    if states is not None:
        stmt = stmt.where(Pair.state.in_(list(states)))
    return [
        PairRow(i, c, t, PairOrigin(o), PairState(s))
        for i, c, t, o, s in session.execute(stmt.order_by(Pair.id))
    ]


_PG_JOB_PAIRS = (
    "SELECT p.image_id, p.id, p.concept_id, c.text, p.origin, p.state FROM pairs AS p "
    "JOIN concepts AS c ON c.id = p.concept_id "
    "WHERE p.image_id = ANY(%(images)s::bigint[]) AND p.job_id = %(job)s"
)


def job_pairs_many(
    session: Session,
    image_ids: Sequence[int],
    job_id: int,
    states: Sequence[PairState] | None = None,
) -> dict[int, list[PairRow]]:
    """:func:`job_pairs` of several images in one query: {image id: pairs by pair id}."""
    out: dict[int, list[PairRow]] = {i: [] for i in image_ids}
    if not image_ids:
        return out
    if _on_postgresql(session):
        params: dict[str, Any] = {"images": list(image_ids), "job": job_id}
        sql = _PG_JOB_PAIRS
        if states is not None:
            params["states"] = [PairState(s).value for s in states]
            sql += " AND p.state = ANY(%(states)s::text[])"
        for image_id, i, c, t, o, s in _driver(session, sql + " ORDER BY p.id", params):
            out[image_id].append(PairRow(i, c, t, PairOrigin(o), PairState(s)))
        return out
    stmt = (
        select(Pair.image_id, Pair.id, Pair.concept_id, Concept.text, Pair.origin, Pair.state)
        .join(Concept, Concept.id == Pair.concept_id)
        .where(Pair.image_id.in_(list(image_ids)), Pair.job_id == job_id)
    )
    if states is not None:
        stmt = stmt.where(Pair.state.in_(list(states)))
    for image_id, i, c, t, o, s in session.execute(stmt.order_by(Pair.id)):
        out[image_id].append(PairRow(i, c, t, PairOrigin(o), PairState(s)))
    return out


def image_phrases(session: Session, image_id: int) -> set[str]:
    """Every phrase already paired with the image (any job, any state)."""
    return set(
        session.scalars(
            select(Concept.text)
            .join(Pair, Pair.concept_id == Concept.id)
            .where(Pair.image_id == image_id)
        )
    )


def concept_vocabulary(session: Session, dataset_id: int) -> Counter[str]:
    """Concepts of the dataset's pairs that did not come from hard-negative mining, with the
    number of pairs using each (the vocabulary hard negatives are drawn from)."""
    rows = session.execute(
        select(Concept.text, func.count())
        .join(Pair, Pair.concept_id == Concept.id)
        .where(Pair.dataset_id == dataset_id, Pair.origin != PairOrigin.HARD_NEGATIVE)
        .group_by(Concept.text)
    )
    return Counter({t: n for t, n in rows})


def set_pair_states(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Bulk UPDATE pairs by id (each row: ``id`` and the columns to set, the same columns in
    every row; distinct ids). On PostgreSQL one statement, the values as arrays
    (:func:`_unnest_update`)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        unnest = _unnest_update(cast(Table, Pair.__table__), tuple(rows[0]))
        if unnest is not None and len({row["id"] for row in rows}) == len(rows):
            sql, columns, defaults = unnest
            params = _array_params(sql, rows, columns)
            for i, default in enumerate(defaults):
                params[f"u{i}"] = default()
            session.connection().exec_driver_sql(sql, params)
            return
    session.execute(update(Pair), list(rows))


@functools.lru_cache(maxsize=32)
def _unnest_update(table: Table, keys: tuple[str, ...]) -> _Unnest | None:
    """``UPDATE table SET key = v.key, ..., onupdated = :u0 FROM unnest(...) AS v WHERE
    table.id = v.id`` for rows of these keys (``id`` among them): the ORM's bulk UPDATE by
    primary key as one statement, with the Python-side ``onupdate`` values of the columns
    the rows leave out (once per statement); ``None`` where that does not apply."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    quote = dialect.identifier_preparer.quote
    if "id" not in keys or len(table.primary_key.columns) != 1 or "id" not in table.c:
        return None
    given = _key_arrays(table, keys, dialect)
    if given is None:
        return None
    casts, columns = given[1], given[2]
    sets = [
        f"{quote(column.name)} = v.c{i}"
        for i, (key, column) in enumerate(zip(keys, given[0], strict=True))
        if key != "id"
    ]
    defaults: list[Callable[[], Any]] = []
    for column in table.c:
        if column.name in keys or column.onupdate is None:
            continue
        make = _column_default(column, dialect, column.onupdate)
        array = _array_type(column, dialect)
        if make is None or array is None:
            return None
        sets.append(f"{quote(column.name)} = CAST(%(u{len(defaults)})b AS {array[:-2]})")
        defaults.append(make)
    if not sets:
        return None
    names = ", ".join(f"c{i}" for i in range(len(keys)))
    sql = (
        f"UPDATE {dialect.identifier_preparer.format_table(table)} SET {', '.join(sets)} "
        f"FROM unnest({', '.join(casts)}) AS v({names}) "
        f"WHERE {dialect.identifier_preparer.format_table(table)}.id = v.c{keys.index('id')}"
    )
    return sql, tuple(columns), tuple(defaults)


# ----------------------------------------------------------------------------------- proposals


@dataclass(frozen=True)
class ProposalRow:
    id: int
    pair_id: int
    rank: int
    rle_counts: str
    bbox: tuple[float, float, float, float]
    area: int
    score: float
    presence: float | None
    model_version: str


def add_proposals(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    for part in chunks(rows, 2000):
        insert_ignore_where(session, Proposal, part, ["pair_id", "model_version", "rank"])


_PG_PROPOSALS = (
    "SELECT id, pair_id, rank, rle_counts, bbox_x, bbox_y, bbox_w, bbox_h, area, score, presence "
    "FROM proposals WHERE pair_id = ANY(%(pairs)s::bigint[]) AND model_version = %(version)s "
    "ORDER BY pair_id, rank"
)


def proposals_of(
    session: Session, pair_ids: Sequence[int], model_version: str
) -> dict[int, list[ProposalRow]]:
    """{pair id: proposals by rank} of ``model_version``."""
    out: dict[int, list[ProposalRow]] = {pid: [] for pid in pair_ids}
    columns = (
        Proposal.id, Proposal.pair_id, Proposal.rank, Proposal.rle_counts, Proposal.bbox_x,
        Proposal.bbox_y, Proposal.bbox_w, Proposal.bbox_h, Proposal.area, Proposal.score,
        Proposal.presence,
    )  # fmt: skip
    if not pair_ids:
        return out
    if _on_postgresql(session):
        params = {"pairs": sorted(pair_ids), "version": model_version}
        parts: Iterable[Iterable[Any]] = [_driver(session, _PG_PROPOSALS, params)]
    else:
        parts = (
            session.execute(
                select(*columns)
                .where(Proposal.pair_id.in_(part), Proposal.model_version == model_version)
                .order_by(Proposal.pair_id, Proposal.rank)
            )
            for part in chunks(sorted(pair_ids), 1000)
        )
    for rows in parts:
        # Plain rows, not ORM entities: this reads every mask of an image, twice per image.
        for i, pair_id, rank, counts, x, y, w, h, area_, score, presence in rows:
            out[pair_id].append(
                ProposalRow(
                    i, pair_id, rank, counts, (x, y, w, h), area_, score, presence, model_version
                )
            )
    return out


# ------------------------------------------------------------------------------- verifications


def add_verifications(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    mv = [r for r in rows if r["kind"] == VerificationKind.MV]
    ev = [r for r in rows if r["kind"] == VerificationKind.EV]
    for part in chunks(mv, 2000):
        insert_ignore_where(
            session, Verification, part, ["pair_id", "proposal_id", "kind", "model_version"]
        )
    for part in chunks(ev, 2000):
        insert_ignore_where(
            session, Verification, part, ["pair_id", "kind", "model_version"],
            "proposal_id IS NULL",
        )  # fmt: skip


_PG_VERIFICATIONS = (
    "SELECT pair_id, proposal_id, kind, label, p_accept, model_version FROM verifications "
    "WHERE pair_id = ANY(%(pairs)s::bigint[]) AND model_version = ANY(%(versions)s::text[])"
)


def verifications_of(
    session: Session, pair_ids: Sequence[int], mv_version: str, ev_version: str
) -> tuple[dict[int, tuple[str, float]], dict[int, tuple[str, float]]]:
    """({proposal id: (label, p)} of MV by ``mv_version``, {pair id: (label, p)} of EV)."""
    mv: dict[int, tuple[str, float]] = {}
    ev: dict[int, tuple[str, float]] = {}
    if not pair_ids:
        return mv, ev
    columns = (
        Verification.pair_id, Verification.proposal_id, Verification.kind, Verification.label,
        Verification.p_accept, Verification.model_version,
    )  # fmt: skip
    if _on_postgresql(session):
        params = {"pairs": sorted(pair_ids), "versions": sorted({mv_version, ev_version})}
        parts: Iterable[Iterable[Any]] = [_driver(session, _PG_VERIFICATIONS, params)]
    else:
        parts = (
            session.execute(
                select(*columns).where(
                    Verification.pair_id.in_(part),
                    Verification.model_version.in_({mv_version, ev_version}),
                )
            )
            for part in chunks(sorted(pair_ids), 1000)
        )
    for rows in parts:
        for pair_id, proposal_id, kind, label, p, version in rows:
            if kind == VerificationKind.MV and version == mv_version and proposal_id is not None:
                mv[proposal_id] = (label, p)
            elif kind == VerificationKind.EV and version == ev_version:
                ev[pair_id] = (label, p)
    return mv, ev


def reviewed_mask_scores(session: Session, mv_version: str) -> tuple[list[float], list[bool]]:
    """MV scores of ``mv_version`` and the human verdict (accepted as is?) of every reviewed
    proposal with an accept or reject review (the newest, not superseded)."""
    accepted = Review.action == ReviewAction.ACCEPT
    rows = session.execute(
        select(Verification.p_accept, accepted)
        .join(Review, Review.proposal_id == Verification.proposal_id)
        .where(
            Verification.kind == VerificationKind.MV,
            Verification.model_version == mv_version,
            Review.action.in_((ReviewAction.ACCEPT, ReviewAction.REJECT, ReviewAction.FIX)),
            Review.superseded_at.is_(None),
        )
    )
    scores: list[float] = []
    labels: list[bool] = []
    for p, ok in rows:
        scores.append(float(p))
        labels.append(bool(ok))
    return scores, labels


@dataclass(frozen=True)
class ReviewedEv:
    """An EV verdict on a pair a person then decided: EV's ``p_accept``, the job that asked it
    (its routing config says which question EV was asked), whether the pair is a hard negative,
    the best MV score among the pair's proposals in that job (``None``: none), and what the
    person found (``absent``)."""

    p_accept: float
    job_id: int
    job_config: dict[str, Any]
    hard_negative: bool
    best_mv: float | None
    absent: bool


def reviewed_ev(session: Session, ev_version: str) -> list[ReviewedEv]:
    """The EV verdicts of ``ev_version`` on every pair a person decided (a done review task;
    the pair now positive or negative), with what routing needs to tell which question EV was
    asked (:func:`annotator.routing.ev_question`)."""
    rows = session.execute(
        select(Verification.pair_id, Verification.job_id, Verification.p_accept, Pair.origin,
               Pair.state)
        .join(Pair, Pair.id == Verification.pair_id)
        .where(
            Verification.kind == VerificationKind.EV,
            Verification.model_version == ev_version,
            Verification.job_id.is_not(None),
            Pair.state.in_((PairState.POSITIVE, PairState.NEGATIVE)),
            exists().where(
                ReviewTask.pair_id == Pair.id, ReviewTask.status == ReviewTaskStatus.DONE
            ),
        )
    ).all()  # fmt: skip
    if not rows:
        return []
    job_ids = sorted({int(r.job_id) for r in rows})
    configs: dict[int, dict[str, Any]] = {
        int(job_id): config
        for job_id, config in session.execute(select(Job.id, Job.config).where(Job.id.in_(job_ids)))
    }
    best: dict[tuple[int, int], float] = {}
    pair_ids = sorted({int(r.pair_id) for r in rows})
    for chunk in chunks(pair_ids, 1000):
        for pair_id, job_id, p in session.execute(
            select(Verification.pair_id, Verification.job_id, func.max(Verification.p_accept))
            .where(Verification.kind == VerificationKind.MV, Verification.pair_id.in_(chunk))
            .group_by(Verification.pair_id, Verification.job_id)
        ):
            if job_id is not None:
                best[(int(pair_id), int(job_id))] = float(p)
    return [
        ReviewedEv(
            p_accept=float(r.p_accept),
            job_id=int(r.job_id),
            job_config=configs.get(r.job_id) or {},
            hard_negative=r.origin == PairOrigin.HARD_NEGATIVE,
            best_mv=best.get((int(r.pair_id), int(r.job_id))),
            absent=r.state == PairState.NEGATIVE,
        )
        for r in rows
    ]


# ------------------------------------------------------------------------------------- routing


def add_auto_annotations(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    insert_ignore_where(session, Annotation, rows, ["proposal_id"], "source = 'auto'")


def add_review_tasks(session: Session, pair_ids: Sequence[int]) -> None:
    insert_ignore_where(
        session, ReviewTask, [{"pair_id": p, "kind": "pair"} for p in pair_ids], ["pair_id", "kind"]
    )
