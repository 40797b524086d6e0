"""web: indexes for the dataset browser's keyset pages and the dashboard's statistics

Revision ID: 0004
Revises: 0003

* ``ix_images_dataset_page`` (dataset_id, id): a page of a dataset's images is an index range.
* ``ix_pairs_dataset_concept_page`` (dataset_id, concept_id, id): a page of one concept's
  pairs, whatever the concept's size.
* ``ix_pairs_job``, ``ix_proposals_job`` (job_id): a job's routing breakdown, outcome counters
  and the proposer versions it ran.
* ``ix_verifications_proposal``, ``ix_reviews_proposal``: verifier-vs-human agreement joins MV
  verdicts and reviews by proposal (and proposal deletes cascade through them).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_images_dataset_page", "images", ["dataset_id", "id"]),
    ("ix_pairs_dataset_concept_page", "pairs", ["dataset_id", "concept_id", "id"]),
    ("ix_pairs_job", "pairs", ["job_id"]),
    ("ix_proposals_job", "proposals", ["job_id"]),
    ("ix_verifications_proposal", "verifications", ["proposal_id"]),
    ("ix_reviews_proposal", "reviews", ["proposal_id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
