"""Human review against a real Label Studio 1.23.2 (see conftest.py): push, annotate through the
Label Studio API as a reviewer would, webhooks and sync bring the decisions home pixel-exact;
replays, missed webhooks, interrupted pushes and a Label Studio outage lose nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from annotator import masks
from annotator.cli import app
from annotator.db.models import (
    Annotation,
    Pair,
    PairState,
    Review,
    ReviewAction,
    ReviewProject,
    ReviewTask,
    ReviewTaskStatus,
)
from annotator.db.session import session_scope
from annotator.errors import ExternalServiceError
from annotator.integrations import label_studio as ls
from annotator.services.review import push_dataset, sync_dataset
from tests.review.conftest import WEBHOOK_SECRET, ApiServer, LabelStudioServer, free_port
from tests.review.factories import MadePair, blob, make_review_pairs

pytestmark = pytest.mark.label_studio


def _dataset() -> str:
    return f"review-{uuid.uuid4().hex[:8]}"


def _make(engine: Engine, tmp_path: Path, name: str, n_pairs: int = 3) -> list[MadePair]:
    with session_scope(engine) as session:
        return make_review_pairs(session, tmp_path / "images", dataset=name, n_pairs=n_pairs)


def _ls_ids(engine: Engine, made: Sequence[MadePair]) -> dict[int, int]:
    """review task id -> Label Studio task id."""
    with session_scope(engine) as session:
        tasks = [session.get(ReviewTask, m.task_id) for m in made]
        return {t.id: int(t.external_id) for t in tasks if t and t.external_id}


def _wait(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def _edit(mask: np.ndarray) -> np.ndarray:
    edited = mask.copy()
    ys = np.nonzero(mask)[0]
    edited[ys.min() : ys.min() + 2, :] = False
    edited[-3:, -4:] = True
    return edited


def _decode(counts: str, made: MadePair) -> np.ndarray:
    return masks.decode({"size": [made.height, made.width], "counts": counts})


def _prediction_id(client: ls.SDKClient, task_id: int) -> int:
    return int(client.get_task(task_id)["predictions"][0]["id"])


def _live_annotations(engine: Engine, pair_id: int) -> list[Annotation]:
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(Annotation)
                .where(Annotation.pair_id == pair_id, Annotation.superseded_at.is_(None))
                .order_by(Annotation.id)
            )
        )


def _task_status(engine: Engine, task_id: int) -> ReviewTaskStatus:
    with session_scope(engine) as session:
        task = session.get(ReviewTask, task_id)
        assert task is not None
        return task.status


def _counts(engine: Engine) -> tuple[int, int]:
    with session_scope(engine) as session:
        return (
            session.scalar(select(func.count()).select_from(Review)) or 0,
            session.scalar(select(func.count()).select_from(Annotation)) or 0,
        )


# ------------------------------------------------------------------------------------- push


def test_push_sends_every_proposal_and_is_idempotent(
    api_server: ApiServer, ls_client: ls.SDKClient, pg_engine: Engine, tmp_path: Path
) -> None:
    name = _dataset()
    made = _make(pg_engine, tmp_path, name)
    result = push_dataset(pg_engine, name, ls_client, settings=api_server.settings, batch_size=2)
    assert (result.created, result.project_created) == (3, True)

    ids = _ls_ids(pg_engine, made)
    assert len(ids) == 3
    for m in made:
        task = ls_client.get_task(ids[m.task_id])
        data = task["data"]
        assert data["annotator_task_id"] == m.task_id and data["phrase"] == m.phrase
        assert "MV 0.60" in data["scores"] and "EV (exhaustive): 0.45" in data["scores"]
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == ls.PREDICTION_MODEL_VERSION
        regions = {r["id"]: r for r in prediction["result"]}
        assert set(regions) == {ls.region_id(p) for p in m.proposals}
        for proposal_id, mask in m.proposals.items():
            region = regions[ls.region_id(proposal_id)]
            got = masks.from_brush(region["value"]["rle"], m.height, m.width)
            assert np.array_equal(got, mask)  # pixel-exact
            assert region["score"] == pytest.approx(
                0.9 - 0.1 * list(m.proposals).index(proposal_id)
            )
        # The image comes from our API, signed, with CORS headers; a changed URL is refused.
        image = httpx.get(data["image"], timeout=10)
        assert image.status_code == 200
        assert image.headers["access-control-allow-origin"] == "*"
        assert image.content == (tmp_path / "images" / f"{name}_{made.index(m)}.png").read_bytes()
        forged = data["image"].replace(f"/images/{m.image_id}?", f"/images/{m.image_id + 1}?")
        assert httpx.get(forged, timeout=10).status_code == 403

    project = ls_client.get_project(result.project_id)
    assert project is not None and project["model_version"] == ls.PREDICTION_MODEL_VERSION
    (hook,) = ls_client.list_webhooks(result.project_id)
    assert hook["url"] == api_server.url + ls.WEBHOOK_PATH
    assert hook["headers"] == {ls.SECRET_HEADER: WEBHOOK_SECRET}

    again = push_dataset(pg_engine, name, ls_client, settings=api_server.settings)
    assert (again.created, again.adopted, again.project_created) == (0, 0, False)
    assert len(list(ls_client.iter_tasks(result.project_id))) == 3
    assert _ls_ids(pg_engine, made) == ids


class _CrashingClient:
    """Label Studio, but the process 'dies' right after (or instead of) an import."""

    def __init__(self, real: ls.SDKClient, *, after_import: bool) -> None:
        self._real, self._after = real, after_import
        self.base_url = real.base_url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        if self._after:
            self._real.import_tasks(project_id, tasks)
        raise KeyboardInterrupt("simulated crash")


@pytest.mark.parametrize("after_import", [True, False], ids=["after-import", "before-import"])
def test_interrupted_push_is_adopted_or_resent_never_duplicated(
    api_server: ApiServer,
    ls_client: ls.SDKClient,
    pg_engine: Engine,
    tmp_path: Path,
    after_import: bool,
) -> None:
    name = _dataset()
    made = _make(pg_engine, tmp_path, name, n_pairs=5)
    crashing = _CrashingClient(ls_client, after_import=after_import)
    with pytest.raises(KeyboardInterrupt):
        push_dataset(pg_engine, name, crashing, settings=api_server.settings, batch_size=2)  # type: ignore[arg-type]
    assert _ls_ids(pg_engine, made) == {}  # nothing recorded: the crash came first

    result = push_dataset(
        pg_engine, name, ls_client, settings=api_server.settings, batch_size=2, in_doubt_grace_s=0
    )
    if after_import:
        assert (result.adopted, result.created, result.released) == (2, 3, 0)
        assert result.refreshed == 2  # adopted tasks get fresh image URLs
    else:
        assert (result.adopted, result.created, result.released) == (0, 5, 2)
    ids = _ls_ids(pg_engine, made)
    assert len(ids) == 5
    in_ls = [t["data"]["annotator_task_id"] for t in ls_client.iter_tasks(result.project_id)]
    assert sorted(in_ls) == sorted(ids)  # each review task exactly once


# ------------------------------------------------------------------------- webhook round trip


def test_reviewer_decisions_come_back_through_the_webhook(
    api_server: ApiServer,
    label_studio: LabelStudioServer,
    ls_client: ls.SDKClient,
    pg_engine: Engine,
    tmp_path: Path,
) -> None:
    name = _dataset()
    made = _make(pg_engine, tmp_path, name)
    push = push_dataset(pg_engine, name, ls_client, settings=api_server.settings)
    ids = _ls_ids(pg_engine, made)
    a, b, c = made

    # Pair a: accept p0 as is, fix p1 (brush edit), reject p2, draw a missed instance, "no".
    (a0, am0), (a1, am1), (a2, am2) = a.proposals.items()
    fixed = _edit(am1)
    drawn = blob(a.height, a.width, np.random.default_rng(5))
    result_a = [
        ls.brush_region(ls.region_id(a0), am0),
        ls.region_choice(ls.region_id(a0), "accept"),
        ls.brush_region(ls.region_id(a1), fixed),
        ls.brush_region(ls.region_id(a2), am2),
        ls.region_choice(ls.region_id(a2), "reject"),
        ls.brush_region("drawn01", drawn),
        ls.exhaustivity_result(ls.Exhaustivity.NO),
        ls.note_result("a second car is cut off at the border"),
    ]
    ann_a = ls_client.create_annotation(
        ids[a.task_id], result_a, lead_time_s=33.5,
        parent_prediction=_prediction_id(ls_client, ids[a.task_id]),
    )  # fmt: skip
    # Pair b: the concept is absent. Pair c: every proposal right and exhaustive.
    ann_b = ls_client.create_annotation(
        ids[b.task_id], [ls.exhaustivity_result(ls.Exhaustivity.ABSENT)], lead_time_s=4.0
    )
    result_c = [ls.brush_region(ls.region_id(p), m) for p, m in c.proposals.items()]
    result_c.append(ls.exhaustivity_result(ls.Exhaustivity.YES))
    ann_c = ls_client.create_annotation(ids[c.task_id], result_c, lead_time_s=9.0)

    _wait(lambda: all(_task_status(pg_engine, m.task_id) == ReviewTaskStatus.DONE for m in made))
    with session_scope(pg_engine) as session:
        pa, pb, pc = (session.get(Pair, m.pair_id) for m in made)
        assert (pa.state, pa.is_exhaustive) == (PairState.POSITIVE, False)
        assert (pb.state, pb.is_exhaustive) == (PairState.NEGATIVE, True)
        assert (pc.state, pc.is_exhaustive) == (PairState.POSITIVE, True)
        rows = session.scalars(select(Review).where(Review.external_id == str(ann_a["id"]))).all()
        assert {r.reviewer for r in rows} == {label_studio.username}
        pair_row = next(r for r in rows if r.region_id is None)
        assert (pair_row.exhaustivity, pair_row.lead_time_s) == ("no", 33.5)
        assert pair_row.note == "a second car is cut off at the border"
        assert {(r.proposal_id, r.action) for r in rows if r.region_id} == {
            (a0, ReviewAction.ACCEPT),
            (a1, ReviewAction.FIX),
            (a2, ReviewAction.REJECT),
            (None, ReviewAction.FIX),
        }
    anns = {x.proposal_id: x for x in _live_annotations(pg_engine, a.pair_id)}
    assert set(anns) == {a0, a1, None}
    assert np.array_equal(_decode(anns[a0].rle_counts, a), am0)
    assert np.array_equal(_decode(anns[a1].rle_counts, a), fixed)  # the edit, pixel-exact
    assert np.array_equal(_decode(anns[None].rle_counts, a), drawn)
    assert _live_annotations(pg_engine, b.pair_id) == []
    assert {x.proposal_id for x in _live_annotations(pg_engine, c.pair_id)} == set(c.proposals)

    # A replayed webhook changes nothing; a webhook without the secret is refused.
    task_a = ls_client.get_task(ids[a.task_id])
    stored = next(x for x in task_a["annotations"] if x["id"] == ann_a["id"])
    payload = {
        "action": "ANNOTATION_CREATED",
        "annotation": stored,
        "task": {"id": ids[a.task_id]},
        "project": {"id": push.project_id},
    }
    before = _counts(pg_engine)
    hook = api_server.url + ls.WEBHOOK_PATH
    for _ in range(2):
        answer = httpx.post(hook, json=payload, headers={ls.SECRET_HEADER: WEBHOOK_SECRET})
        assert answer.status_code == 200 and answer.json()["outcomes"] == ["unchanged"]
    assert _counts(pg_engine) == before
    assert httpx.post(hook, json=payload).status_code == 401
    assert httpx.post(hook, json=payload, headers={ls.SECRET_HEADER: "nope"}).status_code == 401

    # The reviewer changes their mind on a: the drawn instance goes, the answer becomes "yes".
    ls_client.update_annotation(ann_a["id"], [*result_a[:5], ls.exhaustivity_result("yes")])
    _wait(lambda: {x.proposal_id for x in _live_annotations(pg_engine, a.pair_id)} == {a0, a1})
    with session_scope(pg_engine) as session:
        assert session.get(Pair, a.pair_id).is_exhaustive is True
        old = session.scalars(
            select(Annotation).where(
                Annotation.pair_id == a.pair_id, Annotation.superseded_at.is_not(None)
            )
        ).all()
        assert len(old) == 3  # the first revision's masks, kept and superseded

    # Deleting c's annotation in Label Studio: recorded, masks superseded, pair back in review.
    ls_client.delete_annotation(ann_c["id"])
    _wait(lambda: _live_annotations(pg_engine, c.pair_id) == [])
    with session_scope(pg_engine) as session:
        assert session.get(Pair, c.pair_id).state == PairState.IN_REVIEW
        deleted = session.scalars(
            select(Review).where(
                Review.external_id == str(ann_c["id"]), Review.action == ReviewAction.DELETE
            )
        ).all()
        assert len(deleted) == 1

    # Nothing was missed: a sync finds nothing to do.
    before = _counts(pg_engine)
    with session_scope(pg_engine) as session:
        synced = sync_dataset(session, name, ls_client)
    assert (synced.applied, synced.deleted, synced.restored, synced.unchanged) == (0, 0, 0, 2)
    assert _counts(pg_engine) == before
    assert ann_b["id"]


# ---------------------------------------------------------------------- missed webhooks, CLI


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, label_studio: LabelStudioServer
) -> Iterator[str]:
    """The CLI's settings, with a webhook URL where nobody listens: every webhook is lost."""
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("ANNOTATOR_DATABASE_URL", postgres_url)
    monkeypatch.setenv("ANNOTATOR_LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("ANNOTATOR_LABEL_STUDIO_TOKEN", label_studio.token)
    monkeypatch.setenv("ANNOTATOR_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("ANNOTATOR_PUBLIC_URL", dead)
    yield dead


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_sync_catches_up_on_missed_webhooks_and_survives_an_outage(
    cli_env: str,
    label_studio: LabelStudioServer,
    ls_client: ls.SDKClient,
    pg_engine: Engine,
    tmp_path: Path,
) -> None:
    name = _dataset()
    made = _make(pg_engine, tmp_path, name)
    assert "3 tasks sent" in _cli("review", "push", name)
    assert "0 tasks sent" in _cli("review", "push", name)
    ids = _ls_ids(pg_engine, made)
    a, b, c = made
    anns = {}
    for m, answer in ((a, "yes"), (b, "no")):
        result = [ls.brush_region(ls.region_id(p), mask) for p, mask in m.proposals.items()]
        result.append(ls.exhaustivity_result(answer))
        anns[m.task_id] = ls_client.create_annotation(ids[m.task_id], result, lead_time_s=5)
    time.sleep(1.5)  # the webhooks went nowhere
    assert _counts(pg_engine) == (0, 0)

    # Label Studio unreachable: a clear error, nothing written.
    down = ls.SDKClient(f"http://127.0.0.1:{free_port()}", label_studio.token, max_retries=0)
    with (
        pytest.raises(ExternalServiceError, match=r"unreachable.*is it running"),
        session_scope(pg_engine) as session,
    ):
        sync_dataset(session, name, down)

    # Label Studio failing half-way through the listing: the transaction is rolled back.
    class _FailsHalfway:
        base_url = ls_client.base_url

        def __getattr__(self, attr: str) -> Any:
            return getattr(ls_client, attr)

        def iter_tasks(self, project_id: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
            tasks = ls_client.iter_tasks(project_id, **kwargs)
            yield next(tasks)
            yield next(tasks)
            raise ExternalServiceError("Label Studio went away")

    with (
        pytest.raises(ExternalServiceError, match="went away"),
        session_scope(pg_engine) as session,
    ):
        sync_dataset(session, name, _FailsHalfway())  # type: ignore[arg-type]
    assert _counts(pg_engine) == (0, 0)

    # Back up: the next sync catches up, the one after finds nothing new.
    out = _cli("review", "sync", name)
    assert "3 tasks read: 2 annotations applied" in out
    assert _task_status(pg_engine, a.task_id) == ReviewTaskStatus.DONE
    with session_scope(pg_engine) as session:
        assert session.get(Pair, a.pair_id).is_exhaustive is True
        assert session.get(Pair, b.pair_id).is_exhaustive is False
        assert session.get(Pair, c.pair_id).state == PairState.IN_REVIEW
    before = _counts(pg_engine)
    assert "0 annotations applied, 2 unchanged" in _cli("review", "sync", name)
    assert _counts(pg_engine) == before

    # Missed update and missed deletion: the sync records both.
    first = next(iter(a.proposals))
    ls_client.update_annotation(
        anns[a.task_id]["id"],
        [ls.brush_region(ls.region_id(first), a.proposals[first]), ls.exhaustivity_result("no")],
    )
    ls_client.delete_annotation(anns[b.task_id]["id"])
    out = _cli("review", "sync", name)
    assert "1 annotations applied" in out and "1 deletions recorded" in out
    assert [x.proposal_id for x in _live_annotations(pg_engine, a.pair_id)] == [first]
    assert _live_annotations(pg_engine, b.pair_id) == []
    with session_scope(pg_engine) as session:
        assert session.get(Pair, b.pair_id).state == PairState.IN_REVIEW


def test_a_project_deleted_in_label_studio_is_reported_then_recreated(
    cli_env: str, ls_client: ls.SDKClient, pg_engine: Engine, tmp_path: Path
) -> None:
    name = _dataset()
    made = _make(pg_engine, tmp_path, name)
    _cli("review", "push", name)
    ids = _ls_ids(pg_engine, made)
    a, b, c = made
    result = [ls.brush_region(ls.region_id(p), mask) for p, mask in a.proposals.items()]
    ls_client.create_annotation(ids[a.task_id], [*result, ls.exhaustivity_result("yes")])
    assert "1 annotations applied" in _cli("review", "sync", name)
    with session_scope(pg_engine) as session:
        (old_project,) = session.scalars(select(ReviewProject.external_id)).all()
    ls_client.sdk.projects.delete(int(old_project))

    # Push and sync both stop with an error that says what happened and what to do.
    for command in ("push", "sync"):
        out = CliRunner().invoke(app, ["review", command, name])
        assert out.exit_code == 1, out.output
        text = " ".join(out.output.split())
        assert f"project {old_project} of dataset {name!r} no longer exists" in text
        assert f"annotator review push {name} --recreate" in text

    # --recreate: a new project with the two tasks that were never reviewed; a keeps its review.
    out = " ".join(_cli("review", "push", name, "--recreate").split())
    assert "2 tasks sent" in out and "2 tasks it held unreviewed are sent again" in out
    with session_scope(pg_engine) as session:
        (new_project,) = session.scalars(select(ReviewProject.external_id)).all()
        task_a = session.get(ReviewTask, a.task_id)
        assert task_a is not None and task_a.status == ReviewTaskStatus.DONE
        assert task_a.external_id is None
        pair_a = session.get(Pair, a.pair_id)
        assert pair_a is not None and pair_a.state == PairState.POSITIVE
    assert new_project != old_project
    in_ls = {t["data"]["annotator_task_id"] for t in ls_client.iter_tasks(int(new_project))}
    assert in_ls == {b.task_id, c.task_id}
    assert {x.proposal_id for x in _live_annotations(pg_engine, a.pair_id)} == set(a.proposals)
    assert "2 tasks read: 0 annotations applied" in " ".join(_cli("review", "sync", name).split())
    assert "0 tasks sent" in _cli("review", "push", name, "--recreate")  # nothing to recreate


class _Counting:
    """The real client, counting the full listings (annotation results) it is asked for."""

    def __init__(self, client: ls.SDKClient) -> None:
        self.client, self.base_url = client, client.base_url
        self.fetched: list[list[int]] = []

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.client, attr)

    def iter_tasks(self, project_id: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.fetched.append(sorted(kwargs.get("task_ids") or []))
        return self.client.iter_tasks(project_id, **kwargs)


def test_sync_reads_the_results_of_changed_tasks_only(
    cli_env: str, ls_client: ls.SDKClient, pg_engine: Engine, tmp_path: Path
) -> None:
    name = _dataset()
    made = _make(pg_engine, tmp_path, name)
    _cli("review", "push", name)
    ids = _ls_ids(pg_engine, made)
    a, b, _ = made

    def keep_all(m: MadePair, answer: str) -> list[dict[str, Any]]:
        regions = [ls.brush_region(ls.region_id(p), mask) for p, mask in m.proposals.items()]
        return [*regions, ls.exhaustivity_result(answer)]

    older = ls_client.create_annotation(ids[a.task_id], keep_all(a, "yes"))
    ls_client.create_annotation(ids[b.task_id], keep_all(b, "yes"))
    client: Any = _Counting(ls_client)

    def sync() -> Any:
        with session_scope(pg_engine) as session:
            return sync_dataset(session, name, client)

    first = sync()
    assert (first.tasks, first.applied, first.unchanged) == (3, 2, 0)
    assert client.fetched == [sorted([ids[a.task_id], ids[b.task_id]])]

    # Nothing new: one cheap listing, no annotation results read.
    client.fetched.clear()
    again = sync()
    assert (again.applied, again.unchanged, again.restored) == (0, 2, 0)
    assert client.fetched == []

    # A second, newer annotation on a becomes the live one; deleting it (webhook missed)
    # brings the older one back. Only a's results are read each time.
    newer = ls_client.create_annotation(ids[a.task_id], keep_all(a, "no"))
    assert (sync().applied, client.fetched) == (1, [[ids[a.task_id]]])
    with session_scope(pg_engine) as session:
        assert session.get(Pair, a.pair_id).is_exhaustive is False  # type: ignore[union-attr]
    client.fetched.clear()
    ls_client.delete_annotation(newer["id"])
    restored = sync()
    assert (restored.deleted, restored.restored, client.fetched) == (1, 1, [[ids[a.task_id]]])
    with session_scope(pg_engine) as session:
        assert session.get(Pair, a.pair_id).is_exhaustive is True  # type: ignore[union-attr]
    live = {r.external_id for r in _live_reviews(pg_engine, a.task_id)}
    assert live == {str(older["id"])}
    client.fetched.clear()
    assert (sync().unchanged, client.fetched) == (2, [])


def _live_reviews(engine: Engine, task_id: int) -> list[Review]:
    """The task's live decisions (a deletion's own ``delete`` row is no decision)."""
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(Review).where(
                    Review.task_id == task_id,
                    Review.superseded_at.is_(None),
                    Review.action != ReviewAction.DELETE,
                )
            )
        )
