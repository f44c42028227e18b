"""The benchmark's durable ceiling: the bare FastAPI app plus one committed prediction_log row.

``python -m bench.durable_app --port P --workers N`` serves :data:`app`:
one ``GET /`` that, per request, hands one ``prediction_log`` row (shaped like a
``GET /predict`` horizon-1 row, with a fresh request id) to the API's own
:class:`~app.features.stock_prediction.log_writer.PredictionLogWriter`, waits until the group
commit that carries it is durable, counts the predicted date in the API's
``stockcast_predicted_points_total`` and answers ``{"prediction_id": "<uuid>"}``. No auth,
no model, no middleware, no access log. The writer is built as the API's lifespan builds it
(:func:`app.core.database.create_async_db_engine` on ``DATABASE_URL``, the same insert
statement, the same group commit), and counters and histograms are file-backed
(``PROMETHEUS_MULTIPROC_DIR``), as in the API.

What a GET h1 of the API serves less than this is the cost of the API (auth, middleware,
validation, the forecast and its response), not of durably logging the prediction on this
host; what this serves less than the bare ceiling (:mod:`bench.bare_app`) is the cost of the
durable insert itself (the writer on the worker's event loop, and Postgres on the same cores).

Served through :func:`app.core.listeners.serve_app` like the API and the ceiling: uvicorn's
supervisor, ``N`` workers each on its own ``SO_REUSEPORT`` socket, no ``server`` header.

Environment: ``DATABASE_URL`` (required, the API's variable), ``PROMETHEUS_MULTIPROC_DIR``
(required, an empty folder: prometheus_client picks its file-backed values at import, so it is
set before the server starts; the benchmark sums the predicted dates there) and
``BENCH_LOG_USER_ID`` (optional: the ``app_user.id`` the rows carry, as the bench user's
requests' rows do; unset, the rows have no user).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app.core.database import create_async_db_engine
from app.core.monitoring import PREDICTED_POINTS
from app.features.stock_prediction.log_writer import PredictionLogWriter
from bench.bare_app import run_cli

#: The import string the server's workers load.
APP_IMPORT = "bench.durable_app:app"
#: The environment variable of the rows' user id (unset: no user).
USER_ID_ENV = "BENCH_LOG_USER_ID"
#: prometheus_client's multiprocess folder, read at its import (in each worker).
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: What every row shares: a horizon-1 forecast of PETR4.SA from stored bars, with 80% and 95%
#: interval bounds, as the bench's champions log it (prices in BRL).
TICKER = "PETR4.SA"
MODEL_VERSION = "1"
ROW_TEMPLATE: dict[str, Any] = {
    "ticker": TICKER,
    "input_source": "store",
    "as_of_date": dt.date(2024, 12, 30),
    "target_date": dt.date(2025, 1, 2),
    "horizon_step": 1,
    "predicted_close": 36.912345678,
    "last_close": 36.75,
    "model_name": "stock-lstm-PETR4_SA",
    "model_version": MODEL_VERSION,
    "lower_80": 36.1234567,
    "upper_80": 37.7012345,
    "lower_95": 35.6543210,
    "upper_95": 38.1987654,
}


def log_row(*, request_id: uuid.UUID, user_id: int | None, latency_ms: float) -> dict[str, Any]:
    """One ``prediction_log`` row: :data:`ROW_TEMPLATE` with a request's own values.

    Args:
        request_id: the request's id (unique per request: the table's unique
            ``(request_id, horizon_step)``).
        user_id: an ``app_user.id`` (the column's foreign key), or None.
        latency_ms: handling time up to the insert, milliseconds.
    """
    return {**ROW_TEMPLATE, "request_id": request_id, "user_id": user_id, "latency_ms": latency_ms}


def _user_id_from_env() -> int | None:
    value = os.environ.get(USER_ID_ENV, "").strip()
    return int(value) if value else None


def _database_url_from_env() -> str:
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        raise RuntimeError("DATABASE_URL is not set: the durable ceiling logs to that database")
    return url


def create_app(database_url: str | None = None, *, user_id: int | None = None) -> FastAPI:
    """The durable ceiling's app; nothing is connected until its lifespan starts.

    Args:
        database_url: SQLAlchemy URL of a migrated database (default: ``DATABASE_URL``,
            read at startup).
        user_id: ``app_user.id`` of the rows (default: ``BENCH_LOG_USER_ID``, read at
            startup; unset means no user).

    Raises (at startup):
        RuntimeError: no ``database_url`` and no ``DATABASE_URL``.
    """
    held: dict[str, Any] = {}  # the worker's writer and user, set by the lifespan

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        url = database_url or _database_url_from_env()
        writer = PredictionLogWriter(create_async_db_engine(url))
        held["writer"] = writer
        held["user_id"] = user_id if user_id is not None else _user_id_from_env()
        writer.start()
        try:
            yield
        finally:
            await writer.stop()
            await writer.engine.dispose()

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    points = PREDICTED_POINTS.labels(ticker=TICKER, model_version=MODEL_VERSION)

    @app.get("/")
    async def log_one_prediction() -> dict[str, str]:
        """Commit one prediction_log row, then ``{"prediction_id": "<its request id>"}``.

        Raises:
            sqlalchemy.exc.OperationalError, common.exceptions.DatabaseUnavailableError: the
                row could not be committed (a 500: this app has no error handlers).
        """
        started = time.perf_counter()
        request_id = uuid.uuid4()
        row = log_row(
            request_id=request_id,
            user_id=held["user_id"],
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
        writer: PredictionLogWriter = held["writer"]
        await writer.write([row])
        points.inc()
        return {"prediction_id": str(request_id)}

    return app


app = create_app()


def serve(*, host: str, port: int, workers: int) -> None:
    """Serve :data:`app` with ``workers`` uvicorn workers until SIGTERM/SIGINT.

    Raises:
        RuntimeError: ``PROMETHEUS_MULTIPROC_DIR`` is not set (the predicted dates could not
            be summed over the workers).
        OSError: the port is in use.
    """
    from app.core.listeners import serve_app  # noqa: PLC0415

    folder = os.environ.get(MULTIPROC_DIR_ENV, "").strip()
    if not folder:
        raise RuntimeError(f"{MULTIPROC_DIR_ENV} is not set: the workers' counters need a folder")
    Path(folder).mkdir(parents=True, exist_ok=True)
    serve_app(APP_IMPORT, host=host, port=port, workers=workers, access_log=False)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.durable_app``; returns the exit code (0 after a clean stop)."""
    return run_cli(
        argv, prog="python -m bench.durable_app", description=__doc__, serve_app_with=serve
    )


if __name__ == "__main__":
    sys.exit(main())
