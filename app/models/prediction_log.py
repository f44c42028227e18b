"""The ``prediction_log`` table: one row per predicted target date served by the API."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Uuid,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from common.db import Base

#: BIGINT on Postgres; INTEGER on SQLite, where only ``INTEGER PRIMARY KEY`` auto-increments.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class PredictionLog(Base):
    """A predicted close for one target date, with what produced it.

    A request for horizon ``h`` writes ``h`` rows sharing ``request_id`` (the response's
    ``prediction_id``), with ``horizon_step`` 1..h.
    """

    __tablename__ = "prediction_log"
    __table_args__ = (
        Index("ix_prediction_log_ticker_created_at", "ticker", "created_at"),
        Index("ix_prediction_log_ticker_target_date", "ticker", "target_date"),
        Index("ix_prediction_log_created_at", "created_at"),
        # one row per step of a request: a retried insert stores nothing twice (crud)
        Index(
            "ix_prediction_log_request_id_horizon_step",
            "request_id",
            "horizon_step",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    ticker: Mapped[str] = mapped_column(String(20))
    input_source: Mapped[str] = mapped_column(
        String(8), comment="store (bars from price_bar) or client (closes in the request)"
    )
    as_of_date: Mapped[dt.date] = mapped_column(Date, comment="date of the last bar used")
    target_date: Mapped[dt.date] = mapped_column(Date)
    horizon_step: Mapped[int] = mapped_column(SmallInteger, comment="1 = next trading day")
    predicted_close: Mapped[float] = mapped_column(Double, comment="listing currency")
    last_close: Mapped[float] = mapped_column(Double, comment="close at as_of_date")
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(32))
    latency_ms: Mapped[float] = mapped_column(
        Double, comment="request handling time up to the insert, milliseconds"
    )
    # Prediction-interval bounds (NULL for rows logged before intervals, or a model without
    # calibration); other levels of APP_INTERVAL_LEVELS are in the response only.
    lower_80: Mapped[float | None] = mapped_column(
        Double, comment="80% prediction interval bound, listing currency"
    )
    upper_80: Mapped[float | None] = mapped_column(
        Double, comment="80% prediction interval bound, listing currency"
    )
    lower_95: Mapped[float | None] = mapped_column(
        Double, comment="95% prediction interval bound, listing currency"
    )
    upper_95: Mapped[float | None] = mapped_column(
        Double, comment="95% prediction interval bound, listing currency"
    )
