"""Request dependencies as types (``SessionDep``, ``SettingsDep``, ``UserDep`` ...).

The request owns the transaction: :func:`get_session` opens one per request, commits when the
endpoint returns and rolls back when it raises; services only flush. The dependency ends with the
endpoint (``scope="function"``), so a failed commit is the request's error, not a lost write
after a success was sent.

Authentication: an API token, as ``Authorization: Bearer <token>`` or (the dashboard) in the
HttpOnly ``annotator_token`` cookie. A request authenticated by the cookie that changes
something must also carry ``X-Annotator-CSRF: 1`` (pages send it with fetch; a form on another
site cannot), on top of the cookie being ``SameSite=Strict``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from annotator.config import Settings
from annotator.db.models import UserRole
from annotator.db.session import session_scope
from annotator.integrations.label_studio import LabelStudioAPI, make_client
from annotator.services.users import Principal, authenticate
from web.background import BackgroundRunner

COOKIE = "annotator_token"
CSRF_HEADER = "X-Annotator-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(get_engine(request)) as session:
        yield session


def get_label_studio(request: Request) -> LabelStudioAPI | None:
    """The Label Studio client of the app (built on first use), None when not configured."""
    state = request.app.state
    if getattr(state, "label_studio", None) is None:
        settings: Settings = request.app.state.settings
        if not (settings.label_studio_url and settings.label_studio_token):
            return None
        state.label_studio = make_client(
            settings.label_studio_url, settings.label_studio_token, timeout_s=5.0, max_retries=0
        )
    client: LabelStudioAPI = state.label_studio
    return client


async def get_runner(request: Request) -> BackgroundRunner:
    runner: BackgroundRunner = request.app.state.runner
    return runner


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
LabelStudioDep = Annotated[LabelStudioAPI | None, Depends(get_label_studio)]
RunnerDep = Annotated[BackgroundRunner, Depends(get_runner)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request) -> tuple[str | None, bool]:
    """(token, came from the cookie)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (cookie, True) if cookie else (None, False)


def get_principal(request: Request, session: SessionDep) -> Principal:
    """Who the request acts as; 401 without a valid token."""
    token, from_cookie = bearer_token(request)
    if token is None:
        raise _unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    principal = authenticate(session, token)
    if principal is None:
        raise _unauthorized("invalid or revoked token")
    if (
        from_cookie
        and request.method not in SAFE_METHODS
        and request.headers.get(CSRF_HEADER) != "1"
    ):
        raise HTTPException(
            403, f"a request authenticated by cookie needs the {CSRF_HEADER} header"
        )
    request.state.principal = principal
    return principal


def require(role: UserRole) -> Callable[[Principal], Principal]:
    """A dependency: the principal, or 403 when its role is below ``role``."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.allows(role):
            raise HTTPException(
                403,
                f"this needs the {role.value} role; {principal.name!r} is a {principal.role.value}",
            )
        return principal

    return check


UserDep = Annotated[Principal, Depends(get_principal)]
EngineerDep = Annotated[Principal, Depends(require(UserRole.ENGINEER))]
AdminDep = Annotated[Principal, Depends(require(UserRole.ADMIN))]
