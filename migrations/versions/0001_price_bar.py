"""price_bar: the daily OHLCV price store

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "price_bar",
        sa.Column("ticker", sa.String(length=20), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("open", sa.Double(), nullable=False),
        sa.Column("high", sa.Double(), nullable=False),
        sa.Column("low", sa.Double(), nullable=False),
        sa.Column("close", sa.Double(), nullable=False, comment="adjusted close, listing currency"),
        sa.Column("volume", sa.BigInteger(), nullable=False, comment="shares"),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("exchange", sa.String(length=16), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False, comment="yahoo or snapshot"),
        sa.Column(
            "ingested_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("ticker", "date", name=op.f("pk_price_bar")),
    )


def downgrade() -> None:
    op.drop_table("price_bar")
