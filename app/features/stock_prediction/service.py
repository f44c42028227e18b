"""The prediction use cases: forecast from stored bars or from client closes, then log.

Each request's rows are written to ``prediction_log`` (one per target date) and committed
before the response is returned; a database failure therefore fails the request (503)
instead of serving an unlogged prediction. The commit is a group commit: the request hands
its rows to the process's :class:`~app.features.stock_prediction.log_writer.PredictionLogWriter`
and waits until the transaction that carries them (and other waiting requests' rows) commits.

The use cases are coroutines run on the event loop: a warm request (its lookback window held
by the worker's :class:`~app.features.stock_prediction.windows.WindowStore`) does no blocking
I/O of its own, and the wait for the commit holds no thread. Only a window not held yet, and
the store's revalidation of all its windows once per ``APP_BARS_CACHE_SECONDS``, read the
price store, in the thread pool. A window keeps the forecasts made from it
(:class:`~app.features.stock_prediction.windows.LookbackWindow`): the served models are
deterministic, so the first request of each model and horizon computes the forecast (tens of
microseconds per step) and the others on the same window reuse it.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import Counter
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import AppSettings
from app.core.exceptions import (
    BarsNotFoundError,
    InvalidRequestError,
    ModelNotFoundError,
    RegistryUnavailableError,
)
from app.core.monitoring import PREDICTED_POINTS, PREDICTIONS_SERVED
from app.features.model_health.service import HealthMonitor, ModelHealth
from app.features.stock_prediction.log_writer import PredictionLogWriter
from app.features.stock_prediction.predictor import Forecast, Predictor, ServedModel
from app.features.stock_prediction.schemas import (
    MAX_CLOSE,
    ModelInfo,
    ModelMetrics,
    PredictionResponse,
)
from app.features.stock_prediction.windows import WindowStore, finite_forecast
from common.exchanges import (
    CalendarRangeError,
    UnknownExchangeError,
    exchange_of,
    next_sessions,
)

#: Interval levels (percent) that prediction_log stores (columns lower_80 ... upper_95);
#: other configured levels are in the response only.
LOGGED_LEVELS = frozenset({80.0, 95.0})


def make_window_store(
    settings: AppSettings,
    session_factory: sessionmaker[Session],
    *,
    timer: Callable[[], float] = time.monotonic,
) -> WindowStore:
    """The per-worker lookback windows, revalidated every ``APP_BARS_CACHE_SECONDS``."""
    return WindowStore(session_factory, ttl_seconds=settings.bars_cache_seconds, timer=timer)


def target_dates_of(ticker: str, as_of: dt.date, count: int) -> tuple[dt.date, ...]:
    """The ``count`` sessions of ``ticker``'s exchange after ``as_of`` (cached per exchange,
    ``as_of`` and ``count``: every request for a ticker shares its last bar's date).

    Raises:
        InvalidRequestError: the ticker's exchange is unknown, or the dates fall outside the
            exchange calendar's range (422).
    """
    exchange = exchange_of(ticker)
    if exchange is None:
        raise InvalidRequestError(str(UnknownExchangeError(ticker)))
    try:
        return next_sessions(exchange, as_of, count)
    except CalendarRangeError as exc:
        raise InvalidRequestError(str(exc)) from exc


def listing_currency(ticker: str) -> str | None:
    """The currency of ``ticker``'s exchange (:mod:`common.exchanges`), None when unknown."""
    exchange = exchange_of(ticker)
    return exchange.currency if exchange is not None else None


def model_metrics(model: ServedModel) -> ModelMetrics:
    """The metrics of the model's metadata that the API reports."""
    known = ModelMetrics.model_fields
    return ModelMetrics(**{k: v for k, v in model.metadata.metrics.items() if k in known})


@dataclass(frozen=True)
class _ResponseParts:
    """What every response of one served model and endpoint shares, built once."""

    info: ModelInfo
    served: Counter
    points: Counter
    logged_levels: tuple[tuple[str, str, int], ...]  # (lower column, upper column, level row)


def _response_parts(model: ServedModel, input_source: str) -> _ResponseParts:
    """The shared parts of ``model``'s responses, built on its first response (kept in its
    ``memo``): no ``ModelInfo`` built and no metric labels looked up per request."""
    key = f"response-parts:{input_source}"
    parts: _ResponseParts | None = model.memo.get(key)
    if parts is None:
        info = ModelInfo(
            name=model.name,
            version=model.version,
            lookback=model.lookback,
            features=list(model.metadata.features),
            last_bar_date=model.metadata.last_bar_date,
            combination_weight=model.metadata.combination.weight,
            metrics=model_metrics(model),
        )
        parts = _ResponseParts(
            info=info,
            served=PREDICTIONS_SERVED.labels(
                ticker=model.ticker, model_version=model.version, endpoint=input_source
            ),
            points=PREDICTED_POINTS.labels(ticker=model.ticker, model_version=model.version),
            logged_levels=tuple(
                (f"lower_{level:g}", f"upper_{level:g}", row)
                for row, level in enumerate(model.served_levels)
                if level in LOGGED_LEVELS
            ),
        )
        model.memo[key] = parts
    return parts


async def _respond(
    *,
    log_writer: PredictionLogWriter,
    model: ServedModel,
    forecast: Forecast,
    as_of_date: dt.date,
    last_close: float,
    currency: str | None,
    user_id: int | None,
    input_source: str,
    started: float,
    health: ModelHealth,
) -> PredictionResponse:
    horizon = len(forecast.closes)
    target_dates = target_dates_of(model.ticker, as_of_date, horizon)
    request_id = uuid.uuid4()
    parts = _response_parts(model, input_source)
    levels = model.served_levels
    lower = forecast.lower.tolist() if forecast.lower is not None else None
    upper = forecast.upper.tolist() if forecast.upper is not None else None
    closes: list[float] = forecast.closes.tolist()
    # plain dicts, validated once by pydantic-core when the response is built: half the CPU of
    # a model_construct per point and interval (a third at horizon 30)
    points: list[dict[str, Any]] = [
        {
            "target_date": day,
            "predicted_close": close,
            "change_pct": (close / last_close - 1.0) * 100.0,
            "intervals": [
                {"level": level, "lower": lower[row][step], "upper": upper[row][step]}
                for row, level in enumerate(levels)
            ]
            if lower is not None and upper is not None
            else [],
        }
        for step, (day, close) in enumerate(zip(target_dates, closes, strict=True))
    ]
    latency_ms = (time.perf_counter() - started) * 1000.0
    rows: list[dict[str, Any]] = [
        {
            "request_id": request_id,
            "user_id": user_id,
            "ticker": model.ticker,
            "input_source": input_source,
            "as_of_date": as_of_date,
            "target_date": point["target_date"],
            "horizon_step": step,
            "predicted_close": point["predicted_close"],
            "last_close": last_close,
            "model_name": model.name,
            "model_version": model.version,
            "latency_ms": latency_ms,
            "lower_80": None,
            "upper_80": None,
            "lower_95": None,
            "upper_95": None,
        }
        for step, point in enumerate(points, start=1)
    ]
    if lower is not None and upper is not None:
        for lower_column, upper_column, row in parts.logged_levels:
            for step, values in enumerate(rows):
                values[lower_column] = lower[row][step]
                values[upper_column] = upper[row][step]
    response = PredictionResponse.model_validate(
        {
            "prediction_id": request_id,
            "ticker": model.ticker,
            "as_of_date": as_of_date,
            "last_close": last_close,
            "currency": listing_currency(model.ticker) or currency or model.metadata.currency,
            "horizon": horizon,
            "input_source": input_source,
            "predictions": points,
            "model": parts.info,
            "drift": health.drift,
            "stale": health.stale,
        }
    )
    await log_writer.write(rows)
    parts.served.inc()
    parts.points.inc(horizon)
    return response


class PredictionService:
    """The prediction use cases of one running app, with the per-worker objects they use.

    Built once in the app's lifespan and kept in ``app.state.prediction_service``, where the
    routes find it (:mod:`app.features.stock_prediction.dependencies`) and tests replace it.

    Args:
        predictor: the served champions.
        windows: the worker's lookback windows (``APP_BARS_CACHE_SECONDS``).
        log_writer: commits the prediction_log rows (group commit) before a use case returns.
        session_factory: the app's sessions (drift and staleness).
        settings: the app's settings (``APP_MAX_HORIZON``, drift and staleness).

    The drift and staleness of each response come from :attr:`health`, a per-worker cache
    by model version (:class:`~app.features.model_health.service.HealthMonitor`).
    """

    __slots__ = ("health", "log_writer", "predictor", "session_factory", "settings", "windows")

    def __init__(
        self,
        *,
        predictor: Predictor,
        windows: WindowStore,
        log_writer: PredictionLogWriter,
        session_factory: sessionmaker[Session],
        settings: AppSettings,
    ) -> None:
        self.predictor = predictor
        self.windows = windows
        self.log_writer = log_writer
        self.session_factory = session_factory
        self.settings = settings
        self.health = HealthMonitor(session_factory, settings)

    def check_horizon(self, horizon: int) -> int:
        """``horizon`` if it is at most ``APP_MAX_HORIZON`` (the route already checked ``>= 1``).

        Raises:
            InvalidRequestError: above ``APP_MAX_HORIZON`` (422).
        """
        if not 1 <= horizon <= self.settings.max_horizon:
            raise InvalidRequestError(
                f"horizon must be between 1 and {self.settings.max_horizon} trading days, "
                f"got {horizon}"
            )
        return horizon

    def model(self, ticker: str) -> ServedModel:
        """The served champion of ``ticker``.

        Raises:
            ModelNotFoundError: the registry has answered and no champion of it is served (404).
            RegistryUnavailableError: no champion served and the registry has never answered
                (503, ``Retry-After``): the model may well exist.
        """
        try:
            return self.predictor.get(ticker)
        except ModelNotFoundError:
            if self.predictor.registry_reached:
                raise
            why = self.predictor.registry_error or "the first load is in progress"
            raise RegistryUnavailableError(
                f"the model registry has not answered yet ({why}); retry in a few seconds"
            ) from None

    async def predict_from_store(
        self, *, ticker: str, horizon: int, user_id: int | None
    ) -> PredictionResponse:
        """Forecast ``horizon`` closes from the last ``lookback`` stored bars, log and commit.

        Args:
            ticker: normalized ticker.
            horizon: trading days to predict, ``1..APP_MAX_HORIZON``.
            user_id: the requesting user.

        Raises:
            InvalidRequestError: ``horizon`` above ``APP_MAX_HORIZON`` (422).
            ModelNotFoundError: no champion served for the ticker (404).
            RegistryUnavailableError: the registry has never answered (503).
            BarsNotFoundError: fewer stored bars than the model's lookback (404).
            sqlalchemy.exc.OperationalError: the database is unavailable, on a read of bars or
                at the commit of the rows (503); nothing logged.
        """
        started = time.perf_counter()
        self.check_horizon(horizon)
        model = self.model(ticker)
        window = await self.windows.get(ticker=ticker, n=model.lookback)
        bars = window.bars
        if len(bars) < model.lookback:
            raise BarsNotFoundError(ticker, found=len(bars), needed=model.lookback)
        forecast = window.forecast(model, horizon)
        return await _respond(
            log_writer=self.log_writer,
            model=model,
            forecast=forecast,
            as_of_date=bars.dates[-1],
            last_close=float(bars.close[-1]),
            currency=bars.currency,
            user_id=user_id,
            input_source="store",
            started=started,
            health=await self.health.get(model),
        )

    async def predict_from_closes(
        self,
        *,
        ticker: str,
        closes: Sequence[float],
        as_of_date: dt.date | None,
        horizon: int,
        user_id: int | None,
    ) -> PredictionResponse:
        """Forecast ``horizon`` closes from client-supplied closes, log and commit.

        Args:
            closes: exactly ``lookback`` finite, positive closes, oldest first, listing
                currency.
            as_of_date: date of the last close (default: today, UTC).
            (other arguments as in :meth:`predict_from_store`)

        Raises:
            ModelNotFoundError: no champion served for the ticker (404).
            InvalidRequestError: ``horizon`` above ``APP_MAX_HORIZON``, the model needs OHLC
                features, or ``closes`` is not exactly ``lookback`` finite positive values
                (422, stating the expected length).
        """
        started = time.perf_counter()
        self.check_horizon(horizon)
        model = self.model(ticker)
        if not model.close_only:
            raise InvalidRequestError(
                f"the model of {ticker} uses features {list(model.metadata.features)}, which "
                "need open/high/low as well as closes; POST accepts closes only for close-only "
                f"models. Use GET /predict/{ticker}, which reads full bars from the price store"
            )
        expected = (
            f"closes must hold exactly {model.lookback} finite, positive prices up to "
            f"{MAX_CLOSE:g} (the lookback of {model.name} v{model.version}), oldest first"
        )
        if len(closes) != model.lookback:
            raise InvalidRequestError(f"{expected}; got {len(closes)}")
        values = np.asarray(closes, dtype=np.float64)
        bad = [i for i, v in enumerate(values) if not (math.isfinite(v) and 0 < v <= MAX_CLOSE)]
        if bad:
            raise InvalidRequestError(f"{expected}; values at positions {bad[:10]} are not")
        forecast = finite_forecast(model, {"close": values}, horizon)
        return await _respond(
            log_writer=self.log_writer,
            model=model,
            forecast=forecast,
            as_of_date=as_of_date or dt.datetime.now(dt.UTC).date(),
            last_close=float(values[-1]),
            currency=None,
            user_id=user_id,
            input_source="client",
            started=started,
            health=await self.health.get(model),
        )
