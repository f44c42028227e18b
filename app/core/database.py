"""Database sessions for request handlers.

The engine and session factory live on ``app.state`` (created by the app's lifespan from
``DATABASE_URL``), so that tests can run several apps on different databases. On Postgres the
engine checks connections before use (``pool_pre_ping``), so after a database outage the app
recovers by itself with the first request that finds the database back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker


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
