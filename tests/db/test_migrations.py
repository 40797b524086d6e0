"""The alembic history: up, down, up again, and no drift from the models; on both backends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from annotator.db import migrate
from annotator.db.models import Base
from annotator.db.session import make_engine
from annotator.errors import DatabaseNotReadyError


def test_up_down_up_and_models_match_migrations(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        tables = set(Base.metadata.tables)
        assert tables <= set(inspect(engine).get_table_names())
        assert migrate.current_revision(engine) == migrate.head_revision()
        # The migration history creates exactly what the models describe.
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []

        migrate.downgrade(db_url, "base")
        engine.dispose()
        left = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert left == set()
        with pytest.raises(
            DatabaseNotReadyError, match="has no schema: run `annotator db upgrade`"
        ):
            migrate.ensure_current(engine)

        migrate.upgrade(db_url)
        engine.dispose()
        assert tables <= set(inspect(engine).get_table_names())
        migrate.ensure_current(engine)
    finally:
        engine.dispose()
