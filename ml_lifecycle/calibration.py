"""What a version learns from its validation windows, besides the network's weights.

* :func:`fit_combination`: the shrinkage of the network's forecast toward the naive one
  (:class:`~common.model_contract.Combination`), so that a network without skill serves
  exactly the naive forecast;
* :func:`calibrate_intervals`: the conformal quantiles of the prediction intervals
  (:class:`~common.model_contract.IntervalCalibration`), per horizon step.

Both read validation windows only: targets after the training segment, before anything a
backtest fold tests on.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from common.forecasting import ForecastPaths, conformal_quantile
from common.model_contract import Combination, IntervalCalibration
from ml_lifecycle.metrics import diebold_mariano

logger = logging.getLogger(__name__)

#: Coverage levels (percent) whose score quantiles a version stores; others interpolate.
LEVEL_GRID: tuple[float, ...] = (*(float(v) for v in range(1, 100)), 99.5)
#: Fewest scores a horizon step needs to be calibrated (later steps extrapolate).
MIN_CALIBRATION_SCORES = 20


def fit_combination(
    network_returns: npt.ArrayLike,
    actual_returns: npt.ArrayLike,
    *,
    drift: float,
    alpha: float = 0.05,
) -> Combination:
    """Least-squares shrinkage weight toward the naive forecast, kept only if significant.

    With ``c = r_net - drift`` on validation windows and ``r`` the actual next log returns,
    ``w = clip(sum(c * r) / sum(c^2), 0, 1)`` minimises the squared error of ``w * c``
    against ``r`` over ``w`` in ``[0, 1]`` (a combination of the network with the naive
    forecast 0, weights summing to one; Bates & Granger 1969, "The combination of
    forecasts", OR Quarterly 20(4); Timmermann 2006, Handbook of Economic Forecasting 1,
    ch. 4). ``w`` is then set to 0 unless the combined forecast's absolute errors are lower
    than the naive forecast's by a one-sided Diebold-Mariano test at level ``alpha``
    (:func:`~ml_lifecycle.metrics.diebold_mariano`): a network without demonstrated skill
    serves exactly the naive forecast.

    Args:
        network_returns: the network's own one-step log returns on validation windows ``(n,)``.
        actual_returns: the actual next log returns ``(n,)``.
        drift: the network's mean log return on its training windows (removed first).
        alpha: significance level.

    Returns:
        The :class:`~common.model_contract.Combination` to store with the version.
    """
    c = np.asarray(network_returns, dtype=np.float64) - drift
    r = np.asarray(actual_returns, dtype=np.float64)
    denominator = float(c @ c)
    fitted = float(np.clip(c @ r / denominator, 0.0, 1.0)) if denominator > 0 else 0.0
    p_value = 1.0
    if fitted > 0.0 and len(r) >= 3:
        _, _, p_value = diebold_mariano(np.abs(r - fitted * c), np.abs(r))
    weight = fitted if p_value < alpha else 0.0
    return Combination(
        weight=weight,
        drift=drift,
        fitted_weight=fitted,
        validation_pvalue=p_value,
        n_validation=len(r),
    )


def calibrate_intervals(
    paths: ForecastPaths,
    origins: npt.ArrayLike,
    close: npt.ArrayLike,
    *,
    ewma_lambda: float,
) -> IntervalCalibration:
    """Conformal quantiles of normalised scores, per horizon step, on validation forecasts.

    Score of the forecast from origin ``o`` at step ``k``:
    ``|log(close[o + k] / forecast)| / sigma_o`` (normalised conformity score, Papadopoulos
    et al. 2002; Lei et al. 2018 §5.2), only where ``o + k`` is a bar of ``close``. Each
    step's quantiles at the levels of :data:`LEVEL_GRID` use the finite-sample rank of
    :func:`~common.forecasting.conformal_quantile` (split conformal; Vovk et al. 2005).
    Steps with fewer than :data:`MIN_CALIBRATION_SCORES` scores are left out (serving
    extrapolates them). The quantiles are then made non-decreasing over the steps (running
    maximum): the uncertainty of a later close is never below an earlier one's, so sampling
    noise of a short validation window cannot make a later interval narrower.

    Args:
        paths: forecasts from ``origins`` (combination applied), ``(n, horizon)``.
        origins: origin bar indices ``(n,)`` into ``close``.
        close: the closes of the fit window ``(n_bars,)``, listing currency.
        ewma_lambda: decay used for ``paths.sigma``.

    Returns:
        An :class:`~common.model_contract.IntervalCalibration` with at least one step.

    Raises:
        ValueError: not even step 1 has enough scores.
    """
    if paths.sigma is None:
        raise ValueError("interval calibration needs forecast paths computed with_sigma=True")
    sigma = paths.sigma
    c = np.asarray(close, dtype=np.float64)
    o = np.asarray(origins, dtype=np.int64)
    quantiles: list[list[float]] = []
    n_first = 0
    for step in range(1, paths.closes.shape[1] + 1):
        ok = o + step < len(c)
        if ok.sum() < MIN_CALIBRATION_SCORES:
            break
        scores = np.abs(np.log(c[o[ok] + step] / paths.closes[ok, step - 1])) / sigma[ok]
        n_first = n_first or int(ok.sum())
        quantiles.append([conformal_quantile(scores, level) for level in LEVEL_GRID])
    if not quantiles:
        raise ValueError(
            f"interval calibration needs >= {MIN_CALIBRATION_SCORES} validation forecasts"
        )
    monotone = np.maximum.accumulate(np.asarray(quantiles), axis=0)
    return IntervalCalibration(
        ewma_lambda=ewma_lambda,
        levels=list(LEVEL_GRID),
        quantiles=monotone.tolist(),
        n_calibration=n_first,
    )
