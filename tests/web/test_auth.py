"""Tokens and roles: every route needs a valid token; reviewers read, engineers launch; the
CLI shows a token once and stores only its hash."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from annotator.cli import app as cli
from annotator.db.models import ApiToken
from annotator.db.session import session_scope
from tests.web.conftest import Tokens

# (method, path, json body): every route of the API but health.
READS = [
    ("GET", "/api/v1/me", None),
    ("GET", "/api/v1/datasets", None),
    ("GET", "/api/v1/datasets/none", None),
    ("GET", "/api/v1/datasets/none/concepts", None),
    ("GET", "/api/v1/datasets/none/browse", None),
    ("GET", "/api/v1/datasets/none/growth", None),
    ("GET", "/api/v1/datasets/none/versions", None),
    ("GET", "/api/v1/images/1", None),
    ("GET", "/api/v1/images/1/file", None),
    ("GET", "/api/v1/images/1/thumbnail", None),
    ("GET", "/api/v1/jobs", None),
    ("GET", "/api/v1/jobs/1", None),
    ("GET", "/api/v1/jobs/1/progress", None),
    ("GET", "/api/v1/jobs/1/errors", None),
    ("GET", "/api/v1/jobs/1/throughput", None),
    ("GET", "/api/v1/exports", None),
    ("GET", "/api/v1/exports/1", None),
    ("GET", "/api/v1/exports/1/download", None),
    ("GET", "/api/v1/stats/routing", None),
    ("GET", "/api/v1/stats/throughput", None),
    ("GET", "/api/v1/stats/review", None),
    ("GET", "/api/v1/metrics/agreement", None),
    ("GET", "/api/v1/metrics/quality?dataset=none", None),
]
WRITES = [
    ("POST", "/api/v1/datasets", {"name": "made-by-test"}),
    ("POST", "/api/v1/datasets/none/versions", {"tag": "v1"}),
    ("POST", "/api/v1/jobs", {"dataset": "none"}),
    ("POST", "/api/v1/jobs/1/cancel", None),
    ("POST", "/api/v1/jobs/1/resume", {}),
    ("POST", "/api/v1/exports", {"dataset": "none"}),
]


def test_schema_lists_every_route_tested_here(client: TestClient) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    documented = {(m.upper(), p) for p, ops in paths.items() for m in ops if p.startswith("/api")}
    covered = {
        (m, p.split("?")[0].replace("/none", "/{name}").replace("/1", "/{id}"))
        for m, p, _ in READS + WRITES
    }
    normalised = {
        (m, p.replace("{image_id}", "{id}").replace("{job_id}", "{id}"))
        for m, p in documented
        if p != "/api/v1/health"
    }
    assert normalised == covered


@pytest.mark.parametrize(("method", "path", "body"), READS + WRITES)
def test_no_bad_or_revoked_token_gets_in(
    client: TestClient, tokens: Tokens, method: str, path: str, body: object
) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Basic {tokens.engineer}"},
        tokens.headers("revoked"),
    ):
        answer = client.request(method, path, json=body, headers=headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["detail"]
        assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_reviewers_cannot_launch_or_change(
    client: TestClient, tokens: Tokens, method: str, path: str, body: object
) -> None:
    answer = client.request(method, path, json=body, headers=tokens.headers("reviewer"))
    assert answer.status_code == 403
    assert "needs the engineer role" in answer.json()["detail"]
    # Engineers and admins get past the role check (the named objects do not exist: 404;
    # the second dataset of the same name: 409).
    for role in ("engineer", "admin"):
        answer = client.request(method, path, json=body, headers=tokens.headers(role))
        assert answer.status_code in (201, 404, 409), (role, answer.text)


@pytest.mark.parametrize(("method", "path", "body"), READS)
def test_reviewers_read(
    client: TestClient, tokens: Tokens, method: str, path: str, body: object
) -> None:
    answer = client.request(method, path, json=body, headers=tokens.headers("reviewer"))
    assert answer.status_code in (200, 404), answer.text
    if answer.status_code == 404:
        assert answer.json()["error"] in ("NotFoundError", "HTTPError")


def test_health_needs_no_token(client: TestClient) -> None:
    assert client.get("/api/v1/health").json() == {"status": "ok", "database": "ok"}
    assert client.get("/health").json() == {"status": "ok"}


def test_me_and_cookie_login(client: TestClient, tokens: Tokens) -> None:
    assert client.get("/api/v1/me", headers=tokens.headers("engineer")).json() == {
        "name": "engineer-user",
        "role": "engineer",
    }
    page = client.get("/dashboard", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    bad = client.post("/login", data={"token": "nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "invalid or revoked token" in bad.text
    login = client.post(
        "/login",
        data={"token": tokens.engineer, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert login.status_code == 303 and login.headers["location"] == "/dashboard"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/dashboard").status_code == 200
    assert client.get("/api/v1/me").json()["name"] == "engineer-user"
    # A change authenticated by the cookie alone needs the CSRF header.
    refused = client.post("/api/v1/datasets", json={"name": "via-cookie"})
    assert refused.status_code == 403 and "X-Annotator-CSRF" in refused.json()["detail"]
    made = client.post(
        "/api/v1/datasets", json={"name": "via-cookie"}, headers={"X-Annotator-CSRF": "1"}
    )
    assert made.status_code == 201
    client.post("/logout")
    assert client.get("/api/v1/me").status_code == 401


def test_users_cli_shows_token_once_and_stores_its_hash(db_url: str, engine: Engine) -> None:
    runner = CliRunner()
    env = {"ANNOTATOR_DATABASE_URL": db_url}
    added = runner.invoke(cli, ["users", "add", "carol", "--role", "engineer"], env=env)
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("ann_") and len(token) > 40
    with session_scope(engine) as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]
    listed = runner.invoke(cli, ["users", "list"], env=env)
    assert "carol" in listed.stdout and "engineer" in listed.stdout and token not in listed.stdout
    again = runner.invoke(cli, ["users", "add", "carol", "--role", "reviewer"], env=env)
    assert again.exit_code == 1 and "already exists" in again.output
    wrong = runner.invoke(cli, ["users", "add", "dave", "--role", "boss"], env=env)
    assert wrong.exit_code == 1 and "unknown role 'boss'" in wrong.output
    revoked = runner.invoke(cli, ["users", "revoke", "carol"], env=env)
    assert revoked.exit_code == 0 and "revoked 1 token" in revoked.stdout
    from annotator.services.users import authenticate

    with session_scope(engine) as session:
        assert authenticate(session, token) is None
