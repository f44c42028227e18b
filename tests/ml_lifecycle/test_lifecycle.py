"""The whole lifecycle on real data: train a tiny LSTM on PETR4.SA from the real Postgres,
register it in a temporary MLflow store, and load it back from ``@champion``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from common.features import scale, window_features
from common.forecasting import Forecaster
from common.model_contract import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    KERAS_ARTIFACT,
    METADATA_ARTIFACT,
    METRIC_TAG_PREFIX,
    ONNX_ARTIFACT,
    ModelMetadata,
    champion_uri,
    registered_model_name,
)
from common.price_store import Bars
from ml_lifecycle.export.promotion import decide
from ml_lifecycle.training.data import InsufficientBarsError, prepare_data
from ml_lifecycle.training.train import train_network
from ml_lifecycle.workflow import TickerTrainSummary, evaluate_champion, train_and_register
from tests.ml_lifecycle.conftest import TICKER, TINY_TICKER, tiny_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NAME = registered_model_name(TICKER)


@pytest.fixture(scope="module")
def champion(ml_session_factory, tracking_uri, tmp_path_factory) -> TickerTrainSummary:
    """Version 1 of stock-lstm-PETR4.SA, trained tiny and registered as champion."""
    return train_and_register(
        session_factory=ml_session_factory,
        ticker=TICKER,
        config=tiny_config(),
        tracking_uri=tracking_uri,
        reports_dir=tmp_path_factory.mktemp("reports"),
    )


@pytest.fixture(scope="module")
def champion_dir(champion, tracking_uri, tmp_path_factory) -> Path:
    """The champion's logged model, downloaded from ``models:/stock-lstm-PETR4.SA@champion``."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=champion_uri(TICKER), dst_path=str(tmp_path_factory.mktemp("champion"))
    )
    return Path(local)


def test_first_version_becomes_champion_with_a_json_ready_summary(champion):
    assert champion.ok and champion.version == "1" and champion.promoted
    assert champion.alias == CHAMPION_ALIAS and champion.reason == "no champion yet"
    summary = json.loads(json.dumps(champion.to_dict()))
    assert (
        set(summary["metrics"])
        == set(summary["naive_metrics"])
        == {
            "mae",
            "rmse",
            "mape",
            "mase",
            "r2",
            "directional_accuracy",
        }
    )
    assert summary["n_test"] == 90 and summary["epochs"] >= 1 and summary["seconds"] > 0
    assert summary["onnx_max_abs_diff"] <= 1e-4


def test_champion_uri_holds_metadata_onnx_and_keras(champion_dir, champion):
    for relative in (METADATA_ARTIFACT, ONNX_ARTIFACT, KERAS_ARTIFACT):
        assert (champion_dir / relative).is_file(), relative
    metadata = ModelMetadata.model_validate_json((champion_dir / METADATA_ARTIFACT).read_text())
    assert metadata.ticker == TICKER and metadata.lookback == 20
    assert metadata.features == ["rel_log_close"] and metadata.target == "log_return"
    assert len(metadata.feature_scaler.mean) == 1 and len(metadata.target_scaler.scale) == 1
    assert str(metadata.last_bar_date) == champion.test_end
    assert metadata.metrics["mase"] == pytest.approx(champion.metrics["mase"])
    assert metadata.metrics["naive_mase"] == pytest.approx(champion.naive_metrics["mase"])
    requirements = (champion_dir / "requirements.txt").read_text()
    assert "onnxruntime==" in requirements and "tensorflow" not in requirements


def test_keras_and_onnx_from_champion_agree_on_real_windows(champion_dir, petr_bars: Bars):
    metadata = ModelMetadata.model_validate_json((champion_dir / METADATA_ARTIFACT).read_text())
    fs = metadata.feature_scaler
    windows = window_features(petr_bars.as_mapping(), metadata.lookback, metadata.features)
    x = scale(windows[-300:], fs.mean, fs.scale).astype(np.float32)
    keras_model = keras.saving.load_model(champion_dir / KERAS_ARTIFACT)
    from_keras = np.asarray(keras_model.predict(x, verbose=0)).reshape(-1)
    onnx = Forecaster.from_onnx(metadata, str(champion_dir / ONNX_ARTIFACT))
    from_onnx = np.asarray(onnx.network(x)).reshape(-1)
    assert from_onnx.shape == (300,)
    assert np.max(np.abs(from_keras - from_onnx)) <= 1e-4
    assert np.std(from_onnx) > 0  # real, varying forecasts, not a constant


def test_pyfunc_from_champion_predicts_the_next_close_from_raw_bars(
    champion, champion_dir, petr_bars: Bars, tracking_uri
):
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(champion_uri(TICKER))
    frame = petr_bars.to_frame().tail(50)
    frame["date"] = pd.to_datetime(frame["date"])
    out = model.predict(frame)
    assert list(out.columns) == [
        "last_bar_date",
        "last_close",
        "predicted_log_return",
        "predicted_close",
    ]
    row = out.iloc[0]
    assert row["last_bar_date"] == str(petr_bars.dates[-1])
    assert row["last_close"] == pytest.approx(petr_bars.close[-1])
    metadata = ModelMetadata.model_validate_json((champion_dir / METADATA_ARTIFACT).read_text())
    # the same forecast, computed from the artifacts, for the day after the last bar
    onnx = Forecaster.from_onnx(metadata, str(champion_dir / ONNX_ARTIFACT))
    expected = onnx.forecast_paths(petr_bars.as_mapping(), [len(petr_bars) - 1], 1).closes
    assert row["predicted_close"] == pytest.approx(expected[0, 0], rel=1e-6)
    assert abs(row["predicted_close"] / row["last_close"] - 1) < 0.2
    with pytest.raises(Exception, match="lookback"):
        model.predict(frame.tail(5))


def test_version_tags_and_run_carry_metrics_params_and_plots(champion, tracking_uri):
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version(NAME, champion.version)
    assert version.tags["ticker"] == TICKER
    for key in (
        "mae",
        "rmse",
        "mape",
        "mase",
        "r2",
        "directional_accuracy",
        "naive_mase",
        "naive_mae",
        "naive_directional_accuracy",
    ):
        assert f"{METRIC_TAG_PREFIX}{key}" in version.tags, key
    assert float(version.tags[f"{METRIC_TAG_PREFIX}mase"]) == pytest.approx(
        champion.metrics["mase"], rel=1e-5
    )
    run = client.get_run(champion.run_id)
    assert run.data.params["lookback"] == "20" and run.data.params["units"] == "8"
    assert run.data.metrics["test_mase"] == pytest.approx(champion.metrics["mase"])
    assert len(client.get_metric_history(champion.run_id, "val_loss")) == champion.epochs
    plots = {Path(a.path).name for a in client.list_artifacts(champion.run_id, "plots")}
    assert plots == {f"{TICKER}_actual_vs_predicted.png", f"{TICKER}_residuals.png"}


def test_training_is_repeatable_with_the_same_seed(ml_session_factory, petr_bars, champion):
    data = prepare_data(petr_bars, tiny_config())
    first = train_network(data, tiny_config())
    second = train_network(data, tiny_config())
    assert first.history["loss"] == second.history["loss"]


def test_evaluate_champion_reports_model_and_naive_on_the_latest_window(
    champion, ml_session_factory, tracking_uri
):
    result = evaluate_champion(
        session_factory=ml_session_factory,
        ticker=TICKER,
        tracking_uri=tracking_uri,
        config=tiny_config(),
    )
    assert result["version"] == champion.version
    assert result["window_end"] == champion.test_end
    assert result["new_bars_since_training"] == 0
    assert result["metrics"]["mase"] == pytest.approx(champion.metrics["mase"], rel=1e-4)
    assert result["naive_metrics"]["mase"] == pytest.approx(
        champion.naive_metrics["mase"], rel=1e-4
    )


def test_promotion_gate_compares_mase_with_the_champion_on_the_same_window(
    champion, petr_bars, tracking_uri
):
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    data = prepare_data(petr_bars, tiny_config())
    n = data.bounds.n_bars
    bars = {k: np.asarray(v)[-n:] for k, v in petr_bars.as_mapping().items()}
    common: dict[str, Any] = {
        "bars": bars,
        "start": data.bounds.val_end,
        "stop": n,
        "in_sample": data.train_closes,
    }
    old = champion.metrics["mase"]

    worse = decide(client, NAME, new_mase=old + 0.5, **common)
    assert not worse.promote and worse.champion_version == "1"
    assert worse.champion_mase == pytest.approx(old, rel=1e-4)
    assert worse.reason.startswith("not better: test MASE")

    better = decide(client, NAME, new_mase=old - 0.01, **common)
    assert better.promote and better.reason.startswith("better: test MASE")

    forced = decide(client, NAME, new_mase=old + 0.5, force=True, **common)
    assert forced.promote and "forced by operator" in forced.reason


def test_worse_version_becomes_challenger_and_force_promote_makes_it_champion(
    champion, ml_session_factory, tracking_uri
):
    """A second version that forecasts badly gets the alias challenger and the summary says
    why; the operator's --force-promote then moves champion to a new version anyway."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    bad = tiny_config(epochs=1, learning_rate=0.9, units=4, seed=3)
    second = train_and_register(
        session_factory=ml_session_factory, ticker=TICKER, config=bad, tracking_uri=tracking_uri
    )
    assert second.ok and second.version == "2"
    assert not second.promoted and second.alias == CHALLENGER_ALIAS
    assert second.reason.startswith("not better") and "champion v1" in second.reason
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == "1"
    assert str(client.get_model_version_by_alias(NAME, CHALLENGER_ALIAS).version) == "2"

    third = train_and_register(
        session_factory=ml_session_factory,
        ticker=TICKER,
        config=bad,
        tracking_uri=tracking_uri,
        force_promote=True,
    )
    assert third.promoted and third.alias == CHAMPION_ALIAS and "forced by operator" in third.reason
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == "3"


def test_too_few_bars_fails_before_anything_is_logged(ml_session_factory, tracking_uri):
    with pytest.raises(InsufficientBarsError, match=rf"{TINY_TICKER}: 40 bars stored"):
        train_and_register(
            session_factory=ml_session_factory,
            ticker=TINY_TICKER,
            config=tiny_config(),
            tracking_uri=tracking_uri,
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert client.search_model_versions(f"name='{registered_model_name(TINY_TICKER)}'") == []
