"""Drift and staleness in every prediction response, and as metrics."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import delete, event
from sqlalchemy.orm import Session

from app.features.model_health.service import HealthMonitor, compute_health
from app.features.stock_prediction.predictor import Predictor
from app.features.stock_prediction.service import PredictionService
from app.main import create_app
from common.drift import training_distributions
from common.features import window_features
from common.price_store import PriceBar
from tests.app.conftest import TICKER, Registry, login
from tests.app.factories import make_settings, mean_onnx_model

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

LOOKBACK = 20
FEATURES = ["rel_log_close"]
#: Served with a reference from PETR4.SA's bars; their stored bars: a year from PETR4.SA's
#: own later bars (CALM.SA), or a synthetic year with 5x PETR4.SA's volatility (WILD.SA).
CALM, WILD = "CALM.SA", "WILD.SA"
RECENT = 250


def petr_closes(prices_dir: Path) -> np.ndarray:
    with (prices_dir / f"{TICKER}.csv").open() as handle:
        return np.array([float(r["Close"]) for r in csv.DictReader(handle)])


def bar_rows(ticker: str, closes: np.ndarray, last_date: dt.date) -> list[PriceBar]:
    """Close-only bars (O=H=L=C) on the weekdays up to ``last_date``."""
    days: list[dt.date] = []
    day = last_date
    while len(days) < len(closes):
        if day.weekday() < 5:
            days.append(day)
        day -= dt.timedelta(days=1)
    return [
        PriceBar(ticker=ticker, date=d, open=c, high=c, low=c, close=c, volume=1,
                 currency="BRL", exchange="B3", source="snapshot")
        for d, c in zip(reversed(days), closes, strict=True)
    ]  # fmt: skip


@pytest.fixture
def regimes(
    app_db_url: str,
    app_sessions: Callable[[], Session],
    prices_dir: Path,
    tmp_path: Path,
    users: dict[str, str],
) -> Iterator[TestClient]:
    closes = petr_closes(prices_dir)
    reference, later = closes[:-RECENT], closes[-RECENT:]
    bars = {"close": reference}
    distributions = training_distributions(
        closes=reference, windows=window_features(bars, LOOKBACK, FEATURES), features=FEATURES
    )
    rng = np.random.default_rng(2023)
    volatility = np.diff(np.log(reference)).std()
    wild = later[0] * np.exp(np.cumsum(rng.normal(0, 5 * volatility, RECENT)))
    predictor = Predictor(tracking_uri=f"sqlite:///{tmp_path / 'empty-registry.db'}")
    for ticker in (CALM, WILD):
        model = mean_onnx_model(ticker=ticker, lookback=LOOKBACK, features=FEATURES)
        model.metadata.input_distributions = distributions
        predictor.add(model)  # built on bars to 2023-12-29 (the factory's last_bar_date)
    with app_sessions() as session:
        session.add_all(bar_rows(CALM, later, dt.date(2023, 12, 29)))
        session.add_all(bar_rows(WILD, wild, dt.date(2024, 2, 9)))  # 30 bars past the model's
        session.commit()
    settings = make_settings(database_url=app_db_url, tracking_uri="unused")
    try:
        with TestClient(create_app(settings, predictor=predictor, configure_process=False)) as c:
            yield c
    finally:
        with app_sessions() as session:
            session.execute(delete(PriceBar).where(PriceBar.ticker.in_([CALM, WILD])))
            session.commit()


def predict(client: TestClient, ticker: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {login(client, 'ana')}"}
    response = client.get(f"/predict/{ticker}?horizon=2", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_window_from_a_regime_of_five_times_the_volatility_is_drift(
    regimes: TestClient,
) -> None:
    """The same model on its own ticker's later year: not drift; on a year with 5x the
    volatility: status drift, with PSI above 0.25 and a large KS; both as gauges too."""
    calm, wild = predict(regimes, CALM), predict(regimes, WILD)
    assert calm["drift"]["status"] in {"stable", "moderate"} and calm["drift"]["psi"] < 0.25
    assert wild["drift"]["status"] == "drift" and wild["drift"]["psi"] > 0.25
    assert wild["drift"]["ks"] > calm["drift"]["ks"]
    assert wild["drift"]["window_bars"] == calm["drift"]["window_bars"] == RECENT
    psi = REGISTRY.get_sample_value("stockcast_input_drift_psi", {"ticker": WILD})
    assert psi == pytest.approx(wild["drift"]["psi"])


def test_staleness_counts_the_bars_stored_after_the_models_last_bar(regimes: TestClient) -> None:
    """Bars to 2024-02-09 for a model built on bars to 2023-12-29: 30 bars behind, stale."""
    calm, wild = predict(regimes, CALM), predict(regimes, WILD)
    assert calm["stale"] == {"last_train_bar": "2023-12-29", "bars_behind": 0, "stale": False}
    assert wild["stale"] == {"last_train_bar": "2023-12-29", "bars_behind": 30, "stale": True}
    assert REGISTRY.get_sample_value("stockcast_model_bars_behind", {"ticker": WILD}) == 30


def test_a_trained_champion_reports_its_drift_and_is_not_behind(
    client: TestClient, user_headers: dict[str, str], registry: Registry
) -> None:
    """The champion trained on the stored bars records its input distributions: a known
    drift status, and 0 bars behind."""
    body = client.get(f"/predict/{TICKER}?horizon=1", headers=user_headers).json()
    assert body["drift"]["status"] in {"stable", "moderate", "drift"}
    assert body["drift"]["psi"] >= 0 and 0 <= body["drift"]["ks"] <= 1
    assert body["stale"]["bars_behind"] == 0 and body["stale"]["stale"] is False
    assert body["stale"]["last_train_bar"] == body["model"]["last_bar_date"]


def test_the_served_models_health_is_computed_together_and_kept_for_their_requests(
    regimes: TestClient, app_db_url: str
) -> None:
    """compute_all reads the bars of every model in one statement (plus a count for a model
    whose last training bar is older than the drift window), reports what a model's own
    computation reports, and the requests then reuse it: no session at all."""
    settings = make_settings(database_url=app_db_url, tracking_uri="unused", drift_window_bars=10)
    service: PredictionService = regimes.app.state.prediction_service  # type: ignore[attr-defined]
    models = [service.predictor.get(CALM), service.predictor.get(WILD)]
    sessions_opened: list[Session] = []

    def sessions() -> Session:
        session = service.session_factory()
        sessions_opened.append(session)
        return session

    monitor = HealthMonitor(sessions, settings)  # type: ignore[arg-type]
    engine = service.session_factory.kw["bind"]
    statements: list[str] = []
    test_thread = threading.get_ident()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == test_thread:  # not the app's background refreshes
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        monitor.compute_all(models)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 2  # the bars of both, then WILD's count (30 > 10 behind)
    served = [asyncio.run(monitor.get(model)) for model in models]
    assert len(sessions_opened) == 1  # the requests computed nothing
    with service.session_factory() as session:
        assert served == [compute_health(session, model, settings) for model in models]
    calm, wild = served
    assert (calm.stale.bars_behind, wild.stale.bars_behind) == (0, 30)
    assert calm.drift.window_bars == wild.drift.window_bars == 10
