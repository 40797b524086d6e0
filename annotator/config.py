"""Settings: one pydantic-settings class, read from the environment (prefix ``ANNOTATOR_``).

The embedded default needs nothing: a SQLite file in the working directory, no broker (stages
run in-process), models on ``auto`` device.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_WEBHOOK_SECRET = "change-me"


class Settings(BaseSettings):
    """Every setting of the engine. Each field maps to ``ANNOTATOR_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="ANNOTATOR_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///./annotator.db"
    broker_url: str | None = None
    # Celery (workers/app.py). A task running longer than the hard limit is killed; a message
    # unacknowledged for longer than the visibility timeout (its worker died) is delivered
    # again, so the timeout must exceed the hard limit or a slow task would run twice.
    task_time_limit_s: int = Field(default=1800, ge=1)
    broker_visibility_timeout_s: int = Field(default=7200, ge=1)
    media_root: Path = Path("./media")
    # Images: larger ones are refused (a decompression bomb must not take a worker's memory);
    # downloads are bounded in size and time.
    max_image_pixels: int = Field(default=89_478_485, ge=1)
    download_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    download_timeout_s: float = Field(default=30.0, gt=0)

    label_studio_url: str | None = None
    label_studio_token: str | None = None
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    # Base URL under which Label Studio reaches our API (signed image URLs).
    public_url: str = "http://127.0.0.1:8000"
    # Lifetime of the signed image URLs inside review tasks (`annotator review push` renews
    # those of pending tasks when less than half of it is left).
    review_url_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    # Every this many seconds `annotator beat` has a worker sync every dataset's reviews from
    # Label Studio (what the webhooks missed); 0 turns the periodic sync off.
    review_sync_interval_s: int = Field(default=300, ge=0)

    device: Literal["auto", "cpu", "cuda"] = "auto"
    proposer: str = "sam3"
    proposer_model: str = "facebook/sam3"
    captioner: str = "vlm"
    captioner_model: str = "meta-llama/Llama-3.2-11B-Vision-Instruct"
    parser: str = "offline"
    parser_model: str = "meta-llama/Llama-3.1-8B-Instruct"
    verifier: str = "vlm"
    verifier_model: str = "meta-llama/Llama-3.2-11B-Vision-Instruct"

    max_concepts_per_image: int = Field(default=32, ge=1)
    export_batch_size: int = Field(default=5000, ge=1)

    @field_validator("database_url")
    @classmethod
    def _psycopg3_driver(cls, value: str) -> str:
        # Users write postgresql:// (as in libpq); we ship psycopg 3, so name its driver.
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @field_validator("broker_url")
    @classmethod
    def _empty_broker_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.webhook_secret == DEFAULT_WEBHOOK_SECRET:
            raise ValueError(
                "ANNOTATOR_WEBHOOK_SECRET must be set to a secret value when "
                "ANNOTATOR_ENVIRONMENT=production"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests call ``get_settings.cache_clear()``)."""
    return Settings()
