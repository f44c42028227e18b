"""Operations: health, readiness, served models, their reload, and Prometheus metrics."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.features.stock_prediction.predictor import Predictor
from app.features.stock_prediction.service import make_window_store
from tests.app.conftest import LOOKBACK, TICKER, Registry, serving
from tests.app.factories import mean_onnx_model

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_health_and_ready(client: TestClient) -> None:
    """Liveness is 200; readiness is 200 with the database up and one model loaded."""
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "database": "ok",
        "registry": "ok",
        "registry_error": None,
        "models_loaded": 1,
        "missing": [],
    }


def test_models_lists_the_served_champion_with_metrics(
    client: TestClient, registry: Registry
) -> None:
    """GET /models shows ticker, version, lookback and the test metrics (MAE, MAPE, MASE)."""
    models = client.get("/models").json()
    assert [m["ticker"] for m in models] == [TICKER]
    (model,) = models
    assert (model["name"], model["version"]) == (registry.name, registry.version)
    assert model["lookback"] == LOOKBACK and model["accepts_closes"] is True
    assert model["metrics"]["mase"] == pytest.approx(registry.summary.metrics["mase"], rel=1e-5)
    assert model["metrics"]["mae"] > 0 and model["metrics"]["mape"] > 0
    assert model["metrics"]["naive_mase"] > 0


def test_metrics_expose_prediction_counters_latency_and_model_version(
    client: TestClient, user_headers: dict[str, str], registry: Registry
) -> None:
    """After a prediction, /metrics has the custom metrics and HTTP metrics by route template."""
    assert client.get(f"/predict/{TICKER}?horizon=2", headers=user_headers).status_code == 200
    text = client.get("/metrics").text
    labels = f'endpoint="store",model_version="{registry.version}",ticker="{TICKER}"'
    assert re.search(rf"stockcast_predictions_total\{{{labels}\}} [1-9]", text)
    assert re.search(
        rf'stockcast_predicted_points_total\{{model_version="{registry.version}",'
        rf'ticker="{TICKER}"\}} [1-9]',
        text,
    )
    assert f'stockcast_model_inference_seconds_bucket{{le="0.001",ticker="{TICKER}"}}' in text
    assert f'stockcast_model_version_loaded{{ticker="{TICKER}"}} {float(registry.version)}' in text
    assert 'handler="/predict/{ticker}"' in text
    assert 'http_request_duration_seconds_bucket{handler="/predict/{ticker}",le="0.005"' in text
    assert "PETR4.SA" not in re.sub(r'ticker="[^"]+"', "", text)  # raw paths never labelled


def test_admin_reload_keeps_the_unchanged_champion(
    client: TestClient, admin_headers: dict[str, str], registry: Registry
) -> None:
    """POST /models/reload by an admin reports the champion as unchanged and keeps serving."""
    response = client.post("/models/reload", headers=admin_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["unchanged"] == [f"{registry.name} v{registry.version}"]
    assert body["loaded"] == [] and body["failed"] == {} and body["served"] == 1


def _register_copy(registry: Registry, *, source: str | None = None) -> str:
    """A new version of the registered model (v1's artifacts, or a broken ``source``)."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    base = client.get_model_version(registry.name, registry.version)
    created = client.create_model_version(
        registry.name, source=source or str(base.source), run_id=base.run_id
    )
    return str(created.version)


def _set_champion(registry: Registry, version: str) -> None:
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    client.set_registered_model_alias(registry.name, "champion", version)


def test_new_champion_is_picked_up_by_polling_and_a_broken_one_keeps_the_old(
    registry: Registry, tmp_path
) -> None:
    """Polling serves a new champion without restart; a version that fails to load does not
    replace the model being served."""
    predictor = Predictor(tracking_uri=registry.tracking_uri)
    assert predictor.reload().loaded == [f"{registry.name} v{registry.version}"]
    new_version = _register_copy(registry)
    broken_version = _register_copy(registry, source=str(tmp_path / "missing-model"))
    try:
        predictor.start_polling(0.2)
        _set_champion(registry, new_version)
        deadline = time.monotonic() + 30
        while predictor.get(TICKER).version != new_version and time.monotonic() < deadline:
            time.sleep(0.1)
        assert predictor.get(TICKER).version == new_version
        predictor.stop_polling()

        _set_champion(registry, broken_version)
        report = predictor.reload()
        assert list(report.failed) == [f"{registry.name} v{broken_version}"]
        assert predictor.get(TICKER).version == new_version
    finally:
        predictor.stop_polling()
        _set_champion(registry, registry.version)


def test_post_is_refused_for_models_needing_ohlc(
    client: TestClient, settings, user_headers: dict[str, str], tmp_path
) -> None:
    """A model with OHLC features cannot predict from closes alone: 422 explaining why."""
    predictor = Predictor(tracking_uri=f"sqlite:///{tmp_path / 'empty-registry.db'}")
    predictor.add(
        mean_onnx_model(ticker=TICKER, lookback=5, features=["rel_log_close", "hl_range"])
    )
    windows = make_window_store(settings, client.app.state.session_factory)  # type: ignore[attr-defined]
    with serving(client, predictor=predictor, windows=windows):
        response = client.post(
            f"/predict/{TICKER}", json={"closes": [30.0] * 5}, headers=user_headers
        )
        assert response.status_code == 422
        assert "need open/high/low" in response.json()["detail"]
        got = client.get(f"/predict/{TICKER}?horizon=3", headers=user_headers)
        assert got.status_code == 200
        assert got.json()["model"]["features"] == ["rel_log_close", "hl_range"]


def test_multi_step_forecast_holds_the_last_bars_ohlc_features() -> None:
    """Each synthetic bar is the last bar rescaled: hl_range stays, the close path moves."""
    model = mean_onnx_model(ticker="TEST", lookback=3, features=["rel_log_close", "hl_range"])
    bars = {
        "open": np.array([10.0, 10.0, 10.0]),
        "high": np.array([11.0, 11.0, 11.0]),
        "low": np.array([9.0, 9.0, 9.0]),
        "close": np.array([10.0, 10.0, 10.0]),
    }
    forecast = model.forecast(bars, 2)
    hl = np.log(11.0 / 9.0)
    # step 1: rel_log_close all 0, hl_range all hl -> r1 = mean = hl / 2
    r1 = hl / 2
    # step 2: window closes (10, 10, 10 e^r1): rel = (-r1, -r1, 0); hl held -> r2
    r2 = (-2 * r1 + 3 * hl) / 6
    assert forecast.log_returns == pytest.approx([r1, r2], rel=1e-5)
    assert forecast.closes == pytest.approx([10 * np.exp(r1), 10 * np.exp(r1 + r2)], rel=1e-5)


def test_predictor_ignores_mlflows_process_wide_uris(
    registry: Registry, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The champion loads from the predictor's own tracking URI even when MLflow's global
    tracking/registry URI (and MLFLOW_TRACKING_URI) point elsewhere, as in `python -m app serve`."""
    import mlflow  # noqa: PLC0415

    saved = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(elsewhere)
    mlflow.set_registry_uri(elsewhere)
    try:
        predictor = Predictor(tracking_uri=registry.tracking_uri)
        report = predictor.reload()
        assert report.failed == {}
        assert predictor.get(TICKER).version == registry.version
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
