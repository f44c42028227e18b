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
    with pytest.raises(UnknownFeatureError, match="rsi"):
        window_features(spy_bars, 10, ["rsi"])
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
