"""SQLAlchemy 2 typed models: the SA-Co-style data model (Postgres is the source of truth).

The unit of the dataset is a *pair* (image, concept). Masks are stored once, as the ``counts``
string of a COCO compressed RLE; the RLE ``size`` is always the image's ``[height, width]``.
Annotations are never deleted: an edit sets ``superseded_at`` on the old row.

Enumerations are strings with CHECK constraints (portable across PostgreSQL and SQLite).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names: alembic can drop them on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER on SQLite (so ids autoincrement there as rowid aliases).
BigId = BigInteger().with_variant(Integer(), "sqlite")

# RLE strings (tens of kB for a ragged mask) are compressed with lz4 rather than the default
# pglz on PostgreSQL servers that have it (migration 0005; faster to write and read). Alembic
# does not compare column compression: tests/db/test_migrations.py checks it against this.
RLE_COLUMN_INFO: dict[str, Any] = {"postgresql_compression": "lz4"}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[enum.Enum], name: str) -> SAEnum:
    return SAEnum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class ImageStatus(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


class PairOrigin(enum.StrEnum):
    CAPTION = "caption"
    ALT_TEXT = "alt_text"
    HARD_NEGATIVE = "hard_negative"
    MANUAL = "manual"
    IMPORT = "import"


class PairState(enum.StrEnum):
    PENDING = "pending"
    PROPOSED = "proposed"
    VERIFIED = "verified"
    IN_REVIEW = "in_review"
    POSITIVE = "positive"
    NEGATIVE = "negative"
    UNGROUNDABLE = "ungroundable"


class VerificationKind(enum.StrEnum):
    MV = "mv"
    EV = "ev"


class ReviewTaskStatus(enum.StrEnum):
    OPEN = "open"
    PUSHED = "pushed"
    DONE = "done"
    CANCELLED = "cancelled"


class ReviewAction(enum.StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    FIX = "fix"
    FLAG = "flag"
    DELETE = "delete"


class AnnotationSource(enum.StrEnum):
    AUTO = "auto"
    HUMAN = "human"
    IMPORT = "import"


class JobKind(enum.StrEnum):
    MINE = "mine"
    EXPORT = "export"
    TRAIN = "train"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    DONE = "done"
    FAILED = "failed"


class JobItemStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class UserRole(enum.StrEnum):
    ADMIN = "admin"
    ENGINEER = "engineer"
    REVIEWER = "reviewer"


def _ts(nullable: bool = False) -> Mapped[Any]:
    return mapped_column(DateTime(timezone=True), nullable=nullable)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("dataset_id", "file_name"),
        UniqueConstraint("dataset_id", "sha256"),
        # Keyset pages of a dataset's images (the browser).
        Index("ix_images_dataset_page", "dataset_id", "id"),
        CheckConstraint("width IS NULL OR width > 0", name="width_positive"),
        CheckConstraint("height IS NULL OR height > 0", name="height_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    # Name in exports (relative path as the user gave it); ``uri`` is where the bytes are.
    file_name: Mapped[str] = mapped_column(String(1024))
    uri: Mapped[str] = mapped_column(String(2048))
    sha256: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    alt_text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[ImageStatus] = mapped_column(
        _enum(ImageStatus, "image_status"), default=ImageStatus.PENDING
    )
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    dataset: Mapped[Dataset] = relationship()


class Concept(Base):
    __tablename__ = "concepts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    text: Mapped[str] = mapped_column(String(256), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Caption(Base):
    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("image_id", "model_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind, "job_kind"))
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus, "job_status"), default=JobStatus.QUEUED
    )
    counters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = _ts(nullable=True)
    finished_at: Mapped[datetime | None] = _ts(nullable=True)


class JobItem(Base):
    __tablename__ = "job_items"
    __table_args__ = (
        UniqueConstraint("job_id", "image_id", "stage"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
        Index("ix_job_items_job_status", "job_id", "stage", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobItemStatus] = mapped_column(
        _enum(JobItemStatus, "job_item_status"), default=JobItemStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Pair(Base):
    """One (image, concept): the unit of the dataset.

    ``is_exhaustive`` is the SA-Co ``is_instance_exhaustive`` flag (null = unknown).
    """

    __tablename__ = "pairs"
    __table_args__ = (
        UniqueConstraint("image_id", "concept_id"),
        Index("ix_pairs_dataset_state", "dataset_id", "state"),
        # Keyset pages of a concept's pairs in a dataset (the browser), a job's pairs.
        Index("ix_pairs_dataset_concept_page", "dataset_id", "concept_id", "id"),
        Index("ix_pairs_job", "job_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Denormalised from the image so dataset-wide scans (export, stats) need no join.
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    concept_id: Mapped[int] = mapped_column(ForeignKey("concepts.id"), index=True)
    origin: Mapped[PairOrigin] = mapped_column(_enum(PairOrigin, "pair_origin"))
    state: Mapped[PairState] = mapped_column(
        _enum(PairState, "pair_state"), default=PairState.PENDING
    )
    is_exhaustive: Mapped[bool | None] = mapped_column(Boolean)
    is_pixel_exhaustive: Mapped[bool | None] = mapped_column(Boolean)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # Why the pair is in its state (routing decision: which score, which threshold).
    state_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    image: Mapped[Image] = relationship()
    concept: Mapped[Concept] = relationship()


class Proposal(Base):
    __tablename__ = "proposals"
    __table_args__ = (
        UniqueConstraint("pair_id", "model_version", "rank"),
        # A job's proposals: its outcome counters, the proposer versions it ran (metrics).
        Index("ix_proposals_job", "job_id"),
        CheckConstraint("rank >= 0", name="rank_nonnegative"),
        CheckConstraint("area >= 0", name="area_nonnegative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    rle_counts: Mapped[str] = mapped_column(Text, info=RLE_COLUMN_INFO)
    bbox_x: Mapped[float] = mapped_column(Float)
    bbox_y: Mapped[float] = mapped_column(Float)
    bbox_w: Mapped[float] = mapped_column(Float)
    bbox_h: Mapped[float] = mapped_column(Float)
    area: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    presence: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(256))
    rank: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Verification(Base):
    """An AI verifier's judgement: MV on a proposal, or EV on a pair (exactly one is set)."""

    __tablename__ = "verifications"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'mv' AND proposal_id IS NOT NULL) OR (kind = 'ev' AND proposal_id IS NULL)",
            name="kind_target",
        ),
        CheckConstraint("p_accept >= 0 AND p_accept <= 1", name="p_accept_range"),
        UniqueConstraint("pair_id", "proposal_id", "kind", "model_version"),
        # Verifier-vs-human agreement joins reviews to MV verdicts by proposal.
        Index("ix_verifications_proposal", "proposal_id"),
        # NULLs are distinct in the constraint above, so EV rows (no proposal) need their own.
        Index(
            "uq_verifications_ev",
            "pair_id",
            "kind",
            "model_version",
            unique=True,
            sqlite_where=text("proposal_id IS NULL"),
            postgresql_where=text("proposal_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"), index=True)
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("proposals.id", ondelete="CASCADE"))
    kind: Mapped[VerificationKind] = mapped_column(_enum(VerificationKind, "verification_kind"))
    label: Mapped[str] = mapped_column(String(64))
    p_accept: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(256))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewTask(Base):
    __tablename__ = "review_tasks"
    __table_args__ = (
        UniqueConstraint("pair_id", "kind"),
        UniqueConstraint("backend", "external_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32), default="pair")
    backend: Mapped[str] = mapped_column(String(32), default="label_studio")
    external_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[ReviewTaskStatus] = mapped_column(
        _enum(ReviewTaskStatus, "review_task_status"), default=ReviewTaskStatus.OPEN
    )
    # Written (and committed) before the task is sent to the review backend and sent along
    # with it, so a push interrupted between the backend's answer and our commit is adopted,
    # not sent twice.
    push_token: Mapped[str | None] = mapped_column(String(64))
    # When the signed image URL inside the pushed task stops working (a push renews it).
    url_expires_at: Mapped[datetime | None] = _ts(nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class ReviewProject(Base):
    """The review backend's project that holds a dataset's review tasks (one per backend)."""

    __tablename__ = "review_projects"
    __table_args__ = (UniqueConstraint("dataset_id", "backend"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    backend: Mapped[str] = mapped_column(String(32), default="label_studio")
    external_id: Mapped[str] = mapped_column(String(128))
    webhook_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[UserRole] = mapped_column(_enum(UserRole, "user_role"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Only a hash of the token is stored; the token is shown once.
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = _ts(nullable=True)
    revoked_at: Mapped[datetime | None] = _ts(nullable=True)


class Review(Base):
    """One reviewer decision, on a proposal (accept/reject/fix) or on the pair (flag)."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("lead_time_s IS NULL OR lead_time_s >= 0", name="lead_time_nonnegative"),
        Index("ix_reviews_external", "external_id"),
        Index("ix_reviews_proposal", "proposal_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[int] = mapped_column(
        ForeignKey("review_tasks.id", ondelete="CASCADE"), index=True
    )
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("proposals.id", ondelete="SET NULL"))
    # LS region id (a brush region), so an updated annotation maps onto the same region.
    region_id: Mapped[str | None] = mapped_column(String(128))
    reviewer: Mapped[str | None] = mapped_column(String(256))
    action: Mapped[ReviewAction] = mapped_column(_enum(ReviewAction, "review_action"))
    rle_counts: Mapped[str | None] = mapped_column(Text, info=RLE_COLUMN_INFO)
    exhaustivity: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    lead_time_s: Mapped[float | None] = mapped_column(Float)
    external_id: Mapped[str | None] = mapped_column(String(128))
    # Which revision of the external annotation this row came from (its ``updated_at``), so
    # a replayed webhook or a second sync of the same revision changes nothing.
    external_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    superseded_at: Mapped[datetime | None] = _ts(nullable=True)


class Annotation(Base):
    """An accepted mask. Never deleted: an edit sets ``superseded_at`` and adds a new row."""

    __tablename__ = "annotations"
    __table_args__ = (
        CheckConstraint("area >= 0", name="area_nonnegative"),
        CheckConstraint(
            "(source <> 'auto') OR (proposal_id IS NOT NULL)", name="auto_has_proposal"
        ),
        CheckConstraint("(source <> 'human') OR (review_id IS NOT NULL)", name="human_has_review"),
        Index("ix_annotations_dataset_current", "dataset_id", "superseded_at"),
        Index("ix_annotations_pair", "pair_id"),
        # Routing accepts a proposal at most once (a re-run stage inserts nothing).
        Index(
            "uq_annotations_auto_proposal",
            "proposal_id",
            unique=True,
            sqlite_where=text("source = 'auto'"),
            postgresql_where=text("source = 'auto'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id", ondelete="CASCADE"))
    rle_counts: Mapped[str] = mapped_column(Text, info=RLE_COLUMN_INFO)
    bbox_x: Mapped[float] = mapped_column(Float)
    bbox_y: Mapped[float] = mapped_column(Float)
    bbox_w: Mapped[float] = mapped_column(Float)
    bbox_h: Mapped[float] = mapped_column(Float)
    area: Mapped[int] = mapped_column(Integer)
    iscrowd: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[AnnotationSource] = mapped_column(_enum(AnnotationSource, "annotation_source"))
    score: Mapped[float | None] = mapped_column(Float)
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("proposals.id", ondelete="SET NULL"))
    review_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id", ondelete="SET NULL"))
    model_version: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    superseded_at: Mapped[datetime | None] = _ts(nullable=True)


class DatasetVersion(Base):
    """A frozen snapshot: which pairs (with their state and flags) and which annotations."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "tag"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    num_pairs: Mapped[int] = mapped_column(Integer, default=0)
    num_annotations: Mapped[int] = mapped_column(Integer, default=0)
    # sha256 of each export format, taken when the version was frozen.
    checksums: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VersionPair(Base):
    """A pair's state and flags as frozen in a version (pairs keep changing afterwards)."""

    __tablename__ = "version_pairs"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    pair_id: Mapped[int] = mapped_column(
        ForeignKey("pairs.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[PairState] = mapped_column(_enum(PairState, "pair_state"))
    is_exhaustive: Mapped[bool | None] = mapped_column(Boolean)
    is_pixel_exhaustive: Mapped[bool | None] = mapped_column(Boolean)


class VersionAnnotation(Base):
    """Membership of an (immutable) annotation in a version."""

    __tablename__ = "version_annotations"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    annotation_id: Mapped[int] = mapped_column(
        ForeignKey("annotations.id", ondelete="CASCADE"), primary_key=True
    )


class VersionImage(Base):
    """Membership of an image in a version (images without pairs are part of COCO exports)."""

    __tablename__ = "version_images"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
