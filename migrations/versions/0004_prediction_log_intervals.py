"""prediction_log: the 80% and 95% prediction-interval bounds of each predicted close

Nullable: rows logged before intervals existed keep NULL, and so does a model version that
carries no calibration. The response may carry other levels (``APP_INTERVAL_LEVELS``); the log
keeps the two standard ones that the outcome view, the dashboards and the alerts use.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("lower_80", "upper_80", "lower_95", "upper_95")


def upgrade() -> None:
    with op.batch_alter_table("prediction_log") as batch:
        for name in COLUMNS:
            level = name.split("_")[1]
            batch.add_column(
                sa.Column(
                    name,
                    sa.Double(),
                    nullable=True,
                    comment=f"{level}% prediction interval bound, listing currency",
                )
            )


def downgrade() -> None:
    with op.batch_alter_table("prediction_log") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
