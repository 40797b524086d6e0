"""Frozen dataset versions: membership recorded once, exports checksummed at freeze time."""

from __future__ import annotations

from sqlalchemy.orm import Session

from annotator.db import repositories as repo
from annotator.db.models import DatasetVersion
from annotator.services.exporting import FORMATS, write_export


def create_version(
    session: Session, dataset_name: str, tag: str, note: str | None = None
) -> DatasetVersion:
    """Freeze the dataset's accepted pairs and annotations as ``tag``; record export checksums."""
    dataset = repo.get_dataset(session, dataset_name)
    tag = tag.strip()
    if not tag:
        raise ValueError("a version needs a non-empty tag")
    version = repo.freeze_version(session, dataset.id, tag, note)
    scope = repo.ExportScope(dataset.id, version.id)
    version.checksums = {
        fmt: write_export(
            session, scope, fmt, None, info={"dataset": dataset.name, "version": tag}
        )[1].hexdigest()
        for fmt in FORMATS
    }
    session.flush()
    return version


def list_versions(session: Session, dataset_name: str) -> list[DatasetVersion]:
    return repo.list_versions(session, repo.get_dataset(session, dataset_name).id)
