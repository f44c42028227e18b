"""A/B of the API's CPU per prediction request, in-process: ``python -m bench.predict_ab``.

Each variant (this checkout, and with ``--before DIR`` the ``app/`` and ``common/`` of another
tree, e.g. ``git archive <commit> app common | tar -x -C DIR``) runs in a fresh interpreter:
the app is built with ``create_app()``, its lifespan run (the champions of the bench's MLflow
store, the bench's Postgres database, the group-commit writer), and ASGI requests are sent to
it directly, 32 at a time, with no HTTP server: ``GET /health``, ``GET /predict/{ticker}
?horizon=1`` over the seven tickers in turn (``h1``), and ``POST /predict/{ticker}?horizon=1``
with a fresh random window per request (``post``). Printed: the process's CPU time (every
thread: the event loop, the writer, the thread pool) per request, microseconds, after a
warm-up; variants interleaved over ``--rounds`` rounds, the median shown.

Needs an earlier ``python -m bench`` run on the same ``--database`` (the bars, the champions
in ``var/bench/mlflow.db``). What it leaves out is the server (uvicorn's HTTP parsing and
``send``), which is the same for every variant; what it counts is the app's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.environment import BenchEnvironment
from bench.tax_ab import http_scope

# nothing of app/ or common/ is imported at the top: the child imports the variant's own

ROOT = Path(__file__).resolve().parent.parent
CASES = ("health", "h1", "post")
CONCURRENCY = 32


class _Asgi:
    """Sends HTTP requests to an ASGI app in-process and returns (status, body)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> tuple[int, bytes]:
        """One request; the status and the response body."""
        content_length = [(b"content-length", str(len(body)).encode())] if body else []
        scope = http_scope(
            method,
            path,
            query=query,
            headers=[*headers, *content_length],
            user_agent=b"predict_ab",
        )
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect while the app works
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


class _Lifespan:
    """Runs an ASGI app's lifespan protocol (startup on enter, shutdown on exit)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self.outbox.get()
        if answer["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {answer}")

    async def __aexit__(self, *exc: object) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        assert self.task is not None
        await self.task


def _window(n: int, price: float, rng: random.Random, sigma: float = 0.02) -> bytes:
    """``{"closes": [...]}``: a random walk of ``n`` closes near ``price`` (as bench.load)."""
    half_width = sigma * math.sqrt(3)
    level = price * math.exp(5 * half_width * (2 * rng.random() - 1))
    closes = []
    for _ in range(n):
        level *= math.exp(half_width * (2 * rng.random() - 1))
        closes.append(f"{level:.6g}")
    return ('{"closes":[' + ",".join(closes) + "]}").encode()


Plan = list[tuple[str, str, bytes, bytes]]


async def _measure(client: _Asgi, token: bytes, requests: Plan) -> None:
    """Send ``requests`` (method, path, query, body) with CONCURRENCY clients; all must be 200."""
    headers_get = [(b"authorization", b"Bearer " + token)]
    headers_post = [*headers_get, (b"content-type", b"application/json")]
    bad: list[tuple[int, bytes]] = []

    async def worker(start: int) -> None:
        for method, path, query, body in requests[start::CONCURRENCY]:
            status, answer = await client.request(
                method,
                path,
                query=query,
                headers=headers_post if body else headers_get,
                body=body,
            )
            if status != 200:
                bad.append((status, answer[:300]))

    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
    if bad:
        raise RuntimeError(f"{len(bad)} non-200 answers, e.g. {bad[0]}")


async def _child_main(
    cases: list[str], tickers: list[str], n: int, username: str, password: str
) -> dict[str, float]:
    from app.main import create_app  # noqa: PLC0415 - from the variant's tree (sys.path)

    app = create_app(configure_process=False)
    client = _Asgi(app)
    async with _Lifespan(app):
        deadline = time.monotonic() + 120
        while (await client.request("GET", "/ready"))[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the app was never ready")
            await asyncio.sleep(0.2)
        form = f"username={username}&password={password}".encode()
        status, answer = await client.request(
            "POST",
            "/auth/token",
            headers=[(b"content-type", b"application/x-www-form-urlencoded")],
            body=form,
        )
        if status != 200:
            raise RuntimeError(f"login failed: {status} {answer!r}")
        token = json.loads(answer)["access_token"].encode()
        models = {m["ticker"]: m for m in json.loads((await client.request("GET", "/models"))[1])}
        plans: dict[str, Plan] = {}
        total = n + n // 10  # a tenth more for the warm-up
        plans["health"] = [("GET", "/health", b"", b"")] * total
        plans["h1"] = [
            ("GET", f"/predict/{tickers[i % len(tickers)]}", b"horizon=1", b"")
            for i in range(total)
        ]
        if "post" in cases:
            rng = random.Random(19)  # noqa: S311 - load data, not a secret
            targets = []
            for ticker in tickers:
                if models.get(ticker, {}).get("accepts_closes"):
                    status, answer = await client.request(
                        "GET",
                        f"/predict/{ticker}",
                        query=b"horizon=1",
                        headers=[(b"authorization", b"Bearer " + token)],
                    )
                    last = float(json.loads(answer)["last_close"])
                    targets.append((ticker, models[ticker]["lookback"], last))
            plans["post"] = [
                ("POST", f"/predict/{t}", b"horizon=1", _window(lookback, last, rng))
                for i in range(total)
                for t, lookback, last in [targets[i % len(targets)]]
            ]
        import gc  # noqa: PLC0415

        results: dict[str, float] = {}
        for case in cases:
            plan = plans[case]
            await _measure(client, token, plan[n:])  # warm-up
            gc.collect()
            gc.freeze()
            began = time.process_time()
            await _measure(client, token, plan[:n])
            results[case] = (time.process_time() - began) / n * 1e6
    return results


def _child(job: dict[str, Any]) -> None:
    """Measure one variant (``job``: app_root, cases, tickers, requests, username, password)."""
    sys.path.insert(0, job["app_root"])
    import uvloop  # noqa: PLC0415

    results = uvloop.run(
        _child_main(job["cases"], job["tickers"], job["requests"], job["username"], job["password"])
    )
    print("@@" + json.dumps(results))  # noqa: T201


def _run_child(job: dict[str, Any], bench: BenchEnvironment, attempts: int = 3) -> str | None:
    """One variant's measurement in a fresh interpreter: its ``@@{...}`` line, or None.

    A failed run (on a shared machine: Postgres out of connections, say) is run again, up to
    ``attempts`` times; the last failure's output goes to stderr.
    """
    for attempt in range(1, attempts + 1):
        with tempfile.TemporaryDirectory() as metrics:
            env = bench.env(
                LOG_LEVEL="WARNING",
                PROMETHEUS_MULTIPROC_DIR=metrics,
                MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
            )
            out = subprocess.run(  # noqa: S603
                [sys.executable, "-m", "bench.predict_ab", "_child", json.dumps(job)],
                env=env, cwd=ROOT, capture_output=True, text=True, check=False,
            )  # fmt: skip
        line = next((x for x in out.stdout.splitlines() if x.startswith("@@")), None)
        if out.returncode == 0 and line is not None:
            return line
        print(f"attempt {attempt} failed: {out.stderr.strip()[-300:]}", file=sys.stderr)  # noqa: T201
        time.sleep(10)
    print(out.stderr[-3000:], file=sys.stderr)  # noqa: T201
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_child":
        _child(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.predict_ab", description=__doc__)
    parser.add_argument("--database", default="stockcast_bench")
    parser.add_argument("--before", type=Path, help="a tree with the app/ and common/ to compare")
    parser.add_argument("--after", type=Path, default=ROOT, help="default: this checkout")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args(argv)
    from bench.prepare import create_bench_user  # noqa: PLC0415 - imports common/
    from common.tickers import SNAPSHOT_TICKERS  # noqa: PLC0415

    bench = BenchEnvironment(database=args.database, workers=1)
    username, password = f"ab-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    create_bench_user(bench, username, password)
    variants = {"after": args.after.resolve()}
    if args.before is not None:
        variants = {"before": args.before.resolve(), **variants}
    results: dict[str, dict[str, list[float]]] = {v: {c: [] for c in args.cases} for v in variants}
    for round_no in range(1, args.rounds + 1):
        for label, root in variants.items():
            line = _run_child(
                {
                    "app_root": str(root), "cases": args.cases, "tickers": list(SNAPSHOT_TICKERS),
                    "requests": args.requests, "username": username, "password": password,
                },
                bench,
            )  # fmt: skip
            if line is None:
                return 1
            for case, us in json.loads(line[2:]).items():
                results[label][case].append(us)
            shown = ", ".join(f"{c} {results[label][c][-1]:.1f}" for c in args.cases)
            load1 = os.getloadavg()[0]
            print(f"round {round_no} {label}: {shown} µs (load {load1:.2f})", flush=True)  # noqa: T201
    print(f"CPU µs per request, in-process ASGI, {args.requests} requests, c{CONCURRENCY}")  # noqa: T201
    for label, by_case in results.items():
        cells = "; ".join(
            f"{c} median {statistics.median(v):.1f} ({', '.join(f'{x:.0f}' for x in v)})"
            for c, v in by_case.items()
        )
        print(f"{label:7} {cells}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
