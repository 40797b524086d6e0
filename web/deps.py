"""Request dependencies as types (``SessionDep``, ``SettingsDep``, ``UserDep`` ...).

The request owns the transaction: :func:`get_session` opens one per request, commits when the
endpoint returns and rolls back when it raises; services only flush. The dependency ends with the
endpoint (``scope="function"``), so a failed commit is the request's error, not a lost write
after a success was sent.

Authentication: an API token, as ``Authorization: Bearer <token>`` or (the dashboard) in the
HttpOnly ``annotator_token`` cookie. A request authenticated by the cookie that changes
something must also carry ``X-Annotator-CSRF: 1`` (pages send it with fetch; a form on another
site cannot), on top of the cookie being ``SameSite=Strict``.

A valid token's principal (user and role) is remembered for :data:`TOKEN_CACHE_TTL_S` seconds
per server process (:class:`TokenCache`), so most requests authenticate without a query: **a
token revoked (``annotator users revoke``) keeps working for at most that long** on a process
that saw it just before. Unknown and revoked tokens are never remembered: they are looked up
every time.

Hot read-only endpoints run their whole database work in one worker thread through
:data:`ReaderDep` (one thread hop per request, no BEGIN/COMMIT on PostgreSQL) instead of
``SessionDep`` (a transaction committed when the endpoint returns).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Annotated, Concatenate, ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from annotator.auth import hash_token
from annotator.config import Settings
from annotator.db.models import UserRole
from annotator.db.session import read_scope, session_scope
from annotator.integrations.label_studio import LabelStudioAPI, make_client
from annotator.services.users import Principal, authenticate
from web.background import BackgroundRunner

COOKIE = "annotator_token"
CSRF_HEADER = "X-Annotator-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# How long a process trusts a token it has checked: also the longest a revoked token (or a
# changed role) keeps its old rights on that process.
TOKEN_CACHE_TTL_S = 5.0
# Reads running at once per process (ReaderDep); below the engine's pool size, so readers never
# open connections beyond the pool (each one a new PostgreSQL backend, closed again on return).
READ_CONCURRENCY = 4

P = ParamSpec("P")
T = TypeVar("T")


class TokenCache:
    """Principals of valid tokens seen in the last ``ttl_s`` seconds (``0``: remember none),
    keyed by the token's hash; at most ``max_entries`` (then it starts over). Thread-safe."""

    def __init__(
        self,
        ttl_s: float = TOKEN_CACHE_TTL_S,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(hash_token(token))
        if entry is not None and self.clock() < entry[0]:
            return entry[1]
        return None

    def put(self, token: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[hash_token(token)] = (self.clock() + self.ttl_s, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_session(request: Request) -> Iterator[Session]:
    with session_scope(get_engine(request)) as session:
        yield session


_read_limiter: RunVar[CapacityLimiter] = RunVar("annotator_read_limiter")


def _limiter() -> CapacityLimiter:
    """The read limiter of the running event loop (one per loop, like anyio's own)."""
    try:
        return _read_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(READ_CONCURRENCY)
        _read_limiter.set(limiter)
        return limiter


class Reader:
    """Runs ``fn(session, *args)`` in a worker thread with a read-only session
    (:func:`~annotator.db.session.read_scope`): the endpoint's only thread hop and, on
    PostgreSQL, no BEGIN/COMMIT. At most :data:`READ_CONCURRENCY` reads at once per process.
    :meth:`in_transaction` runs it in one transaction instead (committed)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _run(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        with read_scope(self.engine) as session:
            return fn(session, *args, **kwargs)

    def _run_in_transaction(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        with session_scope(self.engine) as session:
            return fn(session, *args, **kwargs)

    def __call__(
        self, fn: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[T]:
        return anyio.to_thread.run_sync(partial(self._run, fn, *args, **kwargs), limiter=_limiter())

    def in_transaction(
        self, fn: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[T]:
        return anyio.to_thread.run_sync(
            partial(self._run_in_transaction, fn, *args, **kwargs), limiter=_limiter()
        )


async def get_reader(request: Request) -> Reader:
    reader: Reader = request.app.state.reader
    return reader


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
ReaderDep = Annotated[Reader, Depends(get_reader)]


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


def _authenticate(engine: Engine, token: str) -> Principal | None:
    with session_scope(engine) as session:  # its own transaction: it may touch last_used_at
        return authenticate(session, token)


def cached_principal(request: Request, token: str, session: Session) -> Principal | None:
    """The principal of ``token`` from the app's token cache, else from the database with
    ``session`` (sync endpoints; remembered when valid)."""
    cache: TokenCache = request.app.state.token_cache
    principal = cache.get(token)
    if principal is None:
        principal = authenticate(session, token)
        if principal is not None:
            cache.put(token, principal)
    return principal


async def principal_of(request: Request, token: str) -> Principal | None:
    """The principal of ``token``: from the app's token cache, else looked up in a worker
    thread (and remembered when valid). None for an unknown or revoked token."""
    cache: TokenCache = request.app.state.token_cache
    principal = cache.get(token)
    if principal is None:
        principal = await anyio.to_thread.run_sync(_authenticate, get_engine(request), token)
        if principal is not None:
            cache.put(token, principal)
    return principal


async def get_principal(request: Request) -> Principal:
    """Who the request acts as; 401 without a valid token."""
    token, from_cookie = bearer_token(request)
    if token is None:
        raise _unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    principal = await principal_of(request, token)
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


def require(role: UserRole) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the principal, or 403 when its role is below ``role``."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
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
