"""Settings of the ML lifecycle (environment prefix ``ML_``) and the training config
(hyperparameters of one run: a YAML file, ``configs/default.yaml``, plus overrides)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.drift import DRIFT_WINDOW_BARS, PSI_DRIFT, STALE_AFTER_BARS
from common.features import FEATURE_COLUMNS
from common.settings import DEFAULT_MLFLOW_TRACKING_URI, DEFAULT_VAR_DIR, LayerSettings
from common.tickers import SNAPSHOT_TICKERS
from ml_lifecycle.exceptions import ConfigError


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
        default=None, description="training config YAML (default: configs/default.yaml)"
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


#: The default hyperparameters shipped with the package.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "default.yaml"


class TrainConfig(BaseModel):
    """Hyperparameters and split of one per-ticker training run.

    Attributes:
        lookback: bars per input window (trading days).
        features: feature names (see :mod:`common.features`).
        layers: stacked LSTM layers.
        units: units per LSTM layer.
        dropout: dropout rate after each LSTM layer, in ``[0, 1)``.
        learning_rate: Adam learning rate.
        batch_size: windows per gradient step.
        epochs: maximum epochs (early stopping usually ends sooner).
        patience: epochs without a better validation loss before stopping.
        val_fraction: share of the bars, before the test part, used for validation.
        test_fraction: share of the bars, at the end, held out for testing.
        min_split_windows: minimum windows (targets) in each of train, validation and test.
        history_bars: fit on at most the most recent N bars; ``None`` for all of them.
        folds: walk-forward test folds (the backtest and the promotion gate).
        fold_bars: bars per test fold (63 = about a quarter of trading days).
        warm_start: each fold's network starts from the previous fold's weights.
        interval_steps: horizon steps whose intervals are calibrated on validation windows
            (later steps grow with the square root of the step).
        combination_alpha: significance level of the validation test that keeps the
            combination weight (otherwise the version serves the naive forecast).
        seed: seed of Python, numpy and TensorFlow.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lookback: int = Field(default=30, ge=2, le=500)
    features: tuple[str, ...] = ("rel_log_close",)
    layers: int = Field(default=1, ge=1, le=4)
    units: int = Field(default=32, ge=1, le=512)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    batch_size: int = Field(default=64, ge=1)
    epochs: int = Field(default=40, ge=1)
    patience: int = Field(default=6, ge=1)
    val_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    min_split_windows: int = Field(default=30, ge=1)
    history_bars: int | None = Field(default=2520, ge=10)
    folds: int = Field(default=8, ge=1, le=100)
    fold_bars: int = Field(default=63, ge=1)
    warm_start: bool = True
    interval_steps: int = Field(default=30, ge=1, le=365)
    combination_alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    seed: int = 42

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [f for f in value if f not in FEATURE_COLUMNS]
        if unknown or not value:
            raise ValueError(
                f"unknown or empty features {list(value)}; known: {sorted(FEATURE_COLUMNS)}"
            )
        return value

    @model_validator(mode="after")
    def _fractions(self) -> TrainConfig:
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("val_fraction + test_fraction must leave at least 20% for training")
        return self


def load_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """Read a training config YAML and apply overrides (``None`` overrides are ignored).

    Args:
        path: YAML file of :class:`TrainConfig` fields; default :data:`DEFAULT_CONFIG_PATH`.
            Keys it leaves out keep the defaults of :class:`TrainConfig`.
        **overrides: field values that win over the file (e.g. ``epochs=2`` from the CLI).

    Returns:
        The validated, frozen :class:`TrainConfig`.

    Raises:
        ConfigError: the file is missing, is not a YAML mapping, or a value is invalid.
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read training config {source}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config {source} is not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"training config {source} must be a mapping of field: value")
    values = {**loaded, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid training config ({source}): {problems}") from exc
