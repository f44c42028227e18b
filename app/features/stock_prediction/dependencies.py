"""The prediction routes' parameters and their one dependency, :data:`PredictionServiceDep`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import AfterValidator

from app.core.config import HORIZON_LIMIT
from app.features.stock_prediction.service import PredictionService
from common.tickers import normalize_ticker


async def get_prediction_service(request: Request) -> PredictionService:
    """The prediction service built by the app's lifespan (``async``: no thread-pool hop)."""
    service: PredictionService = request.app.state.prediction_service
    return service


PredictionServiceDep = Annotated[PredictionService, Depends(get_prediction_service)]

#: A ticker path parameter, normalized (upper-cased); malformed symbols are a 422.
TickerPath = Annotated[
    str,
    Path(
        description="Yahoo Finance symbol (case-insensitive)", examples=["PETR4.SA"], max_length=40
    ),
    AfterValidator(normalize_ticker),
]

#: The horizon query parameter, bounded by the largest APP_MAX_HORIZON a deployment may set (a
#: constant, so OpenAPI shows it); the service applies the deployment's own APP_MAX_HORIZON.
HorizonQuery = Annotated[
    int,
    Query(
        ge=1,
        le=HORIZON_LIMIT,
        description="trading days to predict, 1..APP_MAX_HORIZON (30 unless configured)",
        examples=[5],
    ),
]
