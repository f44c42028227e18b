"""Cost of one group-commit batch on Postgres, by how it is committed (decision 15).

``python -m bench.commit_modes [--url URL] [--batches N] [--batch-size K]`` inserts ``N``
batches of ``K`` horizon-1 rows per mode with the writer's statement
(:func:`insert_predictions`), each mode on an asyncio connection of its own: in an explicit
transaction (``BEGIN``, ``INSERT``, ``COMMIT``: three round trips) and in autocommit mode (the
``INSERT`` alone: one round trip), and prints a table of wall time and this process's CPU time
per batch. The two modes alternate in blocks of 50 batches, so a change of the machine's speed
affects both. The rows go into the ``prediction_log`` of the bench database and are deleted
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import uuid
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.database import create_async_db_engine
from app.features.stock_prediction.crud import insert_predictions
from app.models.prediction_log import PredictionLog
from bench.environment import BenchEnvironment

#: ``model_name`` of the rows this script inserts (and deletes).
MODEL_NAME = "bench-commit-modes"


def _batch(size: int) -> list[dict[str, Any]]:
    """``size`` horizon-1 rows of distinct requests, as the writer gets them."""
    as_of = dt.date(2023, 12, 28)
    return [
        {
            "request_id": uuid.uuid4(),
            "user_id": None,
            "ticker": "PETR4.SA",
            "input_source": "store",
            "as_of_date": as_of,
            "target_date": as_of + dt.timedelta(days=1),
            "horizon_step": 1,
            "predicted_close": 37.5,
            "last_close": 37.0,
            "model_name": MODEL_NAME,
            "model_version": "1",
            "latency_ms": 1.0,
        }
        for _ in range(size)
    ]


async def _in_transaction(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    async with connection.begin():
        await insert_predictions(connection, rows)


async def measure(url: str, batches: int, batch_size: int) -> dict[str, tuple[float, float]]:
    """Microseconds per batch, ``{mode: (wall, CPU of this process)}``, over ``batches``."""
    engine = create_async_db_engine(url)
    totals = {"transaction": [0.0, 0.0], "autocommit": [0.0, 0.0]}
    try:
        async with engine.connect() as in_transaction, engine.connect() as plain:
            autocommit = await plain.execution_options(isolation_level="AUTOCOMMIT")
            modes = {
                "transaction": (in_transaction, _in_transaction),
                "autocommit": (autocommit, insert_predictions),  # the statement commits itself
            }
            for connection, step in modes.values():  # warm-up: statement compiled, plan cached
                for _ in range(20):
                    await step(connection, _batch(batch_size))
            block = 50
            for start in range(0, batches, block):
                n = min(block, batches - start)
                for mode, (connection, step) in modes.items():
                    work = [_batch(batch_size) for _ in range(n)]
                    wall, cpu = time.perf_counter(), time.process_time()
                    for rows in work:
                        await step(connection, rows)
                    totals[mode][0] += time.perf_counter() - wall
                    totals[mode][1] += time.process_time() - cpu
            await autocommit.execute(
                delete(PredictionLog).where(PredictionLog.model_name == MODEL_NAME)
            )
    finally:
        await engine.dispose()
    return {mode: (w / batches * 1e6, c / batches * 1e6) for mode, (w, c) in totals.items()}


def main() -> None:
    """Parse the options, measure, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=BenchEnvironment().database_url, help="a migrated Postgres database"
    )
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8, help="rows (requests) per batch")
    args = parser.parse_args()
    result = asyncio.run(measure(args.url, args.batches, args.batch_size))
    lines = [
        f"{args.batches} batches of {args.batch_size} horizon-1 rows each, per batch:",
        "",
        "| commit mode | wall µs | CPU µs (this process) |",
        "|---|---:|---:|",
        *(f"| {mode} | {wall:,.0f} | {cpu:,.0f} |" for mode, (wall, cpu) in result.items()),
    ]
    print("\n".join(lines))  # noqa: T201 - the table is the output


if __name__ == "__main__":
    main()
