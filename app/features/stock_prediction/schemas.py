"""Request and response bodies of ``/predict`` and ``/models``."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, Strict

from app.features.model_health.schemas import DriftRead, StaleRead

#: An example lookback window: the 30 adjusted closes of PETR4.SA (BRL) from 2023-11-16 to
#: 2023-12-28 in the shipped snapshot, oldest first (the default lookback is 30).
EXAMPLE_CLOSES: list[JsonValue] = [
    24.31, 25.10, 25.12, 24.86, 24.99, 24.99, 25.06, 24.92, 25.30, 25.04,
    25.52, 25.35, 24.81, 24.69, 23.81, 23.75, 24.51, 24.42, 24.22, 24.57,
    25.10, 25.16, 25.47, 25.76, 25.85, 25.86, 26.11, 26.53, 26.55, 26.46,
]  # fmt: skip


#: The largest close accepted from a client, listing currency: above any traded share price,
#: far enough below float64's limit that a forecast's arithmetic cannot overflow on input alone.
MAX_CLOSE = 1e9
#: The ``as_of_date`` range accepted: target dates (up to a year of trading days later) stay
#: far inside ``datetime.date``'s range and any calendar's.
MIN_AS_OF_DATE = dt.date(1970, 1, 1)
MAX_AS_OF_DATE = dt.date(2200, 12, 31)


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_text(value: object) -> object:
    """``value`` if it can be a date as JSON sends one (a ``YYYY-MM-DD`` string), else an error:
    pydantic's lax mode would read ``0`` as 1970-01-01 (FastAPI validates the decoded body in
    Python mode, where ``Strict`` refuses strings too)."""
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    raise ValueError("as_of_date must be a date string, YYYY-MM-DD")


#: A date sent as ``YYYY-MM-DD`` within :data:`MIN_AS_OF_DATE`..:data:`MAX_AS_OF_DATE`.
AsOfDate = Annotated[
    dt.date, BeforeValidator(_date_text), Field(ge=MIN_AS_OF_DATE, le=MAX_AS_OF_DATE)
]

#: A JSON number (``true`` and ``"25.1"`` are refused, not coerced); the service checks its range
#: and states the window's rules in one message.
StrictClose = Annotated[float, Strict()]


class ModelMetrics(BaseModel):
    """Walk-forward metrics of the model and of the naive (persistence) baseline.

    Computed by ml_lifecycle on the one-step forecasts of its walk-forward backtest (refit
    before each test fold; Hyndman & Koehler 2006 for the metrics): ``mae``/``rmse`` in the
    listing currency, ``mape`` and ``directional_accuracy`` in percent, ``mase`` = MAE /
    in-sample MAE of the naive forecast; ``relative_mae`` = MAE / naive MAE (below 1: better
    than naive), ``dm_pvalue`` its Diebold-Mariano p-value (HLN-corrected), ``coverage_80`` /
    ``coverage_95`` the percent of actual closes inside the 80% / 95% intervals.
    """

    mae: float | None = None
    rmse: float | None = None
    mape: float | None = None
    mase: float | None = None
    directional_accuracy: float | None = None
    naive_mae: float | None = None
    naive_mape: float | None = None
    naive_mase: float | None = None
    relative_mae: float | None = None
    dm_pvalue: float | None = None
    up_days: float | None = None
    coverage_80: float | None = None
    coverage_95: float | None = None


class ModelInfo(BaseModel):
    """The registered model version that produced a forecast."""

    name: str = Field(examples=["stock-lstm-PETR4.SA"])
    version: str = Field(examples=["3"])
    lookback: int = Field(description="bars per input window", examples=[60])
    features: list[str] = Field(examples=[["rel_log_close"]])
    last_bar_date: dt.date = Field(description="last bar the model saw in training/evaluation")
    combination_weight: float = Field(
        description="shrinkage of the network's forecast toward the naive one, in [0, 1]; "
        "0 = the served forecast is exactly the naive one (no skill shown on validation)"
    )
    metrics: ModelMetrics


class PredictionInterval(BaseModel):
    """A conformal prediction interval of one forecast step."""

    level: float = Field(description="nominal coverage, percent", examples=[80.0])
    lower: float = Field(description="listing currency")
    upper: float = Field(description="listing currency")


class PredictionPoint(BaseModel):
    """The predicted close of one trading day, with its prediction intervals."""

    target_date: dt.date = Field(description="a following session of the ticker's exchange")
    predicted_close: float = Field(description="listing currency")
    change_pct: float = Field(description="percent change against last_close")
    intervals: list[PredictionInterval] = Field(
        default_factory=list,
        description="one per level of APP_INTERVAL_LEVELS (empty for a model without "
        "interval calibration); wider at later steps",
    )


class PredictionResponse(BaseModel):
    """A forecast of the next ``horizon`` trading days' closes."""

    prediction_id: uuid.UUID = Field(description="request_id of the prediction_log rows")
    ticker: str = Field(examples=["PETR4.SA"])
    as_of_date: dt.date = Field(description="date of the last bar used")
    last_close: float = Field(description="close at as_of_date, listing currency")
    currency: str | None = Field(default=None, examples=["BRL"])
    horizon: int
    input_source: str = Field(description="store: stored bars; client: closes in the request")
    predictions: list[PredictionPoint]
    model: ModelInfo
    drift: DriftRead = Field(
        description="the ticker's recent bars against the inputs the model was built on"
    )
    stale: StaleRead = Field(description="how far the model is behind the price store")


class PredictFromClosesRequest(BaseModel):
    """Closes supplied by the client: exactly the model's lookback, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"closes": EXAMPLE_CLOSES, "as_of_date": "2023-12-28"}]}
    )

    closes: list[StrictClose] = Field(
        min_length=1,
        max_length=10_000,
        description="daily (adjusted) closes, oldest first; exactly the model's lookback "
        f"(see GET /models), finite, positive and at most {MAX_CLOSE:g}",
    )
    as_of_date: AsOfDate | None = Field(
        default=None,
        description="date of the last close (YYYY-MM-DD, "
        f"{MIN_AS_OF_DATE.isoformat()}..{MAX_AS_OF_DATE.isoformat()}); target dates are the "
        "exchange's sessions after it (default: today, UTC)",
    )


class ServedModelRead(BaseModel):
    """A champion model in memory."""

    ticker: str = Field(examples=["PETR4.SA"])
    name: str = Field(examples=["stock-lstm-PETR4.SA"])
    version: str = Field(examples=["3"])
    lookback: int
    features: list[str]
    accepts_closes: bool = Field(description="POST /predict/{ticker} accepts closes only")
    last_train_date: dt.date
    last_bar_date: dt.date
    loaded_at: dt.datetime
    combination_weight: float = Field(
        description="shrinkage toward the naive forecast, in [0, 1]; 0 = serves naive"
    )
    interval_levels: list[float] = Field(
        description="levels of the intervals served (empty: the model has no calibration)"
    )
    metrics: ModelMetrics


class ReloadResult(BaseModel):
    """Outcome of ``POST /models/reload``."""

    loaded: list[str] = Field(examples=[["stock-lstm-PETR4.SA v4"]])
    unchanged: list[str]
    failed: dict[str, str] = Field(description="model version (or 'registry') -> error")
    served: int = Field(description="models served after the reload")
