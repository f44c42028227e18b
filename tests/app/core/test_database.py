"""The database going away and coming back; a model whose ticker has no stored bars."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.features.stock_prediction.predictor import Predictor
from app.main import create_app
from common.db import create_db_engine, make_session_factory
from tests.app.conftest import TICKER, Registry, ingest, login
from tests.app.factories import create_user, make_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def shared_predictor(registry: Registry) -> Predictor:
    """A predictor serving the session's champion."""
    predictor = Predictor(tracking_uri=registry.tracking_uri)
    predictor.reload()
    return predictor


def _app_on(url: str, registry: Registry, predictor: Predictor) -> TestClient:
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        create_user(session, "ana")
    engine.dispose()
    settings = make_settings(database_url=url, tracking_uri=registry.tracking_uri)
    return TestClient(create_app(settings, predictor=predictor, configure_process=False))


@pytest.fixture
def own_db(pg_server: Any, pg_template: str) -> Iterator[tuple[str, str]]:
    """(name, url) of a migrated database of this test's own."""
    name = f"stockcast_test_down_{uuid.uuid4().hex[:8]}"
    url = pg_server.create(name, template=pg_template)
    yield name, url
    with pg_server.admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
    pg_server.drop(name)


def test_database_outage_gives_503_and_the_app_recovers_by_itself(
    own_db: tuple[str, str],
    pg_server: Any,
    prices_dir: Path,
    registry: Registry,
    shared_predictor: Predictor,
) -> None:
    """While Postgres refuses connections /predict and login answer 503 and /ready fails;
    once it is back the same app serves (and logs) predictions again without a restart."""
    name, url = own_db
    ingest(url, prices_dir, TICKER)
    with _app_on(url, registry, shared_predictor) as client:
        headers = {"Authorization": f"Bearer {login(client, 'ana')}"}
        assert client.get(f"/predict/{TICKER}", headers=headers).status_code == 200

        pg_server.set_outage(name, down=True)
        down = client.get(f"/predict/{TICKER}?horizon=2", headers=headers)
        assert down.status_code == 503
        assert down.json() == {"detail": "the database is unavailable; retry in a few seconds"}
        assert down.headers["Retry-After"] == "5"
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["database"] == "unavailable"
        assert (
            client.post("/auth/token", data={"username": "ana", "password": "x" * 8}).status_code
            == 503
        )
        assert client.get("/health").status_code == 200

        pg_server.set_outage(name, down=False)
        back = client.get(f"/predict/{TICKER}?horizon=2", headers=headers)
        assert back.status_code == 200
        assert client.get("/ready").status_code == 200
        engine = create_db_engine(url)
        with engine.connect() as conn:
            logged = conn.execute(
                text("SELECT count(*) FROM prediction_log WHERE request_id = :id"),
                {"id": uuid.UUID(back.json()["prediction_id"])},
            ).scalar_one()
        engine.dispose()
        assert logged == 2


def test_model_without_stored_bars_is_404_naming_the_bars(
    fresh_pg_url: str, registry: Registry, shared_predictor: Predictor
) -> None:
    """A ticker whose model is served but whose bars are not stored: 404 'no price bars'."""
    with _app_on(fresh_pg_url, registry, shared_predictor) as client:
        headers = {"Authorization": f"Bearer {login(client, 'ana')}"}
        response = client.get(f"/predict/{TICKER}", headers=headers)
        assert response.status_code == 404
        assert response.json()["detail"].startswith(f"no price bars are stored for {TICKER}")
        assert "needs the last 20" in response.json()["detail"]


def test_fewer_bars_than_the_lookback_is_404_with_the_counts(
    fresh_pg_url: str, registry: Registry, shared_predictor: Predictor
) -> None:
    """5 stored bars for a model with lookback 20: 404 saying how many are stored and needed."""
    import datetime as dt  # noqa: PLC0415

    from data_pipeline.storage.upsert import upsert_bars  # noqa: PLC0415

    engine = create_db_engine(fresh_pg_url)
    with make_session_factory(engine)() as session:
        rows = [
            {"date": dt.date(2024, 1, 1 + i), "open": 30.0, "high": 31.0, "low": 29.0,
             "close": 30.5, "volume": 1000}
            for i in range(5)
        ]  # fmt: skip
        upsert_bars(session, ticker=TICKER, rows=rows, source="snapshot")
        session.commit()
    engine.dispose()
    with _app_on(fresh_pg_url, registry, shared_predictor) as client:
        headers = {"Authorization": f"Bearer {login(client, 'ana')}"}
        response = client.get(f"/predict/{TICKER}", headers=headers)
        assert response.status_code == 404
        assert response.json()["detail"].startswith(
            f"only 5 price bars are stored for {TICKER}; the model needs the last 20"
        )


def test_ready_fails_without_models(fresh_pg_url: str, registry: Registry, tmp_path: Path) -> None:
    """With an empty registry /ready answers 503 (models_loaded 0) and /predict 404."""
    empty = Predictor(tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}")
    with _app_on(fresh_pg_url, registry, empty) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503, ready.json()
        assert ready.json() == {
            "ready": False,
            "database": "ok",
            "registry": "ok",
            "registry_error": None,
            "models_loaded": 0,
            "missing": ["models"],
        }
