"""SIGTERM under load (issue 18 kept this working; the test keeps it so): the server stops
promptly and every prediction it acknowledged is in prediction_log.

A real ``python -m app serve`` on the API tests' Postgres and registry, 16 clients sending
GET /predict until the server goes away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import PredictionLog
from tests.app.conftest import TICKER, Registry
from tests.app.factories import PASSWORD, SECRET_KEY
from tests.app.features.stock_prediction.test_registry_outage import free_port, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 16


def test_sigterm_under_load_loses_no_acknowledged_prediction(
    app_db_url: str,
    registry: Registry,
    users: dict[str, str],
    app_sessions: Callable[[], Session],
) -> None:
    """Every 200 answered before and during the shutdown has its rows committed."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        env={
            **os.environ,
            "DATABASE_URL": app_db_url,
            "MLFLOW_TRACKING_URI": registry.tracking_uri,
            "APP_SECRET_KEY": SECRET_KEY,
            "APP_PORT": str(port),
            "APP_MODEL_POLL_SECONDS": "0",
            "APP_MODEL_STARTUP_WAIT_SECONDS": "120",
            "LOG_LEVEL": "WARNING",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    acknowledged: list[str] = []
    stop = threading.Event()
    try:
        wait_for(f"{base}/health", within=60.0)
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
        if server.poll() is None:
            server.kill()
            server.wait()
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
