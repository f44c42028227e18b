"""One measured wrk run against a server under test, and what the API logged meanwhile.

Shared by ``python -m bench`` (its cases) and ``python -m bench.scale`` (7 against N models):
a warm-up run, then the measured run, with before/after readings of the API's
``prediction_log`` rows, its predicted-points counter, the workers' CPU time and the
machine's busy share; the durability check compares the first two.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench import load, server
from bench.profile import ProfileRecorder

logger = logging.getLogger(__name__)

#: Seconds waited after a wrk run, so that requests still in flight finish (and are counted).
SETTLE_SECONDS = 1.0


@dataclass(frozen=True)
class Measurement:
    """A measured wrk run and the server-side facts read around it.

    Attributes:
        result: wrk's figures.
        rows_added: rows ``prediction_log`` gained during the run.
        points_served: predicted dates the server answered 2xx for (its counter's increase:
            the API's, or the durable ceiling's).
        worker_cpu_seconds: user + system CPU of the measured server's workers, seconds.
        machine_busy_pct: share of the machine's CPU time not idle, percent.
        per_commit: ``(mean, max)`` requests per group commit of the rows added.
    """

    result: load.LoadResult
    rows_added: int
    points_served: int
    worker_cpu_seconds: float
    machine_busy_pct: float
    per_commit: tuple[float, int]

    @property
    def durable(self) -> bool:
        """Rows added to prediction_log == predicted dates the server answered."""
        return self.rows_added == self.points_served

    def values(self) -> dict[str, Any]:
        """The measured values by field name (shallow), to build a subclass's instance from."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(Measurement)}

    @property
    def cpu_ms_per_request(self) -> float:
        """Workers' CPU per request, milliseconds (0 without requests)."""
        requests = self.result.requests
        return self.worker_cpu_seconds / requests * 1000 if requests else 0.0


M = TypeVar("M", bound=Measurement)


def median_round(rounds: Sequence[M]) -> M:
    """The round with the median requests/s (the lower middle of an even count).

    Interleaved rounds and the median, rather than one run per case: on a shared 2-core VM
    the same case varies by 10-20% from one minute to the next, and the cases would otherwise
    be measured minutes apart.
    """
    ranked = sorted(rounds, key=lambda r: r.result.rps)
    return ranked[(len(ranked) - 1) // 2]


def measure(
    *,
    api: server.ApiServer,
    target: server.ApiServer | server.CeilingServer | server.DurableCeilingServer,
    script: Path,
    warmup: float,
    seconds: float,
    connections: int,
    threads: int,
    label: str,
    recorder: ProfileRecorder | None = None,
    profile_key: str = "",
) -> Measurement:
    """Warm up ``target`` with ``script``, then measure it for ``seconds``.

    Args:
        api: the API whose ``prediction_log`` is read, and its counter of the dates served
            (the ceiling has none).
        target: the server wrk loads (the API itself, the ceiling, or the durable ceiling,
            whose own counter of the dates served is read instead of the API's).
        script: wrk Lua script (:func:`bench.load.write_script` or ``write_post_script``).
        warmup / seconds: wrk run lengths, seconds.
        connections / threads: wrk's ``-c`` and ``-t``.
        label: the case's name in the log lines.
        recorder: records one worker with py-spy during the measured run, as ``profile_key``.

    Raises:
        LoadError: wrk failed.
        httpx.HTTPError: the API's metrics could not be read.
    """
    database_url = api.bench.database_url
    wrk = {"connections": connections, "threads": threads}
    logger.info("%s: warm-up %.0f s", label, warmup)
    load.run_wrk(target.base_url, script, seconds=warmup, **wrk)
    time.sleep(SETTLE_SECONDS)
    rows_before = server.prediction_log_rows(database_url)
    id_before = server.max_log_id(database_url)
    counter = target if isinstance(target, server.DurableCeilingServer) else api
    points_before = counter.predicted_points()
    pids = target.worker_pids()
    cpu_before = sum(server.cpu_seconds(p) for p in pids)
    busy_before, total_before = server.machine_cpu_jiffies()
    logger.info("%s: measuring %.0f s", label, seconds)
    if recorder is not None:
        recorder.start(pids[0], profile_key, seconds)
    result = load.run_wrk(target.base_url, script, seconds=seconds, **wrk)
    if recorder is not None:
        recorder.wait()
    cpu = sum(server.cpu_seconds(p) for p in pids) - cpu_before
    busy_after, total_after = server.machine_cpu_jiffies()
    time.sleep(SETTLE_SECONDS)
    return Measurement(
        result=result,
        rows_added=server.prediction_log_rows(database_url) - rows_before,
        points_served=counter.predicted_points() - points_before,
        worker_cpu_seconds=cpu,
        machine_busy_pct=100.0 * (busy_after - busy_before) / max(1, total_after - total_before),
        per_commit=server.requests_per_commit(database_url, id_before),
    )
