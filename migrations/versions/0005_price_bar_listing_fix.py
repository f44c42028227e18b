"""price_bar: currency and exchange from the exchange table of common/exchanges.py

Before, any symbol without a ``.SA`` suffix was stored as a US listing: the Ibovespa
(``^BVSP``, in BRL points) had ``currency = 'USD'``, and the exchange column held whatever
the source reported (``None`` from the snapshot, Yahoo's ``SAO``/``NMS``/``NYQ`` codes).
The pipeline now takes both from the table; this rewrites the rows already stored the same
way. The statements copy the table as it stands at this revision (a migration never imports
application code); later additions to the table bring their own data migration.

Downgrade keeps the values: the old ones were wrong, and nothing depends on them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (currency, exchange, condition on ticker), applied in order; the bare-symbol rule last
#: and only to what the earlier rules left alone.
UPDATES = (
    ("BRL", "B3", "ticker LIKE '%.SA' OR ticker = '^BVSP'"),
    ("USD", "NASDAQ", "ticker IN ('AAPL', 'MSFT', '^IXIC')"),
    ("USD", "NYSEARCA", "ticker = 'SPY'"),
    ("USD", "NYSE", "ticker IN ('^GSPC', '^DJI')"),
    (
        "USD",
        "NYSE",
        "ticker NOT LIKE '%.%' AND ticker NOT LIKE '%^%' AND ticker NOT LIKE '%=%' "
        "AND ticker NOT IN ('AAPL', 'MSFT', 'SPY')",
    ),
)


def upgrade() -> None:
    for currency, exchange, condition in UPDATES:
        op.execute(
            f"UPDATE price_bar SET currency = '{currency}', exchange = '{exchange}' "  # noqa: S608 - constants above
            f"WHERE {condition}"
        )


def downgrade() -> None:
    """Nothing to undo: the values before were wrong (see the module docstring)."""
