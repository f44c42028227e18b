"""The API under test: ``python -m app serve`` with ``APP_WORKERS`` workers on loopback.

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
from pathlib import Path
from types import TracebackType

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from bench.environment import BenchEnvironment

logger = logging.getLogger(__name__)

PREDICTED_POINTS = "stockcast_predicted_points"


class ServerError(RuntimeError):
    """The API did not start (its log's tail is in the message)."""


class ApiServer:
    """``python -m app serve`` as a context manager; stdout+stderr go to ``log_path``."""

    def __init__(self, bench: BenchEnvironment, *, expected_models: int) -> None:
        self.bench = bench
        self.expected_models = expected_models
        self.log_path: Path = bench.var_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=bench.base_url, timeout=30.0)

    def __enter__(self) -> ApiServer:
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
        """Start the server and wait until every worker serves every model.

        Raises:
            ServerError: the server exited, or was not ready within ``timeout`` seconds.
        """
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [self.bench.python(), "-m", "app", "serve", "--port", str(self.bench.port)],
            env=self.bench.env(),
            cwd=self.bench.app_root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"the API exited ({self.proc.returncode}):\n{self._log_tail()}")
            started = self.log_path.read_text(errors="replace").count(
                "Application startup complete"
            )
            if started >= self.bench.workers and self._models_served() == self.expected_models:
                logger.info(
                    "API ready: %d workers (pids %s), %d models each",
                    self.bench.workers, self.worker_pids(), self.expected_models,
                )  # fmt: skip
                return
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"the API was not ready within {timeout:.0f} s:\n{self._log_tail()}")

    def _models_served(self) -> int:
        try:
            response = self.client.get("/models")
        except httpx.HTTPError:
            return -1
        return len(response.json()) if response.status_code == 200 else -1

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
        total = 0.0
        for family in text_string_to_metric_families(response.text):
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


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of ``pid`` so far, seconds (from ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_jiffies() -> tuple[int, int]:
    """``(busy, total)`` CPU jiffies of the whole machine so far (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)
