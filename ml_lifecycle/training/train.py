"""The training loop: fit the LSTM with early stopping on validation loss."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ml_lifecycle.models.lstm_model import build_lstm, set_seeds
from ml_lifecycle.training.config import TrainConfig
from ml_lifecycle.training.data import PreparedData

logger = logging.getLogger(__name__)

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
    data: PreparedData,
    config: TrainConfig,
    *,
    on_epoch: EpochHook | None = None,
) -> TrainResult:
    """Fit a fresh LSTM on the training segment, stopping early on validation loss.

    Seeds are set first (:func:`~ml_lifecycle.models.lstm_model.set_seeds`), batches are not
    shuffled across time inside the split boundaries (Keras shuffles training windows,
    which are all strictly before the validation segment). Each epoch is logged
    (``epoch 3/40 loss=... val_loss=...``) and passed to ``on_epoch``.

    Args:
        data: output of :func:`~ml_lifecycle.training.data.prepare_data`.
        config: hyperparameters.
        on_epoch: optional hook, e.g. to log metrics to MLflow.

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
    ticker = data.ticker

    class _Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            values = {k: float(v) for k, v in (logs or {}).items()}
            logger.info(
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
