"""Loads the champion model of every registered ticker in ONNX form and runs inference.

Where models come from (see :mod:`common.model_contract`): every registered model named
``stock-lstm-*`` with a ``champion`` alias; the alias is resolved to a version ``v`` and the two
artifacts ``artifacts/metadata.json`` and ``artifacts/model.onnx`` of that version (the
content of ``models:/<name>@champion``) are downloaded from the version's artifact location.
Resolving the alias first means the version served and reported is exactly the one
downloaded, even if the alias moves meanwhile; resolving the location with our own client
keeps MLflow's process-global tracking/registry URI out of the way. The network runs in
onnxruntime, one intra-op thread per session; TensorFlow is never imported.

Loading goes through :func:`common.registry.load_version` and forecasting through
:class:`common.forecasting.Forecaster`, the same code the promotion gate, the backtest and
the pyfunc model run.

New champions are picked up without a restart: :meth:`Predictor.reload` (called at startup,
by a polling thread every ``APP_MODEL_POLL_SECONDS`` and by ``POST /models/reload``) lists
every champion with one paged batch query (``search_registered_models``, up to
:data:`LIST_PAGE_SIZE` models per round trip: the registered models carry their aliases), then
loads only the champions whose version differs from the one served. While a worker serves no
model yet (its first load), :data:`LOAD_THREADS` loads run at once (a load mostly waits on
the registry's artifact store); a later reload loads one model at a time, so that the event
loop serving requests keeps most of the interpreter (the GIL) meanwhile. Each
loaded model replaces its ticker's entry in one assignment under the lock, so requests keep
being served by the old version until the new one is ready. A failed load keeps the old model
serving; a ticker whose champion alias is removed keeps its last loaded model.

Multi-step forecasts (horizon ``h``) feed each predicted bar back in; see
:mod:`common.forecasting`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.core.exceptions import ModelNotFoundError
from app.core.monitoring import INFERENCE_LATENCY, MODEL_VERSION_LOADED
from common.exceptions import ModelLoadError
from common.features import CLOSE_ONLY_FEATURES
from common.forecasting import Forecaster, interval_bounds
from common.model_contract import CHAMPION_ALIAS, REGISTERED_MODEL_PREFIX, ModelMetadata
from common.registry import load_version

logger = logging.getLogger(__name__)

#: Seconds between attempts while the registry has never been reached, even without polling.
UNREACHED_RETRY_SECONDS = 15.0
#: Seconds shutdown waits for the loader thread (a daemon: a registry call in flight is left).
STOP_WAIT_SECONDS = 2.0
#: Registered models per page of the listing (MLflow's maximum for search_registered_models).
LIST_PAGE_SIZE = 1_000
#: Loads at once while no model is served yet (each waits mostly on artifact downloads);
#: a reload while models are served uses one thread, leaving the interpreter to requests.
LOAD_THREADS = 4

FloatArray = npt.NDArray[np.float64]

__all__ = ["Forecast", "ModelLoadError", "Predictor", "ServedModel", "build_served_model"]


@dataclass(frozen=True)
class Forecast:
    """Output of :meth:`ServedModel.forecast`.

    Attributes:
        closes: predicted closes, shape ``(horizon,)``, listing currency.
        log_returns: predicted next-bar log returns, shape ``(horizon,)``.
        inference_seconds: time spent in the network's forward passes, seconds.
        lower / upper: interval bounds ``(n_levels, horizon)`` for the model's
            :attr:`ServedModel.served_levels` (None without calibration).
    """

    closes: FloatArray
    log_returns: FloatArray
    inference_seconds: float
    lower: FloatArray | None = None
    upper: FloatArray | None = None


@dataclass(eq=False)
class ServedModel:
    """One champion in memory: its registry identity, metadata and forecaster.

    The fields are set once, at load; ``memo`` (mutable, hence no ``frozen``) holds what
    callers derive from this model once rather than per request (the service keeps the
    response's model description and metric children there); it lives and dies with the
    model, so a replaced champion takes its entries with it.
    """

    ticker: str
    name: str
    version: str
    metadata: ModelMetadata
    forecaster: Forecaster
    loaded_at: dt.datetime
    interval_levels: tuple[float, ...] = ()
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
    def _inference_latency(self) -> Any:
        return INFERENCE_LATENCY.labels(ticker=self.ticker)

    @property
    def served_levels(self) -> tuple[float, ...]:
        """The interval levels this model serves: the configured ones if it is calibrated."""
        return self.interval_levels if self.metadata.intervals is not None else ()

    def _quantiles(self, horizon: int) -> FloatArray | None:
        """Conformal quantiles ``(n_levels, horizon)``, computed once per horizon."""
        key = f"interval-quantiles:{horizon}"
        if key not in self.memo:
            q = self.forecaster.step_quantiles(self.interval_levels, horizon)
            self.memo[key] = q
        quantiles: FloatArray | None = self.memo[key]
        return quantiles

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
        n_bars = len(bars["close"])  # type: ignore[arg-type]
        if n_bars < self.lookback:
            raise ValueError(f"need {self.lookback} bars, got {n_bars}")
        quantiles = self._quantiles(horizon)
        paths = self.forecaster.forecast_paths(
            bars, (n_bars - 1,), horizon, with_sigma=quantiles is not None
        )
        self._inference_latency.observe(paths.inference_seconds)
        lower = upper = None
        if quantiles is not None:
            low, high = interval_bounds(paths, quantiles)
            lower, upper = low[:, 0, :], high[:, 0, :]
        return Forecast(
            closes=paths.closes[0],
            log_returns=paths.log_returns[0],
            inference_seconds=paths.inference_seconds,
            lower=lower,
            upper=upper,
        )


def build_served_model(
    *,
    name: str,
    version: str,
    metadata: ModelMetadata,
    onnx_bytes: bytes,
    interval_levels: tuple[float, ...] = (80.0, 95.0),
) -> ServedModel:
    """An in-memory model from its metadata and ONNX bytes, checked with one forward pass.

    ``interval_levels`` (percent) are the prediction intervals its forecasts carry when its
    metadata holds an interval calibration.

    Raises:
        ModelLoadError: unsupported target, scaler lengths not matching the features, or an
            ONNX graph that does not accept ``(1, lookback, n_features)`` float32.
    """
    try:
        forecaster = Forecaster.from_onnx(metadata, onnx_bytes)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{name} v{version}: {exc}") from exc
    return ServedModel(
        ticker=metadata.ticker,
        name=name,
        version=version,
        metadata=metadata,
        forecaster=forecaster,
        loaded_at=dt.datetime.now(dt.UTC),
        interval_levels=tuple(interval_levels),
    )


@dataclass
class ReloadReport:
    """Outcome of one :meth:`Predictor.reload`: model names with their versions, and errors;
    ``models`` are the models it started serving (the ones of ``loaded``)."""

    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    models: list[ServedModel] = field(default_factory=list)


class Predictor:
    """The champions being served, by ticker, refreshed from the MLflow registry."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        registry_uri: str | None = None,
        interval_levels: tuple[float, ...] = (80.0, 95.0),
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        """Args:
        tracking_uri / registry_uri: the MLflow stores (the registry defaults to tracking).
        interval_levels: prediction-interval levels (percent) of the served models.
        client_factory: builds the ``MlflowClient`` of one reload (default: one on the two
            URIs); one client serves a whole reload.
        """
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.interval_levels = tuple(interval_levels)
        self._client_factory = client_factory
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: True once the registry has been listed successfully and the champions it listed
        #: have been loaded (or failed): a ticker missing then has no champion (404).
        self.registry_reached = False
        #: The last registry error (None after a successful listing).
        self.registry_error: str | None = None
        #: Set when the first load attempt of :meth:`start_polling` (``load_now``) has ended.
        self.first_load_done = threading.Event()

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
        if self._client_factory is not None:
            return self._client_factory()
        from mlflow.tracking import MlflowClient  # noqa: PLC0415 - slow import, off the import path

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    @staticmethod
    def _champions(client: Any) -> dict[str, str]:
        """``{registered model name: champion version}`` for every ``stock-lstm-*`` model:
        one ``search_registered_models`` call per :data:`LIST_PAGE_SIZE` models."""
        champions: dict[str, str] = {}
        page_token: str | None = None
        while True:
            page = client.search_registered_models(
                filter_string=f"name LIKE '{REGISTERED_MODEL_PREFIX}%'",
                max_results=LIST_PAGE_SIZE,
                page_token=page_token,
            )
            for registered in page:
                version = registered.aliases.get(CHAMPION_ALIAS)
                if version is not None:
                    champions[registered.name] = str(version)
            page_token = page.token
            if not page_token:
                return champions

    def _download(self, client: Any, name: str, version: str) -> ServedModel:
        try:
            loaded = load_version(client, name, version)
        except Exception as exc:
            raise ModelLoadError(str(exc)) from exc
        return build_served_model(
            name=name,
            version=version,
            metadata=loaded.metadata,
            onnx_bytes=loaded.onnx_bytes,
            interval_levels=self.interval_levels,
        )

    def reload(self) -> ReloadReport:
        """Load every champion whose version is not the one served; keep the rest.

        One paged listing of the registry, then the changed champions, :data:`LOAD_THREADS`
        at a time while no model is served, else one at a time; each is served as soon as it
        has loaded (the others keep their current version meanwhile).

        Never raises: a registry that cannot be listed, or a model that fails to load, is
        reported (and logged) and the models already in memory keep serving.
        """
        report = ReloadReport()
        with self._reload_lock:
            began = time.perf_counter()
            try:
                client = self._client()
                champions = self._champions(client)
            except Exception as exc:  # any registry failure keeps the old models
                logger.error("cannot list the model registry at %s: %s", self.tracking_uri, exc)
                report.failed["registry"] = str(exc)
                self.registry_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                return report
            served = {m.name: m.version for m in self.served()}
            changed = []
            for name, version in sorted(champions.items()):
                if served.get(name) == version:
                    report.unchanged.append(f"{name} v{version}")
                else:
                    changed.append((name, version))
            if changed:
                at_once = LOAD_THREADS if not served else 1
                self._load_all(client, changed, served, report, threads=at_once)
            self.registry_reached, self.registry_error = True, None
            if changed:
                logger.info(
                    "reload: %d loaded, %d failed, %d unchanged in %.2f s; serving %d models",
                    len(report.loaded), len(report.failed), len(report.unchanged),
                    time.perf_counter() - began, len(self),
                )  # fmt: skip
        return report

    def _load_all(
        self,
        client: Any,
        changed: list[tuple[str, str]],
        served: dict[str, str],
        report: ReloadReport,
        *,
        threads: int,
    ) -> None:
        """Load ``changed`` ``(name, version)`` pairs, ``threads`` at a time, serving each as
        soon as it has loaded."""

        def load(name: str, version: str) -> tuple[ServedModel, float]:
            started = time.perf_counter()
            return self._download(client, name, version), time.perf_counter() - started

        with ThreadPoolExecutor(
            max_workers=max(1, min(threads, len(changed))), thread_name_prefix="model-load"
        ) as pool:
            futures = {
                pool.submit(load, name, version): (name, version) for name, version in changed
            }
            for done, future in enumerate(as_completed(futures), start=1):
                name, version = futures[future]
                label = f"{name} v{version}"
                try:
                    model, seconds = future.result()
                except Exception as exc:  # a failed load keeps the old model
                    logger.error(
                        "[%d/%d] %s failed to load (%s); %s", done, len(changed), label, exc,
                        f"still serving v{served[name]}" if name in served else "not served",
                    )  # fmt: skip
                    report.failed[label] = str(exc)
                    continue
                self.add(model)
                report.loaded.append(label)
                report.models.append(model)
                logger.info(
                    "[%d/%d] serving %s for %s (lookback %d, features %s) in %.2f s",
                    done, len(changed), label, model.ticker, model.lookback,
                    ",".join(model.metadata.features), seconds,
                )  # fmt: skip
        report.loaded.sort()

    # -- polling ---------------------------------------------------------------------------
    def start_polling(
        self,
        interval_seconds: float,
        *,
        load_now: bool = False,
        on_first_load: Callable[[], None] | None = None,
        on_reload: Callable[[ReloadReport], None] | None = None,
    ) -> None:
        """Call :meth:`reload` every ``interval_seconds`` in a daemon thread (0 = never).

        Args:
            interval_seconds: seconds between reloads; 0 = no polling.
            load_now: reload at once in the thread (the server listens meanwhile), then call
                ``on_first_load`` and set :attr:`first_load_done` (also if it raises); while
                the registry has never been reached, retry every :data:`UNREACHED_RETRY_SECONDS` (or
                ``interval_seconds`` if shorter) even without polling.
            on_first_load: called in the thread once the first load attempt has ended.
            on_reload: called in the thread with the report of each later reload that started
                serving a model (a new champion version, or the first models after an outage).
        """
        if self._thread is not None or (interval_seconds <= 0 and not load_now):
            return
        self._stop.clear()

        def wait_seconds() -> float | None:
            if not self.registry_reached and load_now:
                return min(UNREACHED_RETRY_SECONDS, interval_seconds or UNREACHED_RETRY_SECONDS)
            return interval_seconds if interval_seconds > 0 else None

        def loop() -> None:
            if load_now:
                report = self.reload()
                if len(self) == 0:
                    logger.warning(
                        "no champion model loaded (%s); /ready answers 503 until one is",
                        report.failed or "none registered",
                    )
                try:
                    if on_first_load is not None:
                        on_first_load()
                finally:
                    # after on_first_load: a server waiting for the first load serves models
                    # whose health is already computed
                    self.first_load_done.set()
            while (wait := wait_seconds()) is not None and not self._stop.wait(wait):
                report = self.reload()
                if on_reload is not None and report.models:
                    on_reload(report)

        self._thread = threading.Thread(target=loop, name="model-registry-poll", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        """Stop the polling thread, waiting at most :data:`STOP_WAIT_SECONDS` for a reload in
        progress (the thread is a daemon: a registry call that hangs does not hold shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT_SECONDS)
            if self._thread.is_alive():
                logger.warning("a registry reload is still running; not waiting for it")
            self._thread = None
