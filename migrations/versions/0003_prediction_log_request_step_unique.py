"""prediction_log: one row per (request_id, horizon_step), so a retried insert is idempotent

The group-commit writer inserts a batch in one autocommitted statement on Postgres, with
``ON CONFLICT (request_id, horizon_step) DO NOTHING``: when the connection is lost during
that statement its outcome is unknown, and running it again on a new connection stores every
row exactly once. The unique index replaces the plain index on ``request_id`` (its leading
column serves the same lookups).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_prediction_log_request_id_horizon_step",
        "prediction_log",
        ["request_id", "horizon_step"],
        unique=True,
    )
    op.drop_index("ix_prediction_log_request_id", table_name="prediction_log")


def downgrade() -> None:
    op.create_index("ix_prediction_log_request_id", "prediction_log", ["request_id"])
    op.drop_index("ix_prediction_log_request_id_horizon_step", table_name="prediction_log")
