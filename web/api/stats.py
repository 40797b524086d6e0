"""Statistics and metrics: routing breakdown, throughput, review, verifier-vs-human agreement,
cgF1 of the proposer on human ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from annotator.services import insights
from web.deps import SessionDep

router = APIRouter(tags=["statistics"])

DatasetQ = Annotated[str | None, Query(min_length=1, max_length=200, description="Dataset name.")]
Unit = Literal["minute", "hour", "day"]


@router.get("/stats/routing", summary="Where routing sent pairs; masks by source")
def routing(
    session: SessionDep,
    dataset: DatasetQ = None,
    job_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """Pairs auto-accepted, auto-negative, to review, reviewed, ungroundable, in progress."""
    return insights.routing(session, dataset, job_id)


@router.get("/stats/throughput", summary="Mining items done over time, per stage")
def throughput(
    session: SessionDep,
    dataset: DatasetQ = None,
    job_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    unit: Unit = "hour",
    since_hours: Annotated[float, Query(gt=0, le=24 * 366)] = 24 * 7,
) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(hours=since_hours)
    return insights.throughput(session, unit, dataset=dataset, job_id=job_id, since=since)


@router.get("/stats/review", summary="Review tasks, decisions, reviewer throughput, lead times")
def review(session: SessionDep, dataset: DatasetQ = None, unit: Unit = "hour") -> dict[str, Any]:
    return insights.review_statistics(session, dataset, unit)


@router.get("/metrics/agreement", summary="Verifier vs human: confusion, auto-accept precision")
def agreement(session: SessionDep, dataset: DatasetQ = None) -> dict[str, Any]:
    return insights.agreement(session, dataset)


@router.get("/metrics/quality", summary="cgF1 / pmF1 / IL_MCC of the proposer on ground truth")
def quality(
    session: SessionDep,
    dataset: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    score_threshold: Annotated[float, Query(ge=0, le=1)] = 0.5,
) -> dict[str, Any]:
    """Ground truth: decided, instance-exhaustive pairs whose masks people made (or imported)."""
    return insights.quality(session, dataset, limit=limit, score_threshold=score_threshold)
