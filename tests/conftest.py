"""Shared fixtures: real databases (Postgres and SQLite) and the real price data.

Postgres: a database of its own is created for the test session on the server named by
``TEST_DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``),
migrated with Alembic, and dropped at the end. ``pg_session`` runs each test inside a
transaction that is rolled back. ``fresh_pg_url`` gives a whole database of its own (cloned
from a migrated template) to tests that run a CLI in a subprocess.

With ``CI=true`` an unreachable Postgres fails the run; elsewhere those tests are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from common.db import create_db_engine

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The real prices beside the repository (../shared/data/prices); the shipped copy otherwise.
SHARED_PRICES = REPO_ROOT.parent / "shared" / "data" / "prices"
SHIPPED_PRICES = REPO_ROOT / "data_pipeline" / "snapshot" / "prices"
DEFAULT_TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: tests/stack needs a Docker engine and the built images: only `make stack-test` runs it.
collect_ignore = [] if os.environ.get("STOCKCAST_STACK_TEST") == "1" else ["stack"]


def alembic_config(url: str) -> Config:
    """Alembic configuration of the repository, pointed at ``url``."""
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """``alembic upgrade head`` on ``url``."""
    command.upgrade(alembic_config(url), "head")


@pytest.fixture(scope="session")
def prices_dir() -> Path:
    """Folder of the real daily-bar CSVs (one ``<TICKER>.csv`` per ticker)."""
    return SHARED_PRICES if SHARED_PRICES.is_dir() else SHIPPED_PRICES


class _PgServer:
    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.admin: Engine = create_engine(
            self.url.set(database="postgres"), isolation_level="AUTOCOMMIT"
        )

    def url_for(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create(self, name: str, template: str | None = None) -> str:
        with self.admin.connect() as conn:
            tmpl = f' TEMPLATE "{template}"' if template else ""
            conn.execute(text(f'CREATE DATABASE "{name}"{tmpl}'))
        return self.url_for(name)

    def set_outage(self, name: str, *, down: bool) -> None:
        """Refuse (or allow again) connections to ``name`` and drop the open ones: an outage."""
        with self.admin.connect() as conn:
            conn.execute(
                text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(not down).lower()}')
            )
            if down:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )

    def drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[_PgServer]:
    """The Postgres server of TEST_DATABASE_URL, or a skip (a failure under CI=true)."""
    server = _PgServer(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    try:
        with server.admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        message = f"Postgres unreachable at {server.url.render_as_string()}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: Postgres tests must run)", pytrace=False)
        pytest.skip(message)
    yield server
    server.admin.dispose()


@pytest.fixture(scope="session")
def pg_template(pg_server: _PgServer) -> Iterator[str]:
    """Name of a migrated template database, dropped after the session."""
    name = f"stockcast_test_tmpl_{uuid.uuid4().hex[:8]}"
    url = pg_server.create(name)
    migrate(url)
    yield name
    pg_server.drop(name)


@pytest.fixture(scope="session")
def pg_engine(pg_server: _PgServer, pg_template: str) -> Iterator[Engine]:
    """Engine on a migrated database shared by the session's transactional tests."""
    name = f"stockcast_test_{uuid.uuid4().hex[:8]}"
    url = pg_server.create(name, template=pg_template)
    engine = create_db_engine(url)
    yield engine
    engine.dispose()
    pg_server.drop(name)


@pytest.fixture
def pg_connection(pg_engine: Engine) -> Iterator[object]:
    """A connection inside a transaction that is rolled back after the test."""
    with pg_engine.connect() as conn:
        trans = conn.begin()
        yield conn
        trans.rollback()


@pytest.fixture
def pg_session_factory(pg_connection: object) -> Callable[[], Session]:
    """Sessions on the test's connection; their commits become savepoints (rolled back)."""

    def factory() -> Session:
        return Session(
            bind=pg_connection,  # type: ignore[arg-type]
            join_transaction_mode="create_savepoint",
            expire_on_commit=False,
        )

    return factory


@pytest.fixture
def pg_session(pg_session_factory: Callable[[], Session]) -> Iterator[Session]:
    """A session whose work is rolled back after the test."""
    with pg_session_factory() as session:
        yield session


@pytest.fixture
def fresh_pg_url(pg_server: _PgServer, pg_template: str) -> Iterator[str]:
    """URL of a migrated, empty Postgres database of this test's own (for subprocesses)."""
    name = f"stockcast_test_{uuid.uuid4().hex[:8]}"
    url = pg_server.create(name, template=pg_template)
    yield url
    pg_server.drop(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a migrated, empty SQLite database file."""
    url = f"sqlite:///{tmp_path / 'stockcast.db'}"
    migrate(url)
    return url
