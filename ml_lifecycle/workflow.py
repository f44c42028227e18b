"""The use cases: train, judge, register and promote one ticker; re-evaluate a champion.

``train_and_register`` is the whole lifecycle of one ticker: read its bars from the price
store, split and scale them without leakage, fit the LSTM, evaluate it on the test window
against the naive baseline, log everything to MLflow, register a new version of
``stock-lstm-<TICKER>`` and move the alias ``champion`` (or ``challenger``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.orm import Session

from common.model_contract import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    ModelMetadata,
    registered_model_name,
)
from common.price_store import Bars, read_bars
from common.tickers import normalize_ticker
from ml_lifecycle.training.config import TrainConfig, load_config

if TYPE_CHECKING:
    from ml_lifecycle.training.data import PreparedData

logger = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]
DEFAULT_EXPERIMENT = "stockcast-lstm"


@dataclass
class TickerTrainSummary:
    """What one ticker's training run produced (one entry of the CLI's JSON summary).

    Attributes:
        ticker: normalized ticker.
        ok: the run finished and a version was registered.
        registered_model: ``stock-lstm-<TICKER>``.
        version: the new model version (``"3"``), or None on failure.
        alias: ``champion`` or ``challenger``.
        promoted: the new version became champion.
        reason: why it was (not) promoted, or the error.
        metrics: test-window metrics of the model (MAE/RMSE in the listing currency, MAPE
            and directional accuracy in percent, MASE and R² unit-free).
        naive_metrics: the same for the naive forecast.
        up_days: share of test days that closed up, percent.
        seconds: wall time of the whole ticker, seconds.
        train_seconds: wall time of ``fit`` alone.
        epochs: epochs run; best_epoch: epoch whose weights were kept.
        n_bars: bars used; n_train/n_val/n_test: windows per split.
        test_start/test_end: dates of the first and last test targets.
        onnx_max_abs_diff: largest ONNX-vs-Keras difference on the test windows.
        run_id: the MLflow run.
        error: the error message on failure.
    """

    ticker: str
    ok: bool = False
    registered_model: str = ""
    version: str | None = None
    alias: str | None = None
    promoted: bool = False
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    naive_metrics: dict[str, float] = field(default_factory=dict)
    up_days: float | None = None
    seconds: float = 0.0
    train_seconds: float = 0.0
    epochs: int = 0
    best_epoch: int = 0
    n_bars: int = 0
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    test_start: str | None = None
    test_end: str | None = None
    onnx_max_abs_diff: float | None = None
    run_id: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (floats rounded to 6 significant digits)."""
        out = asdict(self)
        for key in ("metrics", "naive_metrics"):
            out[key] = {k: _round(v) for k, v in out[key].items()}
        for key in ("up_days", "seconds", "train_seconds", "onnx_max_abs_diff"):
            out[key] = _round(out[key]) if out[key] is not None else None
        return out


def _round(value: float) -> float:
    return float(f"{value:.6g}") if math.isfinite(value) else value


def _experiment(tracking_uri: str, experiment_name: str | None) -> str:
    from ml_lifecycle.config import get_settings  # noqa: PLC0415
    from ml_lifecycle.tracking import ensure_experiment, use_tracking  # noqa: PLC0415

    settings = get_settings()
    use_tracking(tracking_uri)
    root = settings.artifact_root if tracking_uri == settings.mlflow_tracking_uri else None
    return ensure_experiment(
        experiment_name or settings.experiment_name, tracking_uri=tracking_uri, artifact_root=root
    )


def train_and_register(
    *,
    session_factory: SessionFactory,
    ticker: str,
    config: TrainConfig,
    tracking_uri: str,
    force_promote: bool = False,
    reports_dir: Path | None = None,
    experiment_name: str | None = None,
) -> TickerTrainSummary:
    """Train, evaluate, log, register and (maybe) promote the LSTM of one ticker.

    Args:
        session_factory: makes sessions on the price store.
        ticker: Yahoo symbol (normalized here).
        config: hyperparameters and split.
        tracking_uri: MLflow tracking and registry URI (set here, not at import).
        force_promote: make the new version champion even if the gate says no.
        reports_dir: where the PNG plots go (default: a temporary folder; they are logged
            to the run either way).
        experiment_name: MLflow experiment (default from the settings, ``stockcast-lstm``).

    Returns:
        A :class:`TickerTrainSummary` (``ok`` True).

    Raises:
        InvalidTickerError: bad symbol.
        InsufficientBarsError: no bars or too few (message names ticker and counts).
        OnnxMismatchError: the ONNX export does not match Keras within 1e-4.
        MlflowException / OSError: the tracking store failed mid-run.
    """
    import mlflow  # noqa: PLC0415 - slow import

    from ml_lifecycle.training.data import prepare_data  # noqa: PLC0415
    from ml_lifecycle.training.train import train_network  # noqa: PLC0415

    began = time.perf_counter()
    ticker = normalize_ticker(ticker)
    with session_factory() as session:
        bars = read_bars(session, ticker=ticker)
    data = prepare_data(bars, config)
    summary = TickerTrainSummary(ticker=ticker, registered_model=registered_model_name(ticker))
    summary.n_bars, summary.n_train = data.bounds.n_bars, len(data.train)
    summary.n_val, summary.n_test = len(data.val), len(data.test)
    summary.test_start = data.test.target_dates[0].isoformat()
    summary.test_end = data.test.target_dates[-1].isoformat()
    logger.info(
        "%s: %d bars (%s..%s): %d train / %d validation / %d test windows, lookback %d",
        ticker,
        summary.n_bars,
        data.dates[0],
        data.last_bar_date,
        summary.n_train,
        summary.n_val,
        summary.n_test,
        config.lookback,
    )
    experiment_id = _experiment(tracking_uri, experiment_name)
    run_name = f"{ticker}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run,
        tempfile.TemporaryDirectory(prefix="stockcast-ml-") as tmp,
    ):
        summary.run_id = run.info.run_id
        _log_inputs(summary, config, data)

        def log_epoch(epoch: int, values: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=epoch)

        result = train_network(data, config, on_epoch=log_epoch)
        summary.epochs, summary.best_epoch = result.epochs_run, result.best_epoch
        summary.train_seconds = result.seconds
        mlflow.log_metrics({"train_seconds": result.seconds, "best_epoch": result.best_epoch})
        metadata = _evaluate(
            summary,
            config,
            data,
            result.model,
            plots_dir=(reports_dir or Path(tmp) / "plots") / ticker,
            run_name=run_name,
        )
        _register(
            summary,
            config,
            data=data,
            bars=bars,
            model=result.model,
            metadata=metadata,
            tracking_uri=tracking_uri,
            work_dir=Path(tmp) / "model",
            force=force_promote,
        )
        summary.ok = True
        summary.seconds = time.perf_counter() - began
        mlflow.log_metric("seconds", summary.seconds)
        mlflow.log_dict(summary.to_dict(), "summary.json")
    logger.info(
        "%s: version %s -> %s (%s); MASE %.4f vs naive %.4f; %.1f s",
        ticker,
        summary.version,
        summary.alias,
        summary.reason,
        summary.metrics["mase"],
        summary.naive_metrics["mase"],
        summary.seconds,
    )
    return summary


def _log_inputs(summary: TickerTrainSummary, config: TrainConfig, data: PreparedData) -> None:
    import mlflow  # noqa: PLC0415

    mlflow.set_tags(
        {"ticker": summary.ticker, "kind": "train", "registered_model": summary.registered_model}
    )
    params = {
        k: (",".join(v) if isinstance(v, tuple) else v) for k, v in config.model_dump().items()
    }
    mlflow.log_params(
        {
            **params,
            "ticker": summary.ticker,
            "n_bars": summary.n_bars,
            "n_train": summary.n_train,
            "n_val": summary.n_val,
            "n_test": summary.n_test,
            "first_bar_date": str(data.dates[0]),
            "last_train_date": str(data.last_train_date),
            "last_bar_date": str(data.last_bar_date),
            "target": "scaled next log return",
        }
    )
    mlflow.log_dict(config.model_dump(mode="json"), "config/train_config.json")


def _evaluate(
    summary: TickerTrainSummary,
    config: TrainConfig,
    data: PreparedData,
    model: Any,
    *,
    plots_dir: Path,
    run_name: str,
) -> ModelMetadata:
    """Test-window metrics and plots, logged to the active run; returns the full metadata."""
    import mlflow  # noqa: PLC0415

    from common.features import unscale  # noqa: PLC0415
    from ml_lifecycle.evaluation.evaluate import evaluate_forecast, save_plots  # noqa: PLC0415
    from ml_lifecycle.export.export_model import keras_predict  # noqa: PLC0415

    metadata = ModelMetadata(
        ticker=summary.ticker,
        lookback=config.lookback,
        features=list(config.features),
        feature_scaler=data.feature_scaler,
        target_scaler=data.target_scaler,
        last_train_date=data.last_train_date,
        last_bar_date=data.last_bar_date,
        currency=data.currency,
    )
    ts = metadata.target_scaler
    log_ret = unscale(keras_predict(model, data.test.x), ts.mean[0], ts.scale[0])
    predicted = data.test.last_close * np.exp(log_ret)
    evaluation = evaluate_forecast(
        actual=data.test.actual_close,
        predicted=predicted,
        previous=data.test.last_close,
        in_sample=data.train_closes,
    )
    flat = evaluation.flat()
    summary.metrics, summary.naive_metrics = evaluation.model, evaluation.naive
    summary.up_days = evaluation.up_days
    mlflow.log_metrics({f"test_{k}": v for k, v in flat.items() if math.isfinite(v)})
    for png in save_plots(
        ticker=summary.ticker,
        dates=data.test.target_dates,
        actual=data.test.actual_close,
        predicted=predicted,
        naive=data.test.last_close,
        out_dir=plots_dir,
        currency=data.currency,
        title_suffix=f" ({run_name})",
    ):
        mlflow.log_artifact(str(png), artifact_path="plots")
    return metadata.model_copy(update={"metrics": flat})


def _register(
    summary: TickerTrainSummary,
    config: TrainConfig,
    *,
    data: PreparedData,
    bars: Bars,
    model: Any,
    metadata: ModelMetadata,
    tracking_uri: str,
    work_dir: Path,
    force: bool,
) -> None:
    """Promotion gate, model logging and registration, aliases and version tags."""
    import mlflow  # noqa: PLC0415
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from ml_lifecycle.export.export_model import (  # noqa: PLC0415
        bars_frame,
        log_model_version,
        tag_version,
    )
    from ml_lifecycle.export.promotion import decide  # noqa: PLC0415

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name, n = summary.registered_model, data.bounds.n_bars
    cut = len(bars) - n
    mapping = {k: np.asarray(v)[cut:] for k, v in bars.as_mapping().items()}
    gate = decide(
        client,
        name,
        new_mase=summary.metrics["mase"],
        bars=mapping,
        start=data.bounds.val_end,
        stop=n,
        in_sample=data.train_closes,
        force=force,
    )
    tail = slice(n - 2 * config.lookback, n)
    example = bars_frame(data.dates[tail], {k: v[tail] for k, v in mapping.items()})
    version, diff = log_model_version(
        keras_model=model,
        metadata=metadata,
        example_bars=example,
        work_dir=work_dir,
        registered_name=name,
        onnx_sample=data.test.x,
    )
    mlflow.log_metric("onnx_max_abs_diff", diff)
    summary.version, summary.onnx_max_abs_diff = version, diff
    summary.promoted, summary.reason = gate.promote, gate.reason
    summary.alias = CHAMPION_ALIAS if gate.promote else CHALLENGER_ALIAS
    client.set_registered_model_alias(name, summary.alias, version)
    tag_version(
        client,
        name=name,
        version=version,
        ticker=summary.ticker,
        metrics=metadata.metrics,
        extra={
            "run_id": summary.run_id or "",
            "gate_reason": gate.reason,
            "last_train_date": str(data.last_train_date),
            "test_window": f"{summary.test_start}..{summary.test_end}",
        },
    )
    mlflow.set_tags(
        {
            "promoted": str(gate.promote).lower(),
            "model_version": version,
            "gate_reason": gate.reason[:5000],
        }
    )


def evaluate_champion(
    *,
    session_factory: SessionFactory,
    ticker: str,
    tracking_uri: str,
    config: TrainConfig | None = None,
) -> dict[str, Any]:
    """Re-evaluate the champion of ``ticker`` on the latest test window of the stored bars.

    The window is the last ``test_fraction`` of the most recent ``history_bars`` bars (as a
    fresh training run would test on), never earlier than the first bar after the
    champion's ``last_train_date``; MASE is scaled by the bars before the window's
    validation part, as in training. The result is logged as an MLflow run
    (``kind=evaluation``) and as ``eval.<metric>`` tags on the champion version.

    Args:
        session_factory: makes sessions on the price store.
        ticker: Yahoo symbol.
        tracking_uri: MLflow tracking and registry URI.
        config: split settings (default: the default config, with the champion's lookback).

    Returns:
        ``{"ticker", "registered_model", "version", "window_start", "window_end", "n_test",
        "new_bars_since_training", "metrics", "naive_metrics", "up_days"}``.

    Raises:
        ChampionNotFoundError: no model version holds the alias ``champion``.
        InsufficientBarsError: too few bars for the split.
    """
    import mlflow  # noqa: PLC0415
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from common.forecasting import Forecaster  # noqa: PLC0415
    from common.registry import load_version  # noqa: PLC0415
    from ml_lifecycle.evaluation.evaluate import evaluate_forecast  # noqa: PLC0415
    from ml_lifecycle.export.export_model import tag_version  # noqa: PLC0415
    from ml_lifecycle.export.promotion import current_champion  # noqa: PLC0415
    from ml_lifecycle.training.data import split_bounds  # noqa: PLC0415

    ticker = normalize_ticker(ticker)
    name = registered_model_name(ticker)
    experiment_id = _experiment(tracking_uri, None)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = current_champion(client, name)
    if champion is None:
        raise ChampionNotFoundError(f"{ticker}: no champion version of {name} in the registry")
    loaded = load_version(client, name, str(champion.version))
    metadata = loaded.metadata
    forecaster = Forecaster.from_onnx(metadata, loaded.onnx_bytes)
    base = config or load_config()
    split_config = base.model_copy(update={"lookback": metadata.lookback})
    with session_factory() as session:
        bars = read_bars(session, ticker=ticker)
    mapping = {k: np.asarray(v) for k, v in bars.as_mapping().items()}
    dates = bars.dates
    if split_config.history_bars is not None and len(bars) > split_config.history_bars:
        mapping = {k: v[-split_config.history_bars :] for k, v in mapping.items()}
        dates = dates[-split_config.history_bars :]
    bounds = split_bounds(len(dates), split_config, ticker=ticker)
    after_train = sum(1 for d in dates if d <= metadata.last_train_date)
    start = max(bounds.val_end, after_train, metadata.lookback)
    origins = np.arange(start - 1, len(dates) - 1)
    predicted = forecaster.forecast_paths(mapping, origins, 1).closes[:, 0]
    close = mapping["close"].astype(np.float64)
    evaluation = evaluate_forecast(
        actual=close[start:],
        predicted=predicted,
        previous=close[start - 1 : -1],
        in_sample=close[: bounds.train_end],
    )
    new_bars = sum(1 for d in dates if d > metadata.last_bar_date)
    result: dict[str, Any] = {
        "ticker": ticker,
        "registered_model": name,
        "version": str(champion.version),
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
        mlflow.set_tags(
            {"ticker": ticker, "kind": "evaluation", "model_version": result["version"]}
        )
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
        version=result["version"],
        ticker=ticker,
        metrics={},
        extra={
            **{f"eval.{k}": f"{v:.6g}" for k, v in evaluation.flat().items()},
            "eval.window": f"{result['window_start']}..{result['window_end']}",
        },
    )
    logger.info(
        "%s: champion v%s on %s..%s: MASE %.4f vs naive %.4f",
        ticker,
        result["version"],
        result["window_start"],
        result["window_end"],
        evaluation.model["mase"],
        evaluation.naive["mase"],
    )
    return result


class ChampionNotFoundError(LookupError):
    """The registered model of a ticker has no ``champion`` version."""


def has_champion(*, ticker: str, tracking_uri: str) -> bool:
    """True when ``stock-lstm-<TICKER>`` has a version with the alias ``champion``."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from ml_lifecycle.export.promotion import current_champion  # noqa: PLC0415
    from ml_lifecycle.tracking import use_tracking  # noqa: PLC0415

    use_tracking(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return current_champion(client, registered_model_name(normalize_ticker(ticker))) is not None


def summary_json(summaries: list[TickerTrainSummary]) -> str:
    """The CLI's JSON summary: ``{"ok": bool, "tickers": [TickerTrainSummary.to_dict(), ...]}``."""
    return json.dumps(
        {"ok": all(s.ok for s in summaries), "tickers": [s.to_dict() for s in summaries]},
        indent=2,
    )
