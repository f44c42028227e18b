"""The realized-accuracy gauges (and the drift gauges), recomputed on a timer rather than per
request.

Each worker runs one :class:`AccuracyRefresher` (started in the app's lifespan): every
``APP_ACCURACY_REFRESH_SECONDS`` it computes, in the thread pool, the accuracy of every served
champion exactly as ``GET /models/{ticker}/accuracy`` does, and sets the gauges of
:mod:`app.core.monitoring`. One query per served ticker per refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable

import anyio.to_thread
from sqlalchemy.orm import Session, sessionmaker

from app.core.monitoring import (
    REALIZED_COVERAGE,
    REALIZED_DIRECTIONAL_ACCURACY,
    REALIZED_MAE,
    REALIZED_OUTCOMES,
    REALIZED_RELATIVE_MAE,
)
from app.features.model_accuracy.service import get_accuracy
from app.features.model_health.service import HealthMonitor
from app.features.stock_prediction.predictor import Predictor

logger = logging.getLogger(__name__)


def _value(number: float | None) -> float:
    return math.nan if number is None else number


def refresh_accuracy_gauges(
    *,
    session_factory: sessionmaker[Session],
    predictor: Predictor,
    window: int,
    health: HealthMonitor | None = None,
) -> int:
    """Set the realized-accuracy gauges of every served champion, and with ``health`` its
    drift and staleness gauges; returns the tickers set.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unavailable (the gauges keep their
            previous values).
    """
    done = 0
    models = predictor.served()
    with session_factory() as session:
        for model in models:
            accuracy = get_accuracy(
                session=session, predictor=predictor, ticker=model.ticker, window=window
            )
            ticker = model.ticker
            REALIZED_OUTCOMES.labels(ticker=ticker).set(accuracy.n)
            REALIZED_MAE.labels(ticker=ticker).set(_value(accuracy.mae))
            REALIZED_RELATIVE_MAE.labels(ticker=ticker).set(_value(accuracy.relative_mae))
            REALIZED_DIRECTIONAL_ACCURACY.labels(ticker=ticker).set(
                _value(accuracy.directional_accuracy)
            )
            REALIZED_COVERAGE.labels(ticker=ticker, level="80").set(_value(accuracy.coverage_80))
            REALIZED_COVERAGE.labels(ticker=ticker, level="95").set(_value(accuracy.coverage_95))
            done += 1
    if health is not None:
        health.compute_all(models)
    return done


class AccuracyRefresher:
    """Runs ``refresh`` now and then every ``interval_seconds`` on the event loop's thread
    pool, until stopped; a failed refresh is logged and retried at the next tick."""

    def __init__(self, refresh: Callable[[], object], *, interval_seconds: float) -> None:
        self.refresh = refresh
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the timer (nothing when the interval is 0)."""
        if self.interval_seconds > 0 and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="accuracy-gauges")

    async def _loop(self) -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(self.refresh)
            except Exception as exc:
                logger.warning("realized-accuracy gauges not refreshed: %s", exc)
            await asyncio.sleep(self.interval_seconds)

    async def stop(self) -> None:
        """Cancel the timer and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
