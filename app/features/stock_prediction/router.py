"""``GET /predict/{ticker}`` and ``POST /predict/{ticker}``: HTTP only, the rest is in service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from app.features.auth.dependencies import CurrentUser
from app.features.stock_prediction.dependencies import (
    HorizonQuery,
    TickerPath,
    prediction_service,
)
from app.features.stock_prediction.schemas import (
    EXAMPLE_CLOSES,
    PredictFromClosesRequest,
    PredictionResponse,
)
from app.schemas.error import ErrorResponse, ValidationErrorResponse

router = APIRouter(prefix="/predict", tags=["predictions"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "A body that is not parseable JSON"},
    401: {"model": ErrorResponse, "description": "No, invalid or expired bearer token"},
    404: {
        "model": ErrorResponse,
        "description": "No model served for the ticker, or no bars stored",
    },
    422: {
        "model": ValidationErrorResponse,
        "description": "Malformed ticker, horizon out of range, or wrong closes",
    },
    413: {"description": "A body over APP_MAX_BODY_BYTES"},
    503: {
        "model": ErrorResponse,
        "description": "The database is unavailable, or the model registry has not answered",
    },
}


# ``async def``: a sync endpoint would cost a thread-pool hop per request; the service runs
# its blocking I/O (a cache miss) in the thread pool itself. The user is the routes' one
# dependency; the service comes from the request's app (a dependency more costs ~10 µs).
@router.get("/{ticker}", responses=RESPONSES)
async def predict(
    *,
    request: Request,
    user: CurrentUser,
    ticker: TickerPath,
    horizon: HorizonQuery = 1,
) -> PredictionResponse:
    """Predict the next ``horizon`` closes from the latest stored lookback window.

    Each worker keeps the window and re-reads it (with all the others it holds, in one
    query) every ``APP_BARS_CACHE_SECONDS``: a new bar is served at most that long after its
    commit. The prediction is logged to ``prediction_log`` (one row per target date) before
    the response is sent.
    """
    return await prediction_service(request).predict_from_store(
        ticker=ticker, horizon=horizon, user_id=user.id
    )


@router.post("/{ticker}", responses=RESPONSES)
async def predict_from_closes(
    *,
    request: Request,
    user: CurrentUser,
    ticker: TickerPath,
    body: Annotated[
        PredictFromClosesRequest,
        Body(
            openapi_examples={
                "lookback_30": {
                    "summary": "30 PETR4.SA closes (a model with lookback 30)",
                    "value": {"closes": EXAMPLE_CLOSES, "as_of_date": "2023-12-28"},
                }
            }
        ),
    ],
    horizon: HorizonQuery = 1,
) -> PredictionResponse:
    """Predict from client-supplied closes: exactly the model's lookback, oldest first.

    Only for models whose features need closes alone (``accepts_closes`` in GET /models).
    The prediction is logged like GET's.
    """
    return await prediction_service(request).predict_from_closes(
        ticker=ticker,
        closes=body.closes,
        as_of_date=body.as_of_date,
        horizon=horizon,
        user_id=user.id,
    )
