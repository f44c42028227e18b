"""deploy/postgres/init: the first-start step of the postgres container, against a real server."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.deploy.conftest import DEPLOY_DIR

INIT_SCRIPT = DEPLOY_DIR / "postgres" / "init" / "10-create-databases.sh"

pytestmark = pytest.mark.postgres


def run_init(pg_server, **env: str) -> subprocess.CompletedProcess[str]:
    url = pg_server.url
    full_env = {
        **os.environ,
        "PGHOST": url.host or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        **({"PGPASSWORD": url.password} if url.password else {}),
        **env,
    }
    return subprocess.run(
        ["bash", str(INIT_SCRIPT)], capture_output=True, text=True, env=full_env, timeout=60,
        check=False,
    )  # fmt: skip


def owners(pg_server, *names: str) -> dict[str, str]:
    with pg_server.admin.connect() as conn:
        rows = conn.execute(
            text(
                "select datname, pg_get_userbyid(datdba) from pg_database "
                "where datname = any(:names)"
            ),
            {"names": list(names)},
        )
        return {name: owner for name, owner in rows}


@pytest.fixture
def db_names(pg_server) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    names = (f"stockcast_init_app_{suffix}", f"stockcast_init_mlflow_{suffix}")
    yield names
    for name in names:
        pg_server.drop(name)


def test_init_creates_the_app_and_mlflow_databases_and_can_run_again(
    pg_server, db_names: tuple[str, str]
) -> None:
    app_db, mlflow_db = db_names
    first = run_init(pg_server, APP_DB_NAME=app_db, MLFLOW_DB_NAME=mlflow_db)
    assert first.returncode == 0, first.stderr
    assert f"databases '{app_db}' and '{mlflow_db}' are ready" in first.stdout
    user = pg_server.url.username or "postgres"
    assert owners(pg_server, app_db, mlflow_db) == {app_db: user, mlflow_db: user}
    again = run_init(pg_server, APP_DB_NAME=app_db, MLFLOW_DB_NAME=mlflow_db)
    assert again.returncode == 0, again.stderr
    assert "CREATE DATABASE" not in again.stdout  # existing databases are left alone


def test_init_refuses_an_unsafe_database_name_and_creates_nothing(
    pg_server, db_names: tuple[str, str]
) -> None:
    """A name that is not a plain identifier stops the init step with the reason, exit 1."""
    app_db, _ = db_names
    result = run_init(pg_server, APP_DB_NAME=app_db, MLFLOW_DB_NAME='ml"; drop database x; --')
    assert result.returncode == 1
    assert "must be lower-case letters, digits and _" in result.stderr
    assert owners(pg_server, app_db) == {}
