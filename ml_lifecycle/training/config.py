"""Hyperparameters of one training run: a YAML file (``configs/default.yaml``) plus overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.features import FEATURE_COLUMNS

#: The default hyperparameters shipped with the package.
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "default.yaml"


class ConfigError(ValueError):
    """A training config file that cannot be read or holds invalid values."""


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
        history_bars: use only the most recent N bars; ``None`` for all of them.
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
