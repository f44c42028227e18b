"""Point-forecast metrics on prices, numpy only.

Every function takes arrays of shape ``(n,)`` in the listing currency. Sources:
Hyndman & Koehler (2006), "Another look at measures of forecast accuracy", International
Journal of Forecasting 22(4), 679-688 (MAE, RMSE, MAPE, MASE).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: Metric names, in table order; the naive baseline's carry the prefix ``naive_``.
METRIC_NAMES = ("mae", "rmse", "mape", "mase", "r2", "directional_accuracy")


def _arr(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.asarray(values, dtype=np.float64)


def mae(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Mean absolute error ``mean(|y - ŷ|)``, in the prices' currency."""
    return float(np.mean(np.abs(_arr(actual) - _arr(predicted))))


def rmse(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Root mean squared error ``sqrt(mean((y - ŷ)²))``, in the prices' currency."""
    return float(np.sqrt(np.mean((_arr(actual) - _arr(predicted)) ** 2)))


def mape(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Mean absolute percentage error ``100 * mean(|y - ŷ| / |y|)``, in percent.

    Raises:
        ValueError: if an actual value is 0 (MAPE is undefined there).
    """
    y = _arr(actual)
    if np.any(y == 0):
        raise ValueError("MAPE is undefined when an actual value is 0")
    return float(100.0 * np.mean(np.abs(y - _arr(predicted)) / np.abs(y)))


def r2(actual: npt.ArrayLike, predicted: npt.ArrayLike) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (can be negative)."""
    y = _arr(actual)
    ss_res = float(np.sum((y - _arr(predicted)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def naive_scale(in_sample: npt.ArrayLike) -> float:
    """In-sample one-step naive MAE ``mean_{t=2..n} |y_t - y_{t-1}|`` (MASE's denominator).

    Raises:
        ValueError: with fewer than 2 values, or when the series is constant (scale 0).
    """
    y = _arr(in_sample)
    if len(y) < 2:
        raise ValueError("the in-sample series needs at least 2 values")
    scale_ = float(np.mean(np.abs(np.diff(y))))
    if scale_ == 0:
        raise ValueError("the in-sample series is constant: MASE is undefined")
    return scale_


def mase(actual: npt.ArrayLike, predicted: npt.ArrayLike, *, in_sample: npt.ArrayLike) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006, eq. for non-seasonal series).

    ``MASE = mean(|y_t - ŷ_t|) / ((1 / (n - 1)) * sum_{i=2..n} |Y_i - Y_{i-1}|)`` where
    ``Y_1..Y_n`` is the in-sample (training) series. Below 1: better than the in-sample
    one-step naive forecast.
    """
    return mae(actual, predicted) / naive_scale(in_sample)


def directional_accuracy(
    actual: npt.ArrayLike, predicted: npt.ArrayLike, *, previous: npt.ArrayLike
) -> float:
    """Share of forecasts, in percent, whose direction of change matches the actual one.

    ``100 * mean(sign(ŷ_t - y_{t-1}) == sign(y_t - y_{t-1}))``. A forecast of "no change"
    (the naive forecast) has sign 0 and counts as right only when the price did not move.
    """
    prev = _arr(previous)
    return float(100.0 * np.mean(np.sign(_arr(predicted) - prev) == np.sign(_arr(actual) - prev)))


def forecast_metrics(
    actual: npt.ArrayLike,
    predicted: npt.ArrayLike,
    *,
    previous: npt.ArrayLike,
    in_sample: npt.ArrayLike,
) -> dict[str, float]:
    """All of :data:`METRIC_NAMES` for one forecast of a test window.

    Args:
        actual: actual closes ``y_t``, shape ``(n,)``.
        predicted: forecast closes ``ŷ_t``, shape ``(n,)``.
        previous: the close before each target, ``y_{t-1}``, shape ``(n,)``.
        in_sample: the training closes, for MASE's scale.

    Returns:
        ``{"mae", "rmse", "mape" (percent), "mase", "r2", "directional_accuracy" (percent)}``.
    """
    return {
        "mae": mae(actual, predicted),
        "rmse": rmse(actual, predicted),
        "mape": mape(actual, predicted),
        "mase": mase(actual, predicted, in_sample=in_sample),
        "r2": r2(actual, predicted),
        "directional_accuracy": directional_accuracy(actual, predicted, previous=previous),
    }


def diebold_mariano(
    loss_model: npt.ArrayLike, loss_benchmark: npt.ArrayLike, *, horizon: int = 1
) -> tuple[float, float, float]:
    """Diebold-Mariano test of equal accuracy with the Harvey-Leybourne-Newbold correction.

    ``d_t = L_model,t - L_benchmark,t``; ``DM = mean(d) / sqrt(V / n)`` with ``V`` the
    long-run variance from the autocovariances of ``d`` up to lag ``h - 1`` (Diebold &
    Mariano 1995, "Comparing predictive accuracy", JBES 13(3)); the small-sample statistic
    ``DM* = DM * sqrt((n + 1 - 2h + h(h - 1) / n) / n)`` is compared with Student's t with
    ``n - 1`` degrees of freedom (Harvey, Leybourne & Newbold 1997, "Testing the equality of
    prediction mean squared errors", IJF 13(2), eq. 9).

    Args:
        loss_model: per-forecast losses of the model ``(n,)`` (e.g. absolute errors).
        loss_benchmark: the benchmark's losses on the same targets ``(n,)``.
        horizon: forecast horizon ``h`` (1 for one-step forecasts).

    Returns:
        ``(statistic, p_two_sided, p_model_better)``: negative statistics favour the model;
        ``p_model_better`` is the one-sided p-value of "the model's loss is lower". With
        ``d`` identically zero (same forecasts): ``(0.0, 1.0, 1.0)``.

    Raises:
        ValueError: fewer than 3 pairs, or lengths that differ.
    """
    from scipy import stats  # noqa: PLC0415 - only evaluation needs scipy

    d = _arr(loss_model) - _arr(loss_benchmark)
    if d.shape != _arr(loss_benchmark).shape or d.size < 3:
        raise ValueError(f"need >= 3 paired losses of equal length, got {d.size}")
    n, h = d.size, horizon
    centred = d - d.mean()
    gammas = [float(centred[k:] @ centred[: n - k]) / n for k in range(h)]
    variance = (gammas[0] + 2.0 * sum(gammas[1:])) / n
    if not variance > 0.0:
        return 0.0, 1.0, 1.0
    dm = float(d.mean()) / math.sqrt(variance)
    dm_star = dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    p_two = float(2.0 * stats.t.sf(abs(dm_star), df=n - 1))
    p_better = float(stats.t.cdf(dm_star, df=n - 1))
    return dm_star, p_two, p_better
