"""Metrics against values computed by hand (Hyndman & Koehler 2006 for MASE)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml_lifecycle.evaluate import evaluate_forecast
from ml_lifecycle.metrics import (
    directional_accuracy,
    mae,
    mape,
    mase,
    naive_scale,
    r2,
    rmse,
)

ACTUAL = [10.0, 12.0, 11.0, 13.0]
PREDICTED = [11.0, 11.0, 11.0, 12.0]


def test_mae_rmse_mape_r2_match_hand_computation():
    # errors: -1, 1, 0, 1 -> |e| = 1, 1, 0, 1
    assert mae(ACTUAL, PREDICTED) == pytest.approx(0.75)
    assert rmse(ACTUAL, PREDICTED) == pytest.approx(math.sqrt(3 / 4))
    # 100 * mean(1/10, 1/12, 0, 1/13)
    assert mape(ACTUAL, PREDICTED) == pytest.approx(100 * (1 / 10 + 1 / 12 + 0 + 1 / 13) / 4)
    # mean 11.5; SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5; SS_res = 3
    assert r2(ACTUAL, PREDICTED) == pytest.approx(1 - 3 / 5)


def test_mase_is_scaled_by_the_in_sample_one_step_naive_error():
    in_sample = [100.0, 102.0, 101.0, 105.0]  # |diffs| = 2, 1, 4 -> scale 7/3
    assert naive_scale(in_sample) == pytest.approx(7 / 3)
    assert mase(ACTUAL, PREDICTED, in_sample=in_sample) == pytest.approx(0.75 / (7 / 3))


def test_mase_of_a_constant_in_sample_series_is_an_error():
    with pytest.raises(ValueError, match="constant"):
        naive_scale([5.0, 5.0, 5.0])


def test_mape_refuses_a_zero_actual():
    with pytest.raises(ValueError, match="undefined"):
        mape([0.0, 1.0], [1.0, 1.0])


def test_directional_accuracy_compares_signs_of_change_from_the_previous_close():
    previous = [10.0, 10.0, 10.0, 10.0]
    actual = [11.0, 9.0, 11.0, 10.0]  # up, down, up, flat
    predicted = [12.0, 11.0, 9.0, 10.0]  # up (ok), up (wrong), down (wrong), flat (ok)
    assert directional_accuracy(actual, predicted, previous=previous) == pytest.approx(50.0)


def test_naive_baseline_predicts_no_change_and_never_gets_a_direction_on_moving_days():
    previous = np.array([10.0, 11.0, 12.0, 11.0])
    actual = np.array([11.0, 12.0, 11.0, 11.5])
    evaluation = evaluate_forecast(
        actual=actual, predicted=previous, previous=previous, in_sample=[1.0, 2.0, 4.0]
    )
    assert evaluation.naive == evaluation.model
    assert evaluation.naive["directional_accuracy"] == 0.0
    # naive MAE = mean(1, 1, 1, 0.5); in-sample scale = mean(1, 2) = 1.5
    assert evaluation.naive["mase"] == pytest.approx(0.875 / 1.5)
    assert evaluation.up_days == pytest.approx(75.0)
    assert set(evaluation.flat()) >= {"mase", "naive_mase", "naive_directional_accuracy", "up_days"}
