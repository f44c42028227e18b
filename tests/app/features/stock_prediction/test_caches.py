"""The per-worker caches of the token's user and of the lookback windows, as a user sees them:
a deactivated user keeps access for at most APP_USER_CACHE_SECONDS, a new bar is served at
most APP_BARS_CACHE_SECONDS after its ingest (and a database down then is a 503, not a stale
window), and a warm GET /predict reads nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from app.core.cache import ExpiringCache
from app.features.stock_prediction.predictor import Predictor
from app.features.stock_prediction.service import PredictionService, make_window_store
from app.main import create_app
from common.db import create_db_engine, make_session_factory
from data_pipeline.storage.upsert import upsert_bars
from tests.app.conftest import LOOKBACK, TICKER, Registry, login, serving
from tests.app.factories import (
    PASSWORD,
    create_user,
    deactivate_user,
    make_settings,
    mean_onnx_model,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class FakeClock:
    """A monotonic clock, seconds, that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(client: TestClient, settings: Any) -> Iterator[FakeClock]:
    """The session app serving from lookback windows on a fake clock for the test."""
    fake = FakeClock()
    sessions = client.app.state.session_factory  # type: ignore[attr-defined]
    with serving(client, windows=make_window_store(settings, sessions, timer=fake)):
        yield fake


def test_deactivated_user_is_refused_once_the_user_cache_expires(
    settings: Any, app_sessions: Callable[[], Session]
) -> None:
    """After deactivation the token still works until APP_USER_CACHE_SECONDS have passed
    since the user's row was read, then every protected route answers 401; a new login is
    refused at once (it always reads the row)."""
    with app_sessions() as session:
        create_user(session, "cached-leaver")
    clock = FakeClock()
    with TestClient(create_app(settings, configure_process=False, clock=clock)) as client:
        headers = {"Authorization": f"Bearer {login(client, 'cached-leaver')}"}
        assert client.get("/auth/me", headers=headers).status_code == 200
        with app_sessions() as session:
            deactivate_user(session, "cached-leaver")

        clock.now += settings.user_cache_seconds - 0.5
        assert client.get("/auth/me", headers=headers).status_code == 200
        relogin = client.post(
            "/auth/token", data={"username": "cached-leaver", "password": PASSWORD}
        )
        assert relogin.status_code == 401

        clock.now += 0.5
        for response in (
            client.get("/auth/me", headers=headers),
            client.get(f"/predict/{TICKER}", headers=headers),
        ):
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"


def _weekdays(start: dt.date, n: int) -> list[dt.date]:
    days: list[dt.date] = []
    day = start
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def _bar(day: dt.date, close: float) -> dict[str, Any]:
    return {
        "date": day,
        "open": close - 0.2,
        "high": close + 0.5,
        "low": close - 0.5,
        "close": close,
        "volume": 1_000_000,
    }


def _store_bars(url: str, rows: list[dict[str, Any]]) -> None:
    engine = create_db_engine(url)
    try:
        with make_session_factory(engine)() as session:
            upsert_bars(session, ticker=TICKER, rows=rows, source="snapshot")
            session.commit()
    finally:
        engine.dispose()


def _bars_and_user(url: str) -> list[dt.date]:
    """Stores LOOKBACK bars of TICKER and the user "ana"; returns LOOKBACK + 1 weekdays, the
    last one without a bar yet."""
    days = _weekdays(dt.date(2024, 1, 1), LOOKBACK + 1)
    _store_bars(url, [_bar(d, 30.0 + 0.1 * i) for i, d in enumerate(days[:-1])])
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        create_user(session, "ana")
    engine.dispose()
    return days


def test_a_new_bar_is_served_once_the_bars_cache_expires(
    fresh_pg_url: str, registry: Registry
) -> None:
    """A bar ingested after a prediction is not used until APP_BARS_CACHE_SECONDS have
    passed since the window was read; then GET /predict forecasts from it."""
    days = _bars_and_user(fresh_pg_url)
    predictor = Predictor(tracking_uri=registry.tracking_uri)
    settings = make_settings(database_url=fresh_pg_url, tracking_uri=registry.tracking_uri)
    clock = FakeClock()
    app = create_app(settings, predictor=predictor, configure_process=False, clock=clock)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {login(client, 'ana')}"}
        before = client.get(f"/predict/{TICKER}", headers=headers).json()
        assert before["as_of_date"] == days[-2].isoformat()

        _store_bars(fresh_pg_url, [_bar(days[-1], 40.0)])
        clock.now += settings.bars_cache_seconds - 0.5
        cached = client.get(f"/predict/{TICKER}", headers=headers).json()
        assert cached["as_of_date"] == days[-2].isoformat()
        assert cached["last_close"] == before["last_close"]

        clock.now += 0.5
        after = client.get(f"/predict/{TICKER}", headers=headers).json()
        assert after["as_of_date"] == days[-1].isoformat()
        assert after["last_close"] == 40.0


def test_a_database_down_at_revalidation_is_a_503_and_the_next_request_serves_new_bars(
    fresh_pg_url: str, registry: Registry, pg_server: Any
) -> None:
    """Once APP_BARS_CACHE_SECONDS have passed, GET /predict needs the windows revalidated:
    with Postgres down it answers 503 (never the old window), and once it is back the next
    request serves the bar committed before the outage."""
    days = _bars_and_user(fresh_pg_url)
    settings = make_settings(
        database_url=fresh_pg_url,
        tracking_uri=registry.tracking_uri,
        user_cache_seconds=3_600,  # the token's user stays cached: the outage hits the bars
    )
    name = fresh_pg_url.rsplit("/", 1)[1]
    clock = FakeClock()
    predictor = Predictor(tracking_uri=registry.tracking_uri)
    app = create_app(settings, predictor=predictor, configure_process=False, clock=clock)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {login(client, 'ana')}"}
        assert client.get(f"/predict/{TICKER}", headers=headers).status_code == 200
        _store_bars(fresh_pg_url, [_bar(days[-1], 40.0)])
        clock.now += settings.bars_cache_seconds
        pg_server.set_outage(name, down=True)
        try:
            down = client.get(f"/predict/{TICKER}", headers=headers)
        finally:
            pg_server.set_outage(name, down=False)
        assert down.status_code == 503, down.text
        back = client.get(f"/predict/{TICKER}", headers=headers)
        assert back.status_code == 200, back.text
        assert back.json()["as_of_date"] == days[-1].isoformat()
        assert back.json()["last_close"] == 40.0


def test_a_warm_predict_reads_nothing_and_only_the_writer_inserts(
    client: TestClient, clock: FakeClock, user_headers: dict[str, str]
) -> None:
    """With the user and the window cached, GET /predict checks out no connection of the
    app's engine and runs no statement there; the only statement is the group-commit
    writer's INSERT into prediction_log, on the connection it keeps."""
    service: PredictionService = client.app.state.prediction_service  # type: ignore[attr-defined]
    engine: Engine = service.session_factory.kw["bind"]
    writer_engine: Engine = service.log_writer.engine.sync_engine
    assert client.get(f"/predict/{TICKER}?horizon=3", headers=user_headers).status_code == 200
    statements: dict[str, list[str]] = {"app": [], "writer": []}
    checkouts: list[object] = []

    def recorder(key: str) -> Callable[..., None]:
        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements[key].append(" ".join(statement.split()))

        return record

    def checked_out(connection: Any, *_args: Any) -> None:
        checkouts.append(connection)

    listeners = [
        (engine, "before_cursor_execute", recorder("app")),
        (writer_engine, "before_cursor_execute", recorder("writer")),
        (engine.pool, "checkout", checked_out),
        (writer_engine.pool, "checkout", checked_out),
    ]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        response = client.get(f"/predict/{TICKER}?horizon=3", headers=user_headers)
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)
    assert response.status_code == 200
    assert checkouts == []  # the writer holds its connection; the request never connects
    assert statements["app"] == []
    assert statements["writer"], "the writer's INSERT was not seen"
    assert all(s.startswith("INSERT INTO prediction_log") for s in statements["writer"])


def _forward_passes_timed() -> float:
    """Forecasts computed for TICKER so far: observations of the inference histogram."""
    return (
        REGISTRY.get_sample_value("stockcast_model_inference_seconds_count", {"ticker": TICKER})
        or 0.0
    )


def test_a_forecast_is_computed_once_per_window_model_and_horizon(
    client: TestClient, clock: FakeClock, settings: Any, user_headers: dict[str, str]
) -> None:
    """Requests on the same window get the same predicted closes, each with its own
    prediction_id, and the model runs for the first of each horizon only; a window whose bars
    are unchanged when it is revalidated (APP_BARS_CACHE_SECONDS later) keeps its forecasts."""
    url = f"/predict/{TICKER}"
    before = _forward_passes_timed()
    first = client.get(f"{url}?horizon=3", headers=user_headers).json()
    assert _forward_passes_timed() == before + 1

    again = client.get(f"{url}?horizon=3", headers=user_headers).json()
    assert again["predictions"] == first["predictions"]
    assert again["prediction_id"] != first["prediction_id"]
    assert _forward_passes_timed() == before + 1  # served from the window

    other = client.get(f"{url}?horizon=5", headers=user_headers).json()
    assert [p["predicted_close"] for p in other["predictions"][:3]] == [
        p["predicted_close"] for p in first["predictions"]
    ]
    assert _forward_passes_timed() == before + 2  # another horizon, its own forecast

    clock.now += settings.bars_cache_seconds
    refreshed = client.get(f"{url}?horizon=3", headers=user_headers).json()
    assert refreshed["predictions"] == first["predictions"]
    assert refreshed["as_of_date"] == first["as_of_date"]
    assert _forward_passes_timed() == before + 2  # same bars: the forecast was kept


def test_a_loaded_models_inference_histogram_starts_at_zero_for_the_first_forecast_to_show(
    tmp_path: Any,
) -> None:
    """/metrics lists a ticker's inference histogram at count 0 as soon as its model is
    served: with forecasts computed once per window, a series that first appeared already
    holding the observations would show no increase, and the dashboard's inference panel
    would stay empty."""
    ticker = "ZERO.SA"  # no other test predicts it: its series is created by add() alone
    labels = {"ticker": ticker}
    assert REGISTRY.get_sample_value("stockcast_model_inference_seconds_count", labels) is None
    predictor = Predictor(tracking_uri=f"sqlite:///{tmp_path / 'empty-registry.db'}")
    predictor.add(mean_onnx_model(ticker=ticker, lookback=LOOKBACK, features=["rel_log_close"]))
    assert REGISTRY.get_sample_value("stockcast_model_inference_seconds_count", labels) == 0.0


def _lookup(
    cache: ExpiringCache[Any, Any],
    key: str,
    load: Callable[[], Any],
    *,
    keep: Callable[[Any], bool],
) -> Any:
    return asyncio.run(cache.get_or_load(key, load, keep=keep))


def test_a_ttl_of_zero_loads_every_time() -> None:
    """APP_*_CACHE_SECONDS=0 disables a cache: every lookup reads."""
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return len(loads)

    cache: ExpiringCache[str, int] = ExpiringCache(ttl_seconds=0, maxsize=10)
    assert [_lookup(cache, "k", load, keep=lambda _v: True) for _ in range(3)] == [1, 2, 3]
    assert not cache.enabled and len(cache) == 0


def test_values_refused_by_keep_and_failed_loads_are_not_stored() -> None:
    """An unknown user (None) or a short window is read again next time; so is a failure."""
    clock = FakeClock()
    cache: ExpiringCache[str, int | None] = ExpiringCache(ttl_seconds=5, maxsize=10, timer=clock)
    assert _lookup(cache, "ghost", lambda: None, keep=lambda v: v is not None) is None
    assert _lookup(cache, "ghost", lambda: 7, keep=lambda v: v is not None) == 7
    assert _lookup(cache, "ghost", lambda: 8, keep=lambda v: v is not None) == 7

    def fail() -> int:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        _lookup(cache, "other", fail, keep=lambda _v: True)
    assert _lookup(cache, "other", lambda: 1, keep=lambda _v: True) == 1
    clock.now += 5
    assert _lookup(cache, "ghost", lambda: 9, keep=lambda v: v is not None) == 9
