"""Fitting a version, and the walk-forward (rolling-origin) backtest.

:func:`fit_version` is the one recipe that turns bars up to some date into a model version:
network, combination weight, interval calibration. :func:`walk_forward` applies it with an
expanding training window (capped at ``history_bars``) before each of ``K`` consecutive test
folds over the most recent bars (Tashman 2000, "Out-of-sample tests of forecasting accuracy",
IJF 16(4); Hyndman & Athanasopoulos, fpp3 §5.10 "time series cross-validation"): the fold's
version is fit on the bars *before* the fold only (the arrays it gets end there), then
forecasts every target of the fold from the bars up to each forecast origin through
:class:`~common.forecasting.Forecaster`, exactly as the API serves.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from common.features import FloatArray
from common.forecasting import Forecaster, ForecastPaths, interval_bounds
from common.model_contract import ModelMetadata, registered_model_name
from common.price_store import Bars, read_bars
from common.tickers import normalize_ticker
from ml_lifecycle.calibration import calibrate_intervals, fit_combination
from ml_lifecycle.config import TrainConfig
from ml_lifecycle.data import FitData, fit_window_bars, prepare_fit
from ml_lifecycle.exceptions import InsufficientBarsError
from ml_lifecycle.metrics import (
    diebold_mariano,
    directional_accuracy,
    mae,
    mape,
    naive_scale,
    rmse,
)
from ml_lifecycle.summary import TickerTrainSummary
from ml_lifecycle.tracking import Tracking, ticker_run

logger = logging.getLogger(__name__)

#: Coverage levels (percent) the backtest reports.
REPORTED_LEVELS: tuple[float, ...] = (80.0, 95.0)


@dataclass
class FittedVersion:
    """A version fit on one window: Keras network, full metadata, fit statistics."""

    model: Any
    metadata: ModelMetadata
    data: FitData
    train_seconds: float
    epochs: int
    best_epoch: int

    def forecaster(self) -> Forecaster:
        """The version's forecaster, running the Keras network (same outputs as its ONNX)."""
        return Forecaster(self.metadata, keras_network(self.model))


def keras_network(model: Any) -> Callable[[npt.NDArray[np.float32]], FloatArray]:
    """A :data:`~common.forecasting.Network` calling a Keras model directly (no ``predict``
    loop overhead): scaled windows ``(n, lookback, n_features)`` -> outputs ``(n,)``."""

    def run(x: npt.NDArray[np.float32]) -> FloatArray:
        if len(x) == 0:
            return np.empty(0)
        out: FloatArray = np.asarray(model(x, training=False), dtype=np.float64).reshape(-1)
        return out

    return run


def fit_version(
    bars: Mapping[str, npt.ArrayLike],
    dates: npt.ArrayLike,
    config: TrainConfig,
    *,
    ticker: str,
    currency: str | None = None,
    initial_weights: list[Any] | None = None,
) -> FittedVersion:
    """Fit a version on ``bars`` (everything the version may know), oldest first.

    Steps: :func:`~ml_lifecycle.data.prepare_fit` (training/validation split of the last
    ``history_bars``), :func:`~ml_lifecycle.train.train_network`, the network's drift on its
    training windows, :func:`~ml_lifecycle.calibration.fit_combination` on the validation
    windows' one-step forecasts, then :func:`~ml_lifecycle.calibration.calibrate_intervals`
    on the validation windows' multi-step forecasts (combination applied).

    Raises:
        InsufficientBarsError: too few bars for the lookback and the split.
    """
    from ml_lifecycle.train import train_network  # noqa: PLC0415 - TensorFlow

    data = prepare_fit(bars, dates, config, ticker=ticker, currency=currency)
    result = train_network(data, config, initial_weights=initial_weights)
    raw = ModelMetadata(
        ticker=ticker,
        lookback=config.lookback,
        features=list(config.features),
        feature_scaler=data.feature_scaler,
        target_scaler=data.target_scaler,
        last_train_date=data.dates[data.train_end - 1],
        last_bar_date=data.dates[-1],
        currency=currency,
    )
    network = Forecaster(raw, keras_network(result.model))
    ts = data.target_scaler
    train_returns = keras_network(result.model)(data.train.x) * ts.scale[0] + ts.mean[0]
    drift = float(np.mean(train_returns))
    val_origins = np.arange(data.train_end - 1, data.n_bars - 1)
    one_step = network.forecast_paths(data.bars, val_origins, 1).log_returns[:, 0]
    combination = fit_combination(
        one_step, data.val.y_raw, drift=drift, alpha=config.combination_alpha
    )
    combined = Forecaster(raw.model_copy(update={"combination": combination}), network.network)
    paths = combined.forecast_paths(data.bars, val_origins, config.interval_steps)
    intervals = calibrate_intervals(
        paths, val_origins, data.bars["close"], ewma_lambda=combined.ewma_lambda
    )
    metadata = raw.model_copy(update={"combination": combination, "intervals": intervals})
    return FittedVersion(
        model=result.model,
        metadata=metadata,
        data=data,
        train_seconds=result.seconds,
        epochs=result.epochs_run,
        best_epoch=result.best_epoch,
    )


@dataclass
class FoldForecasts:
    """One test fold's forecasts.

    Attributes:
        index: fold number, 1-based.
        start / stop: target bar indices ``[start, stop)`` of the fold.
        fit_start: first bar of the fold's fit window (``[fit_start, start)``).
        origins: forecast origins ``(n,)`` (``start - 1 .. stop - 2``).
        paths: forecasts from each origin, ``horizon`` steps.
        metadata: the fold's version (combination weight, calibration).
        train_seconds / epochs: of the fold's fit.
    """

    index: int
    start: int
    stop: int
    fit_start: int
    origins: npt.NDArray[np.int64]
    paths: ForecastPaths
    metadata: ModelMetadata
    train_seconds: float
    epochs: int


@dataclass
class BacktestResult:
    """A walk-forward backtest of one ticker.

    Attributes:
        ticker: the ticker.
        dates / close: every bar's date and close ``(n_bars,)``.
        folds: per-fold forecasts.
        horizon: steps forecast from each origin.
        in_sample_close: closes of the first fold's fit window (MASE's scale).
        last_weights: the last fold's network weights (a warm start for the final fit).
        metrics: pooled metrics (see :func:`score`); fold_metrics: one dict per fold.
        seconds: wall time; train_seconds: sum of the folds' fit times.
    """

    ticker: str
    dates: npt.NDArray[np.object_]
    close: FloatArray
    folds: list[FoldForecasts]
    horizon: int
    in_sample_close: FloatArray
    last_weights: list[Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    fold_metrics: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    train_seconds: float = 0.0

    def one_step(self) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Pooled one-step forecasts: target indices ``(n,)`` and forecast closes ``(n,)``."""
        targets = np.concatenate([f.origins + 1 for f in self.folds])
        closes = np.concatenate([f.paths.closes[:, 0] for f in self.folds])
        return targets, closes


def fold_starts(n_bars: int, folds: int, fold_bars: int) -> list[int]:
    """First target index of each of ``folds`` consecutive folds ending at the last bar."""
    first = n_bars - folds * fold_bars
    return [first + k * fold_bars for k in range(folds)]


def require_bars(bars: Bars, config: TrainConfig, *, folds: int, fold_bars: int) -> None:
    """Check there are bars for a first fit window plus ``folds`` folds of ``fold_bars``.

    Raises:
        InsufficientBarsError: naming the ticker, the bars stored and the bars needed.
    """
    required = fit_window_bars(config)
    if len(bars) - folds * fold_bars < required:
        raise InsufficientBarsError(
            bars.ticker,
            len(bars),
            required + folds * fold_bars,
            f"{folds} walk-forward folds of {fold_bars} bars after a first fit window of "
            f"{required} (lookback {config.lookback}, {config.min_split_windows} windows in "
            f"each of train and validation)",
        )


def walk_forward(
    bars: Bars,
    config: TrainConfig,
    *,
    folds: int | None = None,
    fold_bars: int | None = None,
    horizon: int = 1,
    on_fold: Callable[[FoldForecasts], None] | None = None,
) -> BacktestResult:
    """Rolling-origin backtest of ``config`` on ``bars``: refit before each fold, forecast it.

    Fold ``k`` (targets ``[s_k, s_k + fold_bars)``) is forecast by a version fit with
    :func:`fit_version` on ``bars[:s_k]`` only (an expanding window, capped at
    ``history_bars``), warm-started from fold ``k - 1``'s weights when ``config.warm_start``;
    each forecast from origin ``o`` reads bars ``o - lookback + 1 .. o`` only.

    Args:
        bars: every stored bar of one ticker, oldest first.
        config: the training config (its ``folds``/``fold_bars`` unless overridden).
        folds / fold_bars: override the config's.
        horizon: steps forecast from each origin (metrics use step 1; coverage every step).
        on_fold: called after each fold (progress, logging).

    Returns:
        A :class:`BacktestResult` with pooled and per-fold metrics (:func:`score`).

    Raises:
        InsufficientBarsError: the first fold's training window is too short.
    """
    began = time.perf_counter()
    k, size = folds or config.folds, fold_bars or config.fold_bars
    require_bars(bars, config, folds=k, fold_bars=size)
    mapping = {c: np.asarray(v, dtype=np.float64) for c, v in bars.as_mapping().items()}
    n = len(bars)
    starts = fold_starts(n, k, size)
    close = mapping["close"]
    result = BacktestResult(
        ticker=bars.ticker,
        dates=bars.dates,
        close=close,
        folds=[],
        horizon=horizon,
        in_sample_close=close[max(0, starts[0] - (config.history_bars or starts[0])) : starts[0]],
    )
    weights: list[Any] | None = None
    for index, start in enumerate(starts, start=1):
        stop = start + size
        known = {c: v[:start] for c, v in mapping.items()}  # the fit sees nothing after start
        fitted = fit_version(
            known,
            bars.dates[:start],
            config,
            ticker=bars.ticker,
            currency=bars.currency,
            initial_weights=weights,
        )
        if config.warm_start:
            weights = fitted.model.get_weights()
        origins = np.arange(start - 1, stop - 1)
        paths = fitted.forecaster().forecast_paths(mapping, origins, horizon)
        fold = FoldForecasts(
            index=index,
            start=start,
            stop=stop,
            fit_start=start - fitted.data.n_bars,
            origins=origins,
            paths=paths,
            metadata=fitted.metadata,
            train_seconds=fitted.train_seconds,
            epochs=fitted.epochs,
        )
        result.folds.append(fold)
        result.train_seconds += fitted.train_seconds
        result.fold_metrics.append(score(result, [fold]))
        m = result.fold_metrics[-1]
        logger.info(
            "%s fold %d/%d (%s..%s): relative MAE %.4f, w %.2f, coverage 80%% %.0f%%, "
            "95%% %.0f%%, fit %.1f s (%d epochs)",
            bars.ticker, index, k, bars.dates[start], bars.dates[stop - 1], m["relative_mae"],
            fitted.metadata.combination.weight, m["coverage_80"], m["coverage_95"],
            fitted.train_seconds, fitted.epochs,
        )  # fmt: skip
        if on_fold is not None:
            on_fold(fold)
        result.last_weights = fitted.model.get_weights()
    result.metrics = score(result, result.folds)
    result.seconds = time.perf_counter() - began
    return result


def score(result: BacktestResult, folds: Sequence[FoldForecasts]) -> dict[str, float]:
    """Metrics of the one-step forecasts of ``folds`` and interval coverage of every step.

    Point metrics (Hyndman & Koehler 2006; fpp3 §5.8): ``mae``/``rmse`` (listing currency),
    ``mape`` (percent), ``mase`` (scaled by the in-sample one-step naive MAE of the first
    fold's fit window), ``relative_mae`` (MAE / naive MAE), ``relative_mae_drift`` (MAE /
    MAE of the random walk with drift, fpp3 §5.2, drift = mean log return of the fold's fit
    window), ``directional_accuracy`` and ``up_days`` (percent), ``dm_statistic`` /
    ``dm_pvalue`` (HLN-corrected Diebold-Mariano on absolute errors vs naive; negative
    statistic = the model is better), ``combination_weight`` (mean over folds).
    Coverage: ``coverage_<level>`` (percent of actual closes inside the interval) at step 1,
    and ``coverage_<level>_all_steps`` over every step whose target is a stored bar.
    """
    close = result.close
    origins = np.concatenate([f.origins for f in folds])
    predicted = np.concatenate([f.paths.closes[:, 0] for f in folds])
    actual = close[origins + 1]
    previous = close[origins]
    drift_forecast = np.concatenate([previous_close_with_drift(close, f) for f in folds])
    naive_mae = mae(actual, previous)

    abs_model, abs_naive = np.abs(actual - predicted), np.abs(actual - previous)
    dm, p_two, _ = (
        diebold_mariano(abs_model, abs_naive) if len(actual) >= 3 else (math.nan, math.nan, 0.0)
    )
    metrics = {
        "mae": mae(actual, predicted),
        "rmse": rmse(actual, predicted),
        "mape": mape(actual, predicted),
        "mase": mae(actual, predicted) / naive_scale(result.in_sample_close),
        "naive_mae": naive_mae,
        "naive_rmse": rmse(actual, previous),
        "naive_mape": mape(actual, previous),
        "naive_mase": naive_mae / naive_scale(result.in_sample_close),
        "relative_mae": mae(actual, predicted) / naive_mae if naive_mae > 0 else math.nan,
        "relative_mae_drift": mae(actual, predicted) / mae(actual, drift_forecast),
        "directional_accuracy": directional_accuracy(actual, predicted, previous=previous),
        "up_days": float(100.0 * np.mean(actual > previous)),
        "dm_statistic": dm,
        "dm_pvalue": p_two,
        "combination_weight": float(np.mean([f.metadata.combination.weight for f in folds])),
        "n_forecasts": float(len(actual)),
    }
    for level in REPORTED_LEVELS:
        inside_first: list[FloatArray] = []
        inside_all: list[FloatArray] = []
        for f in folds:
            q = Forecaster(f.metadata, _no_network).step_quantiles([level], result.horizon)
            if q is None:
                continue
            lower, upper = interval_bounds(f.paths, q)
            targets = f.origins[:, None] + np.arange(1, result.horizon + 1)[None, :]
            valid = targets < len(close)
            truth = close[np.minimum(targets, len(close) - 1)]
            hit = (lower[0] <= truth) & (truth <= upper[0])
            inside_first.append(hit[:, 0])
            inside_all.append(hit[valid])
        tag = f"{level:g}"
        metrics[f"coverage_{tag}"] = (
            float(100.0 * np.mean(np.concatenate(inside_first))) if inside_first else math.nan
        )
        metrics[f"coverage_{tag}_all_steps"] = (
            float(100.0 * np.mean(np.concatenate(inside_all))) if inside_all else math.nan
        )
    return metrics


def _no_network(x: npt.NDArray[np.float32]) -> FloatArray:
    raise AssertionError("the network is not needed to read interval quantiles")


def previous_close_with_drift(close: FloatArray, fold: FoldForecasts) -> FloatArray:
    """Random walk with drift (fpp3 §5.2) for a fold's one-step targets: ``close[o] *
    exp(d)`` with ``d = log(close[s - 1] / close[f]) / (s - 1 - f)``, the average log return
    over the fold's fit window ``[f, s)``."""
    first, last = fold.fit_start, fold.start - 1
    drift = math.log(close[last] / close[first]) / max(last - first, 1)
    out: FloatArray = close[fold.origins] * math.exp(drift)
    return out


def plot_backtest(result: BacktestResult, path: Any) -> Any:
    """PNG of the one-step forecasts, the naive forecast, the actual closes, the 80%/95%
    intervals and the fold boundaries. Returns ``path``."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(12, 5))
    first = result.folds[0].start
    x: Any = result.dates[first - 1 :]
    ax.plot(x, result.close[first - 1 :], color="black", linewidth=1.1, label="actual close")
    targets, predicted = result.one_step()
    tx: Any = result.dates[targets]
    ax.plot(tx, result.close[targets - 1], color="tab:orange", linewidth=0.8, alpha=0.8,
            label="naive (previous close)")  # fmt: skip
    ax.plot(tx, predicted, color="tab:blue", linewidth=0.9, label="forecast (one step)")
    for level, alpha in ((95.0, 0.12), (80.0, 0.22)):
        lows, highs = [], []
        for f in result.folds:
            q = Forecaster(f.metadata, _no_network).step_quantiles([level], 1)
            if q is None:
                break
            lower, upper = interval_bounds(f.paths, q)
            lows.append(lower[0, :, 0])
            highs.append(upper[0, :, 0])
        if lows:
            ax.fill_between(tx, np.concatenate(lows), np.concatenate(highs), color="tab:blue",
                            alpha=alpha, linewidth=0, label=f"{level:g}% interval")  # fmt: skip
    for f in result.folds:
        ax.axvline(result.dates[f.start], color="grey", linewidth=0.6, linestyle="--")
    m = result.metrics
    ax.set_title(
        f"{result.ticker}: walk-forward, {len(result.folds)} folds; relative MAE vs naive "
        f"{m.get('relative_mae', math.nan):.4f}, coverage 80% {m.get('coverage_80', math.nan):.1f}%"
    )
    ax.set_xlabel("date")
    ax.set_ylabel("close")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_backtest(result: BacktestResult, plots_dir: Path) -> list[Path]:
    """Log a backtest to the active MLflow run: per-fold metrics (``step`` = fold number),
    pooled metrics (``wf_<name>``), the PNG of :func:`plot_backtest` and a JSON of the
    metrics. Returns the PNG paths."""
    import mlflow  # noqa: PLC0415

    for index, fold_metrics in enumerate(result.fold_metrics, start=1):
        mlflow.log_metrics(
            {f"fold_{k}": v for k, v in fold_metrics.items() if math.isfinite(v)}, step=index
        )
    mlflow.log_metrics({f"wf_{k}": v for k, v in result.metrics.items() if math.isfinite(v)})
    mlflow.log_metric("wf_train_seconds", result.train_seconds)
    plots_dir.mkdir(parents=True, exist_ok=True)
    png = plot_backtest(result, plots_dir / f"{result.ticker}_walk_forward.png")
    mlflow.log_artifact(str(png), artifact_path="plots")
    mlflow.log_dict(
        {"metrics": result.metrics, "folds": result.fold_metrics}, "backtest/metrics.json"
    )
    return [png]


def summarize(result: BacktestResult, summary: TickerTrainSummary) -> None:
    """Copy a backtest's metrics, dates and times into ``summary``."""
    targets, _ = result.one_step()
    summary.metrics = dict(result.metrics)
    summary.fold_metrics = list(result.fold_metrics)
    summary.folds = len(result.folds)
    summary.fold_bars = result.folds[0].stop - result.folds[0].start
    summary.test_start = str(result.dates[targets[0]])
    summary.test_end = str(result.dates[targets[-1]])
    summary.train_seconds = result.train_seconds
    summary.n_bars = len(result.dates)


def backtest_ticker(
    *,
    session_factory: Callable[[], Session],
    ticker: str,
    config: TrainConfig,
    tracking: Tracking,
    folds: int | None = None,
    fold_bars: int | None = None,
    horizon: int = 1,
    reports_dir: Path | None = None,
) -> TickerTrainSummary:
    """Walk-forward backtest of one ticker, logged as an MLflow run (``kind=backtest``).

    Nothing is registered. See :func:`walk_forward` for the procedure.

    Raises:
        InvalidTickerError: bad symbol; InsufficientBarsError: too few bars for the folds.
        MlflowException / OSError: the tracking store failed mid-run.
    """
    import mlflow  # noqa: PLC0415

    began = time.perf_counter()
    ticker = normalize_ticker(ticker)
    with session_factory() as session:
        bars = read_bars(session, ticker=ticker)
    require_bars(bars, config, folds=folds or config.folds, fold_bars=fold_bars or config.fold_bars)
    summary = TickerTrainSummary(ticker=ticker, registered_model=registered_model_name(ticker))
    params = {**config_params(config), "horizon": horizon}
    with ticker_run(tracking, ticker=ticker, kind="backtest", params=params) as (run_id, tmp):
        summary.run_id = run_id
        result = walk_forward(bars, config, folds=folds, fold_bars=fold_bars, horizon=horizon)
        log_backtest(result, (reports_dir or tmp) / ticker)
        summarize(result, summary)
        summary.combination_weight = result.folds[-1].metadata.combination.weight
        summary.ok = True
        summary.seconds = time.perf_counter() - began
        mlflow.log_dict(summary.to_dict(), "summary.json")
    return summary


def config_params(config: TrainConfig) -> dict[str, Any]:
    """The training config as MLflow params (tuples joined by commas)."""
    return {k: (",".join(v) if isinstance(v, tuple) else v) for k, v in config.model_dump().items()}
