"""``python -m bench.commit_modes``: both commit modes measured on a real Postgres, and the
bench database left as it was (its own rows deleted, everyone else's kept)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid

import pytest
from sqlalchemy import func, select

from app.models.prediction_log import PredictionLog
from bench.commit_modes import measure
from common.db import create_db_engine, make_session_factory

pytestmark = pytest.mark.postgres


def test_both_modes_are_timed_and_only_the_scripts_rows_are_removed(fresh_pg_url: str) -> None:
    engine = create_db_engine(fresh_pg_url)
    sessions = make_session_factory(engine)
    try:
        with sessions() as session:
            session.add(
                PredictionLog(
                    request_id=uuid.uuid4(), ticker="PETR4.SA", input_source="store",
                    as_of_date=dt.date(2024, 1, 2),
                    target_date=dt.date(2024, 1, 3), horizon_step=1,
                    predicted_close=37.5, last_close=37.0, model_name="stock-lstm-PETR4.SA",
                    model_version="1", latency_ms=1.0,
                )
            )  # fmt: skip
            session.commit()

        result = asyncio.run(measure(fresh_pg_url, batches=60, batch_size=8))

        assert set(result) == {"transaction", "autocommit"}
        for wall_us, cpu_us in result.values():
            assert math.isfinite(wall_us) and wall_us > 0
            assert math.isfinite(cpu_us) and cpu_us > 0
        with sessions() as session:
            by_model = dict(
                session.execute(
                    select(PredictionLog.model_name, func.count()).group_by(
                        PredictionLog.model_name
                    )
                ).all()
            )
        assert by_model == {"stock-lstm-PETR4.SA": 1}
    finally:
        engine.dispose()
