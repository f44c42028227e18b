"""The Yahoo source with Yahoo's HTTP simulated at the yfinance boundary (``Ticker.history``).

Everything around that call is real: our retry/backoff, the classification of errors,
validation, the transaction per ticker and the Postgres store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yfinance
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from yfinance.exceptions import YFRateLimitError

from common.price_store import PriceBar
from data_pipeline.run_pipeline import run_ingest
from data_pipeline.sources.snapshot import SnapshotSource
from data_pipeline.sources.yfinance_collector import YFinanceCollector


def _yahoo_frame(prices_dir: Path, ticker: str, start: str | None = None) -> pd.DataFrame:
    """A frame shaped like ``Ticker.history(auto_adjust=True)``: tz-aware index, capitalized."""
    csv = pd.read_csv(prices_dir / f"{ticker}.csv")
    if start:
        csv = csv[csv["Date"] >= start]
    index = pd.DatetimeIndex(pd.to_datetime(csv["Date"]), name="Date").tz_localize(
        "America/New_York"
    )
    return pd.DataFrame(
        {c: csv[c].to_numpy() for c in ("Open", "High", "Low", "Close", "Volume")}, index=index
    )


class FakeYahoo:
    """Scripted answers of ``yfinance.Ticker.history`` per ticker, and a log of calls."""

    def __init__(self, answers: dict[str, list[object]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, object]]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = self

        def history(self: yfinance.Ticker, **kwargs: object) -> pd.DataFrame:
            fake.calls.append((self.ticker, kwargs))
            answer = fake.answers[self.ticker].pop(0)
            if isinstance(answer, Exception):
                raise answer
            assert isinstance(answer, pd.DataFrame)
            return answer

        monkeypatch.setattr(yfinance.Ticker, "history", history)
        monkeypatch.setattr(
            yfinance.Ticker,
            "get_history_metadata",
            lambda self, **_: {"currency": "USD", "exchangeName": "NMS"},
        )


def _collector(tmp_path: Path, attempts: int = 3) -> YFinanceCollector:
    return YFinanceCollector(
        cache_dir=tmp_path / "yf-cache",
        max_attempts=attempts,
        backoff_initial=0.01,
        backoff_max=0.02,
    )


def _count(factory: Callable[[], Session], ticker: str) -> int:
    with factory() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(PriceBar).where(PriceBar.ticker == ticker)
            )
            or 0
        )


@pytest.mark.postgres
def test_rate_limited_then_served_is_retried_and_stored(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prices_dir: Path,
    pg_session_factory: Callable[[], Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The user sees 'attempt 1/3 failed (... rate limit ...); retrying' and then the bars."""
    frame = _yahoo_frame(prices_dir, "AAPL", start="2023-01-01")
    fake = FakeYahoo({"AAPL": [YFRateLimitError(), YFRateLimitError(), frame]})
    fake.install(monkeypatch)
    summary = run_ingest(
        session_factory=pg_session_factory,
        tickers=["AAPL"],
        source="yahoo",
        sources={"yahoo": _collector(tmp_path)},
    )
    report = summary.tickers[0]
    assert report.ok and report.source == "yahoo"
    assert report.inserted == len(frame) == _count(pg_session_factory, "AAPL")
    assert len(fake.calls) == 3
    assert fake.calls[0][1]["auto_adjust"] is True and fake.calls[0][1]["period"] == "max"
    assert "attempt 1/3 failed" in caplog.text and "rate limit" in caplog.text.lower()
    with pg_session_factory() as session:
        stored = session.get(PriceBar, ("AAPL", dt.date(2023, 12, 29)))
        assert stored is not None
        assert (stored.currency, stored.exchange) == ("USD", "NASDAQ")


@pytest.mark.postgres
def test_rate_limited_forever_is_reported_and_nothing_stored_others_continue(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prices_dir: Path,
    pg_session_factory: Callable[[], Session],
) -> None:
    """After the last try the summary says 'rate limit ... gave up after 3 tries'."""
    fake = FakeYahoo(
        {
            "MSFT": [YFRateLimitError()] * 3,
            "SPY": [_yahoo_frame(prices_dir, "SPY", start="2023-06-01")],
        }
    )
    fake.install(monkeypatch)
    summary = run_ingest(
        session_factory=pg_session_factory,
        tickers=["MSFT", "SPY"],
        source="yahoo",
        sources={"yahoo": _collector(tmp_path)},
    )
    msft, spy = summary.tickers
    assert not summary.ok
    assert not msft.ok and "rate limit" in (msft.error or "").lower()
    assert "gave up after 3 tries" in (msft.error or "")
    assert _count(pg_session_factory, "MSFT") == 0
    assert spy.ok and spy.inserted > 100


@pytest.mark.postgres
def test_empty_answer_is_a_failure_not_no_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pg_session_factory: Callable[[], Session]
) -> None:
    """An empty frame is retried, then reported as 'Yahoo returned an empty frame'."""
    fake = FakeYahoo({"ZZZZ": [pd.DataFrame()] * 2})
    fake.install(monkeypatch)
    summary = run_ingest(
        session_factory=pg_session_factory,
        tickers=["ZZZZ"],
        source="yahoo",
        sources={"yahoo": _collector(tmp_path, attempts=2)},
    )
    assert not summary.ok
    assert "empty frame" in (summary.tickers[0].error or "")
    assert len(fake.calls) == 2
    assert _count(pg_session_factory, "ZZZZ") == 0


@pytest.mark.postgres
def test_incremental_fetch_starts_overlap_days_before_last_bar(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prices_dir: Path,
    pg_session_factory: Callable[[], Session],
) -> None:
    """A revised bar inside the overlap is picked up and counted as updated."""
    old = _yahoo_frame(prices_dir, "MSFT", start="2023-11-01")
    revised = old[old.index >= "2023-12-19"].copy()
    revised.loc[revised.index[-1], "Close"] = revised["Close"].iloc[-1] + 0.01
    revised.loc[revised.index[-1], "High"] = max(
        revised["High"].iloc[-1], revised["Close"].iloc[-1]
    )
    fake = FakeYahoo({"MSFT": [old, revised]})
    fake.install(monkeypatch)
    kwargs = dict(
        session_factory=pg_session_factory,
        tickers=["MSFT"],
        source="yahoo",
        sources={"yahoo": _collector(tmp_path)},
        overlap_days=10,
    )
    run_ingest(**kwargs)  # type: ignore[arg-type]
    second = run_ingest(**kwargs).tickers[0]  # type: ignore[arg-type]
    assert fake.calls[1][1]["start"] == "2023-12-19"  # 2023-12-29 minus 10 days
    assert (second.inserted, second.updated) == (0, 1)


@pytest.mark.postgres
def test_auto_falls_back_to_snapshot_when_yahoo_is_unreachable(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    prices_dir: Path,
    pg_session_factory: Callable[[], Session],
) -> None:
    """No network: the summary says source=snapshot for every ticker, and all are stored."""
    unreachable = ConnectionError("curl: (6) Could not resolve host: query2.finance.yahoo.com")
    fake = FakeYahoo({"PETR4.SA": [unreachable]})
    fake.install(monkeypatch)
    summary = run_ingest(
        session_factory=pg_session_factory,
        tickers=["PETR4.SA", "VALE3.SA"],
        source="auto",
        sources={"yahoo": _collector(tmp_path, attempts=1), "snapshot": SnapshotSource(prices_dir)},
    )
    assert summary.ok
    assert [t.source for t in summary.tickers] == ["snapshot", "snapshot"]
    assert len(fake.calls) == 1  # Yahoo is not asked again once it proved unreachable
    assert _count(pg_session_factory, "VALE3.SA") > 3000
