"""Combination weight, conformal intervals and the Diebold-Mariano test on series whose
truth is known: a random walk with Gaussian noise (optionally a volatility regime change)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import numpy.typing as npt
import pytest

from common.forecasting import Forecaster, interval_bounds
from common.model_contract import Combination, ModelMetadata, ScalerParams
from ml_lifecycle.calibration import calibrate_intervals, fit_combination
from ml_lifecycle.metrics import diebold_mariano

LOOKBACK = 30


def random_walk(sigmas: npt.NDArray[np.float64], seed: int) -> dict[str, npt.NDArray[np.float64]]:
    """Closes of a geometric random walk whose daily log return at bar t is N(0, sigmas[t])."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigmas)))
    return {"open": close, "high": close, "low": close, "close": close}


def naive_forecaster() -> Forecaster:
    """The naive forecast (w = 0) of a random walk: the best point forecast there is."""
    metadata = ModelMetadata(
        ticker="SYN",
        lookback=LOOKBACK,
        features=["rel_log_close"],
        feature_scaler=ScalerParams(mean=[0.0], scale=[1.0]),
        target_scaler=ScalerParams(mean=[0.0], scale=[1.0]),
        last_train_date=dt.date(2020, 1, 1),
        last_bar_date=dt.date(2020, 1, 1),
        combination=Combination(weight=0.0),
    )
    return Forecaster(metadata, lambda x: np.zeros(len(x)))


@pytest.mark.parametrize("regime_change", [False, True], ids=["constant", "volatility-doubles"])
def test_intervals_cover_the_nominal_share_of_a_series_with_known_noise(regime_change: bool):
    """Calibrated on 1,000 bars, the 80% and 95% intervals of the next 3,000 one-step and
    five-step forecasts hold within 3 points of nominal, even when volatility doubles after
    calibration (the scores are scaled by the window's EWMA volatility)."""
    n_cal, n_test = 1_000, 3_000
    sigmas = np.full(n_cal + n_test + LOOKBACK + 10, 0.01)
    if regime_change:
        sigmas[n_cal + LOOKBACK :] = 0.02
    bars = random_walk(sigmas, seed=7)
    forecaster = naive_forecaster()
    cal_origins = np.arange(LOOKBACK - 1, LOOKBACK - 1 + n_cal)
    cal_close = bars["close"][: LOOKBACK + n_cal]
    paths = forecaster.forecast_paths(bars, cal_origins, 5)
    calibration = calibrate_intervals(paths, cal_origins, cal_close, ewma_lambda=0.94)
    assert len(calibration.quantiles) == 5

    served = Forecaster(
        forecaster.metadata.model_copy(update={"intervals": calibration}), forecaster.network
    )
    test_origins = np.arange(LOOKBACK + n_cal + 5, LOOKBACK + n_cal + n_test)
    test_paths = served.forecast_paths(bars, test_origins, 5)
    quantiles = served.step_quantiles([80.0, 95.0], 5)
    assert quantiles is not None
    lower, upper = interval_bounds(test_paths, quantiles)
    truth = bars["close"][test_origins[:, None] + np.arange(1, 6)[None, :]]
    for row, nominal in enumerate((80.0, 95.0)):
        covered = 100.0 * np.mean((lower[row] <= truth) & (truth <= upper[row]), axis=0)
        assert np.all(np.abs(covered - nominal) <= 3.0), (nominal, covered)
    widths = np.mean(upper[1] / lower[1], axis=0)
    assert np.all(np.diff(widths) > 0)  # a random walk's interval widens with the step


def test_a_network_without_skill_gets_weight_zero_and_serves_naive():
    rng = np.random.default_rng(1)
    actual = rng.normal(0.0005, 0.01, 400)
    noise = rng.normal(0.001, 0.002, 400)  # the memorised up-drift plus noise
    combination = fit_combination(noise, actual, drift=float(np.mean(noise)))
    assert combination.weight == 0.0
    assert combination.validation_pvalue is not None and combination.validation_pvalue >= 0.05


def test_a_network_with_real_skill_keeps_a_weight_near_its_least_squares_value():
    rng = np.random.default_rng(2)
    signal = rng.normal(0.0, 0.01, 600)
    actual = signal + rng.normal(0.0, 0.004, 600)  # the network sees most of tomorrow
    combination = fit_combination(signal, actual, drift=0.0)
    assert combination.validation_pvalue is not None and combination.validation_pvalue < 0.05
    assert combination.weight == combination.fitted_weight
    assert 0.8 < combination.weight <= 1.0


def test_diebold_mariano_sees_a_better_model_and_not_equal_ones():
    rng = np.random.default_rng(3)
    benchmark = np.abs(rng.normal(0.0, 1.0, 300))
    statistic, p_two, p_better = diebold_mariano(benchmark * 0.7, benchmark)
    assert statistic < 0 and p_two < 0.01 and p_better < 0.01
    assert diebold_mariano(benchmark, benchmark) == (0.0, 1.0, 1.0)
    other = np.abs(rng.normal(0.0, 1.0, 300))
    _, p_same, _ = diebold_mariano(other, benchmark)
    assert p_same > 0.01
    with pytest.raises(ValueError, match="paired losses"):
        diebold_mariano([1.0, 2.0], [1.0, 2.0])
