"""Response body of ``GET /models/{ticker}/accuracy``."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class VersionAccuracy(BaseModel):
    """Realized accuracy of one model version's forecasts (served from stored bars).

    Over the version's last ``window`` target dates whose bar is stored, each distinct
    forecast step once. Errors in the listing currency; percentages in percent. Every metric
    is null when ``n`` is 0.
    """

    model_name: str = Field(examples=["stock-lstm-PETR4.SA"])
    model_version: str = Field(examples=["3"])
    n: int = Field(description="realized forecast steps counted")
    n_target_dates: int = Field(description="distinct target dates among them")
    first_target_date: dt.date | None = None
    last_target_date: dt.date | None = None
    mae: float | None = Field(default=None, description="mean |predicted - realized|")
    naive_mae: float | None = Field(
        default=None, description="the naive forecast's MAE (last_close for every step)"
    )
    relative_mae: float | None = Field(
        default=None, description="mae / naive_mae; above 1 the naive forecast does better"
    )
    mape: float | None = Field(default=None, description="mean absolute percent error, %")
    directional_accuracy: float | None = Field(
        default=None, description="% of steps whose move from last_close has the right sign"
    )
    n_intervals: int = Field(default=0, description="steps with 95% interval bounds")
    coverage_80: float | None = Field(
        default=None, description="% of realized closes inside the 80% interval"
    )
    coverage_95: float | None = Field(
        default=None, description="% of realized closes inside the 95% interval"
    )


class ModelAccuracyRead(VersionAccuracy):
    """The served champion's realized accuracy (top level), and every version's."""

    ticker: str = Field(examples=["PETR4.SA"])
    window: int = Field(description="last realized target dates per version")
    versions: list[VersionAccuracy] = Field(
        description="each model version with realized forecasts, the champion's included"
    )
