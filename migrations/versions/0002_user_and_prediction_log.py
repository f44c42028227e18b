"""app_user and prediction_log: API accounts and the log of served predictions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_user")),
        sa.UniqueConstraint("username", name=op.f("uq_app_user_username")),
    )
    op.create_table(
        "prediction_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("ticker", sa.String(length=20), nullable=False),
        sa.Column(
            "input_source",
            sa.String(length=8),
            nullable=False,
            comment="store (bars from price_bar) or client (closes in the request)",
        ),
        sa.Column("as_of_date", sa.Date(), nullable=False, comment="date of the last bar used"),
        sa.Column("target_date", sa.Date(), nullable=False),
        sa.Column(
            "horizon_step", sa.SmallInteger(), nullable=False, comment="1 = next trading day"
        ),
        sa.Column("predicted_close", sa.Double(), nullable=False, comment="listing currency"),
        sa.Column("last_close", sa.Double(), nullable=False, comment="close at as_of_date"),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column(
            "latency_ms",
            sa.Double(),
            nullable=False,
            comment="request handling time up to the insert, milliseconds",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["app_user.id"],
            name=op.f("fk_prediction_log_user_id_app_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_log")),
    )
    op.create_index(
        "ix_prediction_log_ticker_created_at", "prediction_log", ["ticker", "created_at"]
    )
    op.create_index(
        "ix_prediction_log_ticker_target_date", "prediction_log", ["ticker", "target_date"]
    )
    op.create_index("ix_prediction_log_created_at", "prediction_log", ["created_at"])
    op.create_index("ix_prediction_log_request_id", "prediction_log", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_prediction_log_request_id", table_name="prediction_log")
    op.drop_index("ix_prediction_log_created_at", table_name="prediction_log")
    op.drop_index("ix_prediction_log_ticker_target_date", table_name="prediction_log")
    op.drop_index("ix_prediction_log_ticker_created_at", table_name="prediction_log")
    op.drop_table("prediction_log")
    op.drop_table("app_user")
