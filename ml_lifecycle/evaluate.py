"""Judging a forecast against the naive baseline, and re-evaluating a champion on new bars.

The naive (persistence) forecast of ``close[t]`` is ``close[t-1]``: tomorrow's close equals
today's, i.e. a predicted log return of 0. MASE is scaled by the in-sample naive error
(Hyndman & Koehler 2006), so the naive forecast's own test MASE is near, not exactly, 1.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from common.forecasting import Forecaster
from common.model_contract import registered_model_name
from common.price_store import read_bars
from common.registry import champion_version, load_version
from common.tickers import normalize_ticker
from ml_lifecycle.exceptions import ChampionNotFoundError, InsufficientBarsError
from ml_lifecycle.metrics import METRIC_NAMES, forecast_metrics
from ml_lifecycle.tracking import Tracking

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """Test-window metrics of the model and of the naive baseline.

    Attributes:
        model: :data:`~ml_lifecycle.metrics.METRIC_NAMES` of the model.
        naive: the same metrics of the naive forecast.
        up_days: share of test days whose close rose, percent (the directional accuracy
            of always forecasting "up", the honest yardstick for directional accuracy).
        n_test: number of test forecasts.
    """

    model: dict[str, float]
    naive: dict[str, float]
    up_days: float
    n_test: int

    def flat(self) -> dict[str, float]:
        """``{"mae": ..., ..., "naive_mae": ..., ..., "up_days": ...}``."""
        return {
            **self.model,
            **{f"naive_{k}": v for k, v in self.naive.items()},
            "up_days": self.up_days,
        }


def evaluate_forecast(
    *,
    actual: npt.ArrayLike,
    predicted: npt.ArrayLike,
    previous: npt.ArrayLike,
    in_sample: npt.ArrayLike,
) -> Evaluation:
    """Metrics of a forecast and of the naive baseline on the same test window.

    Args:
        actual: actual closes ``(n,)``.
        predicted: forecast closes ``(n,)``.
        previous: close before each target ``(n,)``; also the naive forecast.
        in_sample: the training closes (MASE's scale).

    Returns:
        An :class:`Evaluation`.
    """
    prev = np.asarray(previous, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    model = forecast_metrics(act, predicted, previous=prev, in_sample=in_sample)
    naive = forecast_metrics(act, prev, previous=prev, in_sample=in_sample)
    assert set(model) == set(METRIC_NAMES)
    return Evaluation(
        model=model,
        naive=naive,
        up_days=float(100.0 * np.mean(act > prev)),
        n_test=len(act),
    )


def evaluate_champion(
    *,
    session_factory: Callable[[], Session],
    ticker: str,
    tracking: Tracking,
    max_bars: int = 504,
) -> dict[str, Any]:
    """Re-evaluate the champion of ``ticker`` on the bars it was not fit on.

    The window: one-step forecasts of every stored bar after the champion's
    ``last_train_date`` (its validation bars and any bar ingested since), at most the last
    ``max_bars``; MASE is scaled by the closes before the window. Forecasts run through
    :class:`~common.forecasting.Forecaster` on the champion's ONNX artifact. The result is
    logged as an MLflow run (``kind=evaluation``) and as ``eval.<metric>`` tags on the
    champion version.

    Returns:
        ``{"ticker", "registered_model", "version", "window_start", "window_end", "n_test",
        "new_bars_since_training", "metrics", "naive_metrics", "up_days"}``.

    Raises:
        ChampionNotFoundError: no model version holds the alias ``champion``.
        InsufficientBarsError: fewer than 3 bars after the champion's training window.
    """
    import mlflow  # noqa: PLC0415

    from ml_lifecycle.registry import tag_version  # noqa: PLC0415

    ticker = normalize_ticker(ticker)
    name = registered_model_name(ticker)
    experiment_id = tracking.experiment_id()
    client = tracking.client()
    version = champion_version(client, name)
    if version is None:
        raise ChampionNotFoundError(f"{ticker}: no champion version of {name} in the registry")
    loaded = load_version(client, name, version)
    metadata = loaded.metadata
    forecaster = Forecaster.from_onnx(metadata, loaded.onnx_bytes)
    with session_factory() as session:
        bars = read_bars(session, ticker=ticker)
    mapping = {k: np.asarray(v, dtype=np.float64) for k, v in bars.as_mapping().items()}
    dates = bars.dates
    after_train = sum(1 for d in dates if d <= metadata.last_train_date)
    start = max(after_train, len(dates) - max_bars, metadata.lookback)
    if len(dates) - start < 3:
        raise InsufficientBarsError(
            ticker, len(dates), start + 3, "3 bars after the champion's training window"
        )
    close = mapping["close"]
    predicted = forecaster.forecast_paths(mapping, np.arange(start - 1, len(dates) - 1), 1)
    evaluation = evaluate_forecast(
        actual=close[start:],
        predicted=predicted.closes[:, 0],
        previous=close[start - 1 : -1],
        in_sample=close[:start],
    )
    new_bars = sum(1 for d in dates if d > metadata.last_bar_date)
    result: dict[str, Any] = {
        "ticker": ticker,
        "registered_model": name,
        "version": version,
        "window_start": str(dates[start]),
        "window_end": str(dates[-1]),
        "n_test": evaluation.n_test,
        "new_bars_since_training": new_bars,
        "metrics": {k: _round(v) for k, v in evaluation.model.items()},
        "naive_metrics": {k: _round(v) for k, v in evaluation.naive.items()},
        "up_days": _round(evaluation.up_days),
    }
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{ticker}-eval-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}",
    ):
        mlflow.set_tags({"ticker": ticker, "kind": "evaluation", "model_version": version})
        mlflow.log_params(
            {"window_start": result["window_start"], "window_end": result["window_end"]}
        )
        mlflow.log_metrics(
            {f"eval_{k}": v for k, v in evaluation.flat().items() if math.isfinite(v)}
        )
        mlflow.log_dict(result, "evaluation.json")
    tag_version(
        client,
        name=name,
        version=version,
        ticker=ticker,
        metrics={},
        extra={
            **{f"eval.{k}": f"{v:.6g}" for k, v in evaluation.flat().items()},
            "eval.window": f"{result['window_start']}..{result['window_end']}",
        },
    )
    logger.info(
        "%s: champion v%s on %s..%s: MASE %.4f vs naive %.4f",
        ticker, version, result["window_start"], result["window_end"],
        evaluation.model["mase"], evaluation.naive["mase"],
    )  # fmt: skip
    return result


def _round(value: float) -> float:
    return float(f"{value:.6g}") if math.isfinite(value) else value
