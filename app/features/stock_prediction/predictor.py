"""Loads the champion model of every registered ticker in ONNX form and runs inference.

Where models come from (see :mod:`common.model_contract`): every registered model named
``stock-lstm-*`` with a ``champion`` alias; the alias is resolved to a version ``v`` and the two
artifacts ``artifacts/metadata.json`` and ``artifacts/model.onnx`` of that version (the
content of ``models:/<name>@champion``) are downloaded from the version's artifact location.
Resolving the alias first means the version served and reported is exactly the one
downloaded, even if the alias moves meanwhile; resolving the location with our own client
keeps MLflow's process-global tracking/registry URI out of the way. The network runs in
onnxruntime, one intra-op thread per session; TensorFlow is never imported.

New champions are picked up without a restart: :meth:`Predictor.reload` (called at startup,
by a polling thread every ``APP_MODEL_POLL_SECONDS`` and by ``POST /models/reload``) loads
every champion whose version differs from the one served. A failed load keeps the old model
serving; a ticker whose champion alias is removed keeps its last loaded model.

Multi-step forecasts (horizon ``h``): predict the next log return ``r``, append a synthetic
bar whose close is ``close[T] * exp(r)``, slide the window by one bar and repeat. The
synthetic bar is the last bar rescaled by ``exp(r)`` (open, high and low too), so features
that need OHLC (``hl_range``, ``oc_return``) hold the last bar's values while
``rel_log_close`` follows the predicted path.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from app.core.exceptions import ModelNotFoundError
from app.core.monitoring import INFERENCE_LATENCY, MODEL_VERSION_LOADED
from common.features import (
    CLOSE_ONLY_FEATURES,
    required_columns,
    scale,
    unscale,
    window_features,
)
from common.model_contract import (
    CHAMPION_ALIAS,
    METADATA_ARTIFACT,
    ONNX_ARTIFACT,
    REGISTERED_MODEL_PREFIX,
    ModelMetadata,
)

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


class ModelLoadError(RuntimeError):
    """A champion's artifacts are missing, unreadable or inconsistent with its metadata."""


@dataclass(frozen=True)
class Forecast:
    """Output of :meth:`ServedModel.forecast`.

    Attributes:
        closes: predicted closes, shape ``(horizon,)``, listing currency.
        log_returns: predicted next-bar log returns, shape ``(horizon,)``.
        inference_seconds: time spent in the network's forward passes, seconds.
    """

    closes: FloatArray
    log_returns: FloatArray
    inference_seconds: float


@dataclass(frozen=True)
class _ForecastConstants:
    """What every forecast of one model uses, derived from its metadata once."""

    columns: tuple[str, ...]  # the OHLCV columns the features read, ``close`` always
    feature_mean: FloatArray  # (n_features,)
    feature_scale: FloatArray  # (n_features,)
    target_mean: FloatArray  # (1,)
    target_scale: FloatArray  # (1,)
    output_names: list[str]  # the network's first output only
    inference_latency: Any  # the model's child of ``stockcast_model_inference_seconds``


@dataclass(eq=False)
class ServedModel:
    """One champion in memory: its registry identity, metadata and ONNX session.

    The fields are set once, at load; ``memo`` (mutable, hence no ``frozen``) holds what
    callers derive from this model once rather than per request (the service keeps the
    response's model description and metric children there); it lives and dies with the
    model, so a replaced champion takes its entries with it.
    """

    ticker: str
    name: str
    version: str
    metadata: ModelMetadata
    session: ort.InferenceSession
    input_name: str
    loaded_at: dt.datetime
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def lookback(self) -> int:
        """Bars per input window."""
        return self.metadata.lookback

    @property
    def close_only(self) -> bool:
        """True when every feature is computed from closes alone (POST /predict accepts it)."""
        return set(self.metadata.features) <= CLOSE_ONLY_FEATURES

    @functools.cached_property
    def _constants(self) -> _ForecastConstants:
        meta = self.metadata
        return _ForecastConstants(
            columns=tuple(sorted({"close", *required_columns(meta.features)})),
            feature_mean=np.asarray(meta.feature_scaler.mean, dtype=np.float64),
            feature_scale=np.asarray(meta.feature_scaler.scale, dtype=np.float64),
            target_mean=np.asarray(meta.target_scaler.mean, dtype=np.float64),
            target_scale=np.asarray(meta.target_scaler.scale, dtype=np.float64),
            output_names=[self.session.get_outputs()[0].name],
            inference_latency=INFERENCE_LATENCY.labels(ticker=self.ticker),
        )

    def forecast(self, bars: Mapping[str, npt.ArrayLike], horizon: int) -> Forecast:
        """Predict ``horizon`` closes after the last bar, feeding predictions back in.

        Args:
            bars: OHLCV arrays of shape ``(n_bars,)`` with ``n_bars >= lookback``, oldest
                first; only the last ``lookback`` bars and the columns the features need
                (``close`` always) are read.
            horizon: number of trading days to predict (>= 1).

        Returns:
            A :class:`Forecast`; ``closes[k]`` is ``close[T] * exp(r_1 + ... + r_{k+1})``.

        Raises:
            ValueError: fewer than ``lookback`` bars, or ``horizon < 1``.
        """
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        meta = self.metadata
        lookback = meta.lookback
        const = self._constants
        # One buffer per column holds the lookback bars and then the synthetic bars: step k's
        # window is the view buffer[k : k + lookback] (no copy, no np.append per step).
        buffers: dict[str, FloatArray] = {}
        for column in const.columns:
            values = np.asarray(bars[column], dtype=np.float64)
            if len(values) < lookback:
                raise ValueError(f"need {lookback} bars, got {len(values)}")
            buffer = np.empty(lookback + horizon, dtype=np.float64)
            buffer[:lookback] = values[-lookback:]
            buffers[column] = buffer
        close = buffers["close"]
        returns = np.empty(horizon, dtype=np.float64)
        inference = 0.0
        for step in range(horizon):
            end = step + lookback
            window = {column: buffer[step:end] for column, buffer in buffers.items()}
            x = window_features(window, lookback, meta.features)  # (1, lookback, n_features)
            x_scaled = scale(x, const.feature_mean, const.feature_scale).astype(np.float32)
            began = time.perf_counter()
            output = self.session.run(const.output_names, {self.input_name: x_scaled})[0]
            inference += time.perf_counter() - began
            scaled = np.asarray(output, dtype=np.float64).reshape(-1)[:1]
            r = float(unscale(scaled, const.target_mean, const.target_scale)[0])
            ratio = math.exp(r)
            for buffer in buffers.values():
                buffer[end] = buffer[end - 1] * ratio
            returns[step] = r
        closes = close[lookback:].copy()
        const.inference_latency.observe(inference)
        return Forecast(closes=closes, log_returns=returns, inference_seconds=inference)


@dataclass
class ReloadReport:
    """Outcome of one :meth:`Predictor.reload`: model names with their versions, and errors."""

    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


def build_served_model(
    *, name: str, version: str, metadata: ModelMetadata, onnx_bytes: bytes
) -> ServedModel:
    """An in-memory model from its metadata and ONNX bytes, checked with one forward pass.

    Raises:
        ModelLoadError: unsupported target, scaler lengths not matching the features, or an
            ONNX graph that does not accept ``(1, lookback, n_features)`` float32.
    """
    if metadata.target != "log_return":
        raise ModelLoadError(f"{name} v{version}: unsupported target {metadata.target!r}")
    n_features = len(metadata.features)
    if len(metadata.feature_scaler.mean) != n_features or len(metadata.target_scaler.mean) != 1:
        raise ModelLoadError(f"{name} v{version}: scaler lengths do not match the features")
    try:
        required_columns(metadata.features)
        session = ort.InferenceSession(
            onnx_bytes, sess_options=_session_options(), providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name
        probe = np.zeros((1, metadata.lookback, n_features), dtype=np.float32)
        out = np.asarray(session.run(None, {input_name: probe})[0])
    except Exception as exc:
        raise ModelLoadError(f"{name} v{version}: cannot run the ONNX model: {exc}") from exc
    if out.size < 1 or not np.all(np.isfinite(out)):
        raise ModelLoadError(f"{name} v{version}: the ONNX model returned {out!r} on a probe")
    return ServedModel(
        ticker=metadata.ticker,
        name=name,
        version=version,
        metadata=metadata,
        session=session,
        input_name=input_name,
        loaded_at=dt.datetime.now(dt.UTC),
    )


class Predictor:
    """The champions being served, by ticker, refreshed from the MLflow registry."""

    def __init__(self, *, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queries ---------------------------------------------------------------------------
    def get(self, ticker: str) -> ServedModel:
        """The served model of ``ticker``.

        Raises:
            ModelNotFoundError: no champion is loaded for the ticker.
        """
        with self._lock:
            model = self._models.get(ticker)
        if model is None:
            raise ModelNotFoundError(ticker)
        return model

    def served(self) -> list[ServedModel]:
        """Every served model, by ticker."""
        with self._lock:
            return [self._models[t] for t in sorted(self._models)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def add(self, model: ServedModel) -> None:
        """Serve ``model`` for its ticker (replacing the previous one)."""
        with self._lock:
            self._models[model.ticker] = model
        # Create the ticker's inference histogram at zero now: a forecast is computed once per
        # cached window, so without a zero sample before it Prometheus' rate() would never see
        # the first observations (a series that appears with its final count has no increase).
        INFERENCE_LATENCY.labels(ticker=model.ticker)
        try:
            MODEL_VERSION_LOADED.labels(ticker=model.ticker).set(float(model.version))
        except ValueError:  # a non-numeric version label: the gauge cannot hold it
            logger.warning("model version %r of %s is not numeric", model.version, model.ticker)

    # -- registry --------------------------------------------------------------------------
    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient  # noqa: PLC0415 - slow import, off the import path

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def _champions(self) -> dict[str, str]:
        """``{registered model name: champion version}`` for every ``stock-lstm-*`` model."""
        client = self._client()
        champions: dict[str, str] = {}
        page_token: str | None = None
        while True:
            page = client.search_registered_models(
                filter_string=f"name LIKE '{REGISTERED_MODEL_PREFIX}%'",
                max_results=100,
                page_token=page_token,
            )
            for registered in page:
                version = registered.aliases.get(CHAMPION_ALIAS)
                if version is not None:
                    champions[registered.name] = str(version)
            page_token = page.token
            if not page_token:
                return champions

    def _download(self, name: str, version: str) -> ServedModel:
        from mlflow.artifacts import download_artifacts  # noqa: PLC0415

        label = f"models:/{name}/{version}"
        try:
            # resolved with our own client: a ``models:/`` URI would be resolved against
            # MLflow's process-global registry URI, not ``self.registry_uri``
            root = str(self._client().get_model_version_download_uri(name, version)).rstrip("/")
        except Exception as exc:
            raise ModelLoadError(f"{label}: cannot resolve its artifact location: {exc}") from exc
        with tempfile.TemporaryDirectory(prefix="stockcast-model-") as tmp:
            paths = {}
            for artifact in (METADATA_ARTIFACT, ONNX_ARTIFACT):
                try:
                    paths[artifact] = Path(
                        download_artifacts(
                            artifact_uri=f"{root}/{artifact}",
                            dst_path=tmp,
                            tracking_uri=self.tracking_uri,
                        )
                    )
                except Exception as exc:
                    raise ModelLoadError(f"{label}: cannot download {artifact}: {exc}") from exc
            try:
                metadata = ModelMetadata.model_validate_json(
                    paths[METADATA_ARTIFACT].read_text(encoding="utf-8")
                )
            except ValueError as exc:
                raise ModelLoadError(f"{label}: invalid {METADATA_ARTIFACT}: {exc}") from exc
            onnx_bytes = paths[ONNX_ARTIFACT].read_bytes()
        return build_served_model(
            name=name, version=version, metadata=metadata, onnx_bytes=onnx_bytes
        )

    def reload(self) -> ReloadReport:
        """Load every champion whose version is not the one served; keep the rest.

        Never raises: a registry that cannot be listed, or a model that fails to load, is
        reported (and logged) and the models already in memory keep serving.
        """
        report = ReloadReport()
        with self._reload_lock:
            try:
                champions = self._champions()
            except Exception as exc:  # any registry failure keeps the old models
                logger.error("cannot list the model registry at %s: %s", self.tracking_uri, exc)
                report.failed["registry"] = str(exc)
                return report
            served = {m.name: m.version for m in self.served()}
            for position, (name, version) in enumerate(sorted(champions.items()), start=1):
                label = f"{name} v{version}"
                if served.get(name) == version:
                    report.unchanged.append(label)
                    continue
                began = time.perf_counter()
                try:
                    model = self._download(name, version)
                except Exception as exc:  # a failed load keeps the old model
                    logger.error(
                        "[%d/%d] %s failed to load (%s); %s", position, len(champions), label,
                        exc, f"still serving v{served[name]}" if name in served else "not served",
                    )  # fmt: skip
                    report.failed[label] = str(exc)
                    continue
                self.add(model)
                report.loaded.append(label)
                logger.info(
                    "[%d/%d] serving %s for %s (lookback %d, features %s) in %.2f s",
                    position, len(champions), label, model.ticker, model.lookback,
                    ",".join(model.metadata.features), time.perf_counter() - began,
                )  # fmt: skip
        return report

    # -- polling ---------------------------------------------------------------------------
    def start_polling(self, interval_seconds: float) -> None:
        """Call :meth:`reload` every ``interval_seconds`` in a daemon thread (0 = never)."""
        if interval_seconds <= 0 or self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                self.reload()

        self._thread = threading.Thread(target=loop, name="model-registry-poll", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        """Stop the polling thread (waits for a reload in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
