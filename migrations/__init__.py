"""Alembic migration history (runs on PostgreSQL and SQLite); see annotator.db.migrate."""
