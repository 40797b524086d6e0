"""The FastAPI application: ``create_app()``; ``annotator serve`` runs it with uvicorn.

What it serves:

* ``/api/v1/...``: the REST API (OpenAPI at ``/api/v1/openapi.json``, docs at ``/api/docs``),
  every route behind an API token except ``/api/v1/health``;
* ``/dashboard``, ``/browse``: server-rendered pages (the token in an HttpOnly cookie, set by
  ``/login``), plots with Plotly.js served from the installed ``plotly`` package;
* ``/images/{id}?exp&sig``: image bytes for Label Studio behind signed, expiring URLs (the only
  route with CORS), and ``/webhooks/label-studio`` (shared-secret header).

Errors are JSON ``{"detail", "error"}``: every :class:`~annotator.errors.AnnotatorError` maps to a
status code (404, 409, 422, 502, 503), an unreachable database to 503, anything unexpected to a
500 whose details stay in the log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from annotator.config import Settings, get_settings
from annotator.db.session import make_engine
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
from web import api
from web.api.jobs import ProgressCache
from web.background import BackgroundRunner
from web.deps import Reader, TokenCache
from web.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from web.routes import dashboard, images
from web.routes import label_studio as label_studio_routes

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Request bodies: JSON commands are small; Label Studio webhooks carry brush masks.
MAX_BODY_BYTES = 1024 * 1024
MAX_WEBHOOK_BYTES = 64 * 1024 * 1024

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


def _readable(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def _pool_options(settings: Settings) -> dict[str, int]:
    return {} if settings.is_sqlite else {"pool_size": 20, "max_overflow": 20}


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    label_studio: LabelStudioAPI | None = None,
) -> FastAPI:
    """The API and dashboard. ``settings`` default to the environment's; ``engine`` to its
    database; ``label_studio`` (a client) to one built from the settings on first use."""
    settings = settings or get_settings()
    # Request threads (anyio's 40) share the pool: enough connections that they rarely wait.
    engine = engine or make_engine(settings.database_url, **_pool_options(settings))
    runner = BackgroundRunner(engine, settings.media_root, settings.broker_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        runner.shutdown(wait=False)

    app = FastAPI(
        title="annotator",
        summary="Human-in-the-loop data engine for open-vocabulary instance segmentation.",
        description=(
            "Authenticate with `Authorization: Bearer <token>` (`annotator users add NAME "
            "--role engineer` prints one). Reviewers read; engineers and admins also launch "
            "jobs, exports and versions."
        ),
        version="0.1.0",
        openapi_url=f"{api.PREFIX}/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.label_studio = label_studio
    app.state.runner = runner
    app.state.progress_cache = ProgressCache()
    app.state.token_cache = TokenCache()
    app.state.reader = Reader(engine)

    @app.exception_handler(AnnotatorError)
    async def _annotator_error(_request: Request, exc: AnnotatorError) -> JSONResponse:
        status = _status_of(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, "error": "HTTPError"},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
        return JSONResponse(
            {"detail": _readable(errors), "error": "ValidationError", "errors": errors},
            status_code=422,
        )

    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error: %s", exc.orig)
        return JSONResponse(
            {"detail": "the database is unreachable; try again", "error": "DatabaseError"},
            status_code=503,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal error (logged on the server)", "error": "InternalError"},
            status_code=500,
        )

    @app.get("/health", tags=["meta"], include_in_schema=False)
    @app.get("/healthz", tags=["meta"], include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # The pages first: a request is matched against the routes in order, and the pages are a
    # handful of routes where the API has dozens (their paths do not overlap).
    app.include_router(dashboard.router)
    app.include_router(api.public)
    app.include_router(api.router)
    app.include_router(images.router)
    app.include_router(label_studio_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        limit=MAX_BODY_BYTES,
        overrides=[("/webhooks/", MAX_WEBHOOK_BYTES)],
    )
    return app
