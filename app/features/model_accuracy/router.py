"""``GET /models/{ticker}/accuracy``: HTTP only, the rest is in service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.features.auth.dependencies import CurrentUser
from app.features.model_accuracy import service
from app.features.model_accuracy.schemas import ModelAccuracyRead
from app.features.stock_prediction.dependencies import PredictionServiceDep, TickerPath

router = APIRouter(prefix="/models", tags=["accuracy"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, invalid or expired bearer token"},
    404: {"description": "No model served for the ticker"},
    422: {"description": "Malformed ticker, or window < 1"},
    503: {"description": "The database is unavailable"},
}


@router.get("/{ticker}/accuracy", responses=RESPONSES)
def model_accuracy(
    *,
    user: CurrentUser,
    predictions: PredictionServiceDep,
    ticker: TickerPath,
    window: Annotated[
        int,
        Query(
            ge=1,
            le=10_000,
            description="last realized target dates counted per model version",
            examples=[60],
        ),
    ] = 60,
) -> ModelAccuracyRead:
    """How the served champion's forecasts turned out, once their target dates' bars are in.

    Realized MAE, relative MAE against the naive forecast, MAPE, directional accuracy and
    80%/95% interval coverage of the champion over its last ``window`` realized target dates
    (top level) and of every version that has realized forecasts (``versions``). Forecasts
    from stored bars only (GET /predict), each distinct forecast once. ``n = 0`` (and null
    metrics) until a target date's bar has been ingested.
    """
    with predictions.session_factory() as session:
        return service.get_accuracy(
            session=session, predictor=predictions.predictor, ticker=ticker, window=window
        )
