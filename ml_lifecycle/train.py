"""Training: the per-ticker network (stacked Keras 3 LSTM layers on the TensorFlow backend)
and the loop that fits it with early stopping on validation loss.

Input ``(batch, lookback, n_features)`` of scaled features, output ``(batch, 1)``: the scaled
next log return. Seeds are set in one place, :func:`set_seeds`, so a run can be repeated.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from common.drift import training_distributions
from common.features import window_features
from common.model_contract import CHALLENGER_ALIAS, CHAMPION_ALIAS, registered_model_name
from common.price_store import read_bars
from common.tickers import normalize_ticker
from ml_lifecycle.config import TrainConfig
from ml_lifecycle.data import FitData, PreparedData
from ml_lifecycle.summary import TickerTrainSummary
from ml_lifecycle.tracking import Tracking, ticker_run

logger = logging.getLogger(__name__)


def set_seeds(seed: int) -> None:
    """Seed Python's ``random``, numpy and TensorFlow (via ``keras.utils.set_random_seed``)."""
    import keras  # noqa: PLC0415 - TensorFlow is slow to import; only training needs it

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def build_lstm(
    *,
    lookback: int,
    n_features: int,
    layers: int = 1,
    units: int = 32,
    dropout: float = 0.1,
    learning_rate: float = 1e-3,
) -> Any:
    """A compiled ``keras.Sequential`` LSTM regressor.

    Architecture: ``Input(lookback, n_features)`` -> ``layers`` x (``LSTM(units)`` ->
    ``Dropout(dropout)``) -> ``Dense(1)``; Adam optimiser, mean squared error loss, MAE metric.

    Args:
        lookback: bars per input window.
        n_features: features per bar.
        layers: stacked LSTM layers (every one but the last returns sequences).
        units: units per LSTM layer.
        dropout: dropout rate after each LSTM layer.
        learning_rate: Adam learning rate.

    Returns:
        A compiled :class:`keras.Model` mapping ``(batch, lookback, n_features)`` float32 to
        ``(batch, 1)`` float32.
    """
    import keras  # noqa: PLC0415

    model = keras.Sequential(name="stock_lstm")
    model.add(keras.Input(shape=(lookback, n_features), name="window"))
    for i in range(layers):
        model.add(keras.layers.LSTM(units, return_sequences=i < layers - 1, name=f"lstm_{i}"))
        if dropout > 0:
            model.add(keras.layers.Dropout(dropout, name=f"dropout_{i}"))
    model.add(keras.layers.Dense(1, name="next_log_return"))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="mse",
        metrics=["mae"],
    )
    return model


#: Called after every epoch with ``(epoch (1-based), {"loss": ..., "val_loss": ...})``.
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """The fitted network and its training history.

    Attributes:
        model: the ``keras.Model`` with the best validation-loss weights restored.
        history: per-epoch ``loss``, ``val_loss``, ``mae``, ``val_mae`` (scaled units).
        epochs_run: epochs actually run (early stopping may end before ``config.epochs``).
        best_epoch: 1-based epoch whose weights were kept.
        seconds: wall time of ``fit``.
    """

    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int = 0
    seconds: float = 0.0


def train_network(
    data: PreparedData | FitData,
    config: TrainConfig,
    *,
    on_epoch: EpochHook | None = None,
    initial_weights: list[Any] | None = None,
) -> TrainResult:
    """Fit an LSTM on the training segment, stopping early on validation loss.

    Seeds are set first (:func:`set_seeds`), batches are not
    shuffled across time inside the split boundaries (Keras shuffles training windows,
    which are all strictly before the validation segment). Each epoch is logged
    (``epoch 3/40 loss=... val_loss=...``) and passed to ``on_epoch``.

    Args:
        data: output of :func:`~ml_lifecycle.data.prepare_fit` (or ``prepare_data``).
        config: hyperparameters.
        on_epoch: optional hook, e.g. to log metrics to MLflow.
        initial_weights: weights of a network of the same architecture to start from (a
            warm start, e.g. the previous walk-forward fold's); None for a fresh network.

    Returns:
        A :class:`TrainResult` whose model holds the best weights.
    """
    import keras  # noqa: PLC0415 - TensorFlow is slow to import

    set_seeds(config.seed)
    model = build_lstm(
        lookback=config.lookback,
        n_features=len(config.features),
        layers=config.layers,
        units=config.units,
        dropout=config.dropout,
        learning_rate=config.learning_rate,
    )
    if initial_weights is not None:
        model.set_weights(initial_weights)
    ticker = data.ticker

    class _Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            values = {k: float(v) for k, v in (logs or {}).items()}
            logger.debug(
                "%s epoch %d/%d loss=%.5f val_loss=%.5f",
                ticker,
                epoch + 1,
                config.epochs,
                values.get("loss", float("nan")),
                values.get("val_loss", float("nan")),
            )
            if on_epoch is not None:
                on_epoch(epoch + 1, values)

    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    began = time.perf_counter()
    history = model.fit(
        data.train.x,
        data.train.y,
        validation_data=(data.val.x, data.val.y),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[stopper, _Progress()],
    )
    seconds = time.perf_counter() - began
    hist = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    val_loss = hist.get("val_loss", [])
    best = int(min(range(len(val_loss)), key=val_loss.__getitem__)) + 1 if val_loss else 0
    return TrainResult(
        model=model, history=hist, epochs_run=len(val_loss), best_epoch=best, seconds=seconds
    )


def train_and_register(
    *,
    session_factory: Callable[[], Session],
    ticker: str,
    config: TrainConfig,
    tracking: Tracking,
    force_promote: bool = False,
    reports_dir: Path | None = None,
) -> TickerTrainSummary:
    """Backtest, fit, register and (maybe) promote the model of one ticker.

    1. the walk-forward backtest of ``config`` (:func:`~ml_lifecycle.backtest.walk_forward`);
    2. the version: :func:`~ml_lifecycle.backtest.fit_version` on every bar (warm-started
       from the last fold), with its combination weight and interval calibration;
    3. the gate (:func:`~ml_lifecycle.registry.decide`): the backtest's one-step MAE against
       the champion's on the same targets; an error re-evaluating the champion keeps it;
    4. the version is logged and registered with the alias ``champion`` or ``challenger``.

    Args:
        session_factory: makes sessions on the price store.
        ticker: Yahoo symbol (normalized here).
        config: hyperparameters, split and folds.
        tracking: MLflow URI and experiment.
        force_promote: make the new version champion even if the gate says no.
        reports_dir: where the PNG plots go (default: a temporary folder; they are logged
            to the run either way).

    Returns:
        A :class:`~ml_lifecycle.summary.TickerTrainSummary`; ``ok`` is False when the gate
        could not re-evaluate the champion (the version is then registered as challenger).

    Raises:
        InvalidTickerError: bad symbol.
        InsufficientBarsError: no bars or too few (message names ticker and counts).
        OnnxMismatchError: the ONNX export does not match Keras within 1e-4.
        MlflowException / OSError: the tracking store failed mid-run.
    """
    import mlflow  # noqa: PLC0415 - slow import

    from ml_lifecycle.backtest import (  # noqa: PLC0415
        config_params,
        fit_version,
        log_backtest,
        require_bars,
        summarize,
        walk_forward,
    )
    from ml_lifecycle.registry import bars_frame, decide, log_model_version, tag_version  # noqa: PLC0415

    began = time.perf_counter()
    ticker = normalize_ticker(ticker)
    with session_factory() as session:
        bars = read_bars(session, ticker=ticker)
    require_bars(bars, config, folds=config.folds, fold_bars=config.fold_bars)
    name = registered_model_name(ticker)
    summary = TickerTrainSummary(ticker=ticker, registered_model=name)
    client = tracking.client()
    params = {**config_params(config), "ticker": ticker, "n_bars": len(bars)}
    with ticker_run(
        tracking, ticker=ticker, kind="train", params=params, tags={"registered_model": name}
    ) as (run_id, tmp):
        summary.run_id = run_id
        mlflow.log_dict(config.model_dump(mode="json"), "config/train_config.json")
        result = walk_forward(bars, config)
        log_backtest(result, (reports_dir or tmp / "plots") / ticker)
        summarize(result, summary)
        mapping = {c: np.asarray(v, dtype=np.float64) for c, v in bars.as_mapping().items()}
        logger.info("%s: fitting the version on all %d bars", ticker, len(bars))
        final = fit_version(
            mapping,
            bars.dates,
            config,
            ticker=ticker,
            currency=bars.currency,
            initial_weights=result.last_weights if config.warm_start else None,
        )
        summary.train_seconds += final.train_seconds
        # drift reference: every bar the version was built on, so a retrain takes the
        # recent regime in
        built_on = {c: v[-(config.history_bars or len(v)) :] for c, v in mapping.items()}
        distributions = training_distributions(
            closes=built_on["close"],
            windows=window_features(built_on, config.lookback, config.features),
            features=config.features,
        )
        metadata = final.metadata.model_copy(
            update={"metrics": dict(result.metrics), "input_distributions": distributions}
        )
        summary.combination_weight = metadata.combination.weight
        targets, _ = result.one_step()
        gate = decide(
            client,
            name,
            new_mae=result.metrics["mae"],
            bars=mapping,
            targets=targets,
            force=force_promote,
        )
        tail = slice(len(bars) - 2 * config.lookback, len(bars))
        example = bars_frame(bars.dates[tail], {k: v[tail] for k, v in mapping.items()})
        version, diff = log_model_version(
            keras_model=final.model,
            metadata=metadata,
            example_bars=example,
            work_dir=tmp / "model",
            registered_name=name,
            onnx_sample=final.data.val.x,
        )
        summary.version, summary.onnx_max_abs_diff = version, diff
        summary.promoted, summary.reason, summary.gate_failed = (
            gate.promote,
            gate.reason,
            gate.failed,
        )
        summary.alias = CHAMPION_ALIAS if gate.promote else CHALLENGER_ALIAS
        client.set_registered_model_alias(name, summary.alias, version)
        tag_version(
            client,
            name=name,
            version=version,
            ticker=ticker,
            metrics=result.metrics,
            extra={
                "run_id": summary.run_id or "",
                "gate_reason": gate.reason,
                "combination_weight": f"{metadata.combination.weight:.6g}",
                "walk_forward": f"{summary.test_start}..{summary.test_end}",
            },
        )
        summary.ok = not gate.failed
        if gate.failed:
            summary.error = gate.reason
        summary.seconds = time.perf_counter() - began
        mlflow.log_metrics(
            {"onnx_max_abs_diff": diff, "seconds": summary.seconds,
             "combination_weight": metadata.combination.weight}
        )  # fmt: skip
        mlflow.set_tags(
            {"promoted": str(gate.promote).lower(), "model_version": version,
             "gate_reason": gate.reason[:5000]}
        )  # fmt: skip
        mlflow.log_dict(summary.to_dict(), "summary.json")
    logger.info(
        "%s: version %s -> %s (%s); walk-forward relative MAE %.4f, w %.2f; %.1f s",
        ticker, version, summary.alias, gate.reason, result.metrics["relative_mae"],
        metadata.combination.weight, summary.seconds,
    )  # fmt: skip
    return summary
