"""The ``prediction_outcome`` view (migration 0006), for ``select()`` statements.

Declared on a ``MetaData`` of its own, not the models' ``Base.metadata``: the view is created
by its migration, and ``alembic check`` must not take it for a table to create. Columns are
documented in docs/outcomes.md.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Double,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Uuid,
)

prediction_outcome = Table(
    "prediction_outcome",
    MetaData(),
    Column("prediction_log_id", BigInteger, primary_key=True),
    Column("request_id", Uuid),
    Column("created_at", DateTime(timezone=True)),
    Column("user_id", Integer),
    Column("ticker", String(20)),
    Column("input_source", String(8)),
    Column("model_name", String(128)),
    Column("model_version", String(32)),
    Column("as_of_date", Date),
    Column("target_date", Date),
    Column("horizon_step", SmallInteger),
    Column("predicted_close", Double),
    Column("last_close", Double),
    Column("lower_80", Double),
    Column("upper_80", Double),
    Column("lower_95", Double),
    Column("upper_95", Double),
    Column("realized_close", Double),
    Column("error", Double),
    Column("abs_error", Double),
    Column("ape", Double),
    Column("naive_error", Double),
    Column("naive_abs_error", Double),
    Column("direction_hit", Integer),
    Column("covered_80", Integer),
    Column("covered_95", Integer),
)
