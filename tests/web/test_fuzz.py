"""Property-based fuzzing of the API against its own OpenAPI schema (schemathesis): whatever
the input, no 500, and every answer matches the documented status codes and content types.

Bounded: a few examples per operation. Background work is not started (a no-op runner), so
fuzzed job launches stay rows."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance
from sqlalchemy import Engine

from annotator.config import Settings
from annotator.db.models import JobStatus
from annotator.db.session import session_scope
from tests.web.conftest import SECRET, Tokens
from tests.web.factories import make_browsable
from web.app import create_app

MAX_EXAMPLES = 12


class _NoRunner:
    def run_mining(self, job_id: int) -> Future[JobStatus]:
        return Future()

    def run_export(self, job_id: int) -> Future[JobStatus]:
        return Future()

    def shutdown(self, wait: bool = False) -> None:
        return None


@pytest.fixture
def fuzz_app(db_url: str, engine: Engine, tmp_path: Path, tokens: Tokens) -> object:
    with session_scope(engine) as session:
        make_browsable(session, tmp_path / "images", n_images=3)
    app = create_app(
        Settings(database_url=db_url, webhook_secret=SECRET, media_root=tmp_path / "media"),
        engine=engine,
    )
    app.state.runner = _NoRunner()
    return app


def test_api_never_fails_on_any_input(fuzz_app: object, tokens: Tokens) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", fuzz_app)
    headers = tokens.headers("engineer")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 25

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=checks)

        run()
