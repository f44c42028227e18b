"""The prediction routes' parameters, and the prediction service of the running app:
:func:`prediction_service` (for the hot ``/predict`` routes) and :data:`PredictionServiceDep`
(a dependency, for the others); tests replace it in ``app.state.prediction_service``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import AfterValidator

from app.core.config import HORIZON_LIMIT
from app.features.stock_prediction.service import PredictionService
from common.tickers import normalize_ticker


def prediction_service(request: Request) -> PredictionService:
    """The prediction service built by the app's lifespan (``app.state.prediction_service``)."""
    service: PredictionService = request.app.state.prediction_service
    return service


async def get_prediction_service(request: Request) -> PredictionService:
    """:func:`prediction_service` as a dependency (``async``: no thread-pool hop)."""
    return prediction_service(request)


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
