"""Loading many champions (issue 19): one paged batch query per poll, only changed versions
downloaded, requests served throughout a reload, and no 404 for a model still loading.

A real MLflow store in a temporary folder holds many registered models, each with a
``champion`` version whose source is a folder with ``artifacts/metadata.json`` and
``artifacts/model.onnx`` (a real ONNX graph, not trained: training is not what is tested).
The registry calls are counted through a wrapper around a real ``MlflowClient``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.features.model_health import service as health_module
from app.features.model_health.service import HealthMonitor
from app.features.stock_prediction import predictor as predictor_module
from app.features.stock_prediction.predictor import Predictor, ServedModel
from app.main import create_app
from common.model_contract import CHAMPION_ALIAS, registered_model_name
from tests.app.conftest import TICKER, login, serving
from tests.app.factories import make_settings, mean_onnx

LOOKBACK = 5


class CountingClient:
    """A real ``MlflowClient`` whose method calls are counted by name in ``calls``;
    ``before(name, args)`` runs before each call (a test may block one there)."""

    def __init__(
        self,
        client: Any,
        calls: Counter[str],
        before: Callable[[str, tuple[Any, ...]], None] | None = None,
    ) -> None:
        self._client = client
        self.calls = calls
        self._before = before

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self._before is not None:
                self._before(name, args)
            return attribute(*args, **kwargs)

        return call


class Store:
    """A temporary MLflow registry of ``stock-lstm-*`` models built from :func:`mean_onnx`."""

    def __init__(self, folder: Path) -> None:
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        self.folder = folder
        self.tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def publish(self, ticker: str, *, lookback: int = LOOKBACK) -> str:
        """A new version of ``ticker``'s model, made champion; returns its version."""
        name = registered_model_name(ticker)
        if not self.client.search_registered_models(f"name = '{name}'"):
            self.client.create_registered_model(name)
        metadata, onnx_bytes = mean_onnx(
            ticker=ticker, lookback=lookback, features=["rel_log_close"]
        )
        count = len(list(self.folder.glob(f"{ticker}/v*")))
        artifacts = self.folder / ticker / f"v{count + 1}" / "artifacts"
        artifacts.mkdir(parents=True)
        (artifacts / "metadata.json").write_text(metadata.model_dump_json(), encoding="utf-8")
        (artifacts / "model.onnx").write_bytes(onnx_bytes)
        version = str(
            self.client.create_model_version(name, source=artifacts.parent.as_uri()).version
        )
        self.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        return version

    def predictor(
        self, calls: Counter[str], before: Callable[[str, tuple[Any, ...]], None] | None = None
    ) -> Predictor:
        """A predictor on this store whose registry calls are counted in ``calls``."""
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        def client() -> CountingClient:
            real = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            return CountingClient(real, calls, before)

        return Predictor(tracking_uri=self.tracking_uri, client_factory=client)


TICKERS = [f"M{i:03d}.SA" for i in range(23)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """23 registered models, each with one champion version."""
    registry = Store(tmp_path_factory.mktemp("many-models"))
    for ticker in TICKERS:
        registry.publish(ticker)
    return registry


def test_a_poll_lists_every_champion_with_one_paged_query_and_loads_only_changes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """23 champions, 10 per page: a poll is 3 calls to search_registered_models whatever
    the number of models; only a changed champion is fetched again."""
    monkeypatch.setattr(predictor_module, "LIST_PAGE_SIZE", 10)
    calls: Counter[str] = Counter()
    predictor = store.predictor(calls)

    first = predictor.reload()
    assert len(first.loaded) == len(TICKERS) and first.failed == {}
    assert calls["search_registered_models"] == 3
    assert calls["get_model_version_download_uri"] == len(TICKERS)  # one per model loaded
    assert sorted(m.ticker for m in predictor.served()) == TICKERS

    calls.clear()
    unchanged = predictor.reload()
    assert len(unchanged.unchanged) == len(TICKERS) and unchanged.loaded == []
    assert calls == Counter({"search_registered_models": 3})  # nothing else: no per-model call

    moved = {ticker: store.publish(ticker) for ticker in TICKERS[:2]}
    calls.clear()
    report = predictor.reload()
    assert report.loaded == sorted(
        f"{registered_model_name(t)} v{version}" for t, version in moved.items()
    )
    assert calls == Counter({"search_registered_models": 3, "get_model_version_download_uri": 2})
    assert {t: predictor.get(t).version for t in moved} == moved


def test_a_reload_of_every_model_answers_every_request_meanwhile(store: Store) -> None:
    """Four threads forecast every ticker in turn while a reload replaces every champion:
    every call finds a model (old or new version, never none) and forecasts; afterwards
    every ticker serves its new version."""
    predictor = store.predictor(Counter())
    predictor.reload()
    old = {m.ticker: m.version for m in predictor.served()}
    new = {ticker: store.publish(ticker) for ticker in TICKERS}
    bars = {"close": np.linspace(10.0, 11.0, LOOKBACK)}
    reloading = threading.Event()
    reloaded = threading.Event()
    errors: list[BaseException] = []
    answered_during_reload = Counter[int]()

    def serve(worker: int) -> None:
        while not reloaded.is_set():
            for ticker in TICKERS:
                try:
                    model = predictor.get(ticker)
                    assert model.version in {old[ticker], new[ticker]}
                    assert np.isfinite(model.forecast(bars, 2).closes).all()
                except BaseException as exc:  # every failure is reported
                    errors.append(exc)
                    return
                if reloading.is_set() and not reloaded.is_set():
                    answered_during_reload[worker] += 1

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    reloading.set()
    report = predictor.reload()
    reloaded.set()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(report.loaded) == len(TICKERS) and report.failed == {}
    assert sum(answered_during_reload.values()) > 0
    assert {m.ticker: m.version for m in predictor.served()} == new


@pytest.fixture
def held_load(tmp_path: Path) -> Iterator[tuple[Predictor, threading.Event, threading.Event]]:
    """A predictor on a store of PETR4.SA and two other models whose first load of PETR4.SA
    is held until the test releases it: ``(predictor, loading PETR4.SA, release)``."""
    registry = Store(tmp_path)
    for ticker in (TICKER, "M900.SA", "M901.SA"):
        registry.publish(ticker)
    held, release = threading.Event(), threading.Event()

    def before(name: str, args: tuple[Any, ...]) -> None:
        if name == "get_model_version_download_uri" and args[0] == registered_model_name(TICKER):
            held.set()
            assert release.wait(60), "the test never released the load"

    predictor = registry.predictor(Counter(), before)
    yield predictor, held, release
    release.set()


@pytest.mark.postgres
def test_a_model_still_loading_at_start_up_is_503_not_404_and_not_ready(
    client: TestClient,
    user_headers: dict[str, str],
    held_load: tuple[Predictor, threading.Event, threading.Event],
) -> None:
    """During a worker's first load the other models already serve, but a ticker whose model
    is still loading gets 503 with Retry-After (it exists: retry), not 404, and /ready is 503
    with the registry "loading"; once the load ends the ticker predicts and /ready is 200."""
    predictor, held, release = held_load
    loader = threading.Thread(target=predictor.reload)
    loader.start()
    try:
        assert held.wait(60)
        with serving(client, predictor=predictor):
            waiting = client.get(f"/predict/{TICKER}?horizon=1", headers=user_headers)
            assert waiting.status_code == 503, waiting.text
            assert "Retry-After" in waiting.headers
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["registry"] == "loading" and "registry" in ready.json()["missing"]
            release.set()
            loader.join(60)
            assert (
                client.get(f"/predict/{TICKER}?horizon=1", headers=user_headers).status_code == 200
            )
            ready = client.get("/ready")
            assert ready.status_code == 200 and ready.json()["models_loaded"] == 3
    finally:
        release.set()
        loader.join(60)


@pytest.mark.postgres
@pytest.mark.parametrize("reloaded_by", ["poll", "admin"])
def test_a_reloaded_champions_drift_is_computed_with_the_reload_not_by_its_first_request(
    reloaded_by: str,
    app_db_url: str,
    users: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new champion version loaded by the registry poller or by POST /models/reload has its
    drift and staleness computed in the reload's batch: its first request computes none."""
    registry = Store(tmp_path)
    ticker = "M900.SA"
    registry.publish(ticker)
    settings = make_settings(
        database_url=app_db_url,
        tracking_uri=registry.tracking_uri,
        model_poll_seconds=0.2 if reloaded_by == "poll" else 0,
        accuracy_refresh_seconds=0,
    )
    batches: list[list[tuple[str, str]]] = []
    compute_all = HealthMonitor.compute_all

    def recorded_batch(monitor: HealthMonitor, models: list[ServedModel]) -> None:
        compute_all(monitor, models)
        batches.append([(m.ticker, m.version) for m in models])

    by_request: list[str] = []
    compute_health = health_module.compute_health

    def recorded_single(session: Any, model: ServedModel, settings: Any) -> Any:
        by_request.append(model.version)
        return compute_health(session, model, settings)

    monkeypatch.setattr(HealthMonitor, "compute_all", recorded_batch)
    monkeypatch.setattr(health_module, "compute_health", recorded_single)
    app = create_app(settings, predictor=registry.predictor(Counter()), configure_process=False)

    def computed_together(version: str) -> bool:
        deadline = time.monotonic() + 30
        while [(ticker, version)] not in batches and time.monotonic() < deadline:
            time.sleep(0.05)
        return [(ticker, version)] in batches

    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {login(client, users['user'])}"}

        def predict() -> dict[str, Any]:
            response = client.post(
                f"/predict/{ticker}", json={"closes": [30.0] * LOOKBACK}, headers=headers
            )
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        assert computed_together("1")  # after the first load
        assert predict()["model"]["version"] == "1"
        new_version = registry.publish(ticker)
        if reloaded_by == "admin":
            admin = {"Authorization": f"Bearer {login(client, users['admin'])}"}
            reloaded = client.post("/models/reload", headers=admin)
            assert reloaded.json()["loaded"] == [f"{registered_model_name(ticker)} v{new_version}"]
        assert computed_together(new_version)
        body = predict()
        assert body["model"]["version"] == new_version
        assert body["drift"]["window_bars"] == 0 and body["stale"]["bars_behind"] is None
    assert batches == [[(ticker, "1")], [(ticker, new_version)]]  # the first load, the reload
    assert by_request == []  # neither version's first request computed its own


@pytest.mark.postgres
def test_a_server_waiting_for_the_first_load_starts_with_every_models_health_computed(
    app_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With APP_MODEL_STARTUP_WAIT_SECONDS the worker listens only after the first load's
    drift and staleness batch, even a slow one: no first request pays for its own."""
    registry = Store(tmp_path)
    registry.publish("M901.SA")
    settings = make_settings(
        database_url=app_db_url, tracking_uri=registry.tracking_uri, accuracy_refresh_seconds=0
    )
    batches: list[list[str]] = []
    compute_all = HealthMonitor.compute_all

    def slow_batch(monitor: HealthMonitor, models: list[ServedModel]) -> None:
        time.sleep(1.0)  # a batch slower than the load itself (many models)
        compute_all(monitor, models)
        batches.append([m.ticker for m in models])

    monkeypatch.setattr(HealthMonitor, "compute_all", slow_batch)
    app = create_app(settings, predictor=registry.predictor(Counter()), configure_process=False)
    with TestClient(app):
        assert batches == [["M901.SA"]]  # done when start-up returned, not later
