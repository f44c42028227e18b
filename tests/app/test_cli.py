"""``python -m app create-user | ensure-demo-user | recent-predictions`` in real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from app.core import security
from app.models import User
from common.db import create_db_engine, make_session_factory

pytestmark = pytest.mark.postgres


def run_cli(
    url: str, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        input=stdin,
        env={**os.environ, "DATABASE_URL": url, "APP_SECRET_KEY": "c" * 40, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def stored_user(url: str, username: str) -> User | None:
    engine = create_db_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return session.scalar(select(User).where(User.username == username))
    finally:
        engine.dispose()


def test_create_user_reads_the_password_from_stdin(fresh_pg_url: str) -> None:
    """The password comes from stdin (not argv) and is stored only as an Argon2id hash."""
    result = run_cli(fresh_pg_url, "create-user", "ana", "--admin", stdin="s3cret-pass\n")
    assert result.returncode == 0, result.stderr
    assert "created user 'ana' (admin)" in result.stdout
    user = stored_user(fresh_pg_url, "ana")
    assert user is not None and user.is_admin and user.is_active
    assert user.password_hash.startswith("$argon2id$")
    assert "s3cret-pass" not in user.password_hash
    assert security.verify_password("s3cret-pass", user.password_hash)


def test_create_user_refuses_duplicates_short_passwords_and_argv_passwords(
    fresh_pg_url: str,
) -> None:
    """Existing user: exit 1 (0 with --if-missing); short password: exit 1; --password: exit 2."""
    assert run_cli(fresh_pg_url, "create-user", "ana", stdin="s3cret-pass\n").returncode == 0
    again = run_cli(fresh_pg_url, "create-user", "ana", stdin="other-pass\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    quiet = run_cli(fresh_pg_url, "create-user", "ana", "--if-missing", stdin="")
    assert quiet.returncode == 0 and "exists" in quiet.stdout
    short = run_cli(fresh_pg_url, "create-user", "bob", stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    argv = run_cli(fresh_pg_url, "create-user", "bob", "--password", "s3cret-pass")
    assert argv.returncode == 2
    assert stored_user(fresh_pg_url, "bob") is None


def test_ensure_demo_user_generates_a_password_once(fresh_pg_url: str) -> None:
    """Without DEMO_PASSWORD a password is generated and printed once; reruns keep it."""
    env = {"DEMO_PASSWORD": ""}
    first = run_cli(fresh_pg_url, "ensure-demo-user", env=env)
    assert first.returncode == 0, first.stderr
    line = next(x for x in first.stdout.splitlines() if x.startswith("created user 'demo'"))
    password = line.split("with password ")[1].split(" ")[0]
    user = stored_user(fresh_pg_url, "demo")
    assert user is not None and not user.is_admin
    assert security.verify_password(password, user.password_hash)
    assert 'curl -H "Authorization: Bearer $T"' in first.stdout
    second = run_cli(fresh_pg_url, "ensure-demo-user", env=env)
    assert second.returncode == 0 and "exists; its password is unchanged" in second.stdout
    assert password not in second.stdout


def test_ensure_demo_user_takes_demo_password(fresh_pg_url: str) -> None:
    """DEMO_PASSWORD sets the demo password, which is never echoed."""
    result = run_cli(fresh_pg_url, "ensure-demo-user", env={"DEMO_PASSWORD": "demo-pass-123"})
    assert result.returncode == 0, result.stderr
    assert "demo-pass-123" not in result.stdout
    user = stored_user(fresh_pg_url, "demo")
    assert user is not None and security.verify_password("demo-pass-123", user.password_hash)


def test_database_down_exits_3(tmp_path) -> None:
    """An unreachable database: exit 3 with one line naming it (password redacted)."""
    url = "postgresql+psycopg://u:pw@127.0.0.1:1/none"
    result = run_cli(url, "create-user", "ana", stdin="s3cret-pass\n")
    assert result.returncode == 3
    assert "database unavailable at postgresql+psycopg://u:***@127.0.0.1:1/none" in result.stderr


def test_recent_predictions_on_an_empty_log(fresh_pg_url: str) -> None:
    """recent-predictions prints a header and says when nothing is logged yet."""
    result = run_cli(fresh_pg_url, "recent-predictions")
    assert result.returncode == 0, result.stderr
    assert "predicted_close" in result.stdout and "no predictions logged yet" in result.stdout


@pytest.mark.parametrize(
    ("key", "message"),
    [("change-me", "placeholder"), ("short-key", "9 bytes; at least 32")],
)
def test_serve_refuses_an_unsafe_secret_key(fresh_pg_url: str, key: str, message: str) -> None:
    """`serve` with a placeholder or short APP_SECRET_KEY exits 2 with one line, no server."""
    result = run_cli(fresh_pg_url, "serve", "--port", "1", env={"APP_SECRET_KEY": key})
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings: APP_SECRET_KEY")
    assert message in result.stderr
