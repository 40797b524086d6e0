"""Shared fixtures: a real database per backend (SQLite file and PostgreSQL), migrated.

PostgreSQL: the suite creates its own database (``annotator_test_<pid>_<rand>``) on the server
named by ``ANNOTATOR_TEST_POSTGRES_URL`` (default: the local trust-auth server), migrates it
once, empties it after every test and drops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from annotator.config import get_settings
from annotator.db import migrate
from annotator.db.models import Base
from annotator.db.session import get_engine, make_engine

POSTGRES_ADMIN_URL = os.environ.get(
    "ANNOTATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"annotator_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem, say it plainly
        pytest.fail(
            f"PostgreSQL is needed at {POSTGRES_ADMIN_URL} (set ANNOTATOR_TEST_POSTGRES_URL): {exc}"
        )
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        get_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _truncate_all(url: str) -> None:
    engine = make_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "annotator.db"
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        yield url
    else:
        url = request.getfixturevalue("postgres_url")
        yield url
        _truncate_all(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def _isolated_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """No test reads the developer's environment or leaves settings cached."""
    for key in list(os.environ):
        if key.startswith("ANNOTATOR_") and not key.startswith("ANNOTATOR_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv(
        "ANNOTATOR_DATABASE_URL", f"sqlite:///{tmp_path_factory.mktemp('default')}/a.db"
    )
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    get_engine.cache_clear()
