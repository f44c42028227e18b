"""The pipeline's upsert of the price store on Postgres and SQLite: idempotent and bulk."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from common.db import create_db_engine, make_session_factory
from common.price_store import PriceBar
from common.tickers import SNAPSHOT_TICKERS
from data_pipeline.processing.validation import clean_bars
from data_pipeline.run_pipeline import run_ingest
from data_pipeline.sources.snapshot import SnapshotSource
from data_pipeline.storage.upsert import upsert_bars


def _expected_valid_bars(prices_dir: Path) -> dict[str, int]:
    source = SnapshotSource(prices_dir)
    out = {}
    for t in SNAPSHOT_TICKERS:
        raw = source.fetch(t, start=None)
        out[t] = len(clean_bars(raw.frame, ticker=t).bars)
    return out


def _ingest_all(factory: Callable[[], Session], prices_dir: Path):
    return run_ingest(
        session_factory=factory,
        tickers=SNAPSHOT_TICKERS,
        source="snapshot",
        sources={"snapshot": SnapshotSource(prices_dir)},
        start=dt.date(1990, 1, 1),  # a full re-read, not incremental
    )


def _assert_ingest_twice(factory: Callable[[], Session], prices_dir: Path) -> None:
    expected = _expected_valid_bars(prices_dir)
    first = _ingest_all(factory, prices_dir)
    assert first.ok
    assert {t.ticker: t.inserted for t in first.tickers} == expected
    with factory() as session:
        counts = dict(
            session.execute(select(PriceBar.ticker, func.count()).group_by(PriceBar.ticker)).all()
        )
    assert counts == expected

    second = _ingest_all(factory, prices_dir)
    assert second.ok
    assert [(t.inserted, t.updated) for t in second.tickers] == [(0, 0)] * len(SNAPSHOT_TICKERS)
    assert [t.unchanged for t in second.tickers] == [expected[t] for t in SNAPSHOT_TICKERS]


@pytest.mark.postgres
def test_seven_tickers_stored_then_second_run_changes_nothing_postgres(
    pg_session_factory: Callable[[], Session], prices_dir: Path
) -> None:
    _assert_ingest_twice(pg_session_factory, prices_dir)


def test_seven_tickers_stored_then_second_run_changes_nothing_sqlite(
    sqlite_url: str, prices_dir: Path
) -> None:
    engine = create_db_engine(sqlite_url)
    try:
        _assert_ingest_twice(make_session_factory(engine), prices_dir)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_revised_bar_updates_its_row(pg_session: Session) -> None:
    day = dt.date(2023, 1, 2)
    row = {"date": day, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 100}
    first = upsert_bars(pg_session, ticker="REV", rows=[row], source="snapshot")
    assert (first.inserted, first.updated) == (1, 0)
    revised = dict(row, close=10.7, volume=120)
    second = upsert_bars(pg_session, ticker="REV", rows=[revised], source="yahoo")
    assert (second.inserted, second.updated, second.unchanged) == (0, 1, 0)
    stored = pg_session.get(PriceBar, ("REV", day))
    assert stored is not None
    pg_session.refresh(stored)
    assert (stored.close, stored.volume, stored.source) == (10.7, 120, "yahoo")


@pytest.mark.postgres
def test_unchanged_bar_keeps_its_ingested_at(pg_session: Session) -> None:
    day = dt.date(2023, 1, 2)
    row = {"date": day, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 100}
    upsert_bars(pg_session, ticker="KEEP", rows=[row], source="snapshot")
    pg_session.execute(
        update(PriceBar)
        .where(PriceBar.ticker == "KEEP")
        .values(ingested_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    )
    again = upsert_bars(pg_session, ticker="KEEP", rows=[row], source="snapshot")
    assert again.unchanged == 1
    stamp = pg_session.scalar(select(PriceBar.ingested_at).where(PriceBar.ticker == "KEEP"))
    assert stamp == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
