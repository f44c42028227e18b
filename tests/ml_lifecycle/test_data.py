"""Leak-free preprocessing on the real PETR4.SA bars: chronological split, scaler fit on the
training part only, clear errors for tickers with too few bars, and the config file."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from common.price_store import Bars, read_bars
from ml_lifecycle.config import DEFAULT_CONFIG_PATH, TrainConfig, load_config
from ml_lifecycle.data import (
    fit_scaler,
    prepare_data,
    segment_windows,
    split_bounds,
)
from ml_lifecycle.exceptions import ConfigError, InsufficientBarsError
from tests.ml_lifecycle.conftest import TINY_BARS, TINY_TICKER, tiny_config

pytestmark = pytest.mark.postgres


def test_split_is_chronological_without_overlap(petr_bars: Bars):
    config = tiny_config()
    data = prepare_data(petr_bars, config)
    train, val, test = (s.target_dates for s in (data.train, data.val, data.test))
    for dates in (train, val, test):
        assert all(a < b for a, b in itertools.pairwise(dates))
    assert train[-1] < val[0] and val[-1] < test[0]
    assert train[-1] == data.last_train_date
    assert test[-1] == petr_bars.dates[-1] == data.last_bar_date
    # the most recent history_bars only; test = the last 15% of them, validation the 15% before
    assert data.bounds.n_bars == config.history_bars == 600
    assert len(test) == 90 and len(val) == 90 and len(data.train) == 600 - 180 - config.lookback


def test_scaler_never_sees_validation_or_test_bars(petr_bars: Bars):
    config = tiny_config()
    data = prepare_data(petr_bars, config)
    n_used = data.bounds.n_bars
    first_later = len(petr_bars) - n_used + data.bounds.train_end

    # Wreck every bar after the training segment: the scalers and training windows must not move.
    wrecked_close = petr_bars.close.copy()
    rng = np.random.default_rng(0)
    wrecked_close[first_later:] *= rng.uniform(0.2, 5.0, size=len(wrecked_close) - first_later)
    wrecked = dataclasses.replace(petr_bars, close=wrecked_close)
    again = prepare_data(wrecked, config)

    assert again.feature_scaler == data.feature_scaler
    assert again.target_scaler == data.target_scaler
    np.testing.assert_array_equal(again.train.x, data.train.x)
    np.testing.assert_array_equal(again.train.y, data.train.y)
    assert not np.array_equal(again.test.y_raw, data.test.y_raw)

    # And the scaler equals one fit by hand on windows built from the training bars alone.
    closes = {"close": petr_bars.close[len(petr_bars) - n_used : first_later]}
    x, y = segment_windows(
        closes,
        start=config.lookback,
        stop=len(closes["close"]),
        lookback=config.lookback,
        features=config.features,
    )
    assert fit_scaler(x) == data.feature_scaler
    assert fit_scaler(y) == data.target_scaler


def test_windows_of_later_segments_use_only_past_bars(petr_bars: Bars):
    config = tiny_config()
    data = prepare_data(petr_bars, config)
    closes = petr_bars.close[-data.bounds.n_bars :]
    # target i of the test segment is the return into bar val_end + i, from the bar before it
    expected = np.log(closes[data.bounds.val_end :] / closes[data.bounds.val_end - 1 : -1])
    np.testing.assert_allclose(data.test.y_raw, expected)
    np.testing.assert_allclose(data.test.last_close, closes[data.bounds.val_end - 1 : -1])


def test_ticker_without_bars_gets_an_error_naming_it_and_the_counts():
    empty = Bars(
        ticker="NOPE.SA",
        dates=np.array([], dtype=object),
        open=np.array([]),
        high=np.array([]),
        low=np.array([]),
        close=np.array([]),
        volume=np.array([], dtype=np.int64),
    )
    with pytest.raises(InsufficientBarsError, match=r"NOPE\.SA: 0 bars stored, need at least \d+"):
        prepare_data(empty, tiny_config())


def test_ticker_with_too_few_bars_gets_an_error_naming_it_and_the_counts(ml_session_factory):
    with ml_session_factory() as session:
        tiny = read_bars(session, ticker=TINY_TICKER)
    config = tiny_config()
    with pytest.raises(InsufficientBarsError) as caught:
        prepare_data(tiny, config)
    message = str(caught.value)
    assert message.startswith(f"{TINY_TICKER}: {TINY_BARS} bars stored, need at least ")
    assert "lookback 20" in message
    # the minimum really is the minimum: one bar fewer fails, that many succeeds
    required = caught.value.required
    split_bounds(required, config)
    with pytest.raises(InsufficientBarsError):
        split_bounds(required - 1, config)


def test_default_config_file_loads_and_cli_overrides_win():
    default = load_config()
    assert default == load_config(DEFAULT_CONFIG_PATH)
    assert default.features == ("rel_log_close",)
    overridden = load_config(epochs=3, lookback=None, units=4)
    assert (overridden.epochs, overridden.units, overridden.lookback) == (3, 4, default.lookback)


def test_invalid_config_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lookback: 1\nfeatures: [stochastic_k]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert "lookback" in str(caught.value) and "stochastic_k" in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("epocs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="epocs"):
        load_config(unknown)


def test_train_config_is_the_public_api_shape():
    fields = set(TrainConfig.model_fields)
    assert {
        "lookback",
        "units",
        "layers",
        "dropout",
        "features",
        "epochs",
        "batch_size",
        "patience",
        "learning_rate",
        "val_fraction",
        "test_fraction",
        "seed",
    } <= fields
