"""Engines and sessions. The edge (CLI command, request, task) owns the transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None, *, snapshot: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error.

    ``snapshot=True`` reads everything from one consistent snapshot (REPEATABLE READ on
    PostgreSQL; SQLite transactions already are), for exports that run while mining writes.
    """
    engine = engine or get_engine()
    if snapshot and engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    with session_factory(engine)() as session, session.begin():
        yield session


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version")
