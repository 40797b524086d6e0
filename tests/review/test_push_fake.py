"""Push on SQLite and PostgreSQL against an in-memory stand-in for Label Studio: batches,
idempotency, interrupted pushes, URL renewal (the real server is in test_label_studio.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

from annotator import masks
from annotator.config import Settings
from annotator.db.models import ReviewTask, ReviewTaskStatus, utcnow
from annotator.db.session import session_scope
from annotator.integrations import label_studio as ls
from annotator.services.review import push_dataset
from tests.review.factories import make_review_pairs


class FakeLabelStudio:
    """Implements :class:`ls.LabelStudioAPI` in memory."""

    base_url = "http://fake-label-studio"

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.projects: dict[int, dict[str, Any]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.imports = 0
        self.fail_next_import_after = False

    def create_project(self, *, title: str, description: str, label_config: str) -> int:
        pid = next(self.ids)
        self.projects[pid] = {"id": pid, "title": title, "label_config": label_config}
        return pid

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        return self.projects.get(project_id)

    def update_project(self, project_id: int, **fields: Any) -> None:
        self.projects[project_id].update(fields)

    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        return [h for h in self.webhooks.values() if h["project"] == project_id]

    def create_webhook(
        self, project_id: int, *, url: str, headers: Mapping[str, str], actions: Sequence[str]
    ) -> int:
        hid = next(self.ids)
        self.webhooks[hid] = {"id": hid, "project": project_id, "url": url,
                              "headers": dict(headers), "actions": list(actions)}  # fmt: skip
        return hid

    def update_webhook(
        self, webhook_id: int, *, url: str, headers: Mapping[str, str], actions: Sequence[str]
    ) -> None:
        self.webhooks[webhook_id].update(url=url, headers=dict(headers), actions=list(actions))

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        self.imports += 1
        ids = []
        for task in tasks:
            tid = next(self.ids)
            self.tasks[tid] = {"id": tid, "project": project_id, **task}
            ids.append(tid)
        if self.fail_next_import_after:
            self.fail_next_import_after = False
            raise KeyboardInterrupt("crash after import")
        return ids

    def iter_tasks(
        self,
        project_id: int,
        *,
        with_annotations: bool = False,
        task_ids: Sequence[int] | None = None,
        page_size: int = 200,
    ) -> Iterator[dict[str, Any]]:
        for t in list(self.tasks.values()):
            if t["project"] == project_id and (task_ids is None or t["id"] in task_ids):
                yield {"id": t["id"], "data": t["data"], "annotations": []}

    def iter_annotation_keys(
        self, project_id: int, *, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        for t in self.iter_tasks(project_id):
            yield {"id": t["id"], "annotations": []}

    def update_task_data(self, task_id: int, data: Mapping[str, Any]) -> None:
        self.tasks[task_id]["data"] = dict(data)

    def user_name(self, user_id: int) -> str | None:
        return None


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, webhook_secret="s", public_url="http://api:8000")


def test_push_batches_idempotent_and_renews_urls(
    engine: Engine, tmp_path: Path, settings: Settings
) -> None:
    with session_scope(engine) as session:
        made = make_review_pairs(session, tmp_path, n_pairs=5, n_proposals=2)
    fake = FakeLabelStudio()
    result = push_dataset(engine, "review", fake, settings=settings, batch_size=2)
    assert (result.created, result.project_created, fake.imports) == (5, True, 3)
    (project,) = fake.projects.values()
    assert project["model_version"] == ls.PREDICTION_MODEL_VERSION
    (hook,) = fake.webhooks.values()
    assert hook["url"] == "http://api:8000/webhooks/label-studio"
    assert hook["headers"] == {ls.SECRET_HEADER: "s"}
    by_review = {t["data"]["annotator_task_id"]: t for t in fake.tasks.values()}
    for m in made:
        regions = by_review[m.task_id]["predictions"][0]["result"]
        for region in regions:
            proposal = ls.proposal_id_of(region["id"])
            got = masks.from_brush(region["value"]["rle"], m.height, m.width)
            assert proposal is not None and np.array_equal(got, m.proposals[proposal])
        assert by_review[m.task_id]["data"]["image"].startswith(
            f"http://api:8000/images/{m.image_id}?exp="
        )

    again = push_dataset(engine, "review", fake, settings=settings)
    assert (again.created, again.refreshed, len(fake.tasks)) == (0, 0, 5)

    # Rotated secret: the webhook follows. URLs near expiry: renewed in place.
    with session_scope(engine) as session:
        for m in made[:2]:
            task = session.get(ReviewTask, m.task_id)
            assert task is not None
            task.url_expires_at = utcnow() + timedelta(days=1)
    rotated = settings.model_copy(update={"webhook_secret": "t"})
    renewed = push_dataset(engine, "review", fake, settings=rotated)
    assert (renewed.created, renewed.refreshed) == (0, 2)
    assert hook["headers"] == {ls.SECRET_HEADER: "t"}
    with session_scope(engine) as session:
        statuses = {session.get(ReviewTask, m.task_id).status for m in made}  # type: ignore[union-attr]
        assert statuses == {ReviewTaskStatus.PUSHED}


def test_interrupted_push_on_both_backends(
    engine: Engine, tmp_path: Path, settings: Settings
) -> None:
    with session_scope(engine) as session:
        make_review_pairs(session, tmp_path, n_pairs=3, n_proposals=1)
    fake = FakeLabelStudio()
    fake.fail_next_import_after = True
    with pytest.raises(KeyboardInterrupt):
        push_dataset(engine, "review", fake, settings=settings, batch_size=2)
    # A push right after the crash leaves the in-doubt tasks alone (a push may still be running).
    soon = push_dataset(engine, "review", fake, settings=settings, batch_size=2)
    assert (soon.adopted, soon.created) == (2, 1)  # found in Label Studio: adopted
    assert len(fake.tasks) == 3
    assert sorted(t["data"]["annotator_task_id"] for t in fake.tasks.values()) == [1, 2, 3]
