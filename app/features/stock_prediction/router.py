"""``GET /predict/{ticker}`` and ``POST /predict/{ticker}``: HTTP only, the rest is in service."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from app.core.config import AppSettings
from app.core.database import get_session_factory
from app.features.auth.dependencies import CurrentUser
from app.features.stock_prediction import service
from app.features.stock_prediction.log_writer import PredictionLogWriter
from app.features.stock_prediction.predictor import Predictor
from app.features.stock_prediction.schemas import (
    EXAMPLE_CLOSES,
    PredictFromClosesRequest,
    PredictionResponse,
)
from common.tickers import normalize_ticker

router = APIRouter(prefix="/predict", tags=["predictions"])

# Everything here is ``async def``: FastAPI runs a sync endpoint or dependency in the thread
# pool, and each such hop cost more CPU than the work itself (docs/performance.md). The
# service does its blocking I/O (a cache miss) in the thread pool, and waits for the
# commit of its prediction_log rows without holding a thread.

RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No, invalid or expired bearer token"},
    404: {"description": "No model served for the ticker, or no bars stored"},
    422: {"description": "Malformed ticker, horizon out of range, or wrong closes"},
    503: {"description": "The database is unavailable"},
}


# The app's per-process objects, created in its lifespan. The prediction routes read them
# with these plain functions rather than as dependencies: FastAPI resolves every dependency
# of every request, and that resolution was the largest cost of a warm GET /predict after
# the JWT check (docs/performance.md, round 4).


def predictor_of(request: Request) -> Predictor:
    """The predictor of the running app."""
    predictor: Predictor = request.app.state.predictor
    return predictor


def log_writer_of(request: Request) -> PredictionLogWriter:
    """The prediction_log writer (group commit) of the running app."""
    writer: PredictionLogWriter = request.app.state.log_writer
    return writer


def bars_cache_of(request: Request) -> service.BarsCache:
    """The lookback-window cache of the running app."""
    cache: service.BarsCache = request.app.state.bars_cache
    return cache


async def get_predictor(request: Request) -> Predictor:
    """The predictor of the running app, as a dependency (the ops routes)."""
    return predictor_of(request)


PredictorDep = Annotated[Predictor, Depends(get_predictor)]


TickerPath = Annotated[
    str,
    Path(
        description="Yahoo Finance symbol (case-insensitive)", examples=["PETR4.SA"], max_length=40
    ),
]
HorizonQuery = Annotated[
    int,
    Query(description="trading days to predict, 1..APP_MAX_HORIZON (default 1)", examples=[5]),
]


def valid_request(request: Request, ticker: str, horizon: int) -> tuple[str, int]:
    """The normalized ticker and the range-checked horizon of a prediction request.

    Called by the endpoints rather than declared as dependencies: FastAPI resolves every
    dependency on every request, and three of them (ticker, horizon, settings) cost more
    than the checks (docs/performance.md, round 5).

    Raises:
        InvalidTickerError: not a ticker symbol (422).
        InvalidRequestError: horizon outside ``1..APP_MAX_HORIZON`` (422).
    """
    settings: AppSettings = request.app.state.settings
    return (
        normalize_ticker(ticker),
        service.check_horizon(horizon, max_horizon=settings.max_horizon),
    )


@router.get("/{ticker}", responses=RESPONSES)
async def predict(
    *,
    request: Request,
    user: CurrentUser,
    ticker: TickerPath,
    horizon: HorizonQuery = 1,
) -> PredictionResponse:
    """Predict the next ``horizon`` closes from the latest stored lookback window.

    The window is cached per worker for ``APP_BARS_CACHE_SECONDS``. The prediction is
    logged to ``prediction_log`` (one row per target date) before the response is sent.
    """
    started = time.perf_counter()
    ticker, horizon = valid_request(request, ticker, horizon)
    return await service.predict_from_store(
        session_factory=get_session_factory(request),
        bars_cache=bars_cache_of(request),
        log_writer=log_writer_of(request),
        predictor=predictor_of(request),
        ticker=ticker,
        horizon=horizon,
        user_id=user.id,
        started=started,
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
    started = time.perf_counter()
    ticker, horizon = valid_request(request, ticker, horizon)
    return await service.predict_from_closes(
        log_writer=log_writer_of(request),
        predictor=predictor_of(request),
        ticker=ticker,
        closes=body.closes,
        as_of_date=body.as_of_date,
        horizon=horizon,
        user_id=user.id,
        started=started,
    )
