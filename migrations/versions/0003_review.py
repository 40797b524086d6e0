"""review: Label Studio projects, crash-safe pushes, versioned review rows

Revision ID: 0003
Revises: 0002

* ``review_projects``: the review backend's project of each dataset (and its webhook).
* ``review_tasks.push_token`` / ``url_expires_at``: a token committed before a task is sent,
  so an interrupted push is adopted instead of duplicated; the expiry of its signed image URL.
* ``reviews.external_version`` (+ an index on ``external_id``): the revision of the external
  annotation a row came from, so replayed webhooks change nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "review_projects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "dataset_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("webhook_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_review_projects_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_projects")),
        sa.UniqueConstraint(
            "dataset_id", "backend", name=op.f("uq_review_projects_dataset_id_backend")
        ),
    )
    with op.batch_alter_table("review_tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("push_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("url_expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_version", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_reviews_external", ["external_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_reviews_external")
        batch_op.drop_column("external_version")
    with op.batch_alter_table("review_tasks", schema=None) as batch_op:
        batch_op.drop_column("url_expires_at")
        batch_op.drop_column("push_token")
    op.drop_table("review_projects")
