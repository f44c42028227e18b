"""``python -m bench.scale``: the API serving 500 models against the same API serving 7.

Preparation (``--skip-prepare`` reuses an earlier one): the bench's database and MLflow store
must already hold the seven snapshot tickers and their champions (``python -m bench`` makes
them). The scale store ``var/bench/scale/mlflow.db`` starts as a copy of the bench store, and
``--models`` minus seven copies of the shipped champions are registered in it under other
symbols of the same exchange (``SC0007.SA`` is a copy of a B3 champion, ``SC0011`` of a US
one: same sessions and currency). Each copy is a registered model of its own with a version
and the alias ``champion``, whose source is a folder holding its own ``metadata.json`` (the
original's, with the copy's ticker) and the original's ``model.onnx`` (a hard link): no
retraining, and every copy is loaded, checked and served like any champion. The last
``--bars`` bars of each original are copied in Postgres under the copy's symbol (one INSERT
... SELECT); the API reads at most the drift window (250 bars) of a ticker.

Measured, with two servers running side by side (7 models on ``--port``, N on ``--port``+1),
``python -m app serve`` with ``--workers`` workers each, registry polling off:

1. start-up: seconds from launching the N-model server until every worker has loaded every
   model (its ``reload: ... serving N models`` log line);
2. ``GET /predict/{ticker}?horizon=1`` cycling over all the tickers of each server, the same
   wrk settings, ``--rounds`` interleaved rounds (7, N, 7, N, ...), the durability check
   (rows added to ``prediction_log`` = dates served) after each; the median round is shown;
3. ``GET /models`` (4 connections, 5 s) on each server;
4. a worker's resident memory (VmRSS) on each server, after the load;
5. ``POST /models/reload`` with nothing changed, then after a new version of every copy
   became champion (a full reload of one worker), while wrk loads ``GET /predict`` on the
   N-model server: the reload's seconds, and the errors and p99 of the requests meanwhile.

The table goes to stdout and to ``var/bench/scale.md``. Exit codes as ``python -m bench``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import secrets
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench import load, prepare, server
from bench.environment import BenchEnvironment
from bench.measure import Measurement, measure, median_round
from common.exchanges import exchange_of
from common.logging_setup import configure_logging
from common.model_contract import (
    CHAMPION_ALIAS,
    METADATA_ARTIFACT,
    ONNX_ARTIFACT,
    TICKER_TAG,
    registered_model_name,
)
from common.registry import load_champion
from common.tickers import SNAPSHOT_TICKERS

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_DURABILITY, EXIT_SETUP = 0, 1, 2
#: Targets of issue 19 for N models against 7.
TARGET_RSS_RATIO, TARGET_READY_SECONDS, TARGET_THROUGHPUT_LOSS = 2.0, 60.0, 0.10
#: Prefix of the copies' symbols.
COPY_PREFIX = "SC"


def copy_symbol(source: str, index: int) -> str:
    """The symbol of copy ``index`` of ``source``: same exchange suffix (``SC0007.SA``)."""
    suffix = source[source.index(".") :] if "." in source else ""
    return f"{COPY_PREFIX}{index:04d}{suffix}"


def plan_copies(n_models: int, sources: Sequence[str] = SNAPSHOT_TICKERS) -> dict[str, str]:
    """``{copy symbol: source ticker}`` so that ``sources`` plus the copies make ``n_models``.

    Raises:
        ValueError: ``n_models`` below ``len(sources)``.
    """
    if n_models < len(sources):
        raise ValueError(f"need at least {len(sources)} models, got {n_models}")
    return {
        copy_symbol(sources[i % len(sources)], i): sources[i % len(sources)]
        for i in range(len(sources), n_models)
    }


def register_copies(
    client: Any, copies: dict[str, str], folder: Path, *, new_version: bool = False
) -> int:
    """Register each copy as a model whose champion is its source's champion under its name.

    For each copy: ``folder/<copy>/artifacts/metadata.json`` (the source champion's metadata
    with the copy's ticker) and ``model.onnx`` (a hard link to the source's), then one
    registered model (created if missing), one version on that folder, and the alias.

    Args:
        client: an ``MlflowClient`` on the scale store.
        copies: ``{copy symbol: source ticker}``.
        folder: where the copies' artifacts are written.
        new_version: register a new version even for copies that already have a champion.

    Returns:
        Versions registered.
    """
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    originals = {}
    for source in sorted(set(copies.values())):
        loaded = load_champion(client, registered_model_name(source))
        onnx = folder / "sources" / source / "model.onnx"
        onnx.parent.mkdir(parents=True, exist_ok=True)
        onnx.write_bytes(loaded.onnx_bytes)
        originals[source] = (loaded.metadata, onnx)
    listed = client.search_registered_models(
        f"name LIKE '{registered_model_name(COPY_PREFIX)}%'", max_results=1000
    )
    existing = {m.name: m.aliases.get(CHAMPION_ALIAS) for m in listed}
    registered = 0
    for symbol, source in copies.items():
        name = registered_model_name(symbol)
        if existing.get(name) is not None and not new_version:
            continue
        metadata, onnx = originals[source]
        root = folder / "copies" / symbol
        artifacts = root / Path(METADATA_ARTIFACT).parent
        artifacts.mkdir(parents=True, exist_ok=True)
        (root / METADATA_ARTIFACT).write_text(
            metadata.model_copy(update={"ticker": symbol}).model_dump_json(), encoding="utf-8"
        )
        target = root / ONNX_ARTIFACT
        if not target.exists():
            try:
                os.link(onnx, target)
            except OSError:
                shutil.copyfile(onnx, target)
        if name not in existing:
            try:
                client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        version = client.create_model_version(name, source=root.as_uri(), tags={TICKER_TAG: symbol})
        client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version.version))
        registered += 1
    return registered


def copy_bars(database_url: str, copies: dict[str, str], *, last_bars: int) -> int:
    """Copy the last ``last_bars`` bars of each source under its copies' symbols (replacing
    the copies' bars); ``exchange`` and ``currency`` are the copy's own. Returns rows added."""
    symbols = list(copies)
    sources = [copies[s] for s in symbols]
    exchanges = [exchange_of(s) for s in symbols]
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("DELETE FROM price_bar WHERE ticker LIKE :p"), {"p": COPY_PREFIX + "%"}
            )
            result = conn.execute(
                text(
                    "INSERT INTO price_bar (ticker, date, open, high, low, close, volume, "
                    " currency, exchange, source) "
                    "SELECT m.copy, b.date, b.open, b.high, b.low, b.close, b.volume, "
                    " m.currency, m.exchange, b.source "
                    "FROM unnest(CAST(:copies AS text[]), CAST(:sources AS text[]), "
                    " CAST(:exchanges AS text[]), CAST(:currencies AS text[])) "
                    " AS m(copy, source, exchange, currency) "
                    "CROSS JOIN LATERAL (SELECT * FROM price_bar p WHERE p.ticker = m.source "
                    " ORDER BY p.date DESC LIMIT :n) AS b"
                ),
                {
                    "copies": symbols,
                    "sources": sources,
                    "exchanges": [e.code if e else None for e in exchanges],
                    "currencies": [e.currency if e else None for e in exchanges],
                    "n": last_bars,
                },
            )
            return int(result.rowcount)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Round(Measurement):
    """One measured wrk run of the h1 case on one server (its durability check included)."""

    models: int


def measure_h1(
    api: server.ApiServer, tickers: Sequence[str], token: str, args: argparse.Namespace
) -> Round:
    """Warm-up, then a measured wrk run of ``GET /predict/{ticker}?horizon=1`` over
    ``tickers``, with its durability check."""
    script = load.write_script(
        api.bench.var_dir / "h1.lua", [f"/predict/{t}?horizon=1" for t in tickers], token
    )
    measurement = measure(
        api=api,
        target=api,
        script=script,
        warmup=args.warmup,
        seconds=args.seconds,
        connections=args.connections,
        threads=args.threads,
        label=f"{len(tickers)} models",
    )
    measured = Round(
        **measurement.values(),
        models=len(tickers),
    )
    result = measured.result
    logger.info(
        "%d models: %.0f req/s, p99 %.1f ms, non-2xx %d, %.2f ms CPU/req, durable %s",
        len(tickers), result.rps, result.p99_ms, result.non2xx + result.socket_errors,
        measured.cpu_ms_per_request, measured.durable,
    )  # fmt: skip
    return measured


def measure_models_route(api: server.ApiServer) -> load.LoadResult:
    """``GET /models`` with 4 connections for 5 s."""
    script = load.write_script(api.bench.var_dir / "models.lua", ["/models"], None)
    return load.run_wrk(api.bench.base_url, script, seconds=5, connections=4, threads=1)


def wait_all_loaded(api: server.ApiServer, n_models: int, *, timeout: float) -> float | None:
    """Wait until every worker logged ``[N/N] serving ...`` (its last model of the first
    load); returns the largest ``X`` of the workers' ``reload: ... in X s; serving N models``
    lines (seconds from listing the registry to serving every model), None without them.

    Raises:
        ServerError: not within ``timeout`` seconds.
    """
    last = re.compile(rf"\[{n_models}/{n_models}\] serving")
    summary = re.compile(rf"in ([0-9.]+) s; serving {n_models} models")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = api.log_path.read_text(errors="replace")
        if len(last.findall(log)) >= api.bench.workers:
            time.sleep(0.5)  # the summary line follows the last model's
            found = summary.findall(api.log_path.read_text(errors="replace"))
            return max(float(x) for x in found) if found else None
        time.sleep(0.1)
    raise server.ServerError(f"not every worker loaded {n_models} models in {timeout:.0f} s")


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python -m bench.scale``."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--models", type=int, default=500, help="models of the large server")
    parser.add_argument("--bars", type=int, default=400, help="bars copied per copy")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765, help="7 models here, N on port+1")
    parser.add_argument("--database", default=BenchEnvironment.database)
    parser.add_argument("--skip-prepare", action="store_true", help="reuse the copies")
    parser.add_argument("--output", type=Path, default=None, help="default var/bench/scale.md")
    parser.add_argument(
        "--app-root",
        type=Path,
        default=None,
        help="serve both APIs from another checkout (before/after); default: this one",
    )
    return parser


def _prepare(
    bench: BenchEnvironment, scaled: BenchEnvironment, copies: dict[str, str], bars: int
) -> str:
    """Copy the bench store into the scale store, register the copies, copy their bars."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    scaled.var_dir.mkdir(parents=True, exist_ok=True)
    store = bench.var_dir / "mlflow.db"
    if not store.exists():
        raise prepare.PrepareError(f"no bench store at {store}: run `python -m bench` first")
    began = time.perf_counter()
    shutil.copyfile(store, scaled.var_dir / "mlflow.db")
    client = MlflowClient(tracking_uri=scaled.tracking_uri, registry_uri=scaled.tracking_uri)
    registered = register_copies(client, copies, scaled.var_dir)
    rows = copy_bars(bench.database_url, copies, last_bars=bars)
    return (
        f"{registered} copies registered and {rows:,} bars copied in "
        f"{time.perf_counter() - began:.1f} s"
    )


def _reload(api: server.ApiServer, headers: dict[str, str]) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    response = api.client.post("/models/reload", headers=headers, timeout=600)
    response.raise_for_status()
    return time.perf_counter() - began, response.json()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging("INFO")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    bench = BenchEnvironment(port=args.port, workers=args.workers, database=args.database)
    if args.app_root is not None:
        bench = dataclasses.replace(bench, app_root=args.app_root.resolve())
    scaled = dataclasses.replace(bench, port=args.port + 1, var_dir=bench.var_dir / "scale")
    copies = plan_copies(args.models)
    tickers = list(SNAPSHOT_TICKERS)
    all_tickers = tickers + list(copies)
    notes: list[str] = []
    try:
        if not args.skip_prepare:
            notes.append(_prepare(bench, scaled, copies, args.bars))
        username, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        prepare._run(  # the project's own create-user, as an admin
            "create bench admin",
            [bench.python(), "-m", "app", "create-user", username, "--admin"],
            bench.env(),
            stdin=password + "\n",
        )
        with server.ApiServer(bench, expected_models=len(tickers)) as small:
            began = time.perf_counter()
            with server.ApiServer(scaled, expected_models=args.models) as large:
                load_seconds = wait_all_loaded(large, args.models, timeout=600)
                ready_seconds = time.perf_counter() - began
                logger.info(
                    "%d models loaded by every worker in %.1f s", args.models, ready_seconds
                )
                token = small.token(username, password)
                headers = {"Authorization": f"Bearer {token}"}
                rounds: list[Round] = []
                for number in range(1, args.rounds + 1):
                    logger.info("round %d of %d", number, args.rounds)
                    rounds.append(measure_h1(small, tickers, token, args))
                    rounds.append(measure_h1(large, all_tickers, token, args))
                models_small = measure_models_route(small)
                models_large = measure_models_route(large)
                rss_small = max(server.worker_rss_mib(p) for p in small.worker_pids())
                rss_large = max(server.worker_rss_mib(p) for p in large.worker_pids())
                noop_seconds, noop = _reload(large, headers)
                reload_text = _reload_under_load(
                    large,
                    env=scaled,
                    copies=copies,
                    tickers=all_tickers,
                    token=token,
                    headers=headers,
                )
    except (prepare.PrepareError, server.ServerError, load.LoadError, httpx.HTTPError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_SETUP
    out = render(
        args=args,
        rounds=rounds,
        ready_seconds=ready_seconds,
        load_seconds=load_seconds,
        rss=(rss_small, rss_large),
        models_route=(models_small, models_large),
        noop=(noop_seconds, noop),
        reload_text=reload_text,
        notes=notes,
    )
    output = args.output or bench.var_dir / "scale.md"
    output.write_text(out, encoding="utf-8")
    sys.stdout.write(f"{out}\n(written to {output})\n")
    return EXIT_OK if all(r.durable for r in rounds) else EXIT_DURABILITY


def _reload_under_load(
    api: server.ApiServer,
    *,
    env: BenchEnvironment,
    copies: dict[str, str],
    tickers: Sequence[str],
    token: str,
    headers: dict[str, str],
) -> list[str]:
    """A new version of every copy becomes champion; POST /models/reload while wrk loads the
    server; the reload's time and what the requests meanwhile saw, as table rows."""
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    client = MlflowClient(tracking_uri=env.tracking_uri, registry_uri=env.tracking_uri)
    began = time.perf_counter()
    register_copies(client, copies, env.var_dir, new_version=True)
    logger.info("new versions of %d copies in %.1f s", len(copies), time.perf_counter() - began)
    script = load.write_script(
        env.var_dir / "reload.lua", [f"/predict/{t}?horizon=1" for t in tickers], token
    )
    outcome: dict[str, load.LoadResult] = {}

    def during() -> None:
        outcome["wrk"] = load.run_wrk(env.base_url, script, seconds=30, connections=32, threads=1)

    loader = threading.Thread(target=during)
    loader.start()
    time.sleep(3.0)
    seconds, body = _reload(api, headers)
    loader.join()
    wrk = outcome["wrk"]
    return [
        f"| `POST /models/reload`, {len(body['loaded'])} new champions (one worker), while wrk "
        f"loads `GET /predict` | {seconds:.1f} s |",
        f"| requests during those 30 s: answered / errors (non-2xx + socket) / p99 | "
        f"{wrk.requests:,} / {wrk.non2xx + wrk.socket_errors} / {wrk.p99_ms:.1f} ms |",
    ]


def render(
    *,
    args: argparse.Namespace,
    rounds: list[Round],
    ready_seconds: float,
    load_seconds: float | None,
    rss: tuple[float, float],
    models_route: tuple[load.LoadResult, load.LoadResult],
    noop: tuple[float, dict[str, Any]],
    reload_text: list[str],
    notes: list[str],
) -> str:
    """The results as Markdown."""
    load1 = Path("/proc/loadavg").read_text().split()[0]
    small = [r for r in rounds if r.models != args.models]
    large = [r for r in rounds if r.models == args.models]
    out = [
        f"# {args.models} models against 7",
        "",
        f"wrk: {args.connections} connections, {args.threads} thread(s), {args.warmup:g} s "
        f"warm-up then {args.seconds:g} s, {args.rounds} interleaved rounds; API: "
        f"{args.workers} workers each; load average (1 min) at the end: {load1}.",
        *(f"{n}." for n in notes),
        "",
        "| `GET /predict/{ticker}?horizon=1` | req/s (median) | each round | p99 ms (median "
        "round) | p99 of each round | API CPU ms per req | prediction_log rows = dates served |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    medians = {}
    for label, of_case in (("7 tickers", small), (f"{args.models} tickers", large)):
        mid = median_round(of_case)
        medians[label] = mid.result.rps
        rows, points = sum(r.rows_added for r in of_case), sum(r.points_served for r in of_case)
        durable = "yes" if all(r.durable for r in of_case) else "NO"
        out.append(
            f"| {label} | {mid.result.rps:,.0f} | "
            f"{', '.join(f'{r.result.rps:,.0f}' for r in of_case)} | {mid.result.p99_ms:.1f} | "
            f"{', '.join(f'{r.result.p99_ms:.1f}' for r in of_case)} | "
            f"{statistics.median(r.cpu_ms_per_request for r in of_case):.2f} | "
            f"{durable} ({rows:,} = {points:,}) |"
        )
    throughput = medians[f"{args.models} tickers"] / medians["7 tickers"]
    m_small, m_large = models_route
    noop_seconds, noop_body = noop
    out += [
        "",
        "| other | value |",
        "|---|---:|",
        f"| start-up until every worker serves {args.models} models (launch to the last "
        f"worker's log line) | {ready_seconds:.1f} s |",
        f"| of which loading the models (registry listed to all served, slowest worker) | "
        f"{'-' if load_seconds is None else f'{load_seconds:.1f} s'} |",
        f"| worker RSS, 7 models / {args.models} models | {rss[0]:.0f} / {rss[1]:.0f} MiB "
        f"({rss[1] / rss[0]:.2f}x) |",
        f"| `GET /models` with 7 / {args.models} models: req/s, p99 | "
        f"{m_small.rps:,.0f}, {m_small.p99_ms:.1f} ms / {m_large.rps:,.0f}, "
        f"{m_large.p99_ms:.1f} ms |",
        f"| `POST /models/reload`, nothing changed ({len(noop_body['unchanged'])} unchanged) | "
        f"{noop_seconds * 1000:.0f} ms |",
        *reload_text,
        "",
        f"Targets: RSS <= {TARGET_RSS_RATIO:g}x: "
        f"**{'met' if rss[1] <= TARGET_RSS_RATIO * rss[0] else 'NOT met'}**; ready < "
        f"{TARGET_READY_SECONDS:g} s: "
        f"**{'met' if ready_seconds < TARGET_READY_SECONDS else 'NOT met'}**; throughput "
        f"within {TARGET_THROUGHPUT_LOSS:.0%}: "
        f"**{'met' if throughput >= 1 - TARGET_THROUGHPUT_LOSS else 'NOT met'}** "
        f"({throughput:.0%} of the 7-ticker case).",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
