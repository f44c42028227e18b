"""The pipeline's write side of the price store: the idempotent bulk upsert of ``price_bar``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from common.price_store import PriceBar

_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "currency", "exchange")


@dataclass(frozen=True)
class UpsertResult:
    """Row counts of one upsert: new rows, changed rows, and rows already identical."""

    inserted: int
    updated: int
    unchanged: int


def _insert_for(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"upsert is implemented for postgresql and sqlite, not {dialect}")


def upsert_bars(
    session: Session,
    *,
    ticker: str,
    rows: Iterable[Mapping[str, Any]],
    source: str,
    currency: str | None = None,
    exchange: str | None = None,
) -> UpsertResult:
    """Insert new bars and update revised ones, in bulk; identical bars are left alone.

    Two statements whatever the number of rows: one ``SELECT`` of the bars already stored in
    the rows' date range (to tell new, revised and identical bars apart), then one
    ``INSERT ... ON CONFLICT (ticker, date) DO UPDATE ... WHERE <a value differs>`` executed
    for the new and revised bars only (the driver's batched ``executemany``). Running the same
    upsert twice therefore writes nothing, and ``ingested_at`` of identical rows keeps its
    value. Flushes, never commits.

    Args:
        session: an open session; the caller owns the transaction.
        ticker: normalized ticker.
        rows: mappings with ``date`` (:class:`datetime.date`), ``open``, ``high``, ``low``,
            ``close`` (listing currency) and ``volume`` (shares).
        source: where the bars came from (``yahoo``, ``snapshot``).
        currency: ISO 4217 code, when known.
        exchange: exchange name, when known.

    Returns:
        :class:`UpsertResult` with the number of inserted, updated and unchanged rows.
    """
    records = [
        {
            "ticker": ticker,
            "date": r["date"],
            "open": float(r["open"]),
            "high": float(r["high"]),
            "low": float(r["low"]),
            "close": float(r["close"]),
            "volume": int(r["volume"]),
            "currency": currency,
            "exchange": exchange,
            "source": source,
        }
        for r in rows
    ]
    if not records:
        return UpsertResult(0, 0, 0)
    first = min(r["date"] for r in records)
    last = max(r["date"] for r in records)
    table = PriceBar.__table__
    stored = {
        row[0]: tuple(row[1:])
        for row in session.execute(
            select(table.c.date, *(table.c[c] for c in _VALUE_COLUMNS)).where(
                table.c.ticker == ticker, table.c.date.between(first, last)
            )
        )
    }
    new = [r for r in records if r["date"] not in stored]
    revised = [
        r
        for r in records
        if r["date"] in stored and tuple(r[c] for c in _VALUE_COLUMNS) != stored[r["date"]]
    ]
    if new or revised:
        stmt = _insert_for(session)(table)
        changed = or_(*(table.c[c].is_distinct_from(stmt.excluded[c]) for c in _VALUE_COLUMNS))
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.ticker, table.c.date],
            set_={
                **{c: stmt.excluded[c] for c in (*_VALUE_COLUMNS, "source")},
                "ingested_at": func.now(),
            },
            where=changed,
        )
        session.execute(stmt, new + revised)
        session.flush()
    return UpsertResult(len(new), len(revised), len(records) - len(new) - len(revised))
