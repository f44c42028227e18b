"""``python -m app serve`` with two workers: every scrape of /metrics counts both workers.

Without prometheus_client's multiprocess mode each worker would answer /metrics with its own
counters only, so a scrape would see about half of the predictions served.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.app.conftest import TICKER, Registry
from tests.app.factories import PASSWORD, SECRET_KEY
from tests.processes import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKERS = 2


def _sample(text: str, family_name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@contextmanager
def _serving(
    app_db_url: str, registry: Registry, tmp_path: Path, **extra_env: str
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """(base URL, multiprocess folder, process) of a 2-worker server on the tests' database;
    its log in ``tmp_path / "api.log"``."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_12345.db").write_bytes(b"stale values of an earlier run")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": app_db_url,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "APP_SECRET_KEY": SECRET_KEY,
        "APP_WORKERS": str(WORKERS),
        "APP_MODEL_POLL_SECONDS": "0",
        "APP_MODEL_STARTUP_WAIT_SECONDS": "120",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "LOG_LEVEL": "INFO",
        **extra_env,
    }
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the API exited:\n{log_path.read_text()[-3000:]}")
        if log_path.read_text().count("Application startup complete") >= WORKERS:
            break
        time.sleep(0.3)
    else:
        proc.terminate()
        pytest.fail(f"the API did not start:\n{log_path.read_text()[-3000:]}")
    try:
        yield f"http://127.0.0.1:{port}", metrics_dir, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def served(
    app_db_url: str, registry: Registry, users: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """(base URL, multiprocess folder, process) of a 2-worker server on the tests' database."""
    with _serving(app_db_url, registry, tmp_path) as server:
        yield server


def test_every_scrape_counts_the_predictions_of_both_workers(
    served: tuple[str, Path, subprocess.Popen[bytes]], registry: Registry
) -> None:
    """20 predictions of horizon 3 over fresh connections (spread over both workers): each
    of 10 scrapes reports 60 predicted points and 20 requests, the model-version gauge is
    the served version, and the stale file of an earlier run was cleared at start."""
    base_url, metrics_dir, _proc = served
    assert not (metrics_dir / "counter_12345.db").exists()
    token = httpx.post(
        f"{base_url}/auth/token", data={"username": "ana", "password": PASSWORD}
    ).json()["access_token"]
    for _ in range(20):  # a new connection per request: the kernel spreads them
        response = httpx.get(
            f"{base_url}/predict/{TICKER}?horizon=3",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    pids = {p.name.split("_")[-1] for p in metrics_dir.glob("*.db")}
    assert len(pids) >= WORKERS, f"only {pids} wrote metrics"
    for _ in range(10):
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
        assert _sample(text, "stockcast_predicted_points", ticker=TICKER) == 60
        assert _sample(text, "stockcast_predictions", ticker=TICKER) == 20
        assert _sample(text, "stockcast_model_version_loaded", ticker=TICKER) == float(
            registry.version
        )
        assert _sample(text, "http_requests", handler="/predict/{ticker}", status="200") == 20


def _worker_pids(supervisor: int) -> list[int]:
    """The uvicorn workers of ``supervisor``: its children started by multiprocessing's spawn
    (a child that exits while this reads it is left out)."""
    workers = []
    for pid in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(int(pid))
        except OSError:
            continue
    return workers


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp_inodes(port: int, state: str) -> set[str]:
    """Inodes of the sockets on local ``port`` in TCP ``state`` (01 established, 0A listen)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == state:
            inodes.add(fields[9])
    return inodes


def test_each_worker_listens_on_its_own_socket_and_holds_a_share_of_the_connections(
    served: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    """Each worker listens on a socket of its own (SO_REUSEPORT), so the kernel spreads new
    connections over the workers; with one shared socket the first worker awake took most of
    a burst under load (27 of 32 in a benchmark run). 32 keep-alive connections opened at
    once are all served and held by both workers."""
    base_url, _metrics_dir, proc = served
    port = int(base_url.rsplit(":", 1)[1])
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(32)]
    try:
        for client in clients:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200"), "a connection was not served"
        workers = _worker_pids(proc.pid)
        listening = _tcp_inodes(port, "0A")
        own = [_socket_inodes(pid) & listening for pid in workers]
        own = [inodes for inodes in own if inodes]
        assert len(own) == WORKERS and len(set.union(*own)) == WORKERS, own
        accepted = _tcp_inodes(port, "01")
        held = {pid: len(_socket_inodes(pid) & accepted) for pid in workers}
        held = {pid: n for pid, n in held.items() if n}
        assert sum(held.values()) == 32, held
        assert len(held) == WORKERS, f"one worker holds every connection: {held}"
        assert min(held.values()) >= 4, held  # Binomial(32, 1/2) below 4: p ~ 1e-6
    finally:
        for client in clients:
            client.close()


def test_a_worker_that_dies_is_replaced_on_a_socket_of_its_own(
    served: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    """uvicorn's supervisor restarts a killed worker; the new one binds its own socket too,
    and the server answers every request throughout."""
    base_url, _metrics_dir, proc = served
    port = int(base_url.rsplit(":", 1)[1])
    victim = _worker_pids(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline:
        workers = [pid for pid in _worker_pids(proc.pid) if pid != victim]
        listening = _tcp_inodes(port, "0A")
        own = [_socket_inodes(pid) & listening for pid in workers]
        if sum(1 for inodes in own if inodes) == WORKERS and len(set.union(*own)) == WORKERS:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"no replacement worker listening on its own socket: {workers}")
    for _ in range(20):  # new connections: the kernel spreads them over both sockets
        assert httpx.get(f"{base_url}/health", timeout=10).status_code == 200


def test_a_metrics_port_serves_every_workers_metrics_and_the_access_log_can_be_off(
    app_db_url: str, registry: Registry, users: dict[str, str], tmp_path: Path
) -> None:
    """``APP_METRICS_PORT``: the API's port answers /metrics with 404, the metrics port (the
    supervising process) with every worker's counters in the text format; with
    ``APP_ACCESS_LOG=false`` the log has no line per request."""
    metrics_port = free_port()
    with _serving(
        app_db_url,
        registry,
        tmp_path,
        APP_METRICS_PORT=str(metrics_port),
        APP_ACCESS_LOG="false",
    ) as (base_url, metrics_dir, _proc):
        for _ in range(20):  # a new connection per request: the kernel spreads them
            assert httpx.get(f"{base_url}/health", timeout=30).status_code == 200
        assert httpx.get(f"{base_url}/metrics", timeout=10).status_code == 404
        pids = {p.name.split("_")[-1] for p in metrics_dir.glob("*.db")}
        assert len(pids) >= WORKERS, f"only {pids} wrote metrics"
        response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert _sample(response.text, "http_requests", handler="/health", status="200") == 20
    log = (tmp_path / "api.log").read_text()
    assert "access log off" in log
    assert '"GET /health HTTP/1.1" 200' not in log
