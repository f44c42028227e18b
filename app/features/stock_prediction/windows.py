"""The lookback windows a worker serves from, and the forecasts made from each.

A worker holds the last ``lookback`` bars of every ticker asked for
(:class:`WindowStore`) and revalidates all of them in ONE query every
``APP_BARS_CACHE_SECONDS``, instead of re-reading each ticker's window on its own: with 500
served tickers that was 500 sessions, pool pre-pings and queries per TTL and worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.core.exceptions import ForecastOverflowError
from app.features.stock_prediction.predictor import Forecast, ServedModel
from common.price_store import Bars, read_last_bars, read_last_bars_of_many

#: A window's key: ``(ticker, lookback)``.
WindowKey = tuple[str, int]


@dataclass(eq=False)
class LookbackWindow:
    """The last ``lookback`` bars of one ticker, and the forecasts already made from them.

    A served model is deterministic (onnxruntime with one intra-op thread): the same model
    version, window and horizon always give the same forecast, so a window keeps each
    forecast it was asked for and every later request on it reuses it. A window whose bars
    are unchanged when the store revalidates it is kept, forecasts and all; a changed one is
    replaced. A reloaded model has another version, so its first request computes its own.

    Attributes:
        bars: the window, oldest first, read-only arrays of shape ``(lookback,)``.
        forecasts: by ``(model name, model version, horizon)``.
    """

    bars: Bars
    forecasts: dict[tuple[str, str, int], Forecast] = field(default_factory=dict)

    def forecast(self, model: ServedModel, horizon: int) -> Forecast:
        """``model``'s forecast of ``horizon`` closes from this window, computed once.

        Raises:
            ValueError: fewer bars than the model's lookback, or ``horizon < 1``.
            ForecastOverflowError: a predicted close overflows (422).
        """
        key = (model.name, model.version, horizon)
        forecast = self.forecasts.get(key)
        if forecast is None:
            forecast = finite_forecast(model, self.bars.as_mapping(), horizon)
            forecast.closes.setflags(write=False)
            forecast.log_returns.setflags(write=False)
            for bounds in (forecast.lower, forecast.upper):
                if bounds is not None:
                    bounds.setflags(write=False)
            self.forecasts[key] = forecast
        return forecast


def finite_forecast(model: ServedModel, bars: Mapping[str, Any], horizon: int) -> Forecast:
    """``model.forecast(bars, horizon)``, refused when a predicted close or an interval bound
    is not a finite number.

    A finite window can still give a forecast beyond float64 (a return that compounds over
    the horizon, or an interval's quantile on top of it); the client gets a clear 422 instead
    of ``null`` numbers, and ``prediction_log`` (which refuses non-finite values) is not asked
    to store them.

    Raises:
        ForecastOverflowError: a predicted close or interval bound overflows (422).
    """
    try:
        forecast = model.forecast(bars, horizon)
    except (OverflowError, FloatingPointError) as exc:
        raise ForecastOverflowError(model.ticker, horizon) from exc
    for values in (forecast.closes, forecast.lower, forecast.upper):
        if values is not None and not np.all(np.isfinite(values)):
            raise ForecastOverflowError(model.ticker, horizon)
    return forecast


def _window(bars: Bars) -> LookbackWindow:
    # read-only: one window's arrays are shared by concurrent requests
    for values in (bars.dates, bars.open, bars.high, bars.low, bars.close, bars.volume):
        values.setflags(write=False)
    return LookbackWindow(bars)


def _same_bars(a: Bars, b: Bars) -> bool:
    pairs = ((getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(Bars))
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in pairs)


class WindowStore:
    """A worker's lookback windows, revalidated together in one query every ``ttl_seconds``.

    :meth:`get` serves a held window as long as the last revalidation started less than
    ``ttl_seconds`` ago. The first request after that starts one revalidation (in the thread
    pool) and every request arriving meanwhile waits for that same one: it re-reads, in one
    statement (:func:`~common.price_store.read_last_bars_of_many`), the last ``n`` bars of
    every ``(ticker, n)`` asked for since the previous one. A window whose bars are unchanged
    keeps its :class:`LookbackWindow` (and the forecasts made from it), a changed one is
    replaced, a window nobody asked for is dropped. A window not held is read on its own.

    Freshness: bars committed are served at most ``ttl_seconds`` after their commit (plus the
    duration of a read that was under way at the commit); a request never gets bars older.
    If a revalidation fails (the database is down), the requests that waited for it get its
    error, the windows are left as they were, and the next request tries again.

    Args:
        session_factory: the app's sessions.
        ttl_seconds: ``APP_BARS_CACHE_SECONDS``; 0 reads every request's window from the
            store and holds nothing.
        timer: the clock, seconds (``time.monotonic``; tests pass a fake one).

    Raises:
        ValueError: ``ttl_seconds < 0``.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        ttl_seconds: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be >= 0, got {ttl_seconds}")
        self.session_factory = session_factory
        self.ttl_seconds = ttl_seconds
        self._timer = timer
        self._held: dict[WindowKey, LookbackWindow] = {}
        self._asked: set[WindowKey] = set()  # since the last revalidation
        self._valid_from = -float("inf")  # when the last revalidation started
        self._revalidation: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._held)

    async def get(self, *, ticker: str, n: int) -> LookbackWindow:
        """The last ``n`` bars of ``ticker``, oldest first (fewer if fewer are stored).

        Only a complete window (``n`` bars) is held; a shorter one is read again next time.
        For the event loop: a held, valid window costs no thread and no query.

        Raises:
            sqlalchemy.exc.OperationalError: the database is unavailable during a read or a
                revalidation (503).
        """
        key = (ticker, n)
        if not self.ttl_seconds:
            return await anyio.to_thread.run_sync(self._read_one, key)
        if self._timer() - self._valid_from >= self.ttl_seconds:
            await self._revalidated()
        window = self._held.get(key)
        if window is None:
            window = await anyio.to_thread.run_sync(self._read_one, key)
            if len(window.bars) >= n:
                self._held[key] = window
        self._asked.add(key)
        return window

    async def _revalidated(self) -> None:
        # single flight: one revalidation at a time, awaited by every request that needs it;
        # shielded, so a request that goes away does not cancel it for the others
        if self._revalidation is None:
            self._revalidation = asyncio.ensure_future(self._revalidate())
        await asyncio.shield(self._revalidation)

    async def _revalidate(self) -> None:
        started = self._timer()
        asked, self._asked = self._asked, set()
        try:
            held = list(self._held)
            wanted = [key for key in held if key in asked]
            fresh = await anyio.to_thread.run_sync(self._read_many, wanted) if wanted else {}
            for key in held:  # windows first read meanwhile are newer: left as they are
                bars = fresh.get(key)
                if bars is None or len(bars) < key[1]:
                    del self._held[key]
                elif not _same_bars(bars, self._held[key].bars):
                    self._held[key] = _window(bars)
            self._valid_from = started
        except BaseException:
            self._asked |= asked
            raise
        finally:
            self._revalidation = None

    def _read_one(self, key: WindowKey) -> LookbackWindow:
        with self.session_factory() as session:
            return _window(read_last_bars(session, ticker=key[0], n=key[1]))

    def _read_many(self, keys: Iterable[WindowKey]) -> dict[WindowKey, Bars]:
        with self.session_factory() as session:
            return read_last_bars_of_many(session, windows=keys)
