"""A/B of the per-request cost of the API's layers: ``python -m bench.tax_ab asgi|server``.

``asgi``: CPU time per ``GET /health`` of an app called in-process (no HTTP, no server), each
variant in a fresh interpreter (multiprocess metrics are chosen when prometheus_client is
imported), the variants interleaved over ``--rounds`` rounds; prints the median per variant.

``server``: a real server with 2 workers on 127.0.0.1 loaded with wrk (32 connections); the
workers' CPU time (``/proc/<pid>/stat`` utime + stime) divided by the requests served, which
holds while other jobs load the machine (wall-clock requests/s does not).

Both measure CPU, not latency: the tax a layer adds to every request.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import load
from bench.server import cpu_seconds

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------- apps under test


def bare_app() -> Any:
    """The ceiling: FastAPI with one ``async def`` returning a dict, nothing else."""
    from fastapi import FastAPI  # noqa: PLC0415

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _instrumentator_app() -> Any:
    """The app as wired before: prometheus-fastapi-instrumentator's middleware and metrics
    (no longer a dependency: ``pip install prometheus-fastapi-instrumentator`` to run it)."""
    from fastapi.responses import PlainTextResponse  # noqa: PLC0415
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    instrumentator: Any = importlib.import_module("prometheus_fastapi_instrumentator")
    metrics = instrumentator.metrics

    from app import main  # noqa: PLC0415
    from app.core.monitoring import HTTP_LATENCY_BUCKETS  # noqa: PLC0415

    def instrument(app: Any) -> None:
        # its own registry: the app's module has registered the same names already
        inst = metrics.default(
            latency_highr_buckets=HTTP_LATENCY_BUCKETS,
            latency_lowr_buckets=HTTP_LATENCY_BUCKETS,
            registry=CollectorRegistry(),
        )
        instrumentator.Instrumentator(
            should_group_status_codes=False,
            should_group_untemplated=True,
            excluded_handlers=["/metrics"],
        ).add(inst).instrument(app).expose(app, response_class=PlainTextResponse)

    patched: Any = main
    patched.instrument = instrument
    return patched.create_app()


def _app_without(*names: str) -> Callable[[], Any]:
    def build() -> Any:
        from app import main  # noqa: PLC0415

        patched: Any = main
        if "metrics" in names:
            patched.instrument = lambda app: None
        if "edge" in names:

            class Passthrough:
                def __init__(self, app: Any, **_: Any) -> None:
                    self.app = app

                async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
                    await self.app(scope, receive, send)

            patched.EdgeMiddleware = Passthrough
        return patched.create_app()

    return build


def _app_with_telemetry() -> Any:
    """The app with FastAPI's OpenTelemetry hooks on (its default)."""
    import functools  # noqa: PLC0415

    from fastapi import FastAPI  # noqa: PLC0415

    from app import main  # noqa: PLC0415

    def with_telemetry(**kwargs: Any) -> Any:
        kwargs.pop("telemetry", None)
        return FastAPI(**kwargs)

    patched: Any = main
    patched.FastAPI = functools.partial(with_telemetry)
    return patched.create_app()


def _app() -> Any:
    from app import main  # noqa: PLC0415

    return main.create_app()


VARIANTS: dict[str, Callable[[], Any]] = {
    "bare": bare_app,
    "app": _app,
    "app-instrumentator": _instrumentator_app,
    "app-telemetry": _app_with_telemetry,
    "app-no-metrics": _app_without("metrics"),
    "app-no-edge": _app_without("edge"),
    "app-no-middleware": _app_without("metrics", "edge"),
}

# ---------------------------------------------------------------- in-process ASGI


def http_scope(
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    user_agent: bytes = b"wrk",
) -> dict[str, Any]:
    """The ASGI scope of one HTTP/1.1 request from 127.0.0.1 to 127.0.0.1:8000 (the
    ``host`` and ``user-agent`` headers first, then ``headers``), for in-process A/Bs."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", user_agent), *headers],
        "state": {},
    }


async def _drive(app: Any, requests: int, concurrency: int) -> None:
    scope_base = http_scope("GET", "/health")
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def client(count: int) -> None:
        for _ in range(count):
            await app(dict(scope_base), receive, send)

    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses {set(statuses)}")


def _asgi_child(variant: str, requests: int) -> None:
    """Print the CPU microseconds per request of ``variant`` (run in a fresh interpreter)."""
    import gc  # noqa: PLC0415

    import uvloop  # noqa: PLC0415

    app = VARIANTS[variant]()
    loop = uvloop.new_event_loop()
    loop.run_until_complete(_drive(app, 2000, 32))  # warm-up: imports, caches
    gc.collect()
    gc.freeze()
    began = time.process_time()
    loop.run_until_complete(_drive(app, requests, 32))
    print(json.dumps({"us": (time.process_time() - began) / requests * 1e6}))  # noqa: T201


def asgi(variants: list[str], *, rounds: int, requests: int, multiprocess: bool) -> None:
    """Interleave the variants over ``rounds`` rounds; print each one's median CPU µs/request."""
    results: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "LOG_LEVEL": "WARNING"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = folder
        for _ in range(rounds):
            for variant in variants:
                out = subprocess.run(  # noqa: S603
                    [sys.executable, "-m", "bench.tax_ab", "_asgi", variant, str(requests)],
                    env=env, cwd=ROOT, capture_output=True, text=True, check=True,
                )  # fmt: skip
                results[variant].append(json.loads(out.stdout.splitlines()[-1])["us"])
    mode = "multiprocess" if multiprocess else "in-process"
    print(f"CPU µs per GET /health, in-process ASGI, metrics {mode}, {rounds} rounds")  # noqa: T201
    for variant, values in results.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{variant:22} median {statistics.median(values):7.1f}   ({shown})")  # noqa: T201


# ---------------------------------------------------------------- real server + wrk


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found.append(int(child))
            found.extend(_descendants(int(child)))
    return found


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Wait until ``GET /health`` answers 200 (raises if the server exits or never does)."""
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server never answered /health")


def _wait_idle(pids: list[int], timeout: float = 90.0) -> None:
    """Wait until the workers are idle (< 5% of a core over a second): models loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(1.0)
        if sum(cpu_seconds(p) for p in pids) - before < 0.05:
            return
    raise RuntimeError("the workers never went idle")


def _server_command(kind: str, port: int) -> list[str]:
    """``kind``: ``{uvicorn|granian}:{bare|app}``, or ``uvicorn:before`` (``app`` of the
    checkout in ``--before``); ``app`` is ``python -m app serve``."""
    server, target = kind.split(":")
    if server == "uvicorn" and target in ("app", "before"):
        return [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"]
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "--factory", "bench.tax_ab:bare_app",
            "--port", str(port), "--workers", "2", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    module = "bench.tax_ab:bare_app" if target == "bare" else "app.main:create_app"
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory", module,
        "--port", str(port), "--workers", "2", "--no-ws", "--log-level", "warning",
    ]  # fmt: skip


def _wrk(script: Path, port: int, seconds: int) -> int:
    """Requests wrk (32 connections) served in ``seconds``; raises on any non-2xx answer."""
    result = load.run_wrk(
        f"http://127.0.0.1:{port}", script, seconds=seconds, connections=32, threads=1
    )
    if result.non2xx or result.socket_errors:
        raise RuntimeError(f"{result.non2xx} non-2xx answers, {result.socket_errors} errors")
    return result.requests


def server(
    kinds: list[str], *, rounds: int, seconds: int, port: int, env_sets: list[str], before: str
) -> None:
    """Each ``kind`` (with each ``KEY=VALUE,...`` env set) in turn per round: CPU µs/request."""
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        script = load.write_script(Path(folder) / "health.lua", ["/health"], None)
        base_env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{folder}/app.db",
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
            "APP_SECRET_KEY": "tax-ab-signing-key-" + "x" * 40,
            "APP_MODEL_POLL_SECONDS": "0",
            "APP_ACCURACY_REFRESH_SECONDS": "0",
            "LOG_LEVEL": "INFO",
        }
        for _ in range(rounds):
            for kind in kinds:
                for env_set in env_sets:
                    extra = dict(p.split("=", 1) for p in env_set.split(",") if p)
                    label = f"{kind} {env_set}".strip()
                    log = Path(folder) / "server.log"
                    with log.open("wb") as out:
                        proc = subprocess.Popen(  # noqa: S603
                            _server_command(kind, port), env={**base_env, **extra},
                            cwd=before if kind.endswith("before") else ROOT,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                        )  # fmt: skip
                    try:
                        _wait_listening(port, proc)
                        workers = _descendants(proc.pid)
                        _wait_idle(workers)
                        _wrk(script, port, 2)  # warm-up
                        cpu_before = {p: cpu_seconds(p) for p in workers}
                        requests = _wrk(script, port, seconds)
                        used = sum(cpu_seconds(p) - cpu_before[p] for p in workers)
                        results.setdefault(label, []).append(
                            (used / requests * 1e6, requests / seconds)
                        )
                        print(f"{label}: {used / requests * 1e6:.1f} µs", flush=True)  # noqa: T201
                    finally:
                        os.killpg(proc.pid, signal.SIGTERM)
                        proc.wait(timeout=30)
    print(f"workers' CPU µs per GET /health (wrk -c32, {seconds} s, {rounds} rounds)")  # noqa: T201
    for label, values in results.items():
        us = [v[0] for v in values]
        rps = [v[1] for v in values]
        shown = ", ".join(f"{v:.0f}" for v in us)
        print(  # noqa: T201
            f"{label:50} median {statistics.median(us):6.1f} µs ({shown}); "
            f"req/s {statistics.median(rps):,.0f}"
        )


def main() -> None:
    """Command line; see the module docstring."""
    if len(sys.argv) > 1 and sys.argv[1] == "_asgi":
        _asgi_child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.tax_ab", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("asgi")
    a.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--requests", type=int, default=20_000)
    a.add_argument("--multiprocess", action="store_true")
    s = sub.add_parser("server")
    s.add_argument("kinds", nargs="+", help="uvicorn:bare uvicorn:app granian:bare granian:app")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--seconds", type=int, default=8)
    s.add_argument("--port", type=int, default=18300)
    s.add_argument("--env", action="append", default=[], help="KEY=V,KEY2=V2 (one run each)")
    s.add_argument("--before", default=str(ROOT), help="checkout served by uvicorn:before")
    args = parser.parse_args()
    if args.mode == "asgi":
        asgi(args.variants, rounds=args.rounds, requests=args.requests,
             multiprocess=args.multiprocess)  # fmt: skip
    else:
        server(args.kinds, rounds=args.rounds, seconds=args.seconds, port=args.port,
               env_sets=args.env or [""], before=args.before)  # fmt: skip


if __name__ == "__main__":
    main()
