"""The use case: realized accuracy of a ticker's served champion and of its other versions.

Metrics as in ``ml_lifecycle.metrics`` (Hyndman & Koehler 2006 for MAE/MAPE),
applied to the realized outcomes of logged forecasts: the naive (persistence) forecast of
the same origin predicts ``last_close`` for every step, and ``relative_mae`` = MAE / naive
MAE (Hyndman & Koehler's relative MAE; below 1 the model beats persistence).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sqlalchemy.orm import Session

from app.features.model_accuracy import crud
from app.features.model_accuracy.crud import RealizedForecast
from app.features.model_accuracy.schemas import ModelAccuracyRead, VersionAccuracy
from app.features.stock_prediction.predictor import Predictor


def _percent(hits: Sequence[int]) -> float | None:
    """``100 * mean(hits)`` of 0/1 values, None when there are none."""
    return 100.0 * float(np.mean(hits)) if hits else None


def version_accuracy(
    forecasts: Sequence[RealizedForecast], *, model_name: str, model_version: str
) -> VersionAccuracy:
    """The realized accuracy of one model version from its realized forecasts.

    Args:
        forecasts: that version's realized forecast steps (may be empty: ``n = 0`` and null
            metrics).
        model_name: registered model name, for the result.
        model_version: its version, for the result.

    Returns:
        ``mae`` and ``naive_mae`` (listing currency), ``relative_mae`` (None when the naive
        MAE is 0), ``mape``, ``directional_accuracy`` (``100 * mean(sign(ŷ - c) == sign(y -
        c))`` with ``c`` = last_close) and the interval coverages, in percent.
    """
    if not forecasts:
        return VersionAccuracy(
            model_name=model_name, model_version=model_version, n=0, n_target_dates=0
        )
    predicted = np.array([f.predicted_close for f in forecasts])
    realized = np.array([f.realized_close for f in forecasts])
    last = np.array([f.last_close for f in forecasts])
    mae = float(np.mean(np.abs(predicted - realized)))
    naive_mae = float(np.mean(np.abs(last - realized)))
    covered_80 = [f.covered_80 for f in forecasts if f.covered_80 is not None]
    covered_95 = [f.covered_95 for f in forecasts if f.covered_95 is not None]
    dates = sorted({f.target_date for f in forecasts})
    return VersionAccuracy(
        model_name=model_name,
        model_version=model_version,
        n=len(forecasts),
        n_target_dates=len(dates),
        first_target_date=dates[0],
        last_target_date=dates[-1],
        mae=mae,
        naive_mae=naive_mae,
        relative_mae=mae / naive_mae if naive_mae > 0 else None,
        mape=float(100.0 * np.mean(np.abs(predicted - realized) / realized)),
        directional_accuracy=float(
            100.0 * np.mean(np.sign(predicted - last) == np.sign(realized - last))
        ),
        n_intervals=len(covered_95),
        coverage_80=_percent(covered_80),
        coverage_95=_percent(covered_95),
    )


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def get_accuracy(
    *, session: Session, predictor: Predictor, ticker: str, window: int
) -> ModelAccuracyRead:
    """Realized accuracy of ``ticker``'s served champion over its last ``window`` realized
    target dates, and of every version with realized forecasts (same window each).

    Raises:
        ModelNotFoundError: no champion is served for the ticker (404).
    """
    champion = predictor.get(ticker)
    by_version: dict[str, list[RealizedForecast]] = defaultdict(list)
    names: dict[str, str] = {}
    for forecast in crud.realized_forecasts(session, ticker=ticker, window=window):
        by_version[forecast.model_version].append(forecast)
        names[forecast.model_version] = forecast.model_name
    versions = [
        version_accuracy(by_version[v], model_name=names[v], model_version=v)
        for v in sorted(by_version, key=_version_key)
    ]
    served = version_accuracy(
        by_version.get(champion.version, []),
        model_name=champion.name,
        model_version=champion.version,
    )
    return ModelAccuracyRead(**served.model_dump(), ticker=ticker, window=window, versions=versions)
