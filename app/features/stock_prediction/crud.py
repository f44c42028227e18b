"""Statements on ``prediction_log`` (flush, never commit)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import String, Table, Text, bindparam, column, func, insert, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from app.models.prediction_log import PredictionLog

_TABLE = cast(Table, PredictionLog.__table__)
#: ``INSERT INTO prediction_log``, a Core statement: compiled once per process and cached.
_INSERT = insert(_TABLE)
#: The columns of a prediction's rows (``id`` and ``created_at`` are the database's).
_ROW_COLUMNS = [c for c in _TABLE.c if c.name not in ("id", "created_at")]


def _unbounded(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    # an explicit cast to varchar(n) truncates silently: cast to varchar, and let the column
    # refuse a value too long for it, as a plain INSERT would
    return String() if isinstance(type_, String) else type_


#: Postgres: ``INSERT INTO prediction_log (...) SELECT ... FROM json_to_recordset(:rows) AS
#: r(column type, ...) ON CONFLICT (request_id, horizon_step) DO NOTHING``, the batch's rows as
#: one JSON array (one text parameter, encoded by the json module's C encoder: a third less
#: client CPU than one array parameter per column, which psycopg dumps value by value), so a
#: batch of any size is one statement (one plan, one executor run), atomic, and idempotent: run
#: twice, it stores each row once.
_INSERT_JSON = (
    postgresql.insert(_TABLE)
    .from_select(
        [c.name for c in _ROW_COLUMNS],
        select(
            func.json_to_recordset(sql_cast(bindparam("rows", type_=Text()), postgresql.JSON))
            .table_valued(*[column(c.name, _unbounded(c.type)) for c in _ROW_COLUMNS])
            .render_derived(name="r", with_types=True)
        ),
    )
    .on_conflict_do_nothing(index_elements=["request_id", "horizon_step"])
)


def _rows_json(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as a JSON array of objects (UUIDs and dates as their text forms).

    Raises:
        ValueError: a float is not finite (JSON has no NaN); the rows are refused.
    """
    return json.dumps(rows, default=str, allow_nan=False, separators=(",", ":"))


async def insert_predictions(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows (of one or several responses) with one cached Core statement.

    On Postgres one ``INSERT ... SELECT FROM json_to_recordset(rows) ON CONFLICT (request_id,
    horizon_step) DO NOTHING``: a batch of any size is one statement, where an executemany
    runs one per row (decision 15); being one statement it is atomic, so it may run in
    autocommit mode, and being idempotent it may be run again when the connection was lost
    before its outcome was known (rows already stored are skipped, the others inserted).
    Elsewhere (SQLite) an executemany of the plain ``INSERT``, in the caller's transaction.
    Never ``insert().values(rows)``, whose SQL depends on the number of rows and was compiled
    anew on every call (a fifth of a worker's CPU at horizon 30).

    Raises:
        sqlalchemy.exc.DBAPIError: as the database refuses the rows (a value too long for
            its column is refused, not truncated) or cannot be reached.
        ValueError: a float that is not finite (Postgres); nothing is sent.

    Args:
        connection: the group-commit writer's connection (on the event loop); the caller
            commits.
        rows: column values of :class:`PredictionLog` (one per target date).
    """
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        await connection.execute(_INSERT_JSON, {"rows": _rows_json(rows)})
    else:
        await connection.execute(_INSERT, list(rows))


def recent(session: Session, *, limit: int = 10, ticker: str | None = None) -> list[PredictionLog]:
    """The newest ``limit`` rows (optionally of one ticker), newest first."""
    stmt = select(PredictionLog).order_by(PredictionLog.created_at.desc(), PredictionLog.id.desc())
    if ticker is not None:
        stmt = stmt.where(PredictionLog.ticker == ticker)
    return list(session.scalars(stmt.limit(limit)))
