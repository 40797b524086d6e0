"""Datasets, versions, the dataset browser (concept search, keyset pages) and growth."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response, status

from annotator.db import repositories as repo
from annotator.services import browse, insights
from annotator.services.versions import create_version, list_versions
from web.api.schemas import (
    BrowsePage,
    Concept,
    DatasetIn,
    DatasetOut,
    VersionIn,
    VersionOut,
    json_response,
)
from web.deps import EngineerDep, ReaderDep, SessionDep

router = APIRouter(tags=["datasets"])

DatasetName = Annotated[str, Path(min_length=1, max_length=200, description="Dataset name.")]


def _summary(session: SessionDep, name: str) -> DatasetOut:
    for row in repo.list_datasets(session):
        if row.name == name:
            return DatasetOut(**row.__dict__)
    repo.get_dataset(session, name)  # raises NotFoundError with the known names
    raise AssertionError("unreachable")


@router.get("/datasets", response_model=list[DatasetOut], summary="List datasets with counts")
def list_datasets(session: SessionDep) -> list[DatasetOut]:
    return [DatasetOut(**row.__dict__) for row in repo.list_datasets(session)]


@router.post(
    "/datasets",
    response_model=DatasetOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an empty dataset (engineer)",
)
def create_dataset(body: DatasetIn, session: SessionDep, _user: EngineerDep) -> DatasetOut:
    dataset = repo.create_dataset(session, body.name, body.description)
    return DatasetOut(
        name=dataset.name, images=0, positives=0, negatives=0, annotations=0, versions=0
    )


@router.get("/datasets/{name}", response_model=DatasetOut, summary="One dataset with counts")
def get_dataset(name: DatasetName, session: SessionDep) -> DatasetOut:
    return _summary(session, name)


@router.get(
    "/datasets/{name}/concepts",
    response_model=list[Concept],
    summary="Search the concepts a dataset uses",
)
def search_concepts(
    name: DatasetName,
    session: SessionDep,
    q: Annotated[str, Query(max_length=256, description="Part of the phrase.")] = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[dict[str, Any]]:
    return browse.search_concepts(session, name, q, limit)


@router.get(
    "/datasets/{name}/browse",
    response_model=BrowsePage,
    summary="A page of the dataset browser (keyset, newest first)",
)
async def browse_page(
    name: DatasetName,
    reader: ReaderDep,
    concept: Annotated[
        str | None, Query(max_length=256, description="Pairs of this concept (exact phrase).")
    ] = None,
    state: Annotated[
        Literal[
            "pending", "proposed", "verified", "in_review", "positive", "negative", "ungroundable"
        ]
        | None,
        Query(description="Pairs in this state."),
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, le=2**62, description="Cursor: `next_before` of the last page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 48,
) -> Response:
    """Without ``concept`` and ``state``: images; with either: image-concept pairs."""
    page = await reader(browse.page, name, concept=concept, state=state, before=before, limit=limit)
    return json_response(page)


@router.get("/datasets/{name}/growth", summary="Dataset growth over time")
def growth(
    name: DatasetName,
    session: SessionDep,
    unit: Literal["minute", "hour", "day"] = "day",
) -> dict[str, Any]:
    """Pairs, positives, negatives and live masks per bucket and cumulative."""
    return insights.dataset_growth(session, name, unit)


@router.get("/datasets/{name}/versions", response_model=list[VersionOut], summary="Frozen versions")
def versions(name: DatasetName, session: SessionDep) -> list[Any]:
    return list(list_versions(session, name))


@router.post(
    "/datasets/{name}/versions",
    response_model=VersionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Freeze the dataset as a version (engineer)",
)
def freeze(name: DatasetName, body: VersionIn, session: SessionDep, _user: EngineerDep) -> Any:
    return create_version(session, name, body.tag.strip(), body.note)
