"""Alembic environment: one metadata for every table of the project.

The database URL is taken, in order, from ``config.attributes["connection"]`` (tests pass an
open connection), the ``sqlalchemy.url`` main option when set programmatically, and the
``DATABASE_URL`` environment variable (the same default as every layer: SQLite in ./var/).
"""

from __future__ import annotations

import contextlib

from alembic import context
from sqlalchemy import Connection

import common.price_store  # noqa: F401 - registers price_bar
from common.db import Base, create_db_engine
from common.settings import LayerSettings

with contextlib.suppress(ImportError):  # the app's tables (absent only without the app package)
    import app.models  # noqa: F401

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or LayerSettings().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_db_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
