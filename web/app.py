"""The FastAPI application: ``create_app()``; ``annotator serve`` runs it with uvicorn.

Routes live in :mod:`web.routes` (one module per concern) and get the database session, the
settings and the Label Studio client through :mod:`web.deps`. Errors are JSON: every
:class:`~annotator.errors.AnnotatorError` maps to a status code and ``{"detail", "error"}``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from annotator.config import Settings, get_settings
from annotator.db.session import get_engine
from annotator.errors import (
    AnnotatorError,
    ConfigError,
    ConflictError,
    DatabaseNotReadyError,
    ExternalServiceError,
    InvalidInputError,
    NotFoundError,
)
from annotator.integrations.label_studio import LabelStudioAPI
from web.routes import images
from web.routes import label_studio as label_studio_routes

log = logging.getLogger(__name__)

# Most specific first.
ERROR_STATUS: tuple[tuple[type[AnnotatorError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidInputError, 422),
    (ExternalServiceError, 502),
    (DatabaseNotReadyError, 503),
    (ConfigError, 500),
)


def _status_of(exc: AnnotatorError) -> int:
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    label_studio: LabelStudioAPI | None = None,
) -> FastAPI:
    """The API. ``settings`` default to the environment's; ``engine`` to its database;
    ``label_studio`` (a client) to one built from the settings on first use."""
    settings = settings or get_settings()
    app = FastAPI(
        title="annotator",
        summary="Human-in-the-loop data engine for open-vocabulary instance segmentation.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.engine = engine or get_engine(settings.database_url)
    app.state.label_studio = label_studio

    @app.exception_handler(AnnotatorError)
    async def _annotator_error(_request: Request, exc: AnnotatorError) -> JSONResponse:
        status = _status_of(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status)

    @app.get("/health", tags=["meta"])
    @app.get("/healthz", tags=["meta"], include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(images.router)
    app.include_router(label_studio_routes.router)
    return app
