"""Server-rendered pages: login, the job dashboard, one job, the dataset browser, one image.

Pages authenticate with the same API tokens as the API: ``/login`` checks one and keeps it in an
HttpOnly, ``SameSite=Strict`` cookie; a page without a valid cookie redirects to ``/login``. The
pages' scripts call the JSON API with that cookie (and the CSRF header on changes).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import plotly  # type: ignore[import-untyped]
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2.filters import do_urlencode

from annotator.db import repositories as repo
from annotator.db.models import PairState, UserRole
from annotator.errors import AnnotatorError
from annotator.services import browse
from annotator.services.users import Principal, authenticate
from web.deps import (
    COOKIE,
    ReaderDep,
    SessionDep,
    SettingsDep,
    cached_principal,
    principal_of,
)

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")

PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
PLOTLY_URL = f"/vendor/plotly-{plotly.__version__}.min.js"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
templates.env.globals["plotly_url"] = PLOTLY_URL
_urlencode_text = lru_cache(maxsize=4096)(do_urlencode)


def _urlencode(value: Any) -> str:
    """Jinja's ``urlencode``, remembered for strings: a browser page encodes each tile's
    concept, mostly the same few."""
    return _urlencode_text(value) if isinstance(value, str) else do_urlencode(value)


templates.env.filters["urlencode"] = _urlencode


def _user(request: Request, session: SessionDep) -> Principal | None:
    token = request.cookies.get(COOKIE)
    return cached_principal(request, token, session) if token else None


async def _cookie_user(request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE)
    return await principal_of(request, token) if token else None


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _safe_next(target: str | None) -> str:
    # Only a path on this site: no scheme, no //host.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    return target


def _page(request: Request, name: str, user: Principal, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "can_launch": user.allows(UserRole.ENGINEER),
            **context,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get(PLOTLY_URL)
def plotly_js() -> FileResponse:
    """Plotly.js from the installed ``plotly`` package (no CDN): cached for a year, the
    version is in the URL."""
    return FileResponse(
        PLOTLY_JS,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "login.html", {"next": _safe_next(next), "error": None, "user": None}
    )


@router.post("/login", response_model=None)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str, Form(max_length=256)],
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    if authenticate(session, token.strip()) is None:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": _safe_next(next), "error": "invalid or revoked token", "user": None},
            status_code=401,
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token.strip(),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=settings.environment == "production" or request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout() -> RedirectResponse:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/dashboard", response_class=HTMLResponse, response_model=None)
def dashboard(request: Request, session: SessionDep, dataset: str | None = None) -> Response:
    user = _user(request, session)
    if user is None:
        return _to_login(request)
    datasets = [d.name for d in repo.list_datasets(session)]
    current = dataset if dataset in datasets else (datasets[0] if datasets else None)
    return _page(request, "dashboard.html", user, datasets=datasets, dataset=current)


@router.get("/dashboard/jobs/{job_id}", response_class=HTMLResponse, response_model=None)
def job_page(request: Request, session: SessionDep, job_id: int) -> Response:
    user = _user(request, session)
    if user is None:
        return _to_login(request)
    from annotator.db import mining

    job = mining.get_job(session, job_id)
    names = mining.dataset_names(session)
    return _page(request, "job.html", user, job=job, dataset=names.get(job.dataset_id or -1, "-"))


@router.get("/browse", response_class=HTMLResponse, response_model=None)
def browse_index(request: Request, session: SessionDep) -> Response:
    user = _user(request, session)
    if user is None:
        return _to_login(request)
    datasets = repo.list_datasets(session)
    if len(datasets) == 1:
        return RedirectResponse(f"/browse/{quote(datasets[0].name, safe='')}", status_code=303)
    return _page(request, "browse_index.html", user, datasets=datasets)


@router.get("/browse/{dataset}", response_class=HTMLResponse, response_model=None)
async def browse_dataset(
    request: Request,
    reader: ReaderDep,
    dataset: str,
    concept: Annotated[str | None, Query(max_length=256)] = None,
    state: Annotated[str | None, Query(max_length=32)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    user = await _cookie_user(request)
    if user is None:
        return _to_login(request)
    error = None
    try:
        page = await reader(
            browse.page, dataset, concept=concept or None, state=state or None, before=before
        )
    except AnnotatorError as exc:
        if before is None and not concept and not state:
            raise
        page, error = {"kind": "images", "items": [], "next_before": None}, str(exc)
    return _page(
        request,
        "browse.html",
        user,
        dataset=dataset,
        page=page,
        concept=concept or "",
        state=state or "",
        states=[s.value for s in PairState],
        error=error,
    )


@router.get("/browse/{dataset}/images/{image_id}", response_class=HTMLResponse, response_model=None)
def image_page(request: Request, session: SessionDep, dataset: str, image_id: int) -> Response:
    user = _user(request, session)
    if user is None:
        return _to_login(request)
    view = browse.image_view(session, image_id)
    return _page(request, "image.html", user, dataset=dataset, view=view)
