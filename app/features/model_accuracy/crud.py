"""Reads of the ``prediction_outcome`` view (flush-free: nothing here writes)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models.prediction_outcome import prediction_outcome as outcome


@dataclass(frozen=True)
class RealizedForecast:
    """One distinct forecast step of a model version whose target date has its bar.

    Prices in the listing currency; ``covered_*`` is 1/0, or None without bounds.
    """

    model_name: str
    model_version: str
    as_of_date: dt.date
    horizon_step: int
    target_date: dt.date
    predicted_close: float
    last_close: float
    realized_close: float
    covered_80: int | None
    covered_95: int | None


def realized_forecasts(session: Session, *, ticker: str, window: int) -> list[RealizedForecast]:
    """The realized ``store`` forecasts of ``ticker`` on each model version's last ``window``
    realized target dates, each distinct forecast once (a forecast requested many times was
    logged many times), oldest target date first.

    One query: ``SELECT DISTINCT`` over the view, ranked by ``DENSE_RANK() OVER (PARTITION BY
    model_version ORDER BY target_date DESC)``.
    """
    distinct = (
        select(
            outcome.c.model_name,
            outcome.c.model_version,
            outcome.c.as_of_date,
            outcome.c.horizon_step,
            outcome.c.target_date,
            outcome.c.predicted_close,
            outcome.c.last_close,
            outcome.c.realized_close,
            outcome.c.covered_80,
            outcome.c.covered_95,
        )
        .where(
            outcome.c.ticker == ticker,
            outcome.c.input_source == "store",
            outcome.c.realized_close.is_not(None),
        )
        .distinct()
        .subquery()
    )
    ranked = select(
        distinct,
        func.dense_rank()
        .over(partition_by=distinct.c.model_version, order_by=distinct.c.target_date.desc())
        .label("age"),
    ).subquery()
    rows = session.execute(
        select(*[c for c in ranked.c if c.name != "age"])
        .where(ranked.c.age <= window)
        .order_by(ranked.c.target_date, ranked.c.as_of_date, ranked.c.horizon_step)
    ).all()
    return [RealizedForecast(*row) for row in rows]
