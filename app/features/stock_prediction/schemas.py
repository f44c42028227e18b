"""Request and response bodies of ``/predict`` and ``/models``."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field, JsonValue

#: An example lookback window (20 real PETR4.SA closes, BRL, oldest first).
EXAMPLE_CLOSES: list[JsonValue] = [
    36.00, 36.19, 36.07, 36.45, 36.40, 36.86, 37.02, 36.78, 36.55, 36.90,
    37.10, 37.26, 37.05, 37.34, 37.60, 37.49, 37.81, 37.70, 37.95, 38.14,
]  # fmt: skip


class ModelMetrics(BaseModel):
    """Test-window metrics of the model and of the naive (persistence) baseline.

    Computed by ml_lifecycle on the chronological test split of one-step-ahead forecasts
    (Hyndman & Koehler 2006): ``mae``/``rmse`` in the listing currency, ``mape`` and
    ``directional_accuracy`` in percent, ``mase`` = MAE / in-sample MAE of the naive forecast
    on the training closes. The model beats the naive baseline when ``mase < naive_mase``.
    """

    mae: float | None = None
    rmse: float | None = None
    mape: float | None = None
    mase: float | None = None
    directional_accuracy: float | None = None
    naive_mae: float | None = None
    naive_mape: float | None = None
    naive_mase: float | None = None


class ModelInfo(BaseModel):
    """The registered model version that produced a forecast."""

    name: str = Field(examples=["stock-lstm-PETR4.SA"])
    version: str = Field(examples=["3"])
    lookback: int = Field(description="bars per input window", examples=[60])
    features: list[str] = Field(examples=[["rel_log_close"]])
    last_bar_date: dt.date = Field(description="last bar the model saw in training/evaluation")
    metrics: ModelMetrics


class PredictionPoint(BaseModel):
    """The predicted close of one trading day."""

    target_date: dt.date = Field(description="a following weekday (exchange holidays ignored)")
    predicted_close: float = Field(description="listing currency")
    change_pct: float = Field(description="percent change against last_close")


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


class PredictFromClosesRequest(BaseModel):
    """Closes supplied by the client: exactly the model's lookback, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"closes": EXAMPLE_CLOSES, "as_of_date": "2023-12-29"}]}
    )

    closes: list[float] = Field(
        min_length=1,
        max_length=10_000,
        description="daily (adjusted) closes, oldest first; exactly the model's lookback "
        "(see GET /models), finite and positive",
    )
    as_of_date: dt.date | None = Field(
        default=None,
        description="date of the last close; target dates are the weekdays after it "
        "(default: today, UTC)",
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
    metrics: ModelMetrics


class ReloadResult(BaseModel):
    """Outcome of ``POST /models/reload``."""

    loaded: list[str] = Field(examples=[["stock-lstm-PETR4.SA v4"]])
    unchanged: list[str]
    failed: dict[str, str] = Field(description="model version (or 'registry') -> error")
    served: int = Field(description="models served after the reload")
