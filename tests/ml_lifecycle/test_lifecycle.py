"""The whole lifecycle on real data: train a tiny LSTM on PETR4.SA from the real Postgres,
register it in a temporary MLflow store, and load it back from ``@champion``."""

from __future__ import annotations

import dataclasses
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
from ml_lifecycle.backtest import backtest_ticker, walk_forward
from ml_lifecycle.data import prepare_fit
from ml_lifecycle.evaluate import evaluate_champion
from ml_lifecycle.exceptions import InsufficientBarsError
from ml_lifecycle.registry import decide
from ml_lifecycle.summary import TickerTrainSummary
from ml_lifecycle.tracking import Tracking
from ml_lifecycle.train import train_and_register, train_network
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
        tracking=Tracking(tracking_uri),
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
    assert {
        "mae",
        "mase",
        "relative_mae",
        "relative_mae_drift",
        "dm_pvalue",
        "directional_accuracy",
        "up_days",
        "coverage_80",
        "coverage_95",
    } <= set(summary["metrics"])
    assert summary["folds"] == 2 and len(summary["fold_metrics"]) == 2
    assert 0.0 <= summary["combination_weight"] <= 1.0
    assert summary["train_seconds"] > 0 and summary["seconds"] > 0


def test_champion_uri_holds_metadata_onnx_and_keras(champion_dir, champion):
    for relative in (METADATA_ARTIFACT, ONNX_ARTIFACT, KERAS_ARTIFACT):
        assert (champion_dir / relative).is_file(), relative
    metadata = ModelMetadata.model_validate_json((champion_dir / METADATA_ARTIFACT).read_text())
    assert metadata.ticker == TICKER and metadata.lookback == 20
    assert metadata.features == ["rel_log_close"] and metadata.target == "log_return"
    assert len(metadata.feature_scaler.mean) == 1 and len(metadata.target_scaler.scale) == 1
    assert str(metadata.last_bar_date) == champion.test_end
    assert metadata.metrics["relative_mae"] == pytest.approx(champion.metrics["relative_mae"])
    assert metadata.combination.weight == champion.combination_weight
    assert metadata.intervals is not None and len(metadata.intervals.quantiles) == 5
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
    for key in ("mae", "mase", "relative_mae", "dm_pvalue", "coverage_80", "naive_mae"):
        assert f"{METRIC_TAG_PREFIX}{key}" in version.tags, key
    assert float(version.tags[f"{METRIC_TAG_PREFIX}relative_mae"]) == pytest.approx(
        champion.metrics["relative_mae"], rel=1e-5
    )
    run = client.get_run(champion.run_id)
    assert run.data.params["lookback"] == "20" and run.data.params["units"] == "8"
    assert run.data.metrics["wf_relative_mae"] == pytest.approx(champion.metrics["relative_mae"])
    assert len(client.get_metric_history(champion.run_id, "fold_relative_mae")) == 2
    plots = {Path(a.path).name for a in client.list_artifacts(champion.run_id, "plots")}
    assert plots == {f"{TICKER}_walk_forward.png"}
    assert run.info.run_name.startswith(f"{TICKER}-train-")
    assert run.data.tags["kind"] == "train" and run.data.tags["registered_model"] == NAME
    assert run.info.status == "FINISHED"


def test_a_backtest_is_one_finished_run_and_registers_nothing(
    ml_session_factory, tracking_uri, tmp_path
):
    """backtest_ticker logs a run of kind backtest (params, fold metrics, summary.json) in the
    same experiment as training, and leaves the registry as it was."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    versions_before = len(client.search_model_versions(f"name='{NAME}'"))
    summary = backtest_ticker(
        session_factory=ml_session_factory,
        ticker=TICKER,
        config=tiny_config(),
        tracking=Tracking(tracking_uri),
        horizon=2,
        reports_dir=tmp_path,
    )
    assert summary.ok and summary.run_id
    run = client.get_run(summary.run_id)
    assert run.info.run_name.startswith(f"{TICKER}-backtest-")
    assert run.info.status == "FINISHED"
    assert run.data.tags["ticker"] == TICKER and run.data.tags["kind"] == "backtest"
    assert run.data.params["horizon"] == "2" and run.data.params["lookback"] == "20"
    assert len(client.get_metric_history(summary.run_id, "fold_relative_mae")) == 2
    assert "summary.json" in {a.path for a in client.list_artifacts(summary.run_id)}
    assert (tmp_path / TICKER / f"{TICKER}_walk_forward.png").exists()
    assert len(client.search_model_versions(f"name='{NAME}'")) == versions_before


def test_training_is_repeatable_with_the_same_seed(petr_bars):
    bars = petr_bars.as_mapping()
    data = prepare_fit(bars, petr_bars.dates, tiny_config(), ticker=TICKER)
    first = train_network(data, tiny_config())
    second = train_network(data, tiny_config())
    assert first.history["loss"] == second.history["loss"]


def test_evaluate_champion_scores_it_on_the_bars_it_was_not_fit_on(
    champion, champion_dir, ml_session_factory, tracking_uri, petr_bars
):
    result = evaluate_champion(
        session_factory=ml_session_factory, ticker=TICKER, tracking=Tracking(tracking_uri)
    )
    metadata = ModelMetadata.model_validate_json((champion_dir / METADATA_ARTIFACT).read_text())
    assert result["version"] == champion.version
    assert result["window_end"] == str(petr_bars.dates[-1])
    assert result["window_start"] > str(metadata.last_train_date)
    assert result["new_bars_since_training"] == 0
    assert result["metrics"]["mase"] > 0 and result["naive_metrics"]["mase"] > 0


def test_promotion_gate_compares_mae_with_the_champion_on_the_same_targets(
    champion, petr_bars, tracking_uri
):
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    bars = {k: np.asarray(v, dtype=np.float64) for k, v in petr_bars.as_mapping().items()}
    targets = np.arange(len(petr_bars) - 60, len(petr_bars))
    common: dict[str, Any] = {"bars": bars, "targets": targets}
    old = champion.metrics["mae"]  # the champion's own walk-forward MAE: a close yardstick

    worse = decide(client, NAME, new_mae=old * 10, **common)
    assert not worse.promote and not worse.failed and worse.champion_version == "1"
    assert worse.reason.startswith("not better: walk-forward MAE")

    better = decide(client, NAME, new_mae=0.0, **common)
    assert better.promote and better.reason.startswith("better: walk-forward MAE")

    forced = decide(client, NAME, new_mae=old * 10, force=True, **common)
    assert forced.promote and "forced by operator" in forced.reason


def test_gate_keeps_the_champion_when_its_re_evaluation_raises(
    champion, ml_session_factory, tracking_uri, tmp_path
):
    """The champion's artifacts cannot be read (a store outage): the new version becomes
    challenger, the summary says why and is not ok (the CLI exits 1), champion stays v1."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    store = Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    version_one = client.get_model_version(NAME, "1")
    champion_files = Path(client.get_model_version_download_uri(NAME, "1").removeprefix("file://"))
    assert version_one is not None and str(champion_files).startswith(str(store))
    hidden = tmp_path / "hidden"
    champion_files.rename(hidden)
    try:
        second = train_and_register(
            session_factory=ml_session_factory,
            ticker=TICKER,
            config=tiny_config(),
            tracking=Tracking(tracking_uri),
        )
    finally:
        hidden.rename(champion_files)
    assert not second.ok and second.gate_failed and not second.promoted
    assert second.alias == CHALLENGER_ALIAS
    assert "champion v1 could not be re-evaluated" in second.reason
    assert "champion kept" in second.reason and second.error == second.reason
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == "1"


def test_a_backtest_fold_never_reads_a_bar_after_its_forecast_origin(petr_bars):
    """Wrecking every bar after the last fold's first origin changes no forecast made from
    an origin before it, nor the fold's first forecast (its fit ends at that origin)."""
    config = tiny_config(history_bars=300)
    honest = walk_forward(petr_bars, config, horizon=2)
    origin = honest.folds[-1].origins[0]
    wrecked = dataclasses.replace(
        petr_bars,
        **{
            c: np.concatenate([getattr(petr_bars, c)[: origin + 1],
                               getattr(petr_bars, c)[origin + 1 :] * 3.0])
            for c in ("open", "high", "low", "close")
        },
    )  # fmt: skip
    again = walk_forward(wrecked, config, horizon=2)
    np.testing.assert_array_equal(again.folds[0].paths.closes, honest.folds[0].paths.closes)
    np.testing.assert_array_equal(again.folds[1].paths.closes[0], honest.folds[1].paths.closes[0])
    assert not np.array_equal(again.folds[1].paths.closes[1:], honest.folds[1].paths.closes[1:])


def test_worse_version_becomes_challenger_and_force_promote_makes_it_champion(
    champion, ml_session_factory, tracking_uri
):
    """A second version that forecasts badly gets the alias challenger and the summary says
    why; the operator's --force-promote then moves champion to a new version anyway."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    bad = tiny_config(epochs=1, learning_rate=0.9, units=4, seed=3)
    second = train_and_register(
        session_factory=ml_session_factory,
        ticker=TICKER,
        config=bad,
        tracking=Tracking(tracking_uri),
    )
    assert second.ok and second.version == "3"
    assert not second.promoted and second.alias == CHALLENGER_ALIAS
    assert second.reason.startswith("not better") and "champion v1" in second.reason
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == "1"
    assert str(client.get_model_version_by_alias(NAME, CHALLENGER_ALIAS).version) == "3"

    third = train_and_register(
        session_factory=ml_session_factory,
        ticker=TICKER,
        config=bad,
        tracking=Tracking(tracking_uri),
        force_promote=True,
    )
    assert third.promoted and third.alias == CHAMPION_ALIAS and "forced by operator" in third.reason
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == "4"


def test_too_few_bars_fails_before_anything_is_logged(ml_session_factory, tracking_uri):
    with pytest.raises(InsufficientBarsError, match=rf"{TINY_TICKER}: 40 bars stored"):
        train_and_register(
            session_factory=ml_session_factory,
            ticker=TINY_TICKER,
            config=tiny_config(),
            tracking=Tracking(tracking_uri),
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert client.search_model_versions(f"name='{registered_model_name(TINY_TICKER)}'") == []
