"""Settings of the ML lifecycle (environment prefix ``ML_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.drift import DRIFT_WINDOW_BARS, PSI_DRIFT, STALE_AFTER_BARS
from common.settings import DEFAULT_MLFLOW_TRACKING_URI, DEFAULT_VAR_DIR, LayerSettings
from common.tickers import SNAPSHOT_TICKERS


class MLSettings(LayerSettings):
    """ML-lifecycle settings; ``DATABASE_URL`` and ``MLFLOW_TRACKING_URI`` are shared."""

    model_config = SettingsConfigDict(env_prefix="ML_", env_file=".env", extra="ignore")

    mlflow_tracking_uri: str = Field(
        default=DEFAULT_MLFLOW_TRACKING_URI,
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking and registry URI: sqlite:///var/mlflow.db (embedded), "
        "http://mlflow:5000 (a server), ...",
    )
    experiment_name: str = Field(default="stockcast-lstm", description="MLflow experiment")
    artifact_root: Path | None = Field(
        default=None,
        description="artifact folder of the experiment on an embedded (sqlite/file) store; "
        "default: 'mlartifacts' beside the SQLite file (var/mlartifacts)",
    )
    tickers: list[str] = Field(default=list(SNAPSHOT_TICKERS), description="default train list")
    config_path: Path | None = Field(
        default=None, description="training config YAML (default: training/configs/default.yaml)"
    )
    schedule_cron: str = Field(
        default="0 3 * * 6",
        description="cron of `python -m ml_lifecycle schedule` (Saturdays 03:00)",
    )
    stale_after_bars: int = Field(
        default=STALE_AFTER_BARS,
        ge=0,
        description="train --stale-only retrains a champion more bars than this behind the "
        "store (21: about a month of sessions)",
    )
    drift_window_bars: int = Field(
        default=DRIFT_WINDOW_BARS,
        ge=2,
        description="recent bars compared with a champion's training inputs (PSI, KS)",
    )
    psi_drift: float = Field(
        default=PSI_DRIFT,
        gt=0,
        description="train --stale-only retrains a champion whose input PSI is at least this "
        "(0.25: a significant shift, Siddiqi 2006)",
    )
    reports_dir: Path = Field(
        default=DEFAULT_VAR_DIR / "reports", description="where the PNG plots are written"
    )


@lru_cache
def get_settings() -> MLSettings:
    """The process-wide settings, read once from the environment."""
    return MLSettings()
