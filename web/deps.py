"""Request dependencies as types (``SessionDep``, ``SettingsDep``, ``LabelStudioDep``).

The request owns the transaction: :func:`get_session` opens one per request, commits when the
endpoint returns and rolls back when it raises; services only flush. The dependency ends with the
endpoint (``scope="function"``), so a failed commit is the request's error, not a lost write
after a success was sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from annotator.config import Settings
from annotator.db.session import session_scope
from annotator.integrations.label_studio import LabelStudioAPI, make_client


def get_settings(request: Request) -> Settings:
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
        settings = get_settings(request)
        if not (settings.label_studio_url and settings.label_studio_token):
            return None
        state.label_studio = make_client(
            settings.label_studio_url, settings.label_studio_token, timeout_s=5.0, max_retries=0
        )
    client: LabelStudioAPI = state.label_studio
    return client


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
LabelStudioDep = Annotated[LabelStudioAPI | None, Depends(get_label_studio)]
