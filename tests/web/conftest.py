"""The web app on each database backend, with a token per role (and a revoked one)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from annotator.config import Settings
from annotator.db.session import session_scope
from annotator.services.users import add_user, revoke_user
from web.app import create_app

SECRET = "web-api-test-secret"


@dataclass(frozen=True)
class Tokens:
    admin: str
    engineer: str
    reviewer: str
    revoked: str

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, webhook_secret=SECRET, media_root=tmp_path / "media")


@pytest.fixture
def tokens(engine: Engine) -> Tokens:
    with session_scope(engine) as session:
        made = {r: add_user(session, f"{r}-user", r) for r in ("admin", "engineer", "reviewer")}
        revoked = add_user(session, "former-engineer", "engineer")
        revoke_user(session, "former-engineer")
    return Tokens(made["admin"], made["engineer"], made["reviewer"], revoked)


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine=engine)) as test_client:
        yield test_client


def wait_for(
    fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    """Poll ``fetch`` until ``done`` holds (returns the last answer) or fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = fetch()
        if done(answer):
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting after {timeout_s} s; last answer: {answer}")
        time.sleep(0.2)
