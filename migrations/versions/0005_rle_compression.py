"""masks: lz4 compression for the RLE columns on PostgreSQL

Revision ID: 0005
Revises: 0004

``proposals.rle_counts``, ``annotations.rle_counts`` and ``reviews.rle_counts`` hold COCO RLE
strings; a ragged mask's is tens of kilobytes, which PostgreSQL compresses when it stores it
(values over ~2 kB). Its default method, pglz, made writing a job's proposals cost several
times more than lz4 does (docs/benchmarks.md, "Pipeline"); lz4 also decompresses faster, for a
slightly larger table. Compact masks (a trained model's) are mostly under the threshold and not
compressed either way.

PostgreSQL only, and only where the server has lz4 (14 or later, built ``--with-lz4``, as the
Debian and Docker ``postgres`` packages are); elsewhere, and on SQLite, nothing changes. Only the
catalog changes (a brief lock, no table rewrite): values already stored keep their compression
until they are written again. Downgrade: the server's default method again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RLE_COLUMNS = (
    ("proposals", "rle_counts"),
    ("annotations", "rle_counts"),
    ("reviews", "rle_counts"),
)


def _compression_settable() -> bool:
    """PostgreSQL 14 or later (``SET COMPRESSION`` exists)."""
    bind = op.get_bind()
    version = bind.dialect.server_version_info or (0,)
    return bind.dialect.name == "postgresql" and version >= (14,)


def _has_lz4() -> bool:
    enumvals = op.get_bind().scalar(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    )
    return "lz4" in (enumvals or [])


def upgrade() -> None:
    if not _compression_settable() or not _has_lz4():
        return
    for table, column in RLE_COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    if not _compression_settable():
        return
    for table, column in reversed(RLE_COLUMNS):
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION DEFAULT")
