"""The model feature set and windowing: shapes, alignment, no look-ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.exceptions import UnknownFeatureError
from common.features import (
    log_returns,
    make_supervised,
    window_features,
)
from data_pipeline.processing.validation import clean_bars
from data_pipeline.sources.snapshot import SnapshotSource


@pytest.fixture(scope="module")
def spy_bars(prices_dir: Path) -> dict[str, np.ndarray]:
    raw = SnapshotSource(prices_dir).fetch("SPY", start=None)
    bars = clean_bars(raw.frame, ticker="SPY").bars.tail(300)
    return {c: bars[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")}


def test_windows_have_documented_shape(spy_bars: dict[str, np.ndarray]) -> None:
    x = window_features(spy_bars, 20, ["rel_log_close", "hl_range", "oc_return"])
    assert x.shape == (300 - 20 + 1, 20, 3)
    np.testing.assert_allclose(x[:, -1, 0], 0.0)  # relative to the window's last close


def test_targets_are_the_next_bars_return_and_windows_never_see_it(
    spy_bars: dict[str, np.ndarray],
) -> None:
    lookback = 10
    x, y = make_supervised(spy_bars, lookback, ["rel_log_close"])
    close = spy_bars["close"]
    assert x.shape == (300 - lookback, lookback, 1) and y.shape == (300 - lookback,)
    for i in (0, 57, len(y) - 1):
        assert y[i] == pytest.approx(np.log(close[i + lookback] / close[i + lookback - 1]))
        # Window i is computed from bars i .. i+lookback-1 only.
        expected = np.log(close[i : i + lookback]) - np.log(close[i + lookback - 1])
        np.testing.assert_allclose(x[i, :, 0], expected)
    # Changing a future bar does not change any window that ends before it.
    changed = dict(spy_bars, close=close.copy())
    changed["close"][-1] *= 2
    x2, _ = make_supervised(changed, lookback, ["rel_log_close"])
    np.testing.assert_array_equal(x2, x)


def test_log_returns_shape() -> None:
    np.testing.assert_allclose(log_returns([100.0, 110.0, 99.0]), np.log([1.1, 0.9]))


def test_unknown_feature_and_short_input_are_clear_errors(spy_bars: dict[str, np.ndarray]) -> None:
    with pytest.raises(UnknownFeatureError, match="stochastic_k"):
        window_features(spy_bars, 10, ["stochastic_k"])
    with pytest.raises(ValueError, match="at least lookback"):
        window_features({k: v[:5] for k, v in spy_bars.items()}, 10, ["rel_log_close"])


def test_exactly_one_window_equals_the_last_of_the_sliding_windows(
    spy_bars: dict[str, np.ndarray],
) -> None:
    """The API computes one window per forecast step (bars == lookback): same features."""
    features = ["rel_log_close", "hl_range", "oc_return"]
    last = {k: v[-30:] for k, v in spy_bars.items()}
    one = window_features(last, 30, features)
    assert one.shape == (1, 30, 3)
    np.testing.assert_array_equal(one, window_features(spy_bars, 30, features)[-1:])


ALL_FEATURES = [
    "rel_log_close", "hl_range", "oc_return", "log_return", "open_log_return",
    "high_log_return", "low_log_return", "volume_zscore", "realized_volatility", "rsi", "macd",
]  # fmt: skip


def test_every_feature_reads_only_its_own_window_and_is_scale_free(
    spy_bars: dict[str, np.ndarray],
) -> None:
    """Wrecking the bars before and after a window leaves it alone; prices in another
    currency (x 5) give the same features."""
    x = window_features(spy_bars, 30, ALL_FEATURES)
    assert x.shape == (300 - 30 + 1, 30, len(ALL_FEATURES)) and np.all(np.isfinite(x))
    wrecked = {k: v.copy() for k, v in spy_bars.items()}
    for values in wrecked.values():
        values[:100] *= 7.0
        values[130:] *= 0.3
    np.testing.assert_allclose(window_features(wrecked, 30, ALL_FEATURES)[100], x[100])
    prices = {k: v * (5.0 if k != "volume" else 1.0) for k, v in spy_bars.items()}
    np.testing.assert_allclose(window_features(prices, 30, ALL_FEATURES), x, atol=1e-12)


def test_return_features_rsi_and_macd_follow_their_definitions(
    spy_bars: dict[str, np.ndarray],
) -> None:
    close = spy_bars["close"][:30]
    x = window_features(spy_bars, 30, ["log_return", "realized_volatility", "rsi", "macd"])[0]
    r = np.diff(np.log(close))
    np.testing.assert_allclose(x[1:, 0], r)
    assert x[0, 0] == 0.0
    np.testing.assert_allclose(x[-1, 1], np.sqrt(np.mean(r[-5:] ** 2)))
    rising = {"close": 100.0 * 1.01 ** np.arange(30)}
    up = window_features(rising, 30, ["rsi", "macd"])[0]
    assert up[-1, 0] == pytest.approx(0.5)  # RSI 100: only gains
    assert up[-1, 1] > 0  # the fast average leads the slow one in a rise
