"""The alembic history: up, down, up again, and no drift from the models; on both backends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

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


def _compression(engine: Engine, table: str, column: str) -> str:
    """``pg_attribute.attcompression``: ``'l'`` lz4, ``'p'`` pglz, ``''`` the server default."""
    with engine.connect() as conn:
        value = conn.scalar(
            text(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = CAST(:table AS regclass) AND attname = :column"
            ),
            {"table": table, "column": column},
        )
    return str(value or "")


def test_rle_columns_are_lz4_compressed_on_postgresql(db_url: str) -> None:
    """Migration 0005 sets what the models' ``info`` says on every RLE column (where the
    server has lz4), new values are stored with it, and the downgrade restores the default."""
    columns = [
        (table.name, column.name)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if column.info.get("postgresql_compression")
    ]
    assert sorted(columns) == [
        ("annotations", "rle_counts"), ("proposals", "rle_counts"), ("reviews", "rle_counts")
    ]  # fmt: skip
    assert {
        Base.metadata.tables[t].columns[c].info["postgresql_compression"] for t, c in columns
    } == {"lz4"}
    engine = make_engine(db_url)
    try:
        if engine.dialect.name != "postgresql":
            migrate.downgrade(db_url, "0004")  # nothing to undo on SQLite
            migrate.upgrade(db_url)
            return
        with engine.connect() as conn:
            lz4 = "lz4" in (
                conn.scalar(
                    text(
                        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
                    )
                )
                or []
            )
        expected = "l" if lz4 else ""
        assert {_compression(engine, t, c) for t, c in columns} == {expected}
        if lz4:
            # A value large enough to be compressed is stored with lz4.
            with engine.begin() as conn:
                # The column definitions of proposals, its compression included.
                conn.execute(
                    text(
                        "CREATE TEMP TABLE probe (LIKE proposals INCLUDING COMPRESSION)"
                        " ON COMMIT DROP"
                    )
                )
                conn.execute(
                    text(
                        "INSERT INTO probe (id, pair_id, rle_counts, bbox_x, bbox_y, bbox_w, "
                        "bbox_h, area, score, model_version, rank, created_at) VALUES "
                        "(1, 1, repeat('ab3c', 5000), 0, 0, 0, 0, 0, 0, 'v', 0, now())"
                    )
                )
                method = conn.scalar(text("SELECT pg_column_compression(rle_counts) FROM probe"))
            assert method == "lz4"
        migrate.downgrade(db_url, "0004")
        engine.dispose()
        assert {_compression(engine, t, c) for t, c in columns} == {""}
        migrate.upgrade(db_url)
        engine.dispose()
        assert {_compression(engine, t, c) for t, c in columns} == {expected}
    finally:
        engine.dispose()
