"""Settings of the data pipeline (environment prefix ``PIPELINE_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import DEFAULT_VAR_DIR, LayerSettings
from common.tickers import SNAPSHOT_TICKERS
from data_pipeline.sources.snapshot import DEFAULT_SNAPSHOT_DIR


class PipelineSettings(LayerSettings):
    """Data-pipeline settings; ``DATABASE_URL`` is shared with the other layers."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_", env_file=".env", extra="ignore")

    tickers: list[str] = Field(default=list(SNAPSHOT_TICKERS), description="default ingest list")
    snapshot_dir: Path = DEFAULT_SNAPSHOT_DIR
    yahoo_cache_dir: Path = DEFAULT_VAR_DIR / "yfinance-cache"
    yahoo_max_attempts: int = Field(default=4, ge=1)
    yahoo_backoff_seconds: float = Field(default=2.0, gt=0)
    yahoo_pacing_seconds: float = Field(default=1.0, ge=0, description="pause between tickers")
    overlap_days: int = Field(
        default=5, ge=0, description="re-fetch this many days before the last stored bar"
    )
    schedule_cron: str = Field(default="0 22 * * 1-5", description="cron of the scheduled ingest")


@lru_cache
def get_settings() -> PipelineSettings:
    """The process-wide settings, read once from the environment."""
    return PipelineSettings()
