"""What the dashboard and the statistics API show: routing breakdown, throughput, dataset growth,
review statistics, verifier-vs-human agreement, and cgF1 of the proposer where people made
ground truth. Plain dicts (JSON-ready)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from annotator import masks
from annotator.db import repositories as repo
from annotator.db import stats
from annotator.db.models import ReviewAction
from annotator.metrics import PairEval, cgf1

__all__ = [
    "agreement",
    "dataset_growth",
    "quality",
    "review_statistics",
    "routing",
    "throughput",
]


def _dataset_id(session: Session, name: str | None) -> int | None:
    return None if name is None else repo.get_dataset(session, name).id


def routing(session: Session, dataset: str | None = None, job_id: int | None = None) -> dict:
    dataset_id = _dataset_id(session, dataset)
    return {
        "pairs": stats.routing_breakdown(session, dataset_id, job_id),
        "masks": stats.masks_by_source(session, dataset_id) if job_id is None else None,
    }


def throughput(
    session: Session,
    unit: stats.Bucket = "minute",
    *,
    dataset: str | None = None,
    job_id: int | None = None,
    since: datetime | None = None,
) -> dict[str, Any]:
    """Items done per bucket and stage: ``{"unit", "buckets": [...], "stages": {stage: [...]}}``."""
    rows = stats.throughput(
        session, unit, job_id=job_id, dataset_id=_dataset_id(session, dataset), since=since
    )
    buckets = sorted({b for b, _, _ in rows})
    index = {b: i for i, b in enumerate(buckets)}
    series: dict[str, list[int]] = {}
    for b, stage, n in rows:
        series.setdefault(stage, [0] * len(buckets))[index[b]] = n
    return {"unit": unit, "buckets": buckets, "stages": series}


def dataset_growth(session: Session, dataset: str, unit: stats.Bucket = "day") -> dict[str, Any]:
    """Per bucket and cumulative: pairs, positives, negatives, live masks."""
    g = stats.growth(session, repo.get_dataset(session, dataset).id, unit)
    cumulative: dict[str, list[int]] = {}
    for name in ("pairs", "positives", "negatives"):
        cumulative[name] = np.cumsum(g.series[name]).astype(int).tolist()
    live = np.cumsum(np.array(g.series["masks_added"]) - np.array(g.series["masks_superseded"]))
    cumulative["masks"] = live.astype(int).tolist()
    return {"unit": unit, "buckets": g.buckets, "per_bucket": g.series, "cumulative": cumulative}


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def review_statistics(
    session: Session, dataset: str | None = None, unit: stats.Bucket = "hour"
) -> dict[str, Any]:
    """Review tasks by status, mask decisions by action, and per reviewer: submissions over
    time and lead times (p50 / p90 / mean seconds over the newest 5,000 submissions)."""
    dataset_id = _dataset_id(session, dataset)
    per_bucket = stats.submissions_per_reviewer(session, unit, dataset_id)
    buckets = sorted({b for b, _, _ in per_bucket})
    index = {b: i for i, b in enumerate(buckets)}
    series: dict[str, list[int]] = {}
    for b, who, n in per_bucket:
        series.setdefault(who, [0] * len(buckets))[index[b]] = n
    times: dict[str, list[float]] = defaultdict(list)
    for who, t in stats.lead_times(session, dataset_id):
        times[who].append(t)
    reviewers = sorted(set(series) | set(times))
    return {
        "tasks": stats.review_tasks_by_status(session, dataset_id),
        "decisions": stats.reviews_by_action(session, dataset_id),
        "unit": unit,
        "buckets": buckets,
        "submissions": series,
        "reviewers": [
            {
                "reviewer": who,
                "submissions": int(sum(series.get(who, []))),
                "lead_time_p50_s": _percentile(times.get(who, []), 50),
                "lead_time_p90_s": _percentile(times.get(who, []), 90),
                "lead_time_mean_s": float(np.mean(times[who])) if times.get(who) else None,
            }
            for who in reviewers
        ],
        "lead_times_s": {who: times[who] for who in sorted(times)},
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def agreement(session: Session, dataset: str | None = None) -> dict[str, Any]:
    """Verifier (MV) against people, on masks both judged.

    * ``confusion``: verifier label (accept / reject) x human (accept / reject; a fix counts as
      reject: the mask was not acceptable as it was), with accuracy;
    * ``routing``: the routing band the MV score fell in under its job's thresholds
      (auto-accept / review / reject) x human;
    * ``auto_accept_precision``: of masks routing auto-accepted that a person later reviewed,
      the share the person kept; and of reviewed masks scoring at or above their job's
      ``accept_above``, the share people accepted (the precision auto-accepts would have).
    """
    rows = stats.reviewed_masks(session, _dataset_id(session, dataset))
    thresholds = stats.job_thresholds(session, [r.job_id for r in rows if r.job_id is not None])
    confusion = {v: {"accept": 0, "reject": 0} for v in ("accept", "reject")}
    bands = {b: {"accept": 0, "reject": 0} for b in ("auto_accept", "review", "auto_reject")}
    auto_n = auto_ok = above_n = above_ok = 0
    for r in rows:
        human = "accept" if r.human == ReviewAction.ACCEPT else "reject"
        verdict = "accept" if r.verifier_label == "accept" else "reject"
        confusion[verdict][human] += 1
        accept_above, reject_below = thresholds.get(r.job_id or -1, (0.9, 0.1))
        band = (
            "auto_accept"
            if r.p_accept >= accept_above
            else "auto_reject"
            if r.p_accept <= reject_below
            else "review"
        )
        bands[band][human] += 1
        if r.auto_accepted:
            auto_n += 1
            auto_ok += human == "accept"
        if r.p_accept >= accept_above:
            above_n += 1
            above_ok += human == "accept"
    n = len(rows)
    agree = confusion["accept"]["accept"] + confusion["reject"]["reject"]
    return {
        "reviewed_masks": n,
        "confusion": confusion,
        "accuracy": _ratio(agree, n),
        "routing": bands,
        "auto_accept_precision": {
            "auto_accepted_then_reviewed": auto_n,
            "kept_by_reviewer": auto_ok,
            "precision": _ratio(auto_ok, auto_n),
            "reviewed_above_accept_threshold": above_n,
            "accepted_by_reviewer": above_ok,
            "precision_above_threshold": _ratio(above_ok, above_n),
        },
    }


def quality(
    session: Session, dataset: str, *, limit: int = 1000, score_threshold: float = 0.5
) -> dict[str, Any]:
    """cgF1 / pmF1 / IL_MCC of each proposer model version on the dataset's ground truth made by
    people (or imported): the newest ``limit`` decided, instance-exhaustive pairs that a mining
    job proposed for. A version is scored on the pairs of the jobs it ran in (pairs where it
    found nothing count as its negatives)."""
    pairs = stats.ground_truth_pairs(session, repo.get_dataset(session, dataset).id, limit)
    versions_of_job = stats.proposer_versions(session, [p.job_id for p in pairs])
    evals: dict[str, list[PairEval]] = defaultdict(list)
    for p in pairs:
        size = [p.height, p.width]
        gt: list[masks.RLE] = [{"size": size, "counts": c} for c in p.gt]
        for version in versions_of_job[p.job_id]:
            preds = p.predictions.get(version, [])
            evals[version].append(
                PairEval(
                    gt=gt,
                    pred=[{"size": size, "counts": c} for c, _ in preds],
                    scores=[s for _, s in preds],
                    gt_crowd=p.gt_crowd,
                )
            )
    return {
        "ground_truth_pairs": len(pairs),
        "score_threshold": score_threshold,
        "models": [
            {"model_version": v, **cgf1(e, score_threshold=score_threshold).as_dict()}
            for v, e in sorted(evals.items())
        ],
    }
