"""From raw bars to a next-close forecast with a registered model's artifacts.

Used by the pyfunc wrapper, the promotion gate (re-evaluating the champion) and
``evaluate``. TensorFlow-free: the network runs through onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.features import FloatArray, scale, unscale, window_features
from common.model_contract import METADATA_ARTIFACT, ONNX_ARTIFACT, ModelMetadata


class OnnxNetwork:
    """An ONNX export of the network: ``(batch, lookback, n_features)`` -> ``(batch,)``."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - loaded only when a model is served

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name: str = self.session.get_inputs()[0].name

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Scaled predictions, shape ``(batch,)``, for scaled windows ``x``."""
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)


def load_model_dir(model_dir: Path) -> tuple[ModelMetadata, OnnxNetwork]:
    """Metadata and ONNX network of a downloaded MLflow model directory."""
    metadata = ModelMetadata.model_validate_json(
        (model_dir / METADATA_ARTIFACT).read_text(encoding="utf-8")
    )
    return metadata, OnnxNetwork(model_dir / ONNX_ARTIFACT)


def scaled_windows(
    metadata: ModelMetadata, bars: Mapping[str, npt.ArrayLike]
) -> npt.NDArray[np.float32]:
    """Scaled feature windows of every ``lookback`` run of bars.

    Args:
        metadata: the model's lookback, features and feature scaler.
        bars: OHLCV arrays of shape ``(n_bars,)``, chronological.

    Returns:
        float32 array ``(n_bars - lookback + 1, lookback, n_features)``; window ``i`` ends
        at bar ``i + lookback - 1``.
    """
    x = window_features(bars, metadata.lookback, metadata.features)
    fs = metadata.feature_scaler
    return scale(x, fs.mean, fs.scale).astype(np.float32)


def to_log_return(metadata: ModelMetadata, scaled: npt.ArrayLike) -> FloatArray:
    """Unscale network outputs into next log returns ``log(close[T+1] / close[T])``."""
    ts = metadata.target_scaler
    return unscale(np.asarray(scaled, dtype=np.float64), ts.mean[0], ts.scale[0])


def predict_next_closes(
    metadata: ModelMetadata,
    network: Any,
    bars: Mapping[str, npt.ArrayLike],
    *,
    start: int,
    stop: int,
) -> FloatArray:
    """Forecasts of ``close[t]`` for every target bar index ``t`` in ``[start, stop)``.

    The forecast of ``close[t]`` uses only bars ``t - lookback .. t - 1``:
    ``close[t-1] * exp(predicted log return)``.

    Args:
        metadata: the model's metadata.
        network: callable mapping scaled windows ``(batch, lookback, n_features)`` to scaled
            outputs ``(batch,)`` (an :class:`OnnxNetwork`).
        bars: OHLCV arrays of shape ``(n_bars,)``.
        start: first target index (``>= lookback``).
        stop: one past the last target index (``<= n_bars``).

    Returns:
        Forecast closes, shape ``(stop - start,)``, in the listing currency.

    Raises:
        ValueError: if ``start < lookback``.
    """
    lookback = metadata.lookback
    if start < lookback:
        raise ValueError(f"target index {start} needs {lookback} bars before it")
    sliced = {k: np.asarray(v)[start - lookback : stop - 1] for k, v in bars.items()}
    x = scaled_windows(metadata, sliced)
    log_ret = to_log_return(metadata, network(x))
    close = np.asarray(bars["close"], dtype=np.float64)
    return close[start - 1 : stop - 1] * np.exp(log_ret)
