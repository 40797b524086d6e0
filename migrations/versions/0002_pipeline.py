"""pipeline: idempotency keys for EV verifications and auto-accepted annotations

Revision ID: 0002
Revises: 0001

Two partial unique indexes (PostgreSQL and SQLite both support them):

* ``verifications (pair_id, kind, model_version) WHERE proposal_id IS NULL``: the existing
  unique constraint includes ``proposal_id``, and NULLs are distinct there, so it never stopped a
  second EV row for the same pair.
* ``annotations (proposal_id) WHERE source = 'auto'``: routing turns a proposal into at most one
  automatic annotation, even when a stage runs twice at the same time on two workers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.create_index(
            "uq_verifications_ev",
            ["pair_id", "kind", "model_version"],
            unique=True,
            sqlite_where=sa.text("proposal_id IS NULL"),
            postgresql_where=sa.text("proposal_id IS NULL"),
        )
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.create_index(
            "uq_annotations_auto_proposal",
            ["proposal_id"],
            unique=True,
            sqlite_where=sa.text("source = 'auto'"),
            postgresql_where=sa.text("source = 'auto'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_index("uq_annotations_auto_proposal")
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_index("uq_verifications_ev")
