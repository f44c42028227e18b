"""Model inference alone: the ONNX session the app serves vs Keras ``model.predict``.

Both run the same champion (the registry version's ``model.onnx`` and ``model.keras``) on the
same float32 input, at batch 1 and batch 64. Reported: microseconds per window (a call's
time divided by its batch size), the best of several repeats (``timeit``).
"""

from __future__ import annotations

import logging
import tempfile
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.model_contract import KERAS_ARTIFACT, registered_model_name
from common.registry import load_champion

logger = logging.getLogger(__name__)

BATCHES = (1, 64)


@dataclass(frozen=True)
class InferenceTiming:
    """Microseconds per window of one runtime at one batch size."""

    runtime: str
    batch: int
    us_per_window: float


def _per_window_us(call: Any, batch: int, *, budget_seconds: float = 1.0) -> float:
    timer = timeit.Timer(call)
    number, elapsed = timer.autorange()  # calls per repeat such that one repeat >= 0.2 s
    number = max(1, int(number * budget_seconds / 5 / max(elapsed, 1e-9)))
    best = min(timer.repeat(repeat=5, number=number)) / number
    return best / batch * 1e6


def measure(tracking_uri: str, ticker: str) -> list[InferenceTiming]:
    """Time the champion of ``ticker``: ONNX (as the app serves it) and Keras ``predict``.

    Returns:
        One timing per runtime and batch size in :data:`BATCHES`.
    """
    import keras  # noqa: PLC0415 - TensorFlow only in this step
    from mlflow.artifacts import download_artifacts  # noqa: PLC0415
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from app.features.stock_prediction.predictor import build_served_model  # noqa: PLC0415

    name = registered_model_name(ticker)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version, metadata, onnx_bytes = load_champion(client, name)
    served = build_served_model(
        name=name, version=version, metadata=metadata, onnx_bytes=onnx_bytes
    )
    root = str(client.get_model_version_download_uri(name, version)).rstrip("/")
    with tempfile.TemporaryDirectory(prefix="stockcast-bench-") as tmp:
        keras_path = download_artifacts(
            artifact_uri=f"{root}/{KERAS_ARTIFACT}", dst_path=tmp, tracking_uri=tracking_uri
        )
        network = keras.models.load_model(Path(keras_path))
    rng = np.random.default_rng(0)
    timings: list[InferenceTiming] = []
    for batch in BATCHES:
        x = rng.standard_normal((batch, metadata.lookback, len(metadata.features))).astype(
            np.float32
        )
        onnx_us = _per_window_us(lambda x=x: served.forecaster.network(x), batch)
        timings.append(InferenceTiming("onnxruntime (served)", batch, onnx_us))
        network.predict(x, verbose=0)  # build the predict function once
        keras_us = _per_window_us(
            lambda x=x, b=batch: network.predict(x, batch_size=b, verbose=0), batch
        )
        timings.append(InferenceTiming("keras model.predict", batch, keras_us))
        logger.info(
            "inference %s v%s batch %d: onnx %.1f us/window, keras %.1f us/window",
            name, version, batch, onnx_us, keras_us,
        )  # fmt: skip
    return timings
