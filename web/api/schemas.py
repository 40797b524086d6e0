"""Request and response bodies of the API (what the OpenAPI schema documents)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=200)]


def json_response(content: Any) -> Response:
    """``content`` as JSON, written by orjson without FastAPI validating it against the route's
    response model again: for the hot read routes, whose code builds exactly that shape (the
    model still documents it)."""
    return Response(orjson.dumps(content), media_type="application/json")


class ErrorOut(BaseModel):
    detail: Any = Field(description="What went wrong, for a person.")
    error: str | None = Field(default=None, description="The kind of error.")


class Me(BaseModel):
    name: str
    role: Literal["admin", "engineer", "reviewer"]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]


class DatasetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    description: Annotated[str | None, Field(max_length=4000)] = None


class DatasetOut(BaseModel):
    name: str
    images: int
    positives: int
    negatives: int
    annotations: int
    versions: int


class VersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: Annotated[str, Field(min_length=1, max_length=128, pattern=r"\S")]
    note: Annotated[str | None, Field(max_length=4000)] = None


class VersionOut(BaseModel):
    tag: str
    note: str | None
    created_at: datetime
    num_pairs: int
    num_annotations: int
    checksums: dict[str, str]


class BackendIn(BaseModel):
    """A model backend: registry name (or ``module:Class``), model id or local path, options."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=300)]
    model: Annotated[str | None, Field(max_length=2000)] = None
    options: dict[str, Any] = Field(default_factory=dict, max_length=64)


class RoutingIn(BaseModel):
    """Routing on verifier ``p_accept`` (defaults: accept at 0.9 and above, reject at 0.1 and
    below); ``target_precision`` fits the MV thresholds on reviewed masks, and EV's absence
    threshold (``ev_absent_above``) on reviewed pairs, instead. ``auto_negative_named``: EV may
    declare absent a phrase named for the image, not only a hard negative (default false)."""

    model_config = ConfigDict(extra="forbid")
    accept_above: Annotated[float | None, Field(ge=0, le=1)] = None
    reject_below: Annotated[float | None, Field(ge=0, le=1)] = None
    ev_accept_above: Annotated[float | None, Field(ge=0, le=1)] = None
    ev_reject_below: Annotated[float | None, Field(ge=0, le=1)] = None
    target_precision: Annotated[float | None, Field(gt=0, le=1)] = None
    review_non_exhaustive: bool | None = None
    ev_absent_above: Annotated[float | None, Field(ge=0, le=1)] = None
    auto_negative_named: bool | None = None


class JobIn(BaseModel):
    """A mining job. Backends left out come from the server's settings
    (``ANNOTATOR_PROPOSER`` / ``_MODEL`` ...); a captioner named ``none`` mines alt-text only."""

    model_config = ConfigDict(extra="forbid")
    dataset: Name
    proposer: BackendIn | None = None
    captioner: BackendIn | None = None
    parser: BackendIn | None = None
    verifier: BackendIn | None = None
    pair_verifier: BackendIn | None = None
    device: Literal["auto", "cpu", "cuda"] | None = None
    routing: RoutingIn | None = None
    images: (
        Literal["new", "all"] | Annotated[list[int], Field(min_length=1, max_length=100_000)]
    ) = "new"
    hard_negatives: bool | None = None
    max_concepts: Annotated[int | None, Field(ge=1, le=1000)] = None


class StageOut(BaseModel):
    stage: str
    total: int
    done: int
    failed: int
    skipped: int
    pending: int


class ProgressOut(BaseModel):
    job_id: int
    status: str
    images: int
    images_finished: int
    total: int
    finished: int
    elapsed_s: float
    rate: float | None = Field(description="Items finished per second since the job started.")
    eta_s: float | None
    error: str | None
    stages: list[StageOut]


class JobOut(BaseModel):
    id: int
    kind: str
    dataset: str | None
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    counters: dict[str, Any]
    config: dict[str, Any]


class JobItemError(BaseModel):
    image_id: int
    file_name: str
    stage: str
    error: str


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retry_failed: bool = False


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: Name
    format: Literal["coco", "saco"] = "coco"
    version: Annotated[str | None, Field(min_length=1, max_length=128)] = None


class ExportOut(BaseModel):
    id: int
    dataset: str | None
    format: str
    version: str | None
    status: str
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    counters: dict[str, Any]
    download_url: str | None


class Concept(BaseModel):
    id: int
    text: str
    pairs: int


class BrowsePage(BaseModel):
    kind: Literal["pairs", "images"]
    items: list[dict[str, Any]]
    next_before: int | None = Field(description="Pass as `before` for the next page.")


class ImageView(BaseModel):
    image: dict[str, Any]
    pairs: list[dict[str, Any]]
    truncated: bool
