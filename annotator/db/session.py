"""Engines and sessions. The edge (CLI command, request, task) owns the transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.orm import Session, sessionmaker

from annotator.config import get_settings


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings this project relies on.

    SQLite: foreign keys on (off by default there), WAL so a reader does not block the writer.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the configured database)."""
    return make_engine(url or get_settings().database_url)


# One Session class for the process: ``sessionmaker(bind=...)`` per call would build a new
# Session subclass each time (and SQLAlchemy sets up its event dispatch per class), which costs
# about as much as a small query on every request.
_Session = sessionmaker(expire_on_commit=False)


def session_factory(engine: Engine) -> Callable[[], Session]:
    """A factory of sessions bound to ``engine`` (attributes not expired on commit)."""
    return partial(_Session, bind=engine)


@lru_cache(maxsize=16)
def read_engine(engine: Engine) -> Engine:
    """``engine`` for read-only work: on PostgreSQL in autocommit mode, so a read sends no
    BEGIN and COMMIT around its statements. Each statement then sees what was committed when it
    started, which is what READ COMMITTED (PostgreSQL's default) gives every statement of a
    transaction anyway. Same pool as ``engine``; one per engine (cached)."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def session_scope(engine: Engine | None = None, *, snapshot: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error.

    ``snapshot=True`` reads everything from one consistent snapshot (REPEATABLE READ on
    PostgreSQL; SQLite transactions already are), for exports that run while mining writes.
    """
    engine = engine or get_engine()
    if snapshot and engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with _Session(bind=engine) as session, session.begin():
        yield session


@contextmanager
def read_scope(engine: Engine) -> Iterator[Session]:
    """A session for reads only (see :func:`read_engine`); nothing it does is committed."""
    with _Session(bind=read_engine(engine)) as session:
        yield session


def without_parallel_workers(session: Session) -> None:
    """Run the rest of this transaction's statements without parallel query workers
    (PostgreSQL; nothing elsewhere). A large aggregate then keeps to one core for longer instead
    of taking every core at once for about twice the CPU in all: the better trade for a
    periodic refresh that no request waits for."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version")
