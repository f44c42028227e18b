"""The ``drift`` and ``stale`` parts of a prediction response."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field


class DriftRead(BaseModel):
    """How far the ticker's recent bars are from the inputs the model version was built on.

    ``psi``: the largest Population Stability Index over the input series (daily log returns,
    per-bar features), ``ks``: the largest two-sample Kolmogorov-Smirnov statistic;
    ``status``: ``stable`` (PSI < APP_PSI_MODERATE, 0.1), ``moderate``, ``drift`` (PSI >=
    APP_PSI_DRIFT, 0.25; Siddiqi 2006, Yurdakul 2018), or ``unknown`` (the version records no
    training distribution, or too few bars are stored).
    """

    psi: float | None = Field(default=None, examples=[0.04])
    ks: float | None = Field(default=None, examples=[0.06])
    status: Literal["stable", "moderate", "drift", "unknown"] = Field(examples=["stable"])
    window_bars: int = Field(description="recent bars compared (APP_DRIFT_WINDOW_BARS at most)")


class StaleRead(BaseModel):
    """How far the model version is behind the price store."""

    last_train_bar: dt.date = Field(description="last bar the version was built on")
    bars_behind: int | None = Field(
        default=None, description="bars stored after last_train_bar (null: unknown)"
    )
    stale: bool = Field(description="bars_behind > APP_STALE_AFTER_BARS")
