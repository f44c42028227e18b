"""The servers under test: the API (``python -m app serve``), the ceiling (the bare FastAPI
app of :mod:`bench.bare_app`) and the durable ceiling (:mod:`bench.durable_app`: the bare app
plus one committed ``prediction_log`` row per request), each with ``APP_WORKERS`` workers on
loopback.

Also the server-side facts the benchmark checks: the rows in ``prediction_log``, the
``stockcast_predicted_points_total`` counter summed over the workers, and a worker's
resident memory.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from bench.environment import REPO_ROOT, BenchEnvironment

logger = logging.getLogger(__name__)

PREDICTED_POINTS = "stockcast_predicted_points"


class ServerError(RuntimeError):
    """A server under test did not start (its log's tail is in the message)."""


class _ServerProcess:
    """A server subprocess with uvicorn workers, as a context manager; output goes to a log."""

    name = "the server"

    def __init__(self, bench: BenchEnvironment, *, port: int, log_name: str) -> None:
        self.bench = bench
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path: Path = bench.var_dir / log_name
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.base_url, timeout=30.0)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        """Start the server and wait until it is ready.

        Raises:
            ServerError: the server exited, or was not ready within ``timeout`` seconds.
        """
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self._command(),
            env=self._env(),
            cwd=self._cwd(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.name} exited ({self.proc.returncode}):\n{self._log_tail()}"
                )
            if self._ready():
                return
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"{self.name} was not ready within {timeout:.0f} s:\n{self._log_tail()}")

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return self.bench.env()

    def _cwd(self) -> Path:
        return REPO_ROOT

    def _ready(self) -> bool:
        raise NotImplementedError

    def _log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        """SIGTERM the server (it stops its workers), SIGKILL after 20 s."""
        self.client.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes (children of the server spawned by multiprocessing)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = [int(p) for p in children.read_text().split()]
        if self.bench.workers == 1:
            return [self.proc.pid]
        return [pid for pid in pids if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


class CeilingServer(_ServerProcess):
    """``python -m bench.bare_app``: the bare FastAPI app on the API's server and options."""

    name = "the ceiling (bench.bare_app)"
    module = "bench.bare_app"
    log_name = "ceiling.log"

    def __init__(self, bench: BenchEnvironment, *, port: int) -> None:
        super().__init__(bench, port=port, log_name=self.log_name)

    def _command(self) -> list[str]:
        return [
            self.bench.python(), "-m", self.module,
            "--port", str(self.port), "--workers", str(self.bench.workers),
        ]  # fmt: skip

    def _ready(self) -> bool:
        # Every worker started, and ten new connections (spread by the kernel) answered.
        if len(self.worker_pids()) < self.bench.workers:
            return False
        for _ in range(10):
            try:
                with httpx.Client(base_url=self.base_url, timeout=5.0) as fresh:
                    if fresh.get("/").status_code != 200:
                        return False
            except httpx.HTTPError:
                return False
        logger.info(
            "%s ready: %d workers (pids %s)", self.name, self.bench.workers, self.worker_pids()
        )
        return True


class DurableCeilingServer(CeilingServer):
    """``python -m bench.durable_app``: the bare app plus one committed prediction_log row per
    request, through the API's group-commit writer, on the benchmark's database.

    Args:
        bench: the benchmark's environment (``DATABASE_URL`` of the workers).
        port: its port.
        user_id: the ``app_user.id`` its rows carry (the bench user's, as the API's rows), or
            None for rows without a user.
    """

    name = "the durable ceiling (bench.durable_app)"
    module = "bench.durable_app"
    log_name = "durable_ceiling.log"

    def __init__(self, bench: BenchEnvironment, *, port: int, user_id: int | None) -> None:
        super().__init__(bench, port=port)
        self.user_id = user_id
        self.metrics_dir = bench.var_dir / "durable_ceiling_metrics"

    def start(self, timeout: float = 180.0) -> None:
        """Empty its metrics folder (counters from zero), then start it as the ceiling starts.

        Raises:
            ServerError: as :meth:`CeilingServer.start`.
        """
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.metrics_dir.glob("*.db"):
            stale.unlink()
        super().start(timeout)

    def _env(self) -> dict[str, str]:
        user = {} if self.user_id is None else {"BENCH_LOG_USER_ID": str(self.user_id)}
        return self.bench.env(PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir), **user)

    def predicted_points(self) -> int:
        """``stockcast_predicted_points_total`` summed over its workers (their metrics files):
        the rows it answered 2xx for."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_dir))  # type: ignore[no-untyped-call]
        return predicted_points_in(registry.collect())


class ApiServer(_ServerProcess):
    """``python -m app serve`` as a context manager; stdout+stderr go to ``log_path``."""

    name = "the API"

    def __init__(self, bench: BenchEnvironment, *, expected_models: int) -> None:
        super().__init__(bench, port=bench.port, log_name="server.log")
        self.expected_models = expected_models

    def _command(self) -> list[str]:
        return [self.bench.python(), "-m", "app", "serve", "--port", str(self.port)]

    def _cwd(self) -> Path:
        return self.bench.app_root

    def _ready(self) -> bool:
        # Every worker started and serves every model.
        started = self.log_path.read_text(errors="replace").count("Application startup complete")
        if started >= self.bench.workers and self._models_served() == self.expected_models:
            logger.info(
                "API ready: %d workers (pids %s), %d models each",
                self.bench.workers, self.worker_pids(), self.expected_models,
            )  # fmt: skip
            return True
        return False

    def _models_served(self) -> int:
        try:
            return len(self.served_models())
        except httpx.HTTPError:  # not listening yet, or not answering 200
            return -1

    def served_models(self) -> list[dict[str, Any]]:
        """``GET /models``: one object per served champion (ticker, lookback, accepts_closes)."""
        response = self.client.get("/models")
        response.raise_for_status()
        models: list[dict[str, Any]] = response.json()
        return models

    def last_close(self, ticker: str, token: str) -> float:
        """``last_close`` of ``GET /predict/{ticker}?horizon=1``: the latest stored close."""
        response = self.client.get(
            f"/predict/{ticker}",
            params={"horizon": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
        return float(response.json()["last_close"])

    def token(self, username: str, password: str) -> str:
        """A bearer token from ``POST /auth/token``."""
        response = self.client.post(
            "/auth/token", data={"username": username, "password": password}
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def predicted_points(self) -> int:
        """``stockcast_predicted_points_total`` summed over tickers and workers."""
        response = self.client.get(
            "/metrics", headers={"Authorization": f"Bearer {self.bench.metrics_token}"}
        )
        response.raise_for_status()
        return predicted_points_in(text_string_to_metric_families(response.text))


def predicted_points_in(families: Iterable[Metric]) -> int:
    """``stockcast_predicted_points_total`` summed over its series (tickers, model versions)."""
    total = 0.0
    for family in families:
        if family.name == PREDICTED_POINTS:
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return round(total)


def worker_rss_mib(pid: int) -> float:
    """``VmRSS`` of process ``pid`` from ``/proc/<pid>/status``, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise ValueError(f"no VmRSS for pid {pid}")


def prediction_log_rows(database_url: str) -> int:
    """Rows in ``prediction_log``."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM prediction_log")).scalar_one())
    finally:
        engine.dispose()


def max_log_id(database_url: str) -> int:
    """Largest ``prediction_log.id`` so far (0 when empty)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(text("SELECT coalesce(max(id), 0) FROM prediction_log")).scalar_one()
            )
    finally:
        engine.dispose()


def requests_per_commit(database_url: str, after_id: int) -> tuple[float, int]:
    """``(mean, max)`` requests per transaction among rows with ``id > after_id``.

    Rows committed by one transaction share its id, ``xmin``; a request is a ``request_id``.
    ``(0.0, 0)`` when there are no such rows.
    """
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT coalesce(avg(n), 0), coalesce(max(n), 0) FROM ("
                    " SELECT count(DISTINCT request_id::text) AS n FROM prediction_log"
                    " WHERE id > :after GROUP BY xmin::text) AS per_commit"
                ),
                {"after": after_id},
            ).one()
            return float(row[0]), int(row[1])
    finally:
        engine.dispose()


def app_user_id(database_url: str, username: str) -> int:
    """``app_user.id`` of ``username``.

    Raises:
        sqlalchemy.exc.NoResultFound: no such user.
    """
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT id FROM app_user WHERE username = :name"), {"name": username}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of ``pid`` so far, seconds (from ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_jiffies() -> tuple[int, int]:
    """``(busy, total)`` CPU jiffies of the whole machine so far (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)
