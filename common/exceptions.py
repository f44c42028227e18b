"""The errors of the shared contract: the database, ticker symbols, feature names, models."""

from __future__ import annotations


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be reached (down, wrong host, refused credentials)."""


class InvalidTickerError(ValueError):
    """A symbol that is not valid Yahoo Finance syntax."""

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker
        super().__init__(
            f"invalid ticker {ticker!r}: use 1-20 letters, digits or . - ^ = (e.g. PETR4.SA, AAPL)"
        )


class UnknownFeatureError(ValueError):
    """A feature name that :data:`common.features.FEATURE_COLUMNS` does not define."""


class ModelLoadError(RuntimeError):
    """A model's ONNX graph or metadata cannot be used to forecast."""


class RegistryReadError(RuntimeError):
    """A model version's artifacts cannot be resolved, downloaded or parsed."""
