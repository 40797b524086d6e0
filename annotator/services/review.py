"""Human review: push open review tasks to Label Studio, bring the reviewers' decisions home.

Three ways in, one way of applying:

* :func:`push_dataset` sends open review tasks (``annotator review push``);
* :func:`handle_webhook` applies what Label Studio reports as it happens;
* :func:`sync_dataset` lists every sent task's annotations and applies whatever the webhook
  missed (Label Studio never retries a webhook): ``annotator review sync`` and a periodic task.

Both ways back go through :func:`apply_annotation` / :func:`apply_deletion`, which are idempotent
on (Label Studio annotation id, its ``updated_at``): replaying a webhook, or syncing after the
webhook already delivered, changes nothing.

What a reviewer's annotation becomes (one revision of one Label Studio annotation):

* one ``reviews`` row per proposal of the pair: ``accept`` (region kept, pixels unchanged),
  ``fix`` (pixels edited; the new mask is kept) or ``reject`` (region marked reject or removed);
  one ``fix`` row without a proposal per region drawn by hand (a missing instance);
* one pair-level row (no proposal) with the exhaustivity answer, the note and the lead time;
* ``annotations`` (``source=human``, ``review_id`` set) for accepted and fixed masks;
* the pair's state: concept absent -> negative; every instance masked -> positive and
  exhaustive (negative when nothing was masked); some missing -> positive, not exhaustive.

The newest revision of the newest annotation of a task is the live one: an update supersedes
the rows and annotations of the previous revision (``superseded_at``; nothing is deleted), a
deletion is recorded as a ``delete`` row and supersedes what the annotation had made.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from annotator import masks
from annotator.config import Settings, get_settings
from annotator.db import repositories as repo
from annotator.db import reviews as rr
from annotator.db.models import (
    Annotation,
    AnnotationSource,
    Dataset,
    PairState,
    Review,
    ReviewAction,
    ReviewProject,
    ReviewTask,
    ReviewTaskStatus,
    utcnow,
)
from annotator.db.session import session_scope
from annotator.errors import ConflictError, ExternalServiceError, InvalidInputError
from annotator.integrations import label_studio as ls
from annotator.signing import signed_image_url

__all__ = [
    "PushResult",
    "SyncResult",
    "WebhookResult",
    "apply_annotation",
    "apply_deletion",
    "ensure_project",
    "handle_webhook",
    "push_dataset",
    "sync_dataset",
]

log = logging.getLogger(__name__)

BACKEND = ls.BACKEND
# IoU above which a region whose id names no proposal is taken as an edit of that proposal.
MATCH_IOU = 0.5


# ------------------------------------------------------------------------------------ push


@dataclass
class PushResult:
    project_id: int
    project_created: bool = False
    reopened: int = 0  # sent to a project deleted in Label Studio: sent again (``recreate``)
    created: int = 0
    adopted: int = 0  # found in Label Studio after an interrupted push
    released: int = 0  # an interrupted push that never reached Label Studio: sent again
    refreshed: int = 0  # image URLs renewed
    skipped: list[str] = field(default_factory=list)


def _project_title(dataset: Dataset) -> str:
    return f"annotator: {dataset.name}"


def _project_gone(dataset: Dataset, project: ReviewProject, client: ls.LabelStudioAPI) -> str:
    return (
        f"Label Studio project {project.external_id} of dataset {dataset.name!r} no longer "
        f"exists at {client.base_url} (deleted in Label Studio?). `annotator review push "
        f"{dataset.name} --recreate` makes a new project and sends again every task not reviewed "
        "yet (decisions already brought home are kept); if ANNOTATOR_LABEL_STUDIO_URL names the "
        "wrong server, correct it instead"
    )


def ensure_project(
    session: Session,
    dataset: Dataset,
    client: ls.LabelStudioAPI,
    settings: Settings,
    *,
    recreate: bool = False,
) -> tuple[ReviewProject, bool, int]:
    """The dataset's Label Studio project (created on first use) with its webhook in place;
    whether it was created; how many sent tasks were reopened.

    A project deleted in Label Studio raises :class:`ConflictError`, unless ``recreate``: then
    a new project replaces it, the tasks that were waiting in the old one are open again (the
    push sends them anew), and reviewed tasks keep their decisions (they are not sent again).
    """
    project = rr.get_project(session, dataset.id, BACKEND)
    created, reopened = False, 0
    if project is not None and client.get_project(int(project.external_id)) is None:
        if not recreate:
            raise ConflictError(_project_gone(dataset, project, client))
        reopened = rr.forget_sent_tasks(session, dataset.id, BACKEND)
        log.warning(
            "Label Studio project %s of dataset %r is gone: making a new one, %d tasks reopened",
            project.external_id, dataset.name, reopened,
        )  # fmt: skip
        session.delete(project)
        session.flush()
        project = None
    if project is None:
        project_id = client.create_project(
            title=_project_title(dataset),
            description=f"Review tasks of dataset {dataset.name!r} (managed by annotator).",
            label_config=ls.label_config(),
        )
        project = rr.add_project(session, dataset.id, BACKEND, str(project_id), None)
        created = True
    hook = ls.ensure_webhook(
        client,
        int(project.external_id),
        settings.public_url.rstrip("/") + ls.WEBHOOK_PATH,
        settings.webhook_secret,
    )
    project.webhook_id = str(hook)
    session.flush()
    return project, created, reopened


def _review_item(
    content: rr.TaskContent, token: str, settings: Settings, now: float
) -> tuple[ls.ReviewItem, datetime]:
    url, expires = signed_image_url(
        settings.public_url,
        content.image_id,
        settings.webhook_secret,
        settings.review_url_ttl_s,
        now=now,
    )
    size = [content.height, content.width]
    item = ls.ReviewItem(
        review_task_id=content.task_id,
        pair_id=content.pair_id,
        image_id=content.image_id,
        image_url=url,
        width=content.width,
        height=content.height,
        phrase=content.phrase,
        push_token=token,
        proposals=[
            ls.ProposalForReview(
                id=p.id,
                rle={"size": size, "counts": p.counts},
                score=p.score,
                model_version=p.model_version,
                rank=p.rank,
                mv_p_accept=p.mv_p_accept,
            )
            for p in content.proposals
        ],
        ev_label=content.ev_label,
        ev_p_accept=content.ev_p_accept,
    )
    return item, datetime.fromtimestamp(expires, UTC)


def push_dataset(
    engine: Engine,
    name: str,
    client: ls.LabelStudioAPI,
    *,
    settings: Settings | None = None,
    batch_size: int = 100,
    in_doubt_grace_s: float = 300.0,
    recreate: bool = False,
) -> PushResult:
    """Send the dataset's open review tasks to its Label Studio project, ``batch_size`` at a
    time; renew image URLs that expire within half their lifetime.

    Idempotent and safe to interrupt: each batch first commits a push token on its tasks, then
    imports them (the token travels in the task data), then commits their Label Studio ids. A
    push that stopped in between is resolved by the next one: tasks found in Label Studio with
    their token are adopted, the others (older than ``in_doubt_grace_s``, so a push running
    right now is not second-guessed) are sent again. Unlike most services this one commits, per
    batch, which is what makes it safe: it takes an engine, not a session.

    A project deleted in Label Studio is an error, or with ``recreate`` replaced by a new one
    (see :func:`ensure_project`).
    """
    settings = settings or get_settings()
    with session_scope(engine) as session:
        dataset = repo.get_dataset(session, name)
        project, project_created, reopened = ensure_project(
            session, dataset, client, settings, recreate=recreate
        )
        dataset_id, project_id = dataset.id, int(project.external_id)
    result = PushResult(project_id=project_id, project_created=project_created, reopened=reopened)

    with session_scope(engine) as session:
        _resolve_in_doubt(session, dataset_id, project_id, client, in_doubt_grace_s, result)

    while True:
        token = uuid.uuid4().hex
        with session_scope(engine) as session:
            tasks = rr.claim_open_tasks(session, dataset_id, BACKEND, batch_size)
            for task in tasks:
                task.push_token = token
            ids = [t.id for t in tasks]
        if not ids:
            break
        with session_scope(engine) as session:
            contents = rr.task_contents(session, ids)
        now = datetime.now(UTC).timestamp()
        records, sent, expiries = [], [], {}
        for tid in ids:
            content = contents.get(tid)
            if content is None:
                result.skipped.append(f"review task {tid}: its image has no known size")
                continue
            item, expires = _review_item(content, token, settings, now)
            records.append(ls.build_task(item))
            sent.append(tid)
            expiries[tid] = expires
        ls_ids = client.import_tasks(project_id, records) if records else []
        with session_scope(engine) as session:
            for task in rr.tasks_by_id(session, ids):
                if task.id in expiries:
                    task.external_id = str(ls_ids[sent.index(task.id)])
                    task.status = ReviewTaskStatus.PUSHED
                    task.url_expires_at = expiries[task.id]
                else:  # cannot be reviewed (no image size): out of the way of every push
                    task.push_token = None
                    task.status = ReviewTaskStatus.CANCELLED
        result.created += len(sent)

    if result.created or result.adopted:
        info = client.get_project(project_id) or {}
        if info.get("model_version") != ls.PREDICTION_MODEL_VERSION:
            client.update_project(project_id, model_version=ls.PREDICTION_MODEL_VERSION)
    result.refreshed = _refresh_urls(engine, dataset_id, client, settings)
    return result


def _resolve_in_doubt(
    session: Session,
    dataset_id: int,
    project_id: int,
    client: ls.LabelStudioAPI,
    grace_s: float,
    result: PushResult,
) -> None:
    doubtful = rr.in_doubt_tasks(session, dataset_id, BACKEND)
    if not doubtful:
        return
    # A full listing, only after an interrupted push.
    found: dict[tuple[int, str], int] = {}
    for ls_task in client.iter_tasks(project_id):
        data = ls_task.get("data") or {}
        if "annotator_task_id" in data and "annotator_push" in data:
            key = (int(data["annotator_task_id"]), str(data["annotator_push"]))
            found[key] = int(ls_task["id"])
    cutoff = utcnow() - timedelta(seconds=grace_s)
    for task in doubtful:
        assert task.push_token is not None
        ls_id = found.get((task.id, task.push_token))
        if ls_id is not None:
            task.external_id = str(ls_id)
            task.status = ReviewTaskStatus.PUSHED
            task.url_expires_at = None  # unknown: renewed by the refresh below
            result.adopted += 1
        elif _aware(task.updated_at) <= cutoff:
            task.push_token = None
            result.released += 1
    session.flush()


def _aware(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _refresh_urls(
    engine: Engine, dataset_id: int, client: ls.LabelStudioAPI, settings: Settings
) -> int:
    renew_before = utcnow() + timedelta(seconds=settings.review_url_ttl_s / 2)
    refreshed = 0
    with session_scope(engine) as session:
        tasks = rr.tasks_with_expiring_urls(session, dataset_id, BACKEND, renew_before)
        contents = rr.task_contents(session, [t.id for t in tasks])
        now = datetime.now(UTC).timestamp()
        for task in tasks:
            content = contents.get(task.id)
            if content is None or task.external_id is None:
                continue
            item, expires = _review_item(content, task.push_token or "", settings, now)
            client.update_task_data(int(task.external_id), ls.task_data(item))
            task.url_expires_at = expires
            refreshed += 1
    return refreshed


# ---------------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class _Decision:
    action: ReviewAction
    proposal: rr.ProposalRow | None
    region_id: str | None
    counts: str | None = None  # the reviewer's mask, for fixes
    note: str | None = None


def _decide(
    content: rr.TaskContent, ann: ls.ReviewedAnnotation
) -> tuple[list[_Decision], list[str]]:
    """Per proposal (and per hand-drawn region): accept, reject or fix. Also the regions that
    could not be used (wrong size), as messages."""
    size = (content.height, content.width)
    problems: list[str] = []
    regions: dict[str, tuple[ls.Region, str]] = {}
    for region in ann.regions:
        if region.mask is None:
            continue
        if region.size != size:
            problems.append(
                f"annotation {ann.key.id}: region {region.id} is {region.size}, "
                f"the image is {size}: ignored"
            )
            continue
        regions[region.id] = (region, masks.encode(region.mask)["counts"])
    by_id = {p.id: p for p in content.proposals}
    assigned: dict[int, str] = {}  # proposal id -> region id
    for rid, (region, _) in regions.items():
        if region.proposal_id in by_id and region.proposal_id not in assigned:
            assigned[region.proposal_id] = rid
    # Regions whose id names no proposal of this pair (a UI that renamed them): the same
    # pixels as a proposal, else the best overlap above MATCH_IOU, else a new instance.
    loose = [rid for rid in regions if rid not in assigned.values()]
    for rid in list(loose):
        for p in content.proposals:
            if p.id not in assigned and p.counts == regions[rid][1]:
                assigned[p.id] = rid
                loose.remove(rid)
                break
    if loose:
        free = [p for p in content.proposals if p.id not in assigned]
        if free:
            rles = [masks.RLE(size=list(size), counts=regions[rid][1]) for rid in loose]
            ious = masks.iou_matrix(
                rles, [masks.RLE(size=list(size), counts=p.counts) for p in free]
            )
            for i, rid in sorted(enumerate(loose), key=lambda x: -ious[x[0]].max()):
                j = int(ious[i].argmax())
                if ious[i, j] > MATCH_IOU and free[j].id not in assigned:
                    assigned[free[j].id] = rid
        loose = [rid for rid in loose if rid not in assigned.values()]

    absent = ann.exhaustivity == ls.Exhaustivity.ABSENT
    decisions: list[_Decision] = []
    for p in content.proposals:
        match = assigned.get(p.id)
        if absent:
            decisions.append(_Decision(ReviewAction.REJECT, p, match, note="concept absent"))
        elif match is None:
            decisions.append(_Decision(ReviewAction.REJECT, p, None, note="region removed"))
        else:
            region, counts = regions[match]
            if region.choice == "reject":
                decisions.append(_Decision(ReviewAction.REJECT, p, match))
            elif region.mask is None or not region.mask.any():
                decisions.append(_Decision(ReviewAction.REJECT, p, match, note="mask erased"))
            elif counts == p.counts:
                decisions.append(_Decision(ReviewAction.ACCEPT, p, match))
            else:
                decisions.append(_Decision(ReviewAction.FIX, p, match, counts=counts))
    if not absent:
        for rid in loose:
            region, counts = regions[rid]
            if region.choice != "reject" and region.mask is not None and region.mask.any():
                decisions.append(
                    _Decision(ReviewAction.FIX, None, rid, counts=counts, note="new instance")
                )
    return decisions, problems


def _reviewer(ann: ls.ReviewedAnnotation, client: ls.LabelStudioAPI | None) -> str | None:
    if ann.completed_by is None:
        return None
    name = None
    if client is not None:
        try:
            name = client.user_name(ann.completed_by)
        except ExternalServiceError as exc:  # the decision matters more than the name
            log.warning("cannot resolve Label Studio user %s: %s", ann.completed_by, exc)
    return name or f"label-studio user {ann.completed_by}"


def apply_annotation(
    session: Session,
    task: ReviewTask,
    raw: Mapping[str, Any],
    client: ls.LabelStudioAPI | None = None,
    *,
    force: bool = False,
) -> str:
    """Apply one Label Studio annotation (as the API or a webhook gives it) to ``task``.

    Returns ``applied``, ``unchanged`` (this revision or a newer one is already recorded),
    ``stale`` (the annotation was deleted) or ``skipped`` (the reviewer skipped the task).
    ``force`` re-applies a revision already recorded (the sync uses it to restore the newest
    annotation of a task after another one was deleted).
    """
    key = ls.annotation_key(raw, task.external_id)
    if key.cancelled:
        return "skipped"
    task = rr.lock_task(session, task.id)
    rows = rr.reviews_of_external(session, task.id, key.id)
    if any(r.action == ReviewAction.DELETE for r in rows):
        return "stale"
    if rows and not force and max(r.external_version or "" for r in rows) >= key.version:
        return "unchanged"
    parsed = ls.parse_annotation(raw, task.external_id)
    contents = rr.task_contents(session, [task.id])
    if task.id not in contents:
        raise InvalidInputError(f"review task {task.id}: its image has no known size")
    content = contents[task.id]
    decisions, problems = _decide(content, parsed)
    for problem in problems:
        log.warning("review task %s: %s", task.id, problem)

    now = utcnow()
    rr.supersede_reviews(session, [r.id for r in rows if r.superseded_at is None], now)
    others = rr.live_groups(session, task.id)
    others.pop(key.id, None)
    wins = all((key.version, int(key.id)) >= (v, int(e)) for e, v in others.items())
    reviewer = _reviewer(parsed, client)
    common = {
        "task_id": task.id,
        "reviewer": reviewer,
        "external_id": key.id,
        "external_version": key.version,
        "superseded_at": None if wins else now,
    }
    pair_row = Review(
        action=ReviewAction.REJECT
        if parsed.exhaustivity == ls.Exhaustivity.ABSENT
        else ReviewAction.ACCEPT,
        exhaustivity=parsed.exhaustivity.value if parsed.exhaustivity else None,
        note=parsed.note,
        lead_time_s=parsed.lead_time_s,
        **common,
    )
    region_rows = [
        Review(
            action=d.action,
            proposal_id=d.proposal.id if d.proposal else None,
            region_id=d.region_id,
            rle_counts=d.counts,
            note=d.note,
            **common,
        )
        for d in decisions
    ]
    rr.add_reviews(session, [pair_row, *region_rows])
    if not wins:
        return "applied"

    rr.supersede_reviews(session, rr.live_review_ids(session, task.id, list(others)), now)
    pair = rr.get_pair(session, task.pair_id)
    rr.supersede_machine_annotations(session, pair.id, now)
    size = [content.height, content.width]
    new_annotations = []
    for d, row in zip(decisions, region_rows, strict=True):
        if d.action == ReviewAction.ACCEPT and d.proposal is not None:
            x, y, w, h = d.proposal.bbox
            counts, area, score, version = (
                d.proposal.counts,
                d.proposal.area,
                d.proposal.score,
                d.proposal.model_version,
            )
        elif d.action == ReviewAction.FIX and d.counts is not None:
            rle: masks.RLE = {"size": size, "counts": d.counts}
            x, y, w, h = masks.bbox(rle)
            counts, area, score, version = d.counts, masks.area(rle), None, None
        else:
            continue
        new_annotations.append(
            Annotation(
                dataset_id=pair.dataset_id,
                pair_id=pair.id,
                rle_counts=counts,
                bbox_x=x,
                bbox_y=y,
                bbox_w=w,
                bbox_h=h,
                area=area,
                iscrowd=False,
                source=AnnotationSource.HUMAN,
                score=score,
                proposal_id=d.proposal.id if d.proposal else None,
                review_id=row.id,
                model_version=version,
            )
        )
    rr.add_annotations(session, new_annotations)

    counts_by = {a: sum(d.action == a for d in decisions) for a in ReviewAction}
    answer = parsed.exhaustivity
    if answer == ls.Exhaustivity.ABSENT:
        pair.state, pair.is_exhaustive = PairState.NEGATIVE, True
    elif answer == ls.Exhaustivity.YES:
        pair.state = PairState.POSITIVE if new_annotations else PairState.NEGATIVE
        pair.is_exhaustive = True
    elif answer == ls.Exhaustivity.NO:
        pair.state, pair.is_exhaustive = PairState.POSITIVE, False
    elif new_annotations:
        pair.state, pair.is_exhaustive = PairState.POSITIVE, None
    pair.state_reason = (
        f"human review ({answer.value if answer else 'exhaustivity not answered'}): "
        f"{counts_by[ReviewAction.ACCEPT]} accepted, {counts_by[ReviewAction.FIX]} fixed, "
        f"{counts_by[ReviewAction.REJECT]} rejected; Label Studio annotation {key.id}"
        + (f" by {reviewer}" if reviewer else "")
    )
    task.status = ReviewTaskStatus.DONE
    session.flush()
    return "applied"


def apply_deletion(session: Session, external_id: str, task: ReviewTask | None = None) -> str:
    """Record that Label Studio annotation ``external_id`` was deleted and supersede what it
    made. ``deleted``, ``unchanged`` (already recorded) or ``unknown`` (not ours)."""
    task_ids = (
        [task.id] if task is not None else rr.tasks_of_external(session, external_id, BACKEND)
    )
    outcome = "unknown"
    for task_id in task_ids:
        locked = rr.lock_task(session, task_id)
        rows = rr.reviews_of_external(session, locked.id, external_id)
        if any(r.action == ReviewAction.DELETE for r in rows):
            outcome = "unchanged" if outcome == "unknown" else outcome
            continue
        live = [r.id for r in rows if r.superseded_at is None]
        now = utcnow()
        rr.supersede_reviews(session, live, now)
        rr.add_reviews(
            session,
            [
                Review(
                    task_id=locked.id,
                    action=ReviewAction.DELETE,
                    external_id=external_id,
                    note="annotation deleted in Label Studio",
                )
            ],
        )
        if live and not rr.live_groups(session, locked.id):
            pair = rr.get_pair(session, locked.pair_id)
            pair.state, pair.is_exhaustive = PairState.IN_REVIEW, None
            pair.state_reason = f"Label Studio annotation {external_id} was deleted: in review"
            locked.status = ReviewTaskStatus.PUSHED
        session.flush()
        outcome = "deleted"
    return outcome


# ----------------------------------------------------------------------------------- sync


@dataclass
class SyncResult:
    tasks: int = 0  # sent tasks seen in Label Studio
    applied: int = 0
    unchanged: int = 0
    skipped: int = 0
    deleted: int = 0
    restored: int = 0  # the newest annotation made live again after another was deleted
    missing: list[str] = field(default_factory=list)  # sent tasks no longer in Label Studio

    def count(self, outcome: str) -> None:
        if outcome == "applied":
            self.applied += 1
        elif outcome in ("unchanged", "stale"):
            self.unchanged += 1
        elif outcome == "skipped":
            self.skipped += 1


def sync_dataset(session: Session, name: str, client: ls.LabelStudioAPI) -> SyncResult:
    """Make the dataset agree with its Label Studio project: apply every annotation revision
    not yet recorded, record deletions, restore the newest annotation of each task.

    First a cheap listing of every task's annotation ids and versions, compared with what is
    recorded; then, only for the tasks where something changed, their annotations in full
    (results, no predictions), 200 tasks a request. A sync that finds nothing new reads no
    annotation results at all. Applies in the caller's transaction: if Label Studio fails
    half-way the caller rolls back and nothing is lost (the next sync starts over). Only
    flushes.
    """
    dataset = repo.get_dataset(session, name)
    result = SyncResult()
    project = rr.get_project(session, dataset.id, BACKEND)
    if project is None:
        return result  # nothing was ever pushed
    project_id = int(project.external_id)
    sent = rr.sent_tasks(session, dataset.id, BACKEND)
    states = rr.external_states(session, [t.id for t in sent.values()])
    seen: set[str] = set()
    changed: list[int] = []
    try:
        for ls_task in client.iter_annotation_keys(project_id):
            task = sent.get(str(ls_task["id"]))
            if task is None:
                continue  # not one of ours (or an interrupted push: `review push` adopts it)
            seen.add(str(ls_task["id"]))
            result.tasks += 1
            current = [
                ls.annotation_key(a, task.external_id)
                for a in ls_task.get("annotations") or []
                if not a.get("was_cancelled")
            ]
            if _in_step(states.get(task.id, rr.ExternalState()), current):
                result.unchanged += len(current)
            else:
                changed.append(int(ls_task["id"]))
    except ExternalServiceError as exc:
        if client.get_project(project_id) is None:
            raise ConflictError(_project_gone(dataset, project, client)) from exc
        raise
    result.missing = sorted(set(sent) - seen, key=int)
    if changed:
        known = {t: set(s.versions) - s.deleted for t, s in states.items()}
        for ls_task in client.iter_tasks(project_id, with_annotations=True, task_ids=changed):
            task = sent[str(ls_task["id"])]
            annotations = ls_task.get("annotations") or []
            _sync_task(session, task, annotations, known.get(task.id, set()), client, result)
    return result


def _in_step(state: rr.ExternalState, current: Sequence[ls.AnnotationKey]) -> bool:
    """Whether a task's recorded rows already reflect its annotations ``current`` in Label
    Studio (what :func:`_sync_task` would then leave unchanged)."""
    for key in current:
        if key.id not in state.deleted and state.versions.get(key.id, "") < key.version:
            return False  # a new annotation, or a new revision of one
    if (set(state.versions) - state.deleted) - {key.id for key in current}:
        return False  # deleted in Label Studio, not yet recorded
    if current:
        newest = max(current, key=lambda k: (k.version, int(k.id)))
        if state.live != {newest.id: newest.version}:
            return False  # the newest annotation is not the live one
    return True


def _sync_task(
    session: Session,
    task: ReviewTask,
    annotations: Sequence[Mapping[str, Any]],
    known: set[str],
    client: ls.LabelStudioAPI,
    result: SyncResult,
) -> None:
    current = [a for a in annotations if not a.get("was_cancelled")]
    for raw in current:
        result.count(apply_annotation(session, task, raw, client))
    for external_id in sorted(known - {str(a.get("id")) for a in current}):
        if apply_deletion(session, external_id, task) == "deleted":
            result.deleted += 1
    if current:
        keys = [ls.annotation_key(a, task.external_id) for a in current]
        newest = max(range(len(current)), key=lambda i: (keys[i].version, int(keys[i].id)))
        live = rr.live_groups(session, task.id)
        if live != {keys[newest].id: keys[newest].version}:
            apply_annotation(session, task, current[newest], client, force=True)
            result.restored += 1


# -------------------------------------------------------------------------------- webhook


@dataclass
class WebhookResult:
    action: str
    outcomes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "outcomes": self.outcomes}


def handle_webhook(
    session: Session, payload: Any, client: ls.LabelStudioAPI | None = None
) -> WebhookResult:
    """Apply one Label Studio webhook. Unknown actions and tasks that are not ours are ignored
    (and said so in the result); a malformed payload raises :class:`InvalidInputError`."""
    event = ls.parse_webhook(payload)
    result = WebhookResult(action=event.action)
    if event.annotation is not None and event.task_id is not None:
        task = rr.task_by_external_id(session, BACKEND, event.task_id)
        if task is None:
            result.outcomes.append("unknown task")
        else:
            result.outcomes.append(apply_annotation(session, task, event.annotation, client))
    elif event.action == "ANNOTATIONS_DELETED":
        for external_id in event.deleted_ids:
            result.outcomes.append(apply_deletion(session, external_id))
    else:
        result.outcomes.append("ignored")
    return result
