"""Database sessions for request handlers, and the async engine of the prediction log.

The engine and session factory live on ``app.state`` (created by the app's lifespan from
``DATABASE_URL``), so that tests can run several apps on different databases. On Postgres the
engine checks connections before use (``pool_pre_ping``), so after a database outage the app
recovers by itself with the first request that finds the database back.

The group-commit writer of ``prediction_log`` runs on the event loop and uses an async engine
on the same database (:func:`create_async_db_engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from common.db import engine_arguments, prepare_connections

#: The asyncio driver of each backend: psycopg 3 is both sync and async; SQLite needs
#: aiosqlite (a thread per connection, for the embedded default only).
ASYNC_DRIVERS = {"postgresql": "psycopg", "sqlite": "aiosqlite"}


def get_session_factory(request: Request) -> sessionmaker[Session]:
    """The session factory of the running app."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, closed afterwards; the service commits what it writes."""
    with get_session_factory(request)() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def ping(session: Session) -> None:
    """Run ``SELECT 1``.

    Raises:
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    session.execute(text("SELECT 1"))


def create_async_db_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An asyncio engine on the database at ``url`` (the ``DATABASE_URL`` of the sync one).

    The driver is switched to the backend's asyncio driver (:data:`ASYNC_DRIVERS`:
    ``postgresql+psycopg`` stays as it is, ``sqlite`` becomes ``sqlite+aiosqlite``); the
    backend preparation is :func:`common.db.create_db_engine`'s (``pool_pre_ping`` and a 5 s
    connect timeout on Postgres, foreign keys and WAL on SQLite).

    Args:
        url: SQLAlchemy URL, e.g. ``postgresql+psycopg://user@host/db`` or
            ``sqlite:///var/stockcast.db``.
        **kwargs: passed on to :func:`sqlalchemy.ext.asyncio.create_async_engine`.

    Returns:
        A lazily connecting :class:`~sqlalchemy.ext.asyncio.AsyncEngine`.

    Raises:
        ValueError: a backend without a known asyncio driver.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"no asyncio driver known for {backend!r} ({sorted(ASYNC_DRIVERS)})")
    async_url = parsed.set(drivername=f"{backend}+{ASYNC_DRIVERS[backend]}")
    engine = create_async_engine(async_url, **engine_arguments(url, **kwargs))
    prepare_connections(engine.sync_engine)
    return engine
