"""The rows a mining job produced in one dataset, without ids or timestamps, for comparing two
runs of the same job (in-process against workers, interrupted against uninterrupted).

Each table becomes a sorted list of tuples keyed by natural keys (file names, concept texts,
ranks), so a duplicated row or a missing one shows up as a difference.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import aliased

from annotator.db.models import (
    Annotation,
    Caption,
    Concept,
    Dataset,
    Image,
    Job,
    JobItem,
    Pair,
    Proposal,
    ReviewTask,
    Verification,
)

Snapshot = dict[str, list[tuple[Any, ...]]]


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def snapshot(engine: Engine, dataset: str) -> Snapshot:
    with engine.connect() as conn:
        ds = conn.scalar(select(Dataset.id).where(Dataset.name == dataset))
        assert ds is not None, dataset

        def rows(stmt: Any) -> list[tuple[Any, ...]]:
            return sorted((tuple(r) for r in conn.execute(stmt)), key=lambda r: tuple(map(repr, r)))

        pair_key = (Image.file_name, Concept.text)

        def pairs_joined(stmt: Any) -> Any:
            return stmt.join(Image, Image.id == Pair.image_id).join(
                Concept, Concept.id == Pair.concept_id
            )

        out: Snapshot = {
            "images": rows(
                select(
                    Image.file_name,
                    Image.sha256,
                    Image.width,
                    Image.height,
                    Image.status,
                    Image.error,
                ).where(Image.dataset_id == ds)
            ),
            "captions": rows(
                select(Image.file_name, Caption.text, Caption.model_version)
                .join(Image, Image.id == Caption.image_id)
                .where(Image.dataset_id == ds)
            ),
            "pairs": rows(
                pairs_joined(
                    select(
                        *pair_key,
                        Pair.origin,
                        Pair.state,
                        Pair.is_exhaustive,
                        Pair.is_pixel_exhaustive,
                        Pair.state_reason,
                    )
                ).where(Pair.dataset_id == ds)
            ),
            "proposals": rows(
                pairs_joined(
                    select(
                        *pair_key,
                        Proposal.rank,
                        Proposal.rle_counts,
                        Proposal.bbox_x,
                        Proposal.bbox_y,
                        Proposal.bbox_w,
                        Proposal.bbox_h,
                        Proposal.area,
                        Proposal.score,
                        Proposal.presence,
                        Proposal.model_version,
                    ).join(Pair, Pair.id == Proposal.pair_id)
                ).where(Pair.dataset_id == ds)
            ),
            "annotations": rows(
                pairs_joined(
                    select(
                        *pair_key,
                        Annotation.rle_counts,
                        Annotation.area,
                        Annotation.source,
                        Annotation.score,
                        Annotation.model_version,
                        Annotation.superseded_at,
                    ).join(Pair, Pair.id == Annotation.pair_id)
                ).where(Annotation.dataset_id == ds)
            ),
            "review_tasks": rows(
                pairs_joined(
                    select(*pair_key, ReviewTask.kind, ReviewTask.status).join(
                        Pair, Pair.id == ReviewTask.pair_id
                    )
                ).where(Pair.dataset_id == ds)
            ),
            "job_items": rows(
                select(Image.file_name, JobItem.stage, JobItem.status, JobItem.error)
                .join(Image, Image.id == JobItem.image_id)
                .join(Job, Job.id == JobItem.job_id)
                .where(Job.dataset_id == ds)
            ),
            "jobs": rows(select(Job.kind, Job.status).where(Job.dataset_id == ds)),
        }
        mv_proposal = aliased(Proposal)
        out["verifications"] = rows(
            pairs_joined(
                select(
                    *pair_key,
                    mv_proposal.rank,
                    Verification.kind,
                    Verification.label,
                    Verification.p_accept,
                    Verification.model_version,
                )
                .join(Pair, Pair.id == Verification.pair_id)
                .outerjoin(mv_proposal, mv_proposal.id == Verification.proposal_id)
            ).where(Pair.dataset_id == ds)
        )
    for table in ("proposals", "verifications", "annotations"):
        out[table] = [tuple(_r(v) if isinstance(v, float) else v for v in r) for r in out[table]]
    return out


def diff(a: Snapshot, b: Snapshot) -> str:
    """A readable account of how two snapshots differ (empty when they are equal)."""
    lines: list[str] = []
    for table in sorted(set(a) | set(b)):
        ra, rb = a.get(table, []), b.get(table, [])
        if ra == rb:
            continue
        only_a = [r for r in ra if r not in rb]
        only_b = [r for r in rb if r not in ra]
        lines.append(
            f"{table}: {len(ra)} vs {len(rb)} rows; only in first {only_a[:3]}; "
            f"only in second {only_b[:3]}"
        )
    return "\n".join(lines)
