"""Drift statistics: PSI and KS of recent inputs against a model version's training inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from common.drift import (
    LOG_RETURN,
    drift_report,
    ks_statistic,
    psi,
    summarize,
    training_distributions,
)
from common.features import window_features

LOOKBACK = 20
FEATURES = ["rel_log_close", "hl_range", "oc_return"]


def ohlc_from_returns(returns: np.ndarray, *, start: float = 30.0, seed: int = 0):
    """Synthetic OHLC bars whose closes follow ``returns``; the open is the previous close,
    high and low lie a half-normal of the returns' scale above and below."""
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(returns))
    scale = float(np.std(returns)) or 0.01
    top = np.maximum(close, np.r_[start, close[:-1]])
    bottom = np.minimum(close, np.r_[start, close[:-1]])
    return {
        "open": np.r_[start, close[:-1]],
        "high": top * np.exp(np.abs(rng.normal(0, scale / 2, len(close)))),
        "low": bottom * np.exp(-np.abs(rng.normal(0, scale / 2, len(close)))),
        "close": close,
        "volume": np.ones_like(close),
    }


def real_bars(prices_dir: Path, ticker: str = "PETR4.SA") -> dict[str, np.ndarray]:
    with (prices_dir / f"{ticker}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {
        k: np.array([float(r[k.capitalize()]) for r in rows])
        for k in ("open", "high", "low", "close", "volume")
    }


def train_on(bars: dict[str, np.ndarray]):
    windows = window_features(bars, LOOKBACK, FEATURES)
    return training_distributions(closes=bars["close"], windows=windows, features=FEATURES)


def test_summary_bins_hold_a_tenth_each() -> None:
    """Decile bins of continuous values: ten bins, a tenth of the values in each."""
    values = np.random.default_rng(1).normal(size=5_000)
    summary = summarize(values)
    assert len(summary.bin_edges) == 9 and summary.n == 5_000
    assert summary.proportions == pytest.approx([0.1] * 10, abs=1e-3)
    assert summary.quantiles[0] == values.min() and summary.quantiles[-1] == values.max()


def test_psi_by_hand() -> None:
    """Two equal bins, recent 80/20: PSI = (0.8-0.5) ln(0.8/0.5) + (0.2-0.5) ln(0.2/0.5)."""
    summary = summarize([0.0, 1.0, 2.0, 3.0])
    summary = summary.model_copy(update={"bin_edges": [1.5], "proportions": [0.5, 0.5]})
    expected = 0.3 * np.log(0.8 / 0.5) + (-0.3) * np.log(0.2 / 0.5)
    assert psi(summary, [0, 0, 0, 0, 0, 0, 0, 0, 3, 3]) == pytest.approx(expected)


@pytest.mark.parametrize("scale", [1.0, 1.5, 5.0])
def test_ks_matches_scipy_two_sample(scale: float) -> None:
    """D from the stored percentiles is scipy's two-sample D to within a percentile."""
    rng = np.random.default_rng(7)
    train, recent = rng.normal(size=4_000), rng.normal(scale=scale, size=250)
    exact = stats.ks_2samp(train, recent).statistic
    assert ks_statistic(summarize(train), recent) == pytest.approx(exact, abs=0.015)


def test_ks_with_values_tied_in_training() -> None:
    """A training split holding one value 40% of the time: D still matches scipy's."""
    rng = np.random.default_rng(5)
    train = np.r_[np.zeros(1_600), rng.normal(size=2_400)]
    recent = np.r_[np.zeros(50), rng.normal(size=200)]
    exact = stats.ks_2samp(train, recent).statistic
    assert ks_statistic(summarize(train), recent) == pytest.approx(exact, abs=0.015)
    only_ties = np.zeros(10)
    exact = stats.ks_2samp(train, only_ties).statistic
    assert ks_statistic(summarize(train), only_ties) == pytest.approx(exact, abs=0.015)


def test_same_regime_is_stable_and_five_times_the_volatility_is_drift() -> None:
    """Recent bars from the training process: stable; with 5x the volatility: drift."""
    rng = np.random.default_rng(3)
    distributions = train_on(ohlc_from_returns(rng.normal(0, 0.02, size=2_000), seed=1))
    for seed in range(5):
        same = ohlc_from_returns(rng.normal(0, 0.02, size=250), seed=seed)
        calm = drift_report(distributions, same, lookback=LOOKBACK, features=FEATURES)
        assert calm.status == "stable" and calm.psi is not None and calm.psi < 0.1
        wild = ohlc_from_returns(rng.normal(0, 0.10, size=250), seed=seed)
        storm = drift_report(distributions, wild, lookback=LOOKBACK, features=FEATURES)
        assert storm.status == "drift" and storm.psi is not None and storm.psi > 0.25
        assert storm.by_input[LOG_RETURN][1] > 0.3  # KS: the return ECDFs are far apart


def test_real_bars_against_a_synthetic_regime_of_five_times_their_volatility(
    prices_dir: Path,
) -> None:
    """PETR4.SA's training inputs against a year whose returns have 5x PETR4's volatility."""
    bars = real_bars(prices_dir)
    distributions = train_on({k: v[:-250] for k, v in bars.items()})
    returns = np.diff(np.log(bars["close"]))
    rng = np.random.default_rng(11)
    wild = ohlc_from_returns(rng.normal(0, 5 * returns.std(), size=250), start=bars["close"][-1])
    report = drift_report(distributions, wild, lookback=LOOKBACK, features=FEATURES)
    assert report.status == "drift"
    recent = drift_report(
        distributions, {k: v[-250:] for k, v in bars.items()}, lookback=LOOKBACK,
        features=FEATURES,
    )  # fmt: skip
    assert recent.psi is not None and report.psi is not None and recent.psi < report.psi


def test_unknown_without_training_distribution_or_bars() -> None:
    """A version trained before drift was recorded, or too few bars: status unknown."""
    bars = ohlc_from_returns(np.zeros(30) + 0.001)
    assert drift_report({}, bars, lookback=LOOKBACK, features=FEATURES).status == "unknown"
    distributions = train_on(ohlc_from_returns(np.random.default_rng(0).normal(0, 0.02, 500)))
    short = {k: v[:LOOKBACK] for k, v in bars.items()}
    assert drift_report(distributions, short, lookback=LOOKBACK, features=FEATURES).psi is None
