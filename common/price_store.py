"""The price store: the ``price_bar`` table, the :class:`Bars` contract and the read functions.

The pipeline writes the table (its upsert lives in :mod:`data_pipeline.storage.upsert`); the
trainer and the API read it through this module only.

One row per (ticker, trading date). Prices are split/dividend adjusted (Yahoo's
``auto_adjust=True``), so ``close`` is the adjusted close, in the listing currency.

Read functions return :class:`Bars`, plain numpy arrays, so that the API can read a
lookback window without pandas; :meth:`Bars.to_frame` gives a DataFrame when wanted.
"""

from __future__ import annotations

import datetime as dt
import itertools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Double,
    Integer,
    String,
    and_,
    bindparam,
    func,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, Session, mapped_column

from common.db import Base

if TYPE_CHECKING:
    import pandas as pd


class PriceBar(Base):
    """A daily OHLCV bar of one ticker."""

    __tablename__ = "price_bar"

    ticker: Mapped[str] = mapped_column(String(20), primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    open: Mapped[float] = mapped_column(Double)
    high: Mapped[float] = mapped_column(Double)
    low: Mapped[float] = mapped_column(Double)
    close: Mapped[float] = mapped_column(Double, comment="adjusted close, listing currency")
    volume: Mapped[int] = mapped_column(BigInteger, comment="shares")
    currency: Mapped[str | None] = mapped_column(String(3))
    exchange: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16), comment="yahoo or snapshot")
    ingested_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


@dataclass(frozen=True)
class Bars:
    """Chronological bars of one ticker as numpy arrays of shape ``(n_bars,)``."""

    ticker: str
    dates: npt.NDArray[np.object_]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.int64]
    currency: str | None = None

    def __len__(self) -> int:
        return len(self.dates)

    def as_mapping(self) -> dict[str, npt.NDArray[Any]]:
        """``{"open": ..., "high": ..., "low": ..., "close": ..., "volume": ...}``."""
        return {
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
        }

    def to_frame(self) -> pd.DataFrame:
        """A DataFrame with columns ``date, open, high, low, close, volume``."""
        import pandas as pd  # noqa: PLC0415 - optional at import time (API path)

        return pd.DataFrame({"date": self.dates, **self.as_mapping()})


def _to_bars(ticker: str, rows: Sequence[Any]) -> Bars:
    # rows: (date, open, high, low, close, volume, currency, ...), oldest first
    columns = list(zip(*rows, strict=True))[:7] or [()] * 7
    dates, opens, highs, lows, closes, volumes, currencies = columns
    return Bars(
        ticker=ticker,
        dates=np.array(dates, dtype=object),
        open=np.array(opens, dtype=np.float64),
        high=np.array(highs, dtype=np.float64),
        low=np.array(lows, dtype=np.float64),
        close=np.array(closes, dtype=np.float64),
        volume=np.array(volumes, dtype=np.int64),
        currency=currencies[-1] if rows else None,
    )


_BAR_COLUMNS = (
    PriceBar.date,
    PriceBar.open,
    PriceBar.high,
    PriceBar.low,
    PriceBar.close,
    PriceBar.volume,
    PriceBar.currency,
)


def read_last_bars(session: Session, *, ticker: str, n: int) -> Bars:
    """The last ``n`` bars of ``ticker`` (fewer if fewer are stored), oldest first.

    One indexed query on the primary key ``(ticker, date)``.
    """
    rows = session.execute(
        select(*_BAR_COLUMNS)
        .where(PriceBar.ticker == ticker)
        .order_by(PriceBar.date.desc())
        .limit(n)
    ).all()
    return _to_bars(ticker, rows[::-1])


def read_last_bars_of_many(
    session: Session, *, windows: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], Bars]:
    """The last ``n`` bars of each ``(ticker, n)`` of ``windows``, oldest first, in ONE statement.

    A ticker with fewer bars stored gets fewer (none: an empty :class:`Bars`). On Postgres,
    a ``LATERAL`` subquery per ticker over ``unnest(tickers, n)``, each a backward scan of the
    primary key ``(ticker, date)`` (for 500 tickers of 30 bars: docs/performance.md, "500
    tickers"); elsewhere (SQLite) ``ROW_NUMBER()`` over each ticker's bars.

    Returns:
        The bars by ``(ticker, n)``, for every window asked.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unavailable.
    """
    wanted = list(windows)
    last: dict[str, int] = {}  # a ticker asked with two lookbacks is read once, the longer
    for ticker, n in wanted:
        last[ticker] = max(n, last.get(ticker, 0))
    if not last:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        asked = (
            func.unnest(
                bindparam("tickers", list(last), type_=ARRAY(String)),
                bindparam("n", list(last.values()), type_=ARRAY(Integer)),
            )
            .table_valued("ticker", "n")
            .render_derived(name="asked")
        )
        bars = (
            select(*_BAR_COLUMNS, PriceBar.ticker)
            .where(PriceBar.ticker == asked.c.ticker)
            .order_by(PriceBar.date.desc())
            .limit(asked.c.n)
            .lateral("bars")
        )
        statement = (
            select(bars).select_from(asked).join(bars, true()).order_by(bars.c.ticker, bars.c.date)
        )
    else:
        newest_first = (
            func.row_number()
            .over(partition_by=PriceBar.ticker, order_by=PriceBar.date.desc())
            .label("rank")
        )
        ranked = (
            select(*_BAR_COLUMNS, PriceBar.ticker, newest_first)
            .where(PriceBar.ticker.in_(list(last)))
            .subquery()
        )
        statement = (
            select(ranked)
            .where(ranked.c.rank <= max(last.values()))
            .order_by(ranked.c.ticker, ranked.c.date)
        )
    # Core, not ORM rows, and columns transposed at once: 15,000 rows in tens of ms
    rows = session.connection().execute(statement).all()
    by_ticker: dict[str, list[Any]] = {ticker: [] for ticker in last}
    for ticker, found in itertools.groupby(rows, key=operator.itemgetter(7)):
        by_ticker[ticker] = list(found)
    return {(ticker, n): _to_bars(ticker, by_ticker[ticker][-n:]) for ticker, n in wanted}


def read_bars(
    session: Session,
    *,
    ticker: str,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> Bars:
    """Bars of ``ticker`` with ``start <= date <= end`` (either bound optional), oldest first."""
    conditions = [PriceBar.ticker == ticker]
    if start is not None:
        conditions.append(PriceBar.date >= start)
    if end is not None:
        conditions.append(PriceBar.date <= end)
    rows = session.execute(
        select(*_BAR_COLUMNS).where(and_(*conditions)).order_by(PriceBar.date)
    ).all()
    return _to_bars(ticker, rows)


def last_bar_date(session: Session, *, ticker: str) -> dt.date | None:
    """Date of the newest stored bar of ``ticker``, or None when it has none."""
    return session.scalar(select(func.max(PriceBar.date)).where(PriceBar.ticker == ticker))


def count_bars_after(session: Session, *, ticker: str, after: dt.date) -> int:
    """How many bars of ``ticker`` are stored with ``date > after`` (a model's staleness)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(PriceBar)
            .where(PriceBar.ticker == ticker, PriceBar.date > after)
        )
        or 0
    )


@dataclass(frozen=True)
class TickerCoverage:
    """What the store holds for one ticker."""

    ticker: str
    first_date: dt.date
    last_date: dt.date
    n_bars: int


def list_tickers(session: Session) -> list[TickerCoverage]:
    """Every stored ticker with its first and last bar date and bar count, by ticker."""
    rows = session.execute(
        select(PriceBar.ticker, func.min(PriceBar.date), func.max(PriceBar.date), func.count())
        .group_by(PriceBar.ticker)
        .order_by(PriceBar.ticker)
    ).all()
    return [TickerCoverage(t, first, last, int(n)) for t, first, last, n in rows]
