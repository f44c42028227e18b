"""The worker's lookback windows (WindowStore) on a real Postgres: every window held is
revalidated by ONE statement per APP_BARS_CACHE_SECONDS, an unchanged window is kept (with its
forecasts), a changed one is replaced, 0 reads every time, and an outage spoils nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.exc import InterfaceError, OperationalError

from app.features.stock_prediction.windows import WindowStore
from common.db import create_db_engine, make_session_factory
from data_pipeline.storage.upsert import upsert_bars

pytestmark = [pytest.mark.postgres]

TTL = 30.0
N = 10
TICKERS = ("AAA3.SA", "BBB3.SA", "CCC3.SA")
DAYS = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(N + 5)]
T = TypeVar("T")


class FakeClock:
    """A monotonic clock, seconds, that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _bar(day: dt.date, close: float) -> dict[str, Any]:
    return {"date": day, "open": close, "high": close, "low": close, "close": close, "volume": 1}


class Db:
    """A database of its own: its name, its sessions, and the bar reads seen on its engine."""

    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine
        self.sessions = make_session_factory(engine)
        self.reads: list[str] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "price_bar" in statement:
            self.reads.append(statement)

    def store(self, ticker: str, rows: list[dict[str, Any]]) -> None:
        with self.sessions() as session:
            upsert_bars(session, ticker=ticker, rows=rows, source="snapshot")
            session.commit()
        self.reads.clear()

    def reads_during(self, work: Callable[[], T]) -> tuple[T, int]:
        before = len(self.reads)
        result = work()
        return result, len(self.reads) - before


@pytest.fixture
def db(pg_server: Any, pg_template: str) -> Iterator[Db]:
    """A migrated database with N + 1 daily bars of each of TICKERS."""
    name = f"stockcast_test_{uuid.uuid4().hex[:8]}"
    engine = create_db_engine(pg_server.create(name, template=pg_template))
    database = Db(name, engine)
    for k, ticker in enumerate(TICKERS):
        database.store(ticker, [_bar(d, 10.0 * (k + 1) + i) for i, d in enumerate(DAYS[: N + 1])])
    try:
        yield database
    finally:
        engine.dispose()
        pg_server.set_outage(name, down=False)
        pg_server.drop(name)


def get_all(store: WindowStore, tickers: tuple[str, ...] = TICKERS) -> list[Any]:
    """The windows of ``tickers``, asked for concurrently (one event loop)."""

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(store.get(ticker=t, n=N) for t in tickers)))

    return asyncio.run(main())


def test_every_held_window_is_revalidated_by_one_statement_per_ttl(db: Db) -> None:
    """Three windows read on their own cost three reads; after the TTL, concurrent requests
    for all three cost ONE statement in total; unchanged windows are the same objects (their
    forecasts kept), a ticker with a new bar gets a new window ending on it."""
    clock = FakeClock()
    store = WindowStore(db.sessions, ttl_seconds=TTL, timer=clock)
    first, reads = db.reads_during(lambda: get_all(store))
    assert reads == 3
    assert [w.bars.dates[-1] for w in first] == [DAYS[N]] * 3
    first[0].forecasts[("model", "1", 1)] = "kept"

    clock.now += TTL - 0.5
    assert db.reads_during(lambda: get_all(store)) == (first, 0)

    clock.now += 0.5
    again, reads = db.reads_during(lambda: get_all(store) + get_all(store))
    assert reads == 1
    assert all(a is b for a, b in zip(again, first + first, strict=True))
    assert again[0].forecasts == {("model", "1", 1): "kept"}

    db.store(TICKERS[1], [_bar(DAYS[N + 1], 99.0)])
    clock.now += TTL
    after, reads = db.reads_during(lambda: get_all(store))
    assert reads == 1
    assert after[0] is first[0] and after[2] is first[2]
    assert after[1] is not first[1]
    assert after[1].bars.dates[-1] == DAYS[N + 1] and after[1].bars.close[-1] == 99.0
    assert list(after[1].bars.dates) == DAYS[2 : N + 2]
    assert not after[1].bars.close.flags.writeable


def test_a_window_nobody_asked_for_during_a_ttl_is_dropped_not_revalidated(db: Db) -> None:
    """Only the windows asked for since the last revalidation are read again; the others are
    read on their own when next asked for."""
    clock = FakeClock()
    store = WindowStore(db.sessions, ttl_seconds=TTL, timer=clock)
    get_all(store)
    clock.now += TTL
    get_all(store, TICKERS[:1])  # revalidates all three (all asked for since), keeps them
    assert len(store) == 3
    clock.now += TTL
    _, reads = db.reads_during(lambda: get_all(store, TICKERS[:1]))
    assert reads == 1 and len(store) == 1
    _, reads = db.reads_during(lambda: get_all(store, TICKERS[1:2]))
    assert reads == 1 and len(store) == 2


def test_a_ttl_of_zero_reads_every_time(db: Db) -> None:
    """APP_BARS_CACHE_SECONDS=0: each request reads its window, and a new bar is served at once."""
    store = WindowStore(db.sessions, ttl_seconds=0, timer=FakeClock())
    _, reads = db.reads_during(lambda: get_all(store) + get_all(store))
    assert reads == 6 and len(store) == 0
    db.store(TICKERS[0], [_bar(DAYS[N + 1], 77.0)])
    assert get_all(store, TICKERS[:1])[0].bars.close[-1] == 77.0


def test_a_revalidation_during_an_outage_fails_and_the_next_one_works(
    db: Db, pg_server: Any
) -> None:
    """With the database down, the requests that need a revalidation get the database error
    (the app's 503) and nothing held is lost: once it is back, one statement revalidates every
    window and serves the bars committed before the outage."""
    clock = FakeClock()
    store = WindowStore(db.sessions, ttl_seconds=TTL, timer=clock)
    first = get_all(store)
    db.store(TICKERS[2], [_bar(DAYS[N + 1], 55.0)])
    clock.now += TTL
    pg_server.set_outage(db.name, down=True)
    try:
        with pytest.raises((OperationalError, InterfaceError)):
            get_all(store)
        with pytest.raises((OperationalError, InterfaceError)):
            get_all(store, TICKERS[:1])  # the next request tries again
    finally:
        pg_server.set_outage(db.name, down=False)
    assert len(store) == 3
    after, reads = db.reads_during(lambda: get_all(store))
    assert reads == 1
    assert after[0] is first[0] and after[1] is first[1]
    assert after[2].bars.close[-1] == 55.0
