"""A Postgres restart under load (issue 18 kept this working; the test keeps it so): requests
during the outage get 503, none gets a 500, and every acknowledged prediction is in
prediction_log afterwards.

The restarted server is a private one (``initdb``/``pg_ctl`` of the Debian packages on a temp
folder and another loopback port, run as the ``postgres`` OS user when the tests run as root),
so the shared server of the other tests is never touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from app.models import PredictionLog
from common.db import create_db_engine, make_session_factory
from tests.app.conftest import TICKER, Registry, ingest, served_app
from tests.app.factories import PASSWORD, create_user
from tests.conftest import migrate
from tests.processes import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 8


def pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        pytest.fail(f"{tool} not found under /usr/lib/postgresql/*/bin (Debian's postgresql)")
    return found[-1]


def as_postgres(*command: str) -> list[str]:
    """``command`` as the postgres OS user when running as root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


@pytest.fixture
def private_pg() -> Iterator[tuple[str, Path, int]]:
    """(URL of an empty database, data folder, port) on a private, running Postgres."""
    # not under pytest's tmp folder: the postgres user cannot enter root's
    folder = Path(tempfile.mkdtemp(prefix="stockcast-private-pg-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        as_postgres(pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder}"
    subprocess.run(
        # -l: with the server's output on our pipe, run() would wait for it to close
        as_postgres(
            pg_bin("pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "pg.log"),
            "-w",
            "start",
        ),
        check=True,
        capture_output=True,
    )
    admin = create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE stockcast"))
    admin.dispose()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/stockcast"
    try:
        yield url, data, port
    finally:
        subprocess.run(
            as_postgres(pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_a_postgres_restart_under_load_loses_no_acknowledged_prediction(
    private_pg: tuple[str, Path, int], registry: Registry, prices_dir: Path, tmp_path: Path
) -> None:
    """Restart in the middle of the load: 503s meanwhile, every 200's rows committed."""
    url, data, _port = private_pg
    migrate(url)
    ingest(url, prices_dir, TICKER)
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        create_user(session, "loader")
    acknowledged: list[str] = []
    statuses: dict[int, int] = {}
    stop = threading.Event()
    with served_app(
        database_url=url, registry=registry, log=tmp_path / "api.log", APP_BARS_CACHE_SECONDS="0"
    ) as (base, _server):
        token = httpx.post(
            f"{base}/auth/token", data={"username": "loader", "password": PASSWORD}
        ).json()["access_token"]

        def client() -> None:
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
                while not stop.is_set():
                    try:
                        response = http.get(f"/predict/{TICKER}?horizon=2")
                    except httpx.TransportError:
                        statuses[0] = statuses.get(0, 0) + 1  # no answer at all
                        continue
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        acknowledged.append(response.json()["prediction_id"])

        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                futures = [pool.submit(client) for _ in range(CLIENTS)]
                deadline = time.monotonic() + 30
                while len(acknowledged) < 100 and time.monotonic() < deadline:
                    time.sleep(0.05)
                restart = [pg_bin("pg_ctl"), "-D", str(data), "-l", str(data.parent / "pg.log")]
                subprocess.run(
                    as_postgres(*restart, "-m", "fast", "-w", "restart"),
                    check=True,
                    capture_output=True,
                )
                after_restart = len(acknowledged)
                deadline = time.monotonic() + 30
                while len(acknowledged) < after_restart + 100 and time.monotonic() < deadline:
                    time.sleep(0.05)
                stop.set()
                for future in futures:
                    future.result()
        finally:
            stop.set()
    assert 500 not in statuses, statuses
    assert set(statuses) <= {200, 503}, statuses
    assert len(acknowledged) >= after_restart + 100, statuses
    ids = {uuid.UUID(i) for i in acknowledged}
    with make_session_factory(engine)() as session:
        logged = set(
            session.scalars(
                select(PredictionLog.request_id).where(PredictionLog.request_id.in_(ids))
            )
        )
    engine.dispose()
    assert ids - logged == set(), f"{len(ids - logged)} of {len(ids)} acknowledged ids missing"
