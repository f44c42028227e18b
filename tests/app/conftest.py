"""Fixtures of the API tests: a real Postgres price store, a real MLflow registry holding a
tiny LSTM trained on real PETR4.SA bars, and a running app (TestClient) on both.

The model is trained once per session (lookback 20, 8 units, 2 epochs: a few seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.core.config import AppSettings
from app.features.stock_prediction.service import PredictionService
from app.main import create_app
from common.db import create_db_engine, make_session_factory
from tests.app.factories import PASSWORD, SECRET_KEY, create_user, make_settings
from tests.processes import free_port, stop_process

TICKER = "PETR4.SA"
#: A ticker with bars in the store but no registered model.
TICKER_WITHOUT_MODEL = "VALE3.SA"
LOOKBACK = 20


def ingest(url: str, prices_dir: Path, *tickers: str) -> None:
    """Store the real snapshot bars of ``tickers`` in the database at ``url``."""
    from data_pipeline.run_pipeline import ingest_ticker  # noqa: PLC0415
    from data_pipeline.sources.snapshot import SnapshotSource  # noqa: PLC0415

    engine = create_db_engine(url)
    try:
        for ticker in tickers:
            with make_session_factory(engine)() as session, session.begin():
                report = ingest_ticker(
                    session, ticker=ticker, source=SnapshotSource(prices_dir), start=None
                )
                assert report.ok, report.error
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Registry:
    """The temporary MLflow store and the model version trained into it."""

    tracking_uri: str
    name: str
    version: str
    summary: Any


@pytest.fixture(scope="session")
def app_db_url(pg_server: Any, pg_template: str, prices_dir: Path) -> Iterator[str]:
    """A migrated Postgres database of the API tests holding PETR4.SA and VALE3.SA bars."""
    name = f"stockcast_test_app_{uuid.uuid4().hex[:8]}"
    url: str = pg_server.create(name, template=pg_template)
    ingest(url, prices_dir, TICKER, TICKER_WITHOUT_MODEL)
    yield url
    pg_server.drop(name)


@pytest.fixture(scope="session")
def app_engine(app_db_url: str) -> Iterator[Engine]:
    """Engine on :func:`app_db_url` for assertions on what the app wrote."""
    engine = create_db_engine(app_db_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def app_sessions(app_engine: Engine) -> Callable[[], Session]:
    """Session factory on the API tests' database."""
    return make_session_factory(app_engine)


@pytest.fixture(scope="session")
def registry(app_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A temporary MLflow store with a tiny LSTM of PETR4.SA trained on the real bars."""
    from ml_lifecycle.config import load_config  # noqa: PLC0415
    from ml_lifecycle.tracking import Tracking  # noqa: PLC0415
    from ml_lifecycle.train import train_and_register  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    engine = create_db_engine(app_db_url)
    try:
        summary = train_and_register(
            session_factory=make_session_factory(engine),
            ticker=TICKER,
            config=load_config(
                lookback=LOOKBACK, units=8, epochs=2, history_bars=800, folds=2, fold_bars=30
            ),
            tracking=Tracking(tracking_uri),
            reports_dir=folder / "reports",
        )
    finally:
        engine.dispose()
    assert summary.ok and summary.alias == "champion", summary
    return Registry(
        tracking_uri=tracking_uri,
        name=summary.registered_model,
        version=str(summary.version),
        summary=summary,
    )


@pytest.fixture(scope="session")
def settings(app_db_url: str, registry: Registry) -> AppSettings:
    """Settings of the session's app."""
    return make_settings(database_url=app_db_url, tracking_uri=registry.tracking_uri)


@pytest.fixture(scope="session")
def users(app_sessions: Callable[[], Session]) -> dict[str, str]:
    """Usernames by role: ``user`` (ana) and ``admin`` (root), password :data:`PASSWORD`."""
    with app_sessions() as session:
        create_user(session, "ana")
        create_user(session, "root", admin=True)
    return {"user": "ana", "admin": "root"}


@pytest.fixture(scope="session")
def client(settings: AppSettings, users: dict[str, str]) -> Iterator[TestClient]:
    """The app, started (lifespan run: champion loaded), on the session's database."""
    with TestClient(create_app(settings, configure_process=False)) as test_client:
        yield test_client


@contextmanager
def serving(client: TestClient, **parts: Any) -> Iterator[PredictionService]:
    """The running app with its prediction service's ``parts`` (``predictor``,
    ``windows`` ...) replaced, in ``app.state`` where every route finds it; restored on
    exit."""
    app: Any = client.app
    current: PredictionService = app.state.prediction_service
    replaced = PredictionService(
        **{
            "predictor": current.predictor,
            "windows": current.windows,
            "log_writer": current.log_writer,
            "session_factory": current.session_factory,
            "settings": current.settings,
            **parts,
        }
    )
    app.state.prediction_service = replaced
    try:
        yield replaced
    finally:
        app.state.prediction_service = current


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """A bearer token from ``POST /auth/token``."""
    response = client.post("/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture(scope="session")
def user_headers(client: TestClient, users: dict[str, str]) -> dict[str, str]:
    """Authorization header of the regular user."""
    return {"Authorization": f"Bearer {login(client, users['user'])}"}


@pytest.fixture(scope="session")
def admin_headers(client: TestClient, users: dict[str, str]) -> dict[str, str]:
    """Authorization header of the admin."""
    return {"Authorization": f"Bearer {login(client, users['admin'])}"}


def wait_for(url: str, *, within: float) -> httpx.Response:
    """The first answer of ``url`` within ``within`` seconds (connection refused meanwhile)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def app_environment(*, database_url: str, registry: Registry, **env: str) -> dict[str, str]:
    """The environment of an API process of these tests: this one's, plus the app's database,
    the registry's tracking store, the test key, no polling, and the models loaded before it
    serves; ``env`` adds or overrides variables."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "APP_SECRET_KEY": SECRET_KEY,
        "APP_MODEL_POLL_SECONDS": "0",
        "APP_MODEL_STARTUP_WAIT_SECONDS": "120",
        **env,
    }


@contextmanager
def served_app(
    *, database_url: str, registry: Registry, log: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m app serve`` in a fresh process (:func:`app_environment`, WARNING logs) on a
    free port, once it answers ``/health``: yields its base URL and its process.

    Its output goes to the file ``log``. On exit a server still running gets SIGTERM (and
    SIGKILL after 30 s); a test that stops it itself (a SIGTERM drain) is left as it is.
    """
    port = free_port()
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            env=app_environment(
                database_url=database_url,
                registry=registry,
                **{"APP_PORT": str(port), "LOG_LEVEL": "WARNING", **env},
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/health", within=60.0)
            yield f"http://127.0.0.1:{port}", server
        finally:
            stop_process(server, timeout=30)


def run_app_script(
    script: str, *, database_url: str, registry: Registry, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh Python process configured like a served API (the app's
    database, the registry's tracking store, the test key, no polling); asserts exit 0.

    For what one process must not share with this one (imports, the garbage collector).
    """
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        env=app_environment(database_url=database_url, registry=registry, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
