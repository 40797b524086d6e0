"""Applying reviewer annotations (as Label Studio sends them) to the dataset, on SQLite and
PostgreSQL, without a Label Studio server: accept / reject / fix / new instance, exhaustivity,
replays, updates, deletions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from annotator import masks
from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Pair,
    PairState,
    Review,
    ReviewAction,
    ReviewTask,
    ReviewTaskStatus,
)
from annotator.db.session import session_scope
from annotator.integrations import label_studio as ls
from annotator.services.review import apply_annotation, apply_deletion, handle_webhook
from tests.review.factories import MadePair, blob, make_review_pairs


@pytest.fixture
def made(engine: Engine, tmp_path: Path) -> list[MadePair]:
    with session_scope(engine) as session:
        pairs = make_review_pairs(session, tmp_path / "images", n_pairs=2, n_proposals=3)
        for i, p in enumerate(pairs):  # as if pushed
            task = session.get(ReviewTask, p.task_id)
            assert task is not None
            task.external_id = str(5000 + i)
            task.status = ReviewTaskStatus.PUSHED
    return pairs


def _raw(
    ann_id: int, task: str, result: list[dict[str, Any]], updated: str = "2026-11-21T10:00:00Z"
) -> dict[str, Any]:
    return {
        "id": ann_id,
        "task": int(task),
        "updated_at": updated,
        "created_at": "2026-11-21T09:59:00Z",
        "completed_by": 7,
        "lead_time": 12.5,
        "was_cancelled": False,
        "result": result,
    }


def _edit(mask: np.ndarray) -> np.ndarray:
    edited = mask.copy()
    ys = np.nonzero(mask)[0]
    edited[ys.min() : ys.min() + 3, :] = False  # shave the top rows
    edited[0:2, 0:5] = True  # and add a few pixels elsewhere
    return edited


def _live(session: Any, model: Any, pair_id: int | None = None) -> list[Any]:
    stmt = select(model).where(model.superseded_at.is_(None))
    if pair_id is not None and model is Annotation:
        stmt = stmt.where(Annotation.pair_id == pair_id)
    return list(session.scalars(stmt.order_by(model.id)))


def test_accept_reject_fix_new_and_exhaustivity(engine: Engine, made: list[MadePair]) -> None:
    pair = made[0]
    (p0, m0), (p1, m1), (p2, m2) = pair.proposals.items()
    fixed = _edit(m1)
    drawn = blob(pair.height, pair.width, np.random.default_rng(9))
    result = [
        ls.brush_region(ls.region_id(p0), m0),  # kept as is, no choice: accept
        ls.brush_region(ls.region_id(p1), fixed),  # edited: fix
        ls.region_choice(ls.region_id(p1), "accept"),
        ls.brush_region(ls.region_id(p2), m2),
        ls.region_choice(ls.region_id(p2), "reject"),
        ls.brush_region("hand-drawn-1", drawn),  # a missing instance
        ls.exhaustivity_result("no"),
        ls.note_result("one more car behind the tree"),
    ]
    with session_scope(engine) as session:
        task = session.get(ReviewTask, pair.task_id)
        assert apply_annotation(session, task, _raw(101, "5000", result)) == "applied"
    with session_scope(engine) as session:
        anns = _live(session, Annotation, pair.pair_id)
        assert [a.source for a in anns] == [AnnotationSource.HUMAN] * 3
        by_proposal = {a.proposal_id: a for a in anns}
        assert set(by_proposal) == {p0, p1, None}
        # pixel-exact: the accepted mask is the proposal's, the fixed and drawn ones the reviewer's
        size = [pair.height, pair.width]
        for proposal_id, expected in ((p0, m0), (p1, fixed), (None, drawn)):
            got = masks.decode({"size": size, "counts": by_proposal[proposal_id].rle_counts})
            assert np.array_equal(got, expected)
        assert by_proposal[p1].area == int(fixed.sum())
        assert by_proposal[p0].score == pytest.approx(0.9)
        reviews = {(r.proposal_id, r.action) for r in _live(session, Review)}
        assert reviews == {
            (None, ReviewAction.ACCEPT),  # the pair-level row
            (p0, ReviewAction.ACCEPT),
            (p1, ReviewAction.FIX),
            (p2, ReviewAction.REJECT),
            (None, ReviewAction.FIX),
        }
        pair_row = next(r for r in _live(session, Review) if r.region_id is None)
        assert pair_row.exhaustivity == "no"
        assert pair_row.note == "one more car behind the tree"
        assert pair_row.lead_time_s == 12.5
        assert pair_row.reviewer == "label-studio user 7"
        assert pair_row.external_id == "101"
        db_pair = session.get(Pair, pair.pair_id)
        assert db_pair.state == PairState.POSITIVE and db_pair.is_exhaustive is False
        assert "1 accepted, 2 fixed, 1 rejected" in (db_pair.state_reason or "")
        assert session.get(ReviewTask, pair.task_id).status == ReviewTaskStatus.DONE
        assert all(a.review_id is not None for a in anns)


def test_replay_update_delete(engine: Engine, made: list[MadePair]) -> None:
    pair = made[0]
    (p0, m0), (p1, _m1), (p2, m2) = pair.proposals.items()
    first = [ls.brush_region(ls.region_id(p), m) for p, m in pair.proposals.items()]
    first.append(ls.exhaustivity_result("yes"))
    created = _raw(202, "5000", first, "2026-11-21T10:00:00.000001Z")
    payload = {"action": "ANNOTATION_CREATED", "annotation": created, "task": {"id": 5000}}

    def counts(session: Any) -> tuple[int, int, int]:
        return (
            session.scalar(select(func.count()).select_from(Review)),
            session.scalar(select(func.count()).select_from(Annotation)),
            len(_live(session, Annotation)),
        )

    with session_scope(engine) as session:
        assert handle_webhook(session, payload).outcomes == ["applied"]
    with session_scope(engine) as session:
        after_first = counts(session)
        assert after_first == (4, 3, 3)
        assert session.get(Pair, pair.pair_id).state == PairState.POSITIVE
        assert session.get(Pair, pair.pair_id).is_exhaustive is True
    for _ in range(2):  # the same webhook again: nothing changes
        with session_scope(engine) as session:
            assert handle_webhook(session, payload).outcomes == ["unchanged"]
        with session_scope(engine) as session:
            assert counts(session) == after_first

    # The reviewer edits: p1 removed (reject), p2 fixed. The old revision is superseded.
    fixed = _edit(m2)
    second = [
        ls.brush_region(ls.region_id(p0), m0),
        ls.brush_region(ls.region_id(p2), fixed),
        ls.exhaustivity_result("yes"),
    ]
    updated = {**_raw(202, "5000", second, "2026-11-21T10:05:00Z")}
    with session_scope(engine) as session:
        event = {"action": "ANNOTATION_UPDATED", "annotation": updated, "task": {"id": 5000}}
        assert handle_webhook(session, event).outcomes == ["applied"]
        # a late replay of the first revision is older: ignored
        assert handle_webhook(session, payload).outcomes == ["unchanged"]
    with session_scope(engine) as session:
        live = _live(session, Annotation)
        assert {a.proposal_id for a in live} == {p0, p2}
        assert session.scalar(select(func.count()).select_from(Annotation)) == 5
        superseded = session.scalars(
            select(Annotation).where(Annotation.superseded_at.is_not(None))
        ).all()
        assert {a.proposal_id for a in superseded} == {p0, p1, p2}
        live_reviews = {(r.proposal_id, r.action, r.note) for r in _live(session, Review)}
        assert (p1, ReviewAction.REJECT, "region removed") in live_reviews
        assert (p2, ReviewAction.FIX, None) in live_reviews
        fixed_ann = next(a for a in live if a.proposal_id == p2)
        size = [pair.height, pair.width]
        assert np.array_equal(masks.decode({"size": size, "counts": fixed_ann.rle_counts}), fixed)

    # Deleted in Label Studio: recorded, its masks superseded, the pair back in review.
    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 202}]}
    with session_scope(engine) as session:
        assert handle_webhook(session, deleted).outcomes == ["deleted"]
        assert handle_webhook(session, deleted).outcomes == ["unchanged"]
        assert handle_webhook(session, payload).outcomes == ["stale"]
    with session_scope(engine) as session:
        assert _live(session, Annotation) == []
        rows = _live(session, Review)
        assert [(r.action, r.external_id) for r in rows] == [(ReviewAction.DELETE, "202")]
        db_pair = session.get(Pair, pair.pair_id)
        assert db_pair.state == PairState.IN_REVIEW and db_pair.is_exhaustive is None
        assert session.get(ReviewTask, pair.task_id).status == ReviewTaskStatus.PUSHED


def test_concept_absent_and_renamed_regions(engine: Engine, made: list[MadePair]) -> None:
    absent_pair, renamed_pair = made
    with session_scope(engine) as session:
        task = session.get(ReviewTask, absent_pair.task_id)
        result = [ls.brush_region(ls.region_id(p), m) for p, m in absent_pair.proposals.items()]
        result.append(ls.exhaustivity_result("absent"))
        assert apply_annotation(session, task, _raw(301, "5000", result)) == "applied"
        # A UI that renamed the regions: matched back by pixels (and by overlap when edited).
        (q0, n0), (q1, n1), (_q2, _n2) = renamed_pair.proposals.items()
        result = [
            ls.brush_region("abc", n0),
            ls.brush_region("def", _edit(n1)),
            ls.exhaustivity_result("yes"),
        ]
        task2 = session.get(ReviewTask, renamed_pair.task_id)
        assert apply_annotation(session, task2, _raw(302, "5001", result)) == "applied"
    with session_scope(engine) as session:
        p = session.get(Pair, absent_pair.pair_id)
        assert p.state == PairState.NEGATIVE and p.is_exhaustive is True
        assert _live(session, Annotation, absent_pair.pair_id) == []
        rejects = session.scalars(
            select(Review).where(Review.external_id == "301", Review.proposal_id.is_not(None))
        ).all()
        assert {r.action for r in rejects} == {ReviewAction.REJECT}
        actions = {
            r.proposal_id: r.action
            for r in session.scalars(select(Review).where(Review.external_id == "302"))
        }
        assert actions[q0] == ReviewAction.ACCEPT and actions[q1] == ReviewAction.FIX
        assert None in actions  # the pair-level row, no hand-drawn instance


def test_newest_annotation_of_a_task_wins_and_skips_are_ignored(
    engine: Engine, made: list[MadePair]
) -> None:
    pair = made[0]
    items = list(pair.proposals.items())
    with session_scope(engine) as session:
        task = session.get(ReviewTask, pair.task_id)
        older = [ls.brush_region(ls.region_id(items[0][0]), items[0][1])]
        newer = [ls.brush_region(ls.region_id(items[1][0]), items[1][1])]
        skipped = {**_raw(403, "5000", []), "was_cancelled": True}
        assert apply_annotation(session, task, skipped) == "skipped"
        assert apply_annotation(session, task, _raw(402, "5000", newer, "2026-11-21T11:00Z"))
        assert apply_annotation(session, task, _raw(401, "5000", older, "2026-11-21T10:00Z"))
    with session_scope(engine) as session:
        assert [a.proposal_id for a in _live(session, Annotation)] == [items[1][0]]
        assert {r.external_id for r in _live(session, Review)} == {"402"}
        assert apply_deletion(session, "999999") == "unknown"


def test_webhook_for_unknown_task_and_other_actions(engine: Engine, made: list[MadePair]) -> None:
    with session_scope(engine) as session:
        event = {
            "action": "ANNOTATION_CREATED",
            "annotation": _raw(1, "42", []),
            "task": {"id": 42},
        }
        assert handle_webhook(session, event).outcomes == ["unknown task"]
        assert handle_webhook(session, {"action": "TASKS_CREATED", "tasks": []}).outcomes == [
            "ignored"
        ]
