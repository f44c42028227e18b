"""SIGTERM under load (issue 18 kept this working; the test keeps it so): the server stops
promptly and every prediction it acknowledged is in prediction_log.

A real ``python -m app serve`` on the API tests' Postgres and registry, 16 clients sending
GET /predict until the server goes away.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import PredictionLog
from tests.app.conftest import TICKER, Registry, served_app
from tests.app.factories import PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 16


def test_sigterm_under_load_loses_no_acknowledged_prediction(
    app_db_url: str,
    registry: Registry,
    users: dict[str, str],
    app_sessions: Callable[[], Session],
    tmp_path: Path,
) -> None:
    """Every 200 answered before and during the shutdown has its rows committed."""
    acknowledged: list[str] = []
    stop = threading.Event()
    with served_app(database_url=app_db_url, registry=registry, log=tmp_path / "api.log") as (
        base,
        server,
    ):
        token = httpx.post(
            f"{base}/auth/token", data={"username": users["user"], "password": PASSWORD}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def client() -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
                while not stop.is_set():
                    try:
                        response = http.get(f"/predict/{TICKER}?horizon=2")
                    except httpx.TransportError:
                        return  # the server has gone away
                    if response.status_code == 200:
                        acknowledged.append(response.json()["prediction_id"])

        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                for _ in range(CLIENTS):
                    pool.submit(client)
                deadline = time.monotonic() + 30
                while len(acknowledged) < 200 and time.monotonic() < deadline:
                    time.sleep(0.05)
                stopping = time.monotonic()
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
                stopped_after = time.monotonic() - stopping
                stop.set()
        finally:
            stop.set()
    assert len(acknowledged) >= 200
    assert stopped_after < 15, f"SIGTERM took {stopped_after:.1f} s"
    ids = {uuid.UUID(i) for i in acknowledged}
    with app_sessions() as session:
        logged = set(
            session.scalars(
                select(PredictionLog.request_id).where(PredictionLog.request_id.in_(ids))
            )
        )
    assert ids - logged == set(), f"{len(ids - logged)} of {len(ids)} acknowledged ids missing"
