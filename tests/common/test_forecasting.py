"""The forecast core: combination, recursion, no look-ahead, intervals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from common.forecasting import (
    Forecaster,
    conformal_quantile,
    ewma_volatility,
    interval_bounds,
)
from common.model_contract import Combination, IntervalCalibration, ModelMetadata, ScalerParams
from data_pipeline.processing.validation import clean_bars
from data_pipeline.sources.snapshot import SnapshotSource

LOOKBACK = 10


@pytest.fixture(scope="module")
def spy_bars(prices_dir: Path) -> dict[str, np.ndarray]:
    raw = SnapshotSource(prices_dir).fetch("SPY", start=None)
    bars = clean_bars(raw.frame, ticker="SPY").bars.tail(200)
    return {c: bars[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")}


def momentum(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A stand-in network: the scaled target is minus the first window value (momentum)."""
    return -x[:, 0, 0]


def metadata(*, weight: float = 1.0, drift: float = 0.0, **extra: object) -> ModelMetadata:
    return ModelMetadata(
        ticker="SPY",
        lookback=LOOKBACK,
        features=["rel_log_close"],
        feature_scaler=ScalerParams(mean=[0.0], scale=[1.0]),
        target_scaler=ScalerParams(mean=[0.0], scale=[0.1]),
        last_train_date=dt.date(2020, 1, 1),
        last_bar_date=dt.date(2020, 1, 1),
        combination=Combination(weight=weight, drift=drift),
        **extra,
    )


def test_weight_zero_serves_exactly_the_naive_forecast(spy_bars) -> None:
    paths = Forecaster(metadata(weight=0.0), momentum).forecast_paths(spy_bars, [150, 199], 5)
    assert paths.log_returns.shape == (2, 5) and np.all(paths.log_returns == 0.0)
    np.testing.assert_array_equal(paths.closes[0], spy_bars["close"][150])
    np.testing.assert_array_equal(paths.closes[1], spy_bars["close"][199])


def test_combination_shrinks_the_networks_return_after_removing_its_drift(spy_bars) -> None:
    raw = Forecaster(metadata(), momentum).forecast_paths(spy_bars, [120], 1).log_returns
    half = Forecaster(metadata(weight=0.5, drift=0.001), momentum)
    combined = half.forecast_paths(spy_bars, [120], 1).log_returns
    assert combined[0, 0] == pytest.approx(0.5 * (raw[0, 0] - 0.001))


def test_prices_scaled_by_k_give_k_times_the_forecast(spy_bars) -> None:
    forecaster = Forecaster(metadata(), momentum)
    base = forecaster.forecast_paths(spy_bars, [100, 150], 3).closes
    scaled = {k: v * 7.0 for k, v in spy_bars.items()}
    np.testing.assert_allclose(forecaster.forecast_paths(scaled, [100, 150], 3).closes, base * 7)


def test_a_forecast_never_reads_bars_after_its_origin(spy_bars) -> None:
    forecaster = Forecaster(metadata(), momentum)
    before = forecaster.forecast_paths(spy_bars, [120], 4)
    wrecked = {k: v.copy() for k, v in spy_bars.items()}
    for values in wrecked.values():
        values[121:] = np.nan
    after = forecaster.forecast_paths(wrecked, [120], 4)
    np.testing.assert_array_equal(after.closes, before.closes)
    assert np.all(np.isfinite(after.closes))


def test_batched_origins_equal_one_origin_at_a_time(spy_bars) -> None:
    forecaster = Forecaster(metadata(), momentum)
    batch = forecaster.forecast_paths(spy_bars, [60, 90, 199], 3).closes
    for row, origin in enumerate((60, 90, 199)):
        np.testing.assert_array_equal(forecaster.forecast_paths(spy_bars, [origin], 3).closes[0],
                                      batch[row])  # fmt: skip


def test_too_short_history_is_a_clear_error(spy_bars) -> None:
    with pytest.raises(ValueError, match="need 10 bars"):
        Forecaster(metadata(), momentum).forecast_paths(spy_bars, [3], 1)


def test_ewma_volatility_of_constant_returns_is_their_size() -> None:
    closes = 100 * np.exp(0.01 * np.arange(30))[None, :]
    assert ewma_volatility(closes)[0] == pytest.approx(0.01)


def test_conformal_quantile_uses_the_finite_sample_rank() -> None:
    scores = np.arange(1.0, 20.0)  # 19 scores: the 80% quantile is the ceil(20 * 0.8) = 16th
    assert conformal_quantile(scores, 80) == 16.0
    assert conformal_quantile(scores, 99) == 19.0
    with pytest.raises(ValueError):
        conformal_quantile(scores, 100)


def test_intervals_widen_with_the_step_and_contain_the_forecast(spy_bars) -> None:
    calibration = IntervalCalibration(
        levels=[50.0, 80.0, 95.0], quantiles=[[0.7, 1.3, 2.0], [1.0, 1.8, 2.8]]
    )
    forecaster = Forecaster(metadata(intervals=calibration), momentum)
    paths = forecaster.forecast_paths(spy_bars, [150], 4)
    q = forecaster.step_quantiles([80.0, 87.5], 4)
    assert q is not None and q.shape == (2, 4)
    assert q[0, 1] == pytest.approx(1.8) and q[1, 0] == pytest.approx(1.65)  # interpolated
    lower, upper = interval_bounds(paths, q)
    assert np.all(lower < paths.closes[None]) and np.all(paths.closes[None] < upper)
    width = upper[0, 0] / lower[0, 0]
    assert np.all(np.diff(width) > 0)  # wider at every further step
