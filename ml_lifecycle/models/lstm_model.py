"""The per-ticker network: stacked Keras 3 LSTM layers on the TensorFlow backend.

Input ``(batch, lookback, n_features)`` of scaled features, output ``(batch, 1)``: the scaled
next log return. Seeds are set in one place, :func:`set_seeds`, so a run can be repeated.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np


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
