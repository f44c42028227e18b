"""Statements on ``prediction_log`` (flush, never commit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from app.models.prediction_log import PredictionLog

#: ``INSERT INTO prediction_log``, a Core statement: compiled once per process and cached.
_INSERT = insert(cast(Table, PredictionLog.__table__))


async def insert_predictions(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows (of one or several responses) as one executemany of a cached statement.

    A Core ``INSERT`` on a plain connection: the ORM's bulk insert through a session cost
    twice the CPU for the same rows (0.89 against 0.45 ms for three rows, including the
    session's pool checkout; docs/performance.md), and ``insert().values(rows)``, whose SQL
    depends on the number of rows, was compiled anew on every call (a fifth of a worker's
    CPU at horizon 30). psycopg sends the executemany as one pipeline.

    Args:
        connection: the group-commit writer's connection (on the event loop); the caller
            commits.
        rows: column values of :class:`PredictionLog` (one per target date).
    """
    if rows:
        await connection.execute(_INSERT, list(rows))


def recent(session: Session, *, limit: int = 10, ticker: str | None = None) -> list[PredictionLog]:
    """The newest ``limit`` rows (optionally of one ticker), newest first."""
    stmt = select(PredictionLog).order_by(PredictionLog.created_at.desc(), PredictionLog.id.desc())
    if ticker is not None:
        stmt = stmt.where(PredictionLog.ticker == ticker)
    return list(session.scalars(stmt.limit(limit)))
