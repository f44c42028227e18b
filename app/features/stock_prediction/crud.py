"""Statements on ``prediction_log`` (flush, never commit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.models.prediction_log import PredictionLog


def insert_predictions(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the rows of one response with a single multi-row ``INSERT ... VALUES``.

    Args:
        session: the request's session; the service commits.
        rows: column values of :class:`PredictionLog` (one per target date).
    """
    if rows:
        session.execute(insert(PredictionLog).values(list(rows)))
        session.flush()


def recent(session: Session, *, limit: int = 10, ticker: str | None = None) -> list[PredictionLog]:
    """The newest ``limit`` rows (optionally of one ticker), newest first."""
    stmt = select(PredictionLog).order_by(PredictionLog.created_at.desc(), PredictionLog.id.desc())
    if ticker is not None:
        stmt = stmt.where(PredictionLog.ticker == ticker)
    return list(session.scalars(stmt.limit(limit)))
