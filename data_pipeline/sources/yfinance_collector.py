"""Bars from Yahoo Finance through yfinance.

One ``Ticker.history()`` call per ticker, with ``auto_adjust=True`` (OHLC split/dividend
adjusted, so ``Close`` is the adjusted close) and yfinance's exception hiding turned off.
Rate limiting and transient network errors are retried with exponential backoff and jitter
(tenacity); an empty answer is retried too and then reported as a failure, never as "no data".
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity import Retrying as _Retrying

from data_pipeline.sources.base import (
    EmptyResponseError,
    RateLimitedError,
    RawBars,
    SourceError,
    SourceUnavailableError,
)

logger = logging.getLogger(__name__)

_RETRYABLE = (RateLimitedError, EmptyResponseError, ConnectionError, TimeoutError)


def _is_unreachable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        marker in text
        for marker in (
            "could not resolve host",
            "name or service not known",
            "resolve",
            "network is unreachable",
        )
    )


def _classify(exc: Exception, ticker: str) -> Exception:
    """Map yfinance/HTTP exceptions onto our source errors."""
    import yfinance.exceptions as yfe  # noqa: PLC0415 - yfinance is slow to import

    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, yfe.YFRateLimitError):
        return RateLimitedError(f"{ticker}: Yahoo rate limit: {exc}")
    if isinstance(exc, (yfe.YFPricesMissingError, yfe.YFTickerMissingError, yfe.YFTzMissingError)):
        return EmptyResponseError(f"{ticker}: Yahoo returned no prices: {exc}")
    if _is_unreachable(exc):
        return SourceUnavailableError(f"Yahoo Finance unreachable: {exc}")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return exc
    return SourceError(f"{ticker}: {type(exc).__name__}: {exc}")


class YFinanceCollector:
    """Fetches daily bars from Yahoo Finance.

    Args:
        cache_dir: writable folder for yfinance's timezone/cookie cache.
        max_attempts: tries per ticker for retryable errors (rate limit, empty, network).
        backoff_initial: first backoff in seconds; doubles each try, plus up to 1 s jitter.
        backoff_max: cap of one backoff, seconds.
        timeout: HTTP timeout of one request, seconds.
    """

    name = "yahoo"

    def __init__(
        self,
        *,
        cache_dir: Path,
        max_attempts: int = 4,
        backoff_initial: float = 2.0,
        backoff_max: float = 60.0,
        timeout: float = 20.0,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.timeout = timeout
        self._configured = False

    def _configure(self) -> None:
        if self._configured:
            return
        import yfinance as yf  # noqa: PLC0415

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        yf.set_tz_cache_location(str(self.cache_dir))
        yf.config.debug.hide_exceptions = False
        yf.config.network.retries = 0  # retries are ours (tenacity), with backoff and logging
        self._configured = True

    def _history(self, ticker: str, start: dt.date | None) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The single yfinance call. Tests replace this at the HTTP boundary."""
        import yfinance as yf  # noqa: PLC0415

        t = yf.Ticker(ticker)
        kwargs: dict[str, Any] = {"interval": "1d", "auto_adjust": True, "actions": False}
        if start is None:
            kwargs["period"] = "max"
        else:
            kwargs["start"] = start.isoformat()
        frame = t.history(timeout=self.timeout, **kwargs)
        try:
            meta = dict(t.get_history_metadata() or {})
        except Exception:
            meta = {}
        return frame, meta

    def _fetch_once(self, ticker: str, start: dt.date | None) -> RawBars:
        try:
            frame, meta = self._history(ticker, start)
        except Exception as exc:
            raise _classify(exc, ticker) from exc
        if frame is None or frame.empty:
            raise EmptyResponseError(f"{ticker}: Yahoo returned an empty frame")
        frame = frame.reset_index()
        frame = frame.rename(columns={frame.columns[0]: "date"}).rename(columns=str.lower)
        frame["date"] = pd.to_datetime(frame["date"]).dt.tz_localize(None).dt.normalize()
        return RawBars(
            ticker=ticker,
            frame=frame[["date", "open", "high", "low", "close", "volume"]],
            source=self.name,
            currency=meta.get("currency"),
            exchange=meta.get("exchangeName"),
        )

    def fetch(self, ticker: str, *, start: dt.date | None) -> RawBars:
        """Bars of ``ticker`` from ``start`` (all history when None).

        Raises:
            RateLimitedError: still rate limited after ``max_attempts`` tries.
            EmptyResponseError: still no bars after ``max_attempts`` tries.
            SourceUnavailableError: Yahoo cannot be reached at all (not retried).
            SourceError: any other failure.
        """
        self._configure()

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "%s: attempt %d/%d failed (%s); retrying in %.1f s",
                ticker,
                state.attempt_number,
                self.max_attempts,
                exc,
                wait,
            )

        retrying = _Retrying(
            retry=retry_if_exception_type(_RETRYABLE),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential_jitter(multiplier=self.backoff_initial, max=self.backoff_max),
            before_sleep=log_retry,
            sleep=time.sleep,
            reraise=True,
        )
        try:
            return retrying(self._fetch_once, ticker, start)
        except (ConnectionError, TimeoutError, OSError) as exc:
            raise SourceError(
                f"{ticker}: network error after {self.max_attempts} tries: {exc}"
            ) from exc
        except (RateLimitedError, EmptyResponseError) as exc:
            raise type(exc)(f"{exc} (gave up after {self.max_attempts} tries)") from exc
