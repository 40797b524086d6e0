"""The REST API under ``/api/v1``: every route needs a token (see :mod:`web.deps`) except
``/api/v1/health``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import text

from annotator.db.models import UserRole
from web.api import datasets, exports, images, jobs, stats
from web.api.schemas import ErrorOut, Health, Me
from web.deps import UserDep, get_engine, get_principal

PREFIX = "/api/v1"

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No token, or an unknown or revoked one."},
    403: {"model": ErrorOut, "description": "The token's role may not do this."},
    404: {"model": ErrorOut, "description": "No such dataset, job, image ..."},
    409: {"model": ErrorOut, "description": "Conflicts with the current state."},
    413: {"model": ErrorOut, "description": "Request body over the size limit."},
    422: {"model": ErrorOut, "description": "Invalid input."},
    503: {"model": ErrorOut, "description": "The database is unreachable or not migrated."},
}

public = APIRouter(prefix=PREFIX)
router = APIRouter(prefix=PREFIX, dependencies=[Depends(get_principal)], responses=ERRORS)


@public.get("/health", response_model=Health, tags=["meta"], summary="Liveness and database")
def health(request: Request) -> Health:
    try:
        with get_engine(request).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return Health(status="degraded", database="unreachable")
    return Health(status="ok", database="ok")


@router.get("/me", response_model=Me, tags=["auth"], summary="Who this token belongs to")
def me(user: UserDep) -> Me:
    return Me(name=user.name, role=UserRole(user.role).value)


for module in (datasets, images, jobs, exports, stats):
    router.include_router(module.router)
