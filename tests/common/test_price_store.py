"""The price store's read functions on the real Postgres."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from common import price_store
from data_pipeline.run_pipeline import run_ingest
from data_pipeline.sources.snapshot import SnapshotSource


@pytest.mark.postgres
def test_read_functions_return_chronological_bars(
    pg_session_factory: Callable[[], Session], prices_dir: Path
) -> None:
    run_ingest(
        session_factory=pg_session_factory,
        tickers=["PETR4.SA"],
        source="snapshot",
        sources={"snapshot": SnapshotSource(prices_dir)},
    )
    with pg_session_factory() as session:
        last = price_store.read_last_bars(session, ticker="PETR4.SA", n=60)
        assert len(last) == 60
        assert list(last.dates) == sorted(last.dates)
        assert last.dates[-1] == dt.date(2023, 12, 28)
        assert last.currency == "BRL"
        window = price_store.read_bars(
            session, ticker="PETR4.SA", start=dt.date(2023, 1, 1), end=dt.date(2023, 1, 31)
        )
        assert all(dt.date(2023, 1, 1) <= d <= dt.date(2023, 1, 31) for d in window.dates)
        assert len(window) > 15
        assert price_store.last_bar_date(session, ticker="PETR4.SA") == dt.date(2023, 12, 28)
        assert price_store.last_bar_date(session, ticker="NOPE") is None
        coverage = price_store.list_tickers(session)
        assert [(c.ticker, c.last_date) for c in coverage] == [("PETR4.SA", dt.date(2023, 12, 28))]
        frame = last.to_frame()
        assert list(frame.columns) == ["date", "open", "high", "low", "close", "volume"]
