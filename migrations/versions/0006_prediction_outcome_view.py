"""prediction_outcome: each logged prediction step joined with the bar of its target date

A view, so there is nothing to fill and nothing to get out of date: once the pipeline has
ingested the bar of a target date, the step's outcome is there. One row per
``prediction_log`` row (a LEFT JOIN: a step whose target date has no bar yet has
``realized_close`` NULL, "waiting for its outcome"). Columns, all in the listing currency
unless stated:

* ``realized_close``: ``price_bar.close`` on ``target_date`` (adjusted close);
* ``error`` = predicted - realized; ``abs_error`` = |error|;
* ``ape``: absolute percent error, ``100 * |error| / realized`` (percent);
* ``naive_error`` = last_close - realized: the naive (persistence) forecast of the same origin
  predicts ``last_close`` for every step; ``naive_abs_error`` = |naive_error|;
* ``direction_hit``: 1 when the predicted and realized moves from ``last_close`` have the same
  sign (both 0 counts), else 0, as ``ml_lifecycle.metrics.directional_accuracy``;
* ``covered_80``/``covered_95``: 1 when ``lower <= realized <= upper``, 0 when outside, NULL
  when the row has no bounds;

every derived column is NULL while ``realized_close`` is. Plain SQL that Postgres and SQLite
both run (0/1 integers rather than booleans, so ``AVG(covered_95)`` is a coverage on both).

A later migration that rebuilds ``prediction_log`` or ``price_bar`` on SQLite (batch mode)
must drop this view first and create it again after.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEW = """
CREATE VIEW prediction_outcome AS
SELECT
    p.id AS prediction_log_id,
    p.request_id,
    p.created_at,
    p.user_id,
    p.ticker,
    p.input_source,
    p.model_name,
    p.model_version,
    p.as_of_date,
    p.target_date,
    p.horizon_step,
    p.predicted_close,
    p.last_close,
    p.lower_80,
    p.upper_80,
    p.lower_95,
    p.upper_95,
    b.close AS realized_close,
    p.predicted_close - b.close AS error,
    ABS(p.predicted_close - b.close) AS abs_error,
    100.0 * ABS(p.predicted_close - b.close) / b.close AS ape,
    p.last_close - b.close AS naive_error,
    ABS(p.last_close - b.close) AS naive_abs_error,
    CASE
        WHEN b.close IS NULL THEN NULL
        WHEN (p.predicted_close > p.last_close AND b.close > p.last_close)
          OR (p.predicted_close < p.last_close AND b.close < p.last_close)
          OR (p.predicted_close = p.last_close AND b.close = p.last_close) THEN 1
        ELSE 0
    END AS direction_hit,
    CASE
        WHEN b.close IS NULL OR p.lower_80 IS NULL OR p.upper_80 IS NULL THEN NULL
        WHEN b.close >= p.lower_80 AND b.close <= p.upper_80 THEN 1
        ELSE 0
    END AS covered_80,
    CASE
        WHEN b.close IS NULL OR p.lower_95 IS NULL OR p.upper_95 IS NULL THEN NULL
        WHEN b.close >= p.lower_95 AND b.close <= p.upper_95 THEN 1
        ELSE 0
    END AS covered_95
FROM prediction_log AS p
LEFT JOIN price_bar AS b ON b.ticker = p.ticker AND b.date = p.target_date
"""


def upgrade() -> None:
    op.execute(VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW prediction_outcome")
