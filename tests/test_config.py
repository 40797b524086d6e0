from __future__ import annotations

import pytest
from pydantic import ValidationError

from annotator.config import Settings


def test_embedded_defaults() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.broker_url is None
    assert s.device == "auto"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_database_url_names_the_shipped_driver(given: str, used: str) -> None:
    assert Settings(database_url=given).database_url == used


def test_env_prefix_and_empty_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANNOTATOR_BROKER_URL", "")
    monkeypatch.setenv("ANNOTATOR_DEVICE", "cpu")
    s = Settings()
    assert s.broker_url is None and s.device == "cpu"


def test_default_secret_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="ANNOTATOR_WEBHOOK_SECRET must be set"):
        Settings(environment="production")
    assert (
        Settings(environment="production", webhook_secret="s3cret-value").environment
        == "production"
    )
