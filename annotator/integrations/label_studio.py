"""Label Studio: the only module that knows its formats (label config, tasks, predictions,
annotation results, webhook payloads) and its API (through ``label_studio_sdk`` 2.x).

Everything else in the engine sees neutral objects: :class:`ReviewItem` goes out (one pair with
its proposals and verifier scores), :class:`ReviewedAnnotation` comes back (one reviewer's
decisions on one task), and :class:`WebhookEvent` says what happened.

How a review looks in Label Studio (one project per dataset, one task per pair):

* the image, the concept phrase as a question ("Is every instance of "red car" masked?") and
  the verifier scores as text;
* every proposal of the pair as a brush region of one prediction (region id ``p<proposal id>``,
  its score, its model version in the region's meta); the prediction pre-labels the task, so the
  reviewer starts from the proposals;
* per region, ``accept`` / ``reject`` choices; keeping a region unchanged without a choice
  counts as accept, deleting it as reject, editing its pixels as a fix, drawing a new one as a
  missing instance;
* the exhaustivity question (yes / no / concept absent) and a free-text note.

Brush masks are Label Studio brush RLE (not COCO RLE): they are converted with
:func:`annotator.masks.to_brush` / :func:`~annotator.masks.from_brush` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from xml.sax.saxutils import quoteattr

import numpy as np

from annotator import masks
from annotator.errors import ConfigError, ExternalServiceError, InvalidInputError

__all__ = [
    "BACKEND",
    "PREDICTION_MODEL_VERSION",
    "SECRET_HEADER",
    "WEBHOOK_ACTIONS",
    "WEBHOOK_PATH",
    "AnnotationKey",
    "Exhaustivity",
    "LabelStudioAPI",
    "ProposalForReview",
    "Region",
    "ReviewItem",
    "ReviewedAnnotation",
    "SDKClient",
    "WebhookEvent",
    "annotation_key",
    "brush_region",
    "build_task",
    "ensure_webhook",
    "exhaustivity_result",
    "label_config",
    "make_client",
    "note_result",
    "parse_annotation",
    "parse_webhook",
    "proposal_id_of",
    "region_choice",
    "region_id",
    "task_data",
]

BACKEND = "label_studio"
# Every prediction carries this model version and the project selects it for pre-labelling
# (Label Studio pre-labels only with predictions of the project's ``model_version``). The real
# model version of each proposal is in the region's meta and in the task data.
PREDICTION_MODEL_VERSION = "annotator-proposals"
WEBHOOK_PATH = "/webhooks/label-studio"
SECRET_HEADER = "X-Annotator-Secret"
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")

# Names in the label config.
IMAGE = "image"
MASK = "mask"
DECISION = "decision"
EXHAUSTIVE = "exhaustive"
NOTE = "note"
BRUSH_LABEL = "instance"


class Exhaustivity(enum.StrEnum):
    """The reviewer's answer to "is every instance of <phrase> masked?"."""

    YES = "yes"
    NO = "no"
    ABSENT = "absent"


_EXHAUSTIVITY_CHOICES = (
    (Exhaustivity.YES, "Yes: every instance is masked"),
    (Exhaustivity.NO, "No: some instances are missing"),
    (Exhaustivity.ABSENT, "Concept absent: there is no instance"),
)


def label_config(title: str = "") -> str:
    """The project's labelling interface (the same for every task; the phrase is task data)."""
    header = f'  <Header value={quoteattr(title)} size="4"/>\n' if title else ""
    exhaustive = "\n".join(
        f"      <Choice value={quoteattr(text)} alias={quoteattr(key.value)}/>"
        for key, text in _EXHAUSTIVITY_CHOICES
    )
    return f"""<View>
{header}  <Header value="$question"/>
  <Text name="scores" value="$scores"/>
  <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true"/>
  <BrushLabels name="{MASK}" toName="{IMAGE}">
    <Label value="{BRUSH_LABEL}" background="#f5a623"/>
  </BrushLabels>
  <View visibleWhen="region-selected">
    <Header value="Selected mask" size="5"/>
    <Choices name="{DECISION}" toName="{IMAGE}" perRegion="true" choice="single" showInline="true">
      <Choice value="accept"/>
      <Choice value="reject"/>
    </Choices>
  </View>
  <Header value="Exhaustivity" size="5"/>
  <Choices name="{EXHAUSTIVE}" toName="{IMAGE}" choice="single" required="true" showInline="true">
{exhaustive}
  </Choices>
  <TextArea name="{NOTE}" toName="{IMAGE}" placeholder="Note (optional)" rows="2"
            maxSubmissions="1" editable="true"/>
</View>
"""


# ------------------------------------------------------------------------------- outgoing


@dataclass(frozen=True)
class ProposalForReview:
    """One proposal as the reviewer sees it. ``rle`` is COCO RLE of the image size."""

    id: int
    rle: masks.RLE
    score: float
    model_version: str
    rank: int
    mv_p_accept: float | None = None


@dataclass(frozen=True)
class ReviewItem:
    """One review task: a pair, its image (a signed URL) and every proposal of it."""

    review_task_id: int
    pair_id: int
    image_id: int
    image_url: str
    width: int
    height: int
    phrase: str
    push_token: str
    proposals: Sequence[ProposalForReview] = ()
    ev_label: str | None = None
    ev_p_accept: float | None = None


def region_id(proposal_id: int) -> str:
    return f"p{proposal_id}"


def proposal_id_of(region: str) -> int | None:
    """The proposal id a region id names (``p<id>``), or None for a region drawn by hand."""
    if region.startswith("p") and region[1:].isdigit():
        return int(region[1:])
    return None


def _scores_text(item: ReviewItem) -> str:
    parts = [
        f"#{p.rank + 1}: score {p.score:.2f}"
        + (f", MV {p.mv_p_accept:.2f}" if p.mv_p_accept is not None else "")
        for p in item.proposals
    ]
    text = "Proposals: " + ("; ".join(parts) if parts else "none")
    if item.ev_p_accept is not None:
        text += f". EV ({item.ev_label or 'exhaustive'}): {item.ev_p_accept:.2f}"
    return text


def task_data(item: ReviewItem) -> dict[str, Any]:
    """The task's ``data``: what the label config shows, plus ids that bring results home."""
    return {
        IMAGE: item.image_url,
        "phrase": item.phrase,
        "question": f"Is every instance of “{item.phrase}” masked?",
        "scores": _scores_text(item),
        "annotator_task_id": item.review_task_id,
        "annotator_pair_id": item.pair_id,
        "annotator_image_id": item.image_id,
        "annotator_push": item.push_token,
        "proposals": [
            {
                "region": region_id(p.id),
                "proposal_id": p.id,
                "rank": p.rank,
                "score": p.score,
                "model_version": p.model_version,
                "mv_p_accept": p.mv_p_accept,
            }
            for p in item.proposals
        ],
        "ev": {"label": item.ev_label, "p_accept": item.ev_p_accept},
    }


def brush_region(
    region: str,
    mask: np.ndarray,
    *,
    score: float | None = None,
    meta: str | None = None,
) -> dict[str, Any]:
    """A brush region result item holding ``mask`` (``(H, W)`` bool)."""
    height, width = mask.shape
    item: dict[str, Any] = {
        "id": region,
        "from_name": MASK,
        "to_name": IMAGE,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": masks.to_brush(mask), "brushlabels": [BRUSH_LABEL]},
    }
    if score is not None:
        item["score"] = float(score)
    if meta:
        item["meta"] = {"text": [meta]}
    return item


def region_choice(region: str, choice: str) -> dict[str, Any]:
    """The per-region accept / reject choice result item for ``region``."""
    return {
        "id": region,
        "from_name": DECISION,
        "to_name": IMAGE,
        "type": "choices",
        "value": {"choices": [choice]},
    }


def exhaustivity_result(answer: Exhaustivity | str) -> dict[str, Any]:
    return {
        "id": "exhaustivity",
        "from_name": EXHAUSTIVE,
        "to_name": IMAGE,
        "type": "choices",
        "value": {"choices": [Exhaustivity(answer).value]},
    }


def note_result(text: str) -> dict[str, Any]:
    return {
        "id": "note",
        "from_name": NOTE,
        "to_name": IMAGE,
        "type": "textarea",
        "value": {"text": [text]},
    }


def build_task(item: ReviewItem) -> dict[str, Any]:
    """The Label Studio import record of ``item``: data and one prediction of all proposals."""
    task: dict[str, Any] = {"data": task_data(item)}
    if item.proposals:
        regions = []
        for p in item.proposals:
            if list(p.rle["size"]) != [item.height, item.width]:
                raise InvalidInputError(
                    f"proposal {p.id} has a mask of size {list(p.rle['size'])}, but its image "
                    f"{item.image_id} is {item.height} x {item.width}"
                )
            meta = f"proposal {p.id} · score {p.score:.2f}" + (
                f" · MV {p.mv_p_accept:.2f}" if p.mv_p_accept is not None else ""
            )
            meta += f" · {p.model_version}"
            regions.append(
                brush_region(region_id(p.id), masks.decode(p.rle), score=p.score, meta=meta)
            )
        task["predictions"] = [
            {
                "model_version": PREDICTION_MODEL_VERSION,
                "score": float(np.mean([p.score for p in item.proposals])),
                "result": regions,
            }
        ]
    return task


# ------------------------------------------------------------------------------- incoming


def _version(value: Any) -> str:
    """An annotation's ``updated_at`` as a sortable UTC string (microseconds, ``Z``)."""
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, str) and value:
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"annotation updated_at {value!r} is not a timestamp") from None
    else:
        raise InvalidInputError("annotation has no updated_at")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AnnotationKey:
    """What identifies one revision of a Label Studio annotation (cheap to read)."""

    id: str
    task_id: str
    version: str
    cancelled: bool


def annotation_key(raw: Mapping[str, Any], task_id: Any = None) -> AnnotationKey:
    """The key of a raw annotation (from the API or a webhook payload)."""
    ann_id = raw.get("id")
    task = raw.get("task", task_id)
    if isinstance(task, Mapping):
        task = task.get("id")
    if ann_id is None or task is None:
        raise InvalidInputError("Label Studio annotation without id or task")
    return AnnotationKey(
        id=str(ann_id),
        task_id=str(task),
        version=_version(raw.get("updated_at") or raw.get("created_at")),
        cancelled=bool(raw.get("was_cancelled")),
    )


@dataclass(frozen=True)
class Region:
    """One brush region of a reviewer's annotation.

    ``mask`` is ``(H, W)`` bool, None when the region carries no brush data (a choice whose
    region was removed). ``proposal_id`` is the proposal that the region id names, if any.
    """

    id: str
    proposal_id: int | None
    mask: np.ndarray | None
    size: tuple[int, int] | None
    choice: str | None = None


@dataclass(frozen=True)
class ReviewedAnnotation:
    """One revision of one reviewer's decisions on one task."""

    key: AnnotationKey
    completed_by: int | None
    lead_time_s: float | None
    regions: Sequence[Region] = ()
    exhaustivity: Exhaustivity | None = None
    note: str | None = None


def _exhaustivity(value: str) -> Exhaustivity | None:
    value = value.strip()
    for key, text in _EXHAUSTIVITY_CHOICES:
        if value in (key.value, text):
            return key
    return None


def parse_annotation(raw: Mapping[str, Any], task_id: Any = None) -> ReviewedAnnotation:
    """Decode a raw annotation's result into regions (masks decoded) and answers.

    Raises :class:`InvalidInputError` for a result whose brush data cannot be decoded.
    """
    key = annotation_key(raw, task_id)
    brushes: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}
    choices: dict[str, str] = {}
    exhaustivity: Exhaustivity | None = None
    notes: list[str] = []
    for item in raw.get("result") or []:
        if not isinstance(item, Mapping):
            continue
        value = item.get("value") or {}
        name, rid = item.get("from_name"), str(item.get("id", ""))
        if item.get("type") == "brushlabels" and name == MASK:
            if value.get("format", "rle") != "rle" or "rle" not in value:
                raise InvalidInputError(f"annotation {key.id}: region {rid} has no brush RLE")
            h, w = int(item.get("original_height", 0)), int(item.get("original_width", 0))
            try:
                mask = masks.from_brush(value["rle"], h, w)
            except (ValueError, TypeError) as exc:
                raise InvalidInputError(f"annotation {key.id}: region {rid}: {exc}") from exc
            if rid in brushes:  # two result items for one region: their union
                mask = mask | brushes[rid][0]
            brushes[rid] = (mask, (h, w))
        elif item.get("type") == "choices" and name == DECISION:
            picked = value.get("choices") or []
            if picked:
                choices[rid] = str(picked[0]).strip().lower()
        elif item.get("type") == "choices" and name == EXHAUSTIVE:
            picked = value.get("choices") or []
            if picked:
                exhaustivity = _exhaustivity(str(picked[0]))
        elif item.get("type") == "textarea" and name == NOTE:
            notes.extend(str(t) for t in value.get("text") or [] if str(t).strip())
    regions = [
        Region(id=rid, proposal_id=proposal_id_of(rid), mask=m, size=s, choice=choices.get(rid))
        for rid, (m, s) in brushes.items()
    ] + [
        Region(id=rid, proposal_id=proposal_id_of(rid), mask=None, size=None, choice=c)
        for rid, c in choices.items()
        if rid not in brushes
    ]
    completed_by = raw.get("completed_by")
    if isinstance(completed_by, Mapping):
        completed_by = completed_by.get("id")
    lead_time = raw.get("lead_time")
    return ReviewedAnnotation(
        key=key,
        completed_by=int(completed_by) if completed_by is not None else None,
        lead_time_s=max(float(lead_time), 0.0) if lead_time is not None else None,
        regions=regions,
        exhaustivity=exhaustivity,
        note="\n".join(notes) or None,
    )


@dataclass(frozen=True)
class WebhookEvent:
    """A webhook, reduced to what the engine acts on."""

    action: str
    project_id: str | None
    annotation: Mapping[str, Any] | None = None
    task_id: str | None = None
    deleted_ids: Sequence[str] = field(default_factory=tuple)


def parse_webhook(payload: Any) -> WebhookEvent:
    """Read a webhook body. Raises :class:`InvalidInputError` when it is not one."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("action"), str):
        raise InvalidInputError("not a Label Studio webhook payload (no 'action')")
    action = payload["action"]
    project = payload.get("project")
    project_id = project.get("id") if isinstance(project, Mapping) else project
    event = WebhookEvent(action=action, project_id=None if project_id is None else str(project_id))
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        annotation = payload.get("annotation")
        if not isinstance(annotation, Mapping):
            raise InvalidInputError(f"{action} webhook without an 'annotation' object")
        task = payload.get("task")
        task_id = task.get("id") if isinstance(task, Mapping) else annotation.get("task")
        if task_id is None:
            raise InvalidInputError(f"{action} webhook without a task id")
        return WebhookEvent(action, event.project_id, annotation, str(task_id))
    if action == "ANNOTATIONS_DELETED":
        deleted = payload.get("annotations")
        if not isinstance(deleted, list):
            raise InvalidInputError("ANNOTATIONS_DELETED webhook without an 'annotations' list")
        ids = tuple(str(a["id"]) for a in deleted if isinstance(a, Mapping) and "id" in a)
        return WebhookEvent(action, event.project_id, deleted_ids=ids)
    return event


# ------------------------------------------------------------------------------ the client


class LabelStudioAPI(Protocol):
    """The Label Studio calls the engine makes (a test double implements just these).

    Every method raises :class:`ExternalServiceError` when Label Studio cannot be reached or
    answers with an error.
    """

    base_url: str

    def create_project(self, *, title: str, description: str, label_config: str) -> int: ...

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        """The project's fields, or None when it does not exist."""
        ...

    def update_project(self, project_id: int, **fields: Any) -> None: ...

    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]: ...

    def create_webhook(
        self, project_id: int, *, url: str, headers: Mapping[str, str], actions: Sequence[str]
    ) -> int: ...

    def update_webhook(
        self, webhook_id: int, *, url: str, headers: Mapping[str, str], actions: Sequence[str]
    ) -> None: ...

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Create ``tasks`` (with inline predictions); their ids, in order."""
        ...

    def iter_tasks(
        self,
        project_id: int,
        *,
        with_annotations: bool = False,
        task_ids: Sequence[int] | None = None,
        page_size: int = 200,
    ) -> Iterator[dict[str, Any]]:
        """Every task of the project (only those of ``task_ids`` when given): ``id``, ``data``
        and, if asked, ``annotations`` (each with its ``result``; no predictions)."""
        ...

    def iter_annotation_keys(
        self, project_id: int, *, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every task of the project as ``id`` and ``annotations``, each annotation with only
        ``id``, ``created_at``, ``updated_at`` and ``was_cancelled`` (a cheap listing: what
        changed since the last look, without results, data or predictions)."""
        ...

    def update_task_data(self, task_id: int, data: Mapping[str, Any]) -> None: ...

    def user_name(self, user_id: int) -> str | None:
        """The user's e-mail (or username), None when unknown."""
        ...


# What the engine reads of an annotation (``parse_annotation``, ``annotation_key``).
_ANNOTATION_FIELDS = (
    "task",
    "result",
    "created_at",
    "updated_at",
    "was_cancelled",
    "completed_by",
    "lead_time",
)


def _plain(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else dict(obj.model_dump(mode="json"))


def _detail(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("validation_errors", "detail", "error"):
            if body.get(key):
                return str(body[key])[:500]
    return str(body)[:500]


class SDKClient:
    """:class:`LabelStudioAPI` on ``label_studio_sdk`` 2.x (``LabelStudio(base_url, api_key)``).

    ``token`` is a legacy API token or a personal access token (the SDK tells them apart).
    Errors become :class:`ExternalServiceError` with a message that names the server and what
    was being done. Also offers the reviewer's calls (create / update / delete annotations),
    which tests and benchmarks use to act as a person in the Label Studio UI.
    """

    def __init__(
        self, base_url: str, token: str, *, timeout_s: float = 60.0, max_retries: int = 1
    ) -> None:
        from label_studio_sdk import LabelStudio  # imported here: ~150 MB of modules

        self.base_url = base_url.rstrip("/")
        self._sdk = LabelStudio(
            base_url=self.base_url, api_key=token, timeout=timeout_s, max_retries=max_retries
        )
        self._users: dict[int, str | None] = {}

    @property
    def sdk(self) -> Any:
        """The underlying ``label_studio_sdk.LabelStudio`` (for calls not wrapped here)."""
        return self._sdk

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except ApiError as exc:
            status = exc.status_code
            if status in (401, 403):
                raise ExternalServiceError(
                    f"Label Studio at {self.base_url} refused the token while {what} "
                    f"(HTTP {status}): set ANNOTATOR_LABEL_STUDIO_TOKEN to a valid legacy API "
                    "token or personal access token"
                ) from exc
            if status is None:
                raise ExternalServiceError(
                    f"Label Studio at {self.base_url} failed while {what}: {_detail(exc.body)}"
                ) from exc
            raise ExternalServiceError(
                f"Label Studio at {self.base_url} answered HTTP {status} while {what}: "
                f"{_detail(exc.body)}"
            ) from exc
        except httpx.HTTPError as exc:
            raise ExternalServiceError(
                f"Label Studio at {self.base_url} is unreachable while {what} "
                f"({type(exc).__name__}: {exc}); is it running? "
                "(bash scripts/label_studio.sh start)"
            ) from exc

    # -- projects

    def create_project(self, *, title: str, description: str, label_config: str) -> int:
        with self._calling("creating a project"):
            project = self._sdk.projects.create(
                title=title,
                description=description,
                label_config=label_config,
                maximum_annotations=1,
                show_collab_predictions=True,
                show_skip_button=True,
            )
        if project.id is None:
            raise ExternalServiceError(
                f"Label Studio at {self.base_url} created a project without id"
            )
        return int(project.id)

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        from label_studio_sdk.core.api_error import ApiError

        with self._calling(f"reading project {project_id}"):
            try:
                project = self._sdk.projects.get(project_id)
            except ApiError as exc:
                if exc.status_code == 404:
                    return None
                raise
        return dict(project.model_dump(mode="json"))

    def update_project(self, project_id: int, **fields: Any) -> None:
        with self._calling(f"updating project {project_id}"):
            self._sdk.projects.update(project_id, **fields)

    # -- webhooks

    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        with self._calling(f"listing the webhooks of project {project_id}"):
            hooks = self._sdk.webhooks.list(project=str(project_id))
        return [h.model_dump(mode="json") for h in hooks]

    def create_webhook(
        self, project_id: int, *, url: str, headers: Mapping[str, str], actions: Sequence[str]
    ) -> int:
        with self._calling(f"creating a webhook for project {project_id}"):
            hook = self._sdk.webhooks.create(
                url=url,
                project=project_id,
                headers=dict(headers),
                actions=list(actions),
                send_payload=True,
                send_for_all_actions=False,
                is_active=True,
            )
        return int(hook.id)

    def update_webhook(
        self, webhook_id: int, *, url: str, headers: Mapping[str, str], actions: Sequence[str]
    ) -> None:
        with self._calling(f"updating webhook {webhook_id}"):
            self._sdk.webhooks.update(
                webhook_id,
                url=url,
                headers=dict(headers),
                actions=list(actions),
                send_payload=True,
                send_for_all_actions=False,
                is_active=True,
            )

    # -- tasks

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        if not tasks:
            return []
        with self._calling(f"importing {len(tasks)} tasks into project {project_id}"):
            answer = self._sdk.projects.import_tasks(
                project_id, request=cast(Any, [dict(t) for t in tasks]), return_task_ids=True
            )
        # ``task_ids`` is an extra field of the response (return_task_ids=True).
        ids = [int(i) for i in (getattr(answer, "task_ids", None) or [])]
        if len(ids) != len(tasks):
            raise ExternalServiceError(
                f"Label Studio at {self.base_url} created {len(ids)} task ids for "
                f"{len(tasks)} imported tasks (project {project_id})"
            )
        return ids

    def _list_tasks(self, project_id: int, **params: Any) -> Iterator[Any]:
        with self._calling(f"listing the tasks of project {project_id}"):
            yield from self._sdk.tasks.list(project=project_id, resolve_uri=False, **params)

    def iter_tasks(
        self,
        project_id: int,
        *,
        with_annotations: bool = False,
        task_ids: Sequence[int] | None = None,
        page_size: int = 200,
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"page_size": page_size}
        if with_annotations:
            # ``fields=all`` adds annotations and predictions (and every Data Manager column);
            # ``include`` (also applied to the annotations' own fields) keeps what we read.
            params["fields"] = "all"
            params["include"] = ",".join(("id", "data", "annotations", *_ANNOTATION_FIELDS))
        if task_ids is None:
            batches: Iterator[dict[str, Any]] = iter([params])
        else:
            ids = sorted({int(i) for i in task_ids})
            batches = (
                {**params, "query": json.dumps(
                    {"selectedItems": {"all": False, "included": ids[i : i + page_size]}}
                )}
                for i in range(0, len(ids), page_size)
            )  # fmt: skip
        for batch in batches:
            for task in self._list_tasks(project_id, **batch):
                record: dict[str, Any] = {"id": int(task.id), "data": dict(task.data or {})}
                if with_annotations:
                    record["annotations"] = [_plain(a) for a in (task.annotations or [])]
                yield record

    def iter_annotation_keys(
        self, project_id: int, *, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        include = "id,annotations,created_at,updated_at,was_cancelled"
        for task in self._list_tasks(
            project_id, fields="all", include=include, page_size=page_size
        ):
            yield {"id": int(task.id), "annotations": [_plain(a) for a in task.annotations or []]}

    def update_task_data(self, task_id: int, data: Mapping[str, Any]) -> None:
        with self._calling(f"updating task {task_id}"):
            self._sdk.tasks.update(str(task_id), data=dict(data))

    def get_task(self, task_id: int) -> dict[str, Any]:
        with self._calling(f"reading task {task_id}"):
            task = self._sdk.tasks.get(str(task_id))
        return dict(task.model_dump(mode="json"))

    # -- users

    def user_name(self, user_id: int) -> str | None:
        if user_id not in self._users:
            from label_studio_sdk.core.api_error import ApiError

            with self._calling(f"reading user {user_id}"):
                try:
                    user = self._sdk.users.get(user_id)
                    self._users[user_id] = user.email or user.username or None
                except ApiError as exc:
                    if exc.status_code != 404:
                        raise
                    self._users[user_id] = None
        return self._users[user_id]

    # -- the reviewer's side (what the Label Studio UI does)

    def create_annotation(
        self,
        task_id: int,
        result: Sequence[Mapping[str, Any]],
        *,
        lead_time_s: float | None = None,
        parent_prediction: int | None = None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"result": [dict(r) for r in result]}
        if lead_time_s is not None:
            kwargs["lead_time"] = lead_time_s
        if parent_prediction is not None:
            kwargs["parent_prediction"] = parent_prediction
        with self._calling(f"annotating task {task_id}"):
            ann = self._sdk.annotations.create(task_id, **kwargs)
        return dict(ann.model_dump(mode="json"))

    def update_annotation(
        self,
        annotation_id: int,
        result: Sequence[Mapping[str, Any]],
        *,
        lead_time_s: float | None = None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"result": [dict(r) for r in result]}
        if lead_time_s is not None:
            kwargs["lead_time"] = lead_time_s
        with self._calling(f"updating annotation {annotation_id}"):
            ann = self._sdk.annotations.update(annotation_id, **kwargs)
        return dict(ann.model_dump(mode="json"))

    def delete_annotation(self, annotation_id: int) -> None:
        with self._calling(f"deleting annotation {annotation_id}"):
            self._sdk.annotations.delete(annotation_id)

    def list_annotations(self, task_id: int) -> list[dict[str, Any]]:
        with self._calling(f"listing the annotations of task {task_id}"):
            anns = self._sdk.annotations.list(task_id)
        return [a.model_dump(mode="json") for a in anns]


def make_client(
    url: str | None, token: str | None, *, timeout_s: float = 60.0, max_retries: int = 1
) -> SDKClient:
    """The client for the configured server; :class:`ConfigError` when it is not configured."""
    if not url:
        raise ConfigError(
            "no Label Studio server configured: set ANNOTATOR_LABEL_STUDIO_URL "
            "(e.g. http://127.0.0.1:8080; `bash scripts/label_studio.sh start` runs one)"
        )
    if not token:
        raise ConfigError(
            "no Label Studio token configured: set ANNOTATOR_LABEL_STUDIO_TOKEN (Account & "
            "Settings in Label Studio, or LS_TOKEN of scripts/label_studio.sh)"
        )
    return SDKClient(url, token, timeout_s=timeout_s, max_retries=max_retries)


def ensure_webhook(client: LabelStudioAPI, project_id: int, url: str, secret: str) -> int:
    """Make the project's webhook to ``url`` exist with the current secret; its id."""
    headers = {SECRET_HEADER: secret}
    for hook in client.list_webhooks(project_id):
        if hook.get("url") == url and hook.get("project") in (project_id, str(project_id)):
            if (
                (hook.get("headers") or {}) != headers
                or sorted(hook.get("actions") or []) != sorted(WEBHOOK_ACTIONS)
                or not hook.get("is_active", True)
                or not hook.get("send_payload", True)
            ):
                client.update_webhook(
                    int(hook["id"]), url=url, headers=headers, actions=WEBHOOK_ACTIONS
                )
            return int(hook["id"])
    return client.create_webhook(project_id, url=url, headers=headers, actions=WEBHOOK_ACTIONS)
