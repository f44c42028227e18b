"""The database layer every layer shares: declarative base, engine factory, errors.

SQLite (the embedded default, a file under ``./var/``) and Postgres (``postgresql+psycopg``)
are both supported; migrations and upserts are written to run on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

#: Postgres-style constraint names, so that Alembic migrations name things predictably.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table in the project (one ``MetaData`` for Alembic)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, for one-line logs and CLI errors.

    A SQLAlchemy ``DBAPIError`` is summarized by the driver's error it wraps (``exc.orig``),
    without SQLAlchemy's multi-line statement dump; an empty message gives the type's name.
    """
    detail = getattr(exc, "orig", None) or exc
    text = str(detail).strip()
    return text.splitlines()[0] if text else type(detail).__name__


def engine_arguments(url: str, **kwargs: Any) -> dict[str, Any]:
    """The engine keyword arguments for ``url``'s backend, preparing what it needs.

    For SQLite the parent folder of the database file is created; for Postgres connections
    are checked before use (``pool_pre_ping``), so the process recovers by itself after a
    database restart, and a connection attempt gives up after 5 s. Shared by the sync
    engines of every layer and the API's async engine (``app.core.database``).

    Args:
        url: SQLAlchemy URL, ``sqlite:///var/stockcast.db`` or
            ``postgresql+psycopg://user@host:5432/db``.
        **kwargs: the caller's arguments, which take precedence.

    Returns:
        The keyword arguments for :func:`sqlalchemy.create_engine` (or its async variant).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return kwargs
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("connect_args", {"connect_timeout": 5})
    return kwargs


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def prepare_connections(engine: Engine) -> Engine:
    """Make every new SQLite connection of ``engine`` enforce foreign keys and use WAL
    (readers do not block the writer); nothing to do for other backends. Returns ``engine``."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url``, preparing what the backend needs.

    See :func:`engine_arguments` and :func:`prepare_connections`: for SQLite the parent
    folder of the database file is created and foreign keys are enforced; for Postgres
    connections are checked before use (``pool_pre_ping``).

    Args:
        url: SQLAlchemy URL, ``sqlite:///var/stockcast.db`` or
            ``postgresql+psycopg://user@host:5432/db``.
        **kwargs: passed on to :func:`sqlalchemy.create_engine`.

    Returns:
        A lazily connecting :class:`sqlalchemy.Engine` (nothing is contacted here).
    """
    return prepare_connections(create_engine(url, **engine_arguments(url, **kwargs)))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
