"""The model registry side: logging one trained model to MLflow 3, registering it as a new
model version, and the promotion gate (champion or challenger).

One logged pyfunc model per version (``name="model"``) carries everything needed to predict
from raw bars, so ``models:/stock-lstm-<TICKER>@champion`` is enough to serve:

* ``artifacts/metadata.json``: :class:`~common.model_contract.ModelMetadata` (lookback,
  features, scaler parameters, last training date, test metrics);
* ``artifacts/model.onnx``: the network, checked against Keras within :data:`ONNX_TOLERANCE`;
* ``artifacts/model.keras``: the Keras network.
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from common.forecasting import Forecaster
from common.model_contract import (
    METRIC_TAG_PREFIX,
    TICKER_TAG,
    ModelMetadata,
)
from common.registry import champion_version, load_champion
from ml_lifecycle.exceptions import OnnxMismatchError
from ml_lifecycle.metrics import mae

logger = logging.getLogger(__name__)

#: Largest tolerated absolute difference between ONNX and Keras outputs (scaled units).
ONNX_TOLERANCE = 1e-4
#: Name of the logged model inside each run.
MODEL_NAME = "model"
#: Distributions the pyfunc needs at serving time (pinned to the versions used to train).
PYFUNC_DISTRIBUTIONS = ("mlflow", "cloudpickle", "numpy", "pandas", "pydantic", "onnxruntime")


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc, e.g. ``["mlflow==3.17.2", "numpy==2.4.6", ...]``.

    TensorFlow is deliberately absent: the pyfunc predicts through ONNX. Loading it also
    needs this project's ``common``, ``data_pipeline`` and ``ml_lifecycle`` packages.
    """
    return [f"{d}=={importlib.metadata.version(d)}" for d in PYFUNC_DISTRIBUTIONS]


def keras_predict(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scaled Keras outputs, shape ``(n,)``, for windows ``(n, lookback, n_features)``."""
    out = model.predict(x, verbose=0, batch_size=1024)
    return np.asarray(out, dtype=np.float32).reshape(-1)


def export_onnx(
    model: Any, path: Path, sample: npt.NDArray[np.float32], metadata: ModelMetadata
) -> float:
    """Export ``model`` to ONNX at ``path`` and check it against Keras on ``sample``.

    The model is called once first (Keras needs built shapes), then exported with
    ``model.export(path, format="onnx")``.

    Args:
        model: a built ``keras.Model``.
        path: destination ``.onnx`` file.
        sample: scaled real windows ``(n, lookback, n_features)`` to compare on.
        metadata: the version's metadata (the ONNX model is opened as it will be served).

    Returns:
        The largest absolute difference between ONNX and Keras outputs.

    Raises:
        OnnxMismatchError: if that difference exceeds :data:`ONNX_TOLERANCE`.
    """
    model(sample[:1])
    model.export(str(path), format="onnx", verbose=False)
    onnx_out = np.asarray(Forecaster.from_onnx(metadata, str(path)).network(sample)).reshape(-1)
    diff = float(np.max(np.abs(onnx_out - keras_predict(model, sample))))
    if not diff <= ONNX_TOLERANCE:
        raise OnnxMismatchError(f"ONNX export differs from Keras by {diff:.2e} > {ONNX_TOLERANCE}")
    return diff


def bars_frame(dates: npt.ArrayLike, bars: dict[str, npt.ArrayLike]) -> pd.DataFrame:
    """Raw bars as the pyfunc expects them: ``date`` (datetime64) and OHLCV columns."""
    frame = pd.DataFrame({"date": pd.to_datetime(np.asarray(dates))})
    for column in ("open", "high", "low", "close"):
        frame[column] = np.asarray(bars[column], dtype=np.float64)
    frame["volume"] = np.asarray(bars["volume"], dtype=np.int64)
    return frame


def input_schema() -> Any:
    """Pyfunc input: ``date`` (datetime), ``open/high/low/close`` (double, listing currency)
    and an optional ``volume`` (long, shares; the default features do not read it)."""
    from mlflow.types import ColSpec, Schema  # noqa: PLC0415

    return Schema(
        [
            ColSpec("datetime", "date"),
            *(ColSpec("double", c) for c in ("open", "high", "low", "close")),
            ColSpec("long", "volume", required=False),
        ]
    )


def log_model_version(
    *,
    keras_model: Any,
    metadata: ModelMetadata,
    example_bars: pd.DataFrame,
    work_dir: Path,
    registered_name: str,
    onnx_sample: npt.NDArray[np.float32],
) -> tuple[str, float]:
    """Log the pyfunc model to the active run and register it as a new version.

    Args:
        keras_model: the trained network.
        metadata: written to ``artifacts/metadata.json``.
        example_bars: raw bars (at least ``lookback`` rows) used to infer the signature.
        work_dir: scratch folder for the artifact files.
        registered_name: registered model name (``stock-lstm-<TICKER>``).
        onnx_sample: scaled real windows for the ONNX check.

    Returns:
        ``(version, onnx_max_abs_diff)``; the version is a string such as ``"3"``.

    Raises:
        OnnxMismatchError: see :func:`export_onnx`.
    """
    import mlflow  # noqa: PLC0415
    from mlflow.models import ModelSignature, infer_signature  # noqa: PLC0415

    from ml_lifecycle.pyfunc_model import LstmForecaster  # noqa: PLC0415

    work_dir.mkdir(parents=True, exist_ok=True)
    meta_path = work_dir / "metadata.json"
    meta_path.write_text(metadata.model_dump_json(indent=2), encoding="utf-8")
    onnx_path = work_dir / "model.onnx"
    diff = export_onnx(keras_model, onnx_path, onnx_sample, metadata)
    keras_path = work_dir / "model.keras"
    keras_model.save(keras_path)
    artifacts = {"metadata": str(meta_path), "onnx": str(onnx_path), "keras": str(keras_path)}

    probe = LstmForecaster()
    probe.load_context(type("Context", (), {"artifacts": artifacts})())
    with warnings.catch_warnings():
        # "no input example" and "integer column" hints: the signature is declared explicitly
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        inferred = infer_signature(example_bars, probe.predict(None, example_bars))
        signature = ModelSignature(inputs=input_schema(), outputs=inferred.outputs)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=LstmForecaster(),
            artifacts=artifacts,
            pip_requirements=pip_requirements(),
            signature=signature,
            registered_model_name=registered_name,
            metadata={"ticker": metadata.ticker, "lookback": metadata.lookback},
        )
    version = str(info.registered_model_version)
    logger.info("%s: registered %s version %s", metadata.ticker, registered_name, version)
    return version, diff


def tag_version(
    client: Any,
    *,
    name: str,
    version: str,
    ticker: str,
    metrics: dict[str, float],
    extra: dict[str, str] | None = None,
) -> None:
    """Set ``ticker`` and ``metric.<name>`` tags (and ``extra``) on a model version."""
    client.set_model_version_tag(name, version, TICKER_TAG, ticker)
    for key, value in metrics.items():
        client.set_model_version_tag(name, version, f"{METRIC_TAG_PREFIX}{key}", f"{value:.6g}")
    for key, text in (extra or {}).items():
        client.set_model_version_tag(name, version, key, text[:5000])


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate: promote or not, why, and the champion it was compared with.

    ``failed`` is True when the champion could not be re-evaluated: the gate then keeps the
    champion (fails closed) and the CLI reports the ticker as failed.
    """

    promote: bool
    reason: str
    champion_version: str | None = None
    champion_mae: float | None = None
    failed: bool = False


def has_champion(client: Any, name: str) -> bool:
    """True when ``name`` has a version with the alias ``champion``."""
    return champion_version(client, name) is not None


def champion_mae(
    client: Any, name: str, *, bars: dict[str, npt.NDArray[Any]], targets: npt.ArrayLike
) -> tuple[str, float]:
    """The champion's version and MAE of its one-step forecasts of ``close[targets]``.

    Loads the champion with :func:`common.registry.load_champion` and forecasts through its
    ONNX artifact (its own lookback, features, scalers and combination weight), each target
    from the bars before it only.

    Raises:
        LookupError: no champion; RegistryReadError / MlflowException: it cannot be loaded;
        ModelLoadError: its ONNX model does not run; ValueError: its lookback does not fit.
    """
    loaded = load_champion(client, name)
    forecaster = Forecaster.from_onnx(loaded.metadata, loaded.onnx_bytes)
    t = np.asarray(targets, dtype=np.int64)
    predicted = forecaster.forecast_paths(bars, t - 1, 1).closes[:, 0]
    return loaded.version, mae(np.asarray(bars["close"], dtype=np.float64)[t], predicted)


def decide(
    client: Any,
    name: str,
    *,
    new_mae: float,
    bars: dict[str, npt.NDArray[Any]],
    targets: npt.ArrayLike,
    force: bool = False,
) -> GateDecision:
    """Promotion gate: the new version against the champion on the same walk-forward targets.

    The new version's ``new_mae`` is the MAE of its walk-forward one-step forecasts of
    ``close[targets]``; the champion forecasts the same targets from the same bars. The new
    version is promoted when there is no champion or its MAE is lower. Any error while
    reading or re-evaluating the champion keeps the champion (``failed``; fails closed);
    ``force`` (``--force-promote``) promotes whatever happens.

    Returns:
        A :class:`GateDecision` with a reason a person can read.
    """
    version: str | None = None
    try:
        version = champion_version(client, name)
        if version is None:
            return GateDecision(True, "no champion yet")
        _, old = champion_mae(client, name, bars=bars, targets=targets)
    except Exception as exc:
        what = f"champion v{version}" if version is not None else "the champion alias"
        logger.warning("%s of %s could not be re-evaluated: %s", what, name, exc)
        if force:
            reason = f"forced by operator (--force-promote); {what} not re-evaluated ({exc})"
            return GateDecision(True, reason, version)
        reason = f"{what} could not be re-evaluated ({exc}); champion kept"
        return GateDecision(False, reason, version, failed=True)
    n = len(np.asarray(targets))
    comparison = (
        f"walk-forward MAE {new_mae:.6g} vs champion v{version}'s {old:.6g} "
        f"on the same {n} one-step targets"
    )
    if new_mae < old:
        return GateDecision(True, f"better: {comparison}", version, old)
    if force:
        return GateDecision(
            True, f"forced by operator (--force-promote); not better: {comparison}", version, old
        )
    return GateDecision(False, f"not better: {comparison}", version, old)
