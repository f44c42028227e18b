"""The contract between ``ml_lifecycle`` (which registers models) and ``app`` (which serves them).

A served model is one *version* of a *registered model* in the MLflow registry, found by the
alias ``champion``. Everything needed to predict from raw bars travels with that version as
artifacts of the logged MLflow model, so one URI, ``models:/<name>@champion``, is enough:

* ``artifacts/metadata.json`` (:data:`METADATA_ARTIFACT`): a :class:`ModelMetadata` document;
* ``artifacts/model.onnx`` (:data:`ONNX_ARTIFACT`): the network in ONNX form, input
  ``(batch, lookback, n_features)`` float32 (already scaled), output ``(batch, 1)`` float32
  (the scaled target);
* ``artifacts/model.keras``: the same network for Keras.

This module is deliberately free of TensorFlow, pandas and MLflow imports.
"""

from __future__ import annotations

import re
from datetime import date

from pydantic import BaseModel, Field

from common.drift import InputDistribution

#: Every registered model is named ``stock-lstm-<TICKER>``; characters outside
#: ``[A-Za-z0-9._-]`` (``^`` and ``=``) become ``_``. ``PETR4.SA`` -> ``stock-lstm-PETR4.SA``,
#: ``^BVSP`` -> ``stock-lstm-_BVSP``.
REGISTERED_MODEL_PREFIX = "stock-lstm-"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"

#: Paths of the artifacts inside the logged MLflow model directory.
METADATA_ARTIFACT = "artifacts/metadata.json"
ONNX_ARTIFACT = "artifacts/model.onnx"
KERAS_ARTIFACT = "artifacts/model.keras"

#: Model-version tag holding the ticker, so the registry can be searched by ticker.
TICKER_TAG = "ticker"
#: Prefix of the model-version tags holding test-window metrics (``metric.mase`` ...).
METRIC_TAG_PREFIX = "metric."

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def registered_model_name(ticker: str) -> str:
    """The registered model name for a (normalized) ticker, e.g. ``stock-lstm-PETR4.SA``."""
    return REGISTERED_MODEL_PREFIX + _UNSAFE.sub("_", ticker)


def champion_uri(ticker: str) -> str:
    """``models:/stock-lstm-<TICKER>@champion``: the one URI needed to serve a ticker."""
    return f"models:/{registered_model_name(ticker)}@{CHAMPION_ALIAS}"


class ScalerParams(BaseModel):
    """Standard-scaler parameters, fit on the training split only.

    ``x_scaled = (x - mean) / scale``, per feature.
    """

    mean: list[float]
    scale: list[float]


class Combination(BaseModel):
    """Forecast combination of the network with the naive forecast (Bates & Granger 1969).

    The served log return is ``w * (r_net - drift)``: ``drift`` is the network's mean
    predicted log return over its training windows (the up-drift it memorised), ``w`` the
    shrinkage toward the naive forecast (``r = 0``), fit on validation windows only as
    ``clip(sum(c * r) / sum(c^2), 0, 1)`` with ``c = r_net - drift`` (the least-squares
    combination weight without intercept; Timmermann 2006, "Forecast combinations",
    Handbook of Economic Forecasting 1, §2), and set to 0 unless the combined forecast beats
    naive on validation by a one-sided Diebold-Mariano test. ``w = 0``: exactly the naive
    forecast. The defaults (``w = 1, drift = 0``) are the raw network, as older versions served.

    Attributes:
        weight: ``w`` in ``[0, 1]``.
        drift: log return per bar.
        fitted_weight: the least-squares ``w`` before the significance test.
        validation_pvalue: the test's p-value (None when not fitted).
        n_validation: validation windows the weight was fit on.
    """

    weight: float = Field(default=1.0, ge=0.0, le=1.0)
    drift: float = 0.0
    fitted_weight: float | None = None
    validation_pvalue: float | None = None
    n_validation: int = 0


class IntervalCalibration(BaseModel):
    """Normalised split-conformal prediction intervals, per horizon step.

    Scores on validation windows: ``|log(actual / forecast)| / sigma_T`` with ``sigma_T``
    the EWMA volatility of the window's log returns (:func:`common.forecasting.ewma_volatility`).
    ``quantiles[k][j]`` is the conformal quantile of step ``k + 1``'s scores at coverage
    ``levels[j]`` percent (:func:`common.forecasting.conformal_quantile`).

    Attributes:
        method: a human-readable name of the method.
        ewma_lambda: decay of the EWMA volatility.
        levels: grid of coverage levels, percent, increasing.
        quantiles: ``(n_steps, len(levels))`` score quantiles.
        n_calibration: scores at step 1.
    """

    method: str = "normalised split conformal (EWMA volatility scale)"
    ewma_lambda: float = Field(default=0.94, gt=0.0, lt=1.0)
    levels: list[float]
    quantiles: list[list[float]]
    n_calibration: int = 0


class ModelMetadata(BaseModel):
    """What a server needs, besides the network, to predict from raw bars.

    Attributes:
        ticker: the ticker the model was trained on.
        lookback: bars per input window.
        features: feature names, in column order, as computed by
            :func:`common.features.window_features`.
        target: what the network predicts; ``"log_return"`` means
            ``log(close[t+1] / close[t])`` for the last bar ``t`` of the window.
        feature_scaler: per-feature scaler (length ``n_features``).
        target_scaler: scaler of the target (length 1).
        last_train_date: the last bar date used for fitting (train split end).
        last_bar_date: the last bar date the model saw at all (test split end).
        currency: listing currency of the prices, when known.
        input_distributions: the distribution of each input series (``log_return`` and
            every feature) over the bars the version was built on (up to
            ``last_bar_date``), for drift detection at serving (:mod:`common.drift`); empty
            for versions trained before it was recorded.
        metrics: walk-forward metrics of the model (``mae``, ``rmse``, ``mape``, ``mase``,
            ``directional_accuracy``, ``relative_mae`` ...) and of the naive baseline
            (``naive_mae`` ...).
        combination: the shrinkage toward the naive forecast, applied when serving.
        intervals: the conformal calibration of the prediction intervals (None: no intervals).
    """

    ticker: str
    lookback: int = Field(gt=0)
    features: list[str]
    target: str = "log_return"
    feature_scaler: ScalerParams
    target_scaler: ScalerParams
    last_train_date: date
    last_bar_date: date
    currency: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    input_distributions: dict[str, InputDistribution] = Field(default_factory=dict)
    combination: Combination = Field(default_factory=Combination)
    intervals: IntervalCalibration | None = None
