"""Every error the ML lifecycle raises on purpose, in one place."""

from __future__ import annotations


class ConfigError(ValueError):
    """A training config file that cannot be read or holds invalid values."""


class InsufficientBarsError(ValueError):
    """A ticker has no bars, or too few for the lookback plus the minimum split sizes."""

    def __init__(self, ticker: str, n_bars: int, required: int, detail: str) -> None:
        self.ticker = ticker
        self.n_bars = n_bars
        self.required = required
        super().__init__(f"{ticker}: {n_bars} bars stored, need at least {required} ({detail})")


class ChampionNotFoundError(LookupError):
    """The registered model of a ticker has no ``champion`` version."""


class OnnxMismatchError(RuntimeError):
    """The ONNX export does not reproduce the Keras network within the tolerance."""


class MLflowUnavailableError(RuntimeError):
    """The MLflow tracking server or store cannot be reached."""


class InsufficientInputError(ValueError):
    """The input has fewer bars than the model's lookback, or lacks a needed column."""
