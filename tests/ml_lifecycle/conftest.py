"""Fixtures of the ML-lifecycle tests: real bars in the real Postgres, a real MLflow store.

One module-scoped price store (PETR4.SA from the real CSVs, plus ``TINY.SA`` with too few
bars) lives in a transaction rolled back at the end; the tiny trained champion is shared by
the tests of a module so the whole folder stays within a few minutes on two cores.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from common.price_store import Bars, read_bars
from data_pipeline.run_pipeline import ingest_ticker
from data_pipeline.sources.snapshot import SnapshotSource
from data_pipeline.storage.upsert import upsert_bars
from ml_lifecycle.config import TrainConfig, load_config

TICKER = "PETR4.SA"
#: Stored with only :data:`TINY_BARS` bars: fewer than the lookback plus the split minimums.
TINY_TICKER = "TINY.SA"
TINY_BARS = 40


def tiny_config(**overrides: Any) -> TrainConfig:
    """A model that trains in seconds: lookback 20, 8 units, 2 epochs, fit windows of at most
    600 bars, 2 walk-forward folds of 30 bars, intervals calibrated for 5 steps."""
    values: dict[str, Any] = {
        "lookback": 20,
        "units": 8,
        "epochs": 2,
        "patience": 2,
        "history_bars": 600,
        "batch_size": 64,
        "folds": 2,
        "fold_bars": 30,
        "interval_steps": 5,
    }
    values.update(overrides)
    return load_config(**values)


def store_bars(session: Session, prices_dir: Path) -> None:
    """Ingest PETR4.SA from the real CSV, and TINY.SA as its first :data:`TINY_BARS` bars."""
    ingest_ticker(session, ticker=TICKER, source=SnapshotSource(prices_dir), start=None)
    petr = read_bars(session, ticker=TICKER)
    rows = [
        {"date": d, "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for d, o, h, lo, c, v in itertools.islice(
            zip(petr.dates, petr.open, petr.high, petr.low, petr.close, petr.volume, strict=True),
            TINY_BARS,
        )
    ]
    upsert_bars(session, ticker=TINY_TICKER, rows=rows, source="snapshot", currency="BRL")


@pytest.fixture(scope="module")
def ml_session_factory(pg_engine: Engine, prices_dir: Path) -> Iterator[Callable[[], Session]]:
    """Sessions on a price store holding PETR4.SA and TINY.SA, rolled back after the module."""
    with pg_engine.connect() as conn:
        trans = conn.begin()

        def factory() -> Session:
            return Session(
                bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
            )

        with factory() as session:
            store_bars(session, prices_dir)
            session.commit()
        yield factory
        trans.rollback()


@pytest.fixture(scope="module")
def petr_bars(ml_session_factory: Callable[[], Session]) -> Bars:
    """Every stored PETR4.SA bar, oldest first."""
    with ml_session_factory() as session:
        return read_bars(session, ticker=TICKER)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh embedded MLflow store (SQLite + artifact folder) for the module."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
