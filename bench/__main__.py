"""``python -m bench``: prepare, load-test the API with wrk, time inference, print one table.

Steps (each logs a line): re-create the ``stockcast_bench`` database and migrate it; ingest
the seven snapshot tickers (timed); train the champions missing from ``var/bench/mlflow.db``;
train one ticker with the default config (timed, into a throwaway store); time inference
(ONNX as served vs Keras ``predict``); start ``python -m app serve`` with 2 workers; run the
wrk cases in ``--rounds`` interleaved rounds (each a warm-up, then the measured run; after
each, check that the rows added to ``prediction_log`` equal the predicted dates the server
answered); read a worker's RSS. Each case's median round is shown.
The table goes to stdout and to ``var/bench/results.md``.

Exit codes: 0 done (targets met or not: the table says), 1 a durability check failed,
2 preparation or the server failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import inference, load, prepare, scale, server
from bench.environment import BenchEnvironment
from bench.profile import ProfileRecorder
from common.logging_setup import configure_logging
from common.tickers import SNAPSHOT_TICKERS

logger = logging.getLogger(__name__)

#: Targets of issue 6 for case 2 (horizon 1).
TARGET_RATIO, TARGET_P99_MS = 0.35, 25.0
EXIT_OK, EXIT_DURABILITY, EXIT_SETUP = 0, 1, 2


@dataclass(frozen=True)
class Case:
    """One wrk case: its label, request paths (taken in turn) and whether it predicts."""

    key: str
    label: str
    paths: list[str]
    authenticated: bool


@dataclass(frozen=True)
class CaseResult:
    """A measured case and its durability check."""

    case: Case
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


def build_cases(tickers: Sequence[str]) -> list[Case]:
    """The three load cases; the predict cases cycle over ``tickers``."""
    return [
        Case("bare", "1. bare: GET /health (no auth, no database)", ["/health"], False),
        Case(
            "h1",
            "2. GET /predict/{ticker}?horizon=1",
            [f"/predict/{t}?horizon=1" for t in tickers],
            True,
        ),
        Case(
            "h30",
            "3. GET /predict/{ticker}?horizon=30",
            [f"/predict/{t}?horizon=30" for t in tickers],
            True,
        ),
    ]


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured run per case")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up run per case")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure the cases this many times, interleaved (bare, h1, h30, bare, ...); the "
        "table shows each case's median round",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--database",
        default=BenchEnvironment.database,
        help="the benchmark's own Postgres database, dropped and re-created "
        "(another name lets two checkouts run at once)",
    )
    parser.add_argument(
        "--cases", nargs="+", choices=["bare", "h1", "h30"], default=["bare", "h1", "h30"]
    )
    parser.add_argument(
        "--skip-prepare",
        action="store_true",
        help="reuse the bench database and models of an earlier run (no ingest/training timing)",
    )
    parser.add_argument("--skip-inference", action="store_true", help="no inference timing")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="record each case's measured run with py-spy (one worker) into DIR",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil), i.e. "
        "where the worker's Python CPU goes",
    )
    parser.add_argument("--output", type=Path, default=None, help="default: var/bench/results.md")
    parser.add_argument(
        "--scale",
        type=int,
        default=0,
        metavar="N",
        help="then the N-model case (python -m bench.scale --models N, on port+1 and port+2)",
    )
    parser.add_argument(
        "--app-root",
        type=Path,
        default=None,
        help="serve the API from another checkout (e.g. a git worktree of an older commit) "
        "to compare before/after; default: this repository",
    )
    return parser


def _run_case(
    *,
    api: server.ApiServer,
    bench: BenchEnvironment,
    case: Case,
    token: str,
    args: argparse.Namespace,
    recorder: ProfileRecorder | None,
) -> CaseResult:
    script = load.write_script(
        bench.var_dir / f"{case.key}.lua", case.paths, token if case.authenticated else None
    )
    common = {"connections": args.connections, "threads": args.threads}
    logger.info("%s: warm-up %.0f s", case.label, args.warmup)
    load.run_wrk(bench.base_url, script, seconds=args.warmup, **common)
    time.sleep(1.0)
    rows_before = server.prediction_log_rows(bench.database_url)
    id_before = server.max_log_id(bench.database_url)
    points_before = api.predicted_points()
    pids = api.worker_pids()
    cpu_before = sum(server.cpu_seconds(p) for p in pids)
    busy_before, total_before = server.machine_cpu_jiffies()
    logger.info("%s: measuring %.0f s", case.label, args.seconds)
    if recorder is not None:
        recorder.start(pids[0], case.key, args.seconds)
    result = load.run_wrk(bench.base_url, script, seconds=args.seconds, **common)
    if recorder is not None:
        recorder.wait()
    cpu = sum(server.cpu_seconds(p) for p in pids) - cpu_before
    busy_after, total_after = server.machine_cpu_jiffies()
    busy_pct = 100.0 * (busy_after - busy_before) / max(1, total_after - total_before)
    time.sleep(1.0)  # requests still in flight when wrk stopped finish (and are counted)
    measured = CaseResult(
        case=case,
        result=result,
        rows_added=server.prediction_log_rows(bench.database_url) - rows_before,
        points_served=api.predicted_points() - points_before,
        worker_cpu_seconds=cpu,
        machine_busy_pct=busy_pct,
        per_commit=server.requests_per_commit(bench.database_url, id_before),
    )
    logger.info(
        "%s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, non-2xx %d; prediction_log +%d rows, "
        "%d dates served: %s",
        case.label, result.rps, result.p50_ms, result.p99_ms, result.non2xx,
        measured.rows_added, measured.points_served, "OK" if measured.durable else "MISMATCH",
    )  # fmt: skip
    return measured


def median_round(of_case: Sequence[CaseResult]) -> CaseResult:
    """The round of a case with the median requests/s (the lower middle of an even count).

    Interleaved rounds and the median, rather than one run per case: on a shared 2-core VM
    the same case varies by 10-20% from one minute to the next, and the bare case and the
    prediction cases would otherwise be measured minutes apart.
    """
    ranked = sorted(of_case, key=lambda c: c.result.rps)
    return ranked[(len(ranked) - 1) // 2]


def machine_description(database_url: str) -> list[str]:
    """nproc, CPU model, RAM, OS/kernel and the Postgres version, as Markdown bullets."""
    from sqlalchemy import create_engine, text  # noqa: PLC0415

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    nproc = len(os.sched_getaffinity(0))
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            pg = str(conn.execute(text("SHOW server_version")).scalar_one())
            sync = str(conn.execute(text("SHOW synchronous_commit")).scalar_one())
            fsync = str(conn.execute(text("SHOW fsync")).scalar_one())
    finally:
        engine.dispose()
    wrk = subprocess.run(  # noqa: S603 - the wrk on PATH is the load generator
        [shutil.which("wrk") or "wrk", "--version"], capture_output=True, text=True, check=False
    )
    wrk_version = (wrk.stdout or wrk.stderr or "wrk").splitlines()[0]
    return [
        f"- CPU: {nproc} cores (nproc), {cpu}",
        f"- RAM: {mem_kib / 1024 / 1024:.1f} GiB",
        f"- OS: {platform.platform()}, Python {platform.python_version()}",
        f"- PostgreSQL {pg} on 127.0.0.1 (fsync={fsync}, synchronous_commit={sync})",
        f"- load: {wrk_version} over loopback, on the same machine",
    ]


def render(
    *,
    machine: list[str],
    args: argparse.Namespace,
    cases: list[CaseResult],
    timings: list[inference.InferenceTiming],
    prep: prepare.Preparation | None,
    rss_mib: list[float],
) -> str:
    """The results as Markdown (also printed)."""
    load1 = Path("/proc/loadavg").read_text().split()[0]
    out = ["# stockcast benchmark", "", *machine, f"- load average (1 min) at the end: {load1}", ""]
    out.append(
        f"wrk: {args.connections} connections, {args.threads} thread(s), "
        f"{args.warmup:g} s warm-up then {args.seconds:g} s per case, {args.rounds} round(s) "
        "of the cases interleaved, each case's median round shown (by requests/s); API: "
        f"`python -m app serve`, {args.workers} workers (uvicorn), bearer token, "
        "every prediction logged to Postgres (group commit) before its response."
    )
    out += [
        "",
        "| case | requests/s (median round) | requests/s of each round | p50 ms | p99 ms | "
        "p99 ms of each round | ratio to bare | non-2xx | API CPU ms per req | "
        "machine CPU busy | requests per commit (mean/max) | "
        "prediction_log rows = dates served (all rounds) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rounds: dict[str, list[CaseResult]] = {}
    for c in cases:
        rounds.setdefault(c.case.key, []).append(c)
    shown = [median_round(of_case) for of_case in rounds.values()]
    base = next((c.result.rps for c in shown if c.case.key == "bare"), None)
    for c in shown:
        r = c.result
        ratio = f"{r.rps / base:.0%}" if base else "-"
        cpu_ms = c.worker_cpu_seconds / r.requests * 1000 if r.requests else 0.0
        busy = f"{c.machine_busy_pct:.0f}%"
        mean, most = c.per_commit
        batching = f"{mean:.1f} / {most}" if most else "-"
        of_case = rounds[c.case.key]
        durable = all(x.durable for x in of_case)
        rows, points = sum(x.rows_added for x in of_case), sum(x.points_served for x in of_case)
        check = (
            f"{'yes' if durable else 'NO'} ({rows} = {points})"
            if c.case.authenticated
            else f"{'yes' if durable else 'NO'} (no predictions: {rows} rows)"
        )
        each = ", ".join(f"{x.result.rps:,.0f}" for x in of_case)
        each_p99 = ", ".join(f"{x.result.p99_ms:.1f}" for x in of_case)
        out.append(
            f"| {c.case.label} | {r.rps:,.0f} | {each} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{each_p99} | {ratio} | {r.non2xx + r.socket_errors} | {cpu_ms:.2f} | {busy} | "
            f"{batching} | {check} |"
        )
    shown_h1 = next((c for c in shown if c.case.key == "h1"), None)
    h1 = shown_h1
    if h1 is not None and base:
        share = h1.result.rps / base
        met = share >= TARGET_RATIO and h1.result.p99_ms < TARGET_P99_MS
        out += [
            "",
            f"Target (case 2 >= {TARGET_RATIO:.0%} of bare with p99 < {TARGET_P99_MS:g} ms): "
            f"**{'met' if met else 'NOT met'}** ({share:.0%}, p99 {h1.result.p99_ms:.2f} ms).",
        ]
    if timings:
        out += ["", "| model inference alone | batch | µs per window |", "|---|---:|---:|"]
        out += [f"| {t.runtime} | {t.batch} | {t.us_per_window:,.1f} |" for t in timings]
    out += ["", "| other | value |", "|---|---:|"]
    if prep is not None:
        out += [
            f"| ingest 7 snapshot tickers from 2000-01-01 (empty database), s | "
            f"{prep.ingest_seconds:.1f} ({prep.ingest_bars:,} bars) |",
            f"| train one ticker ({prepare.TIMED_TRAINING_TICKER}), default config, whole "
            f"command, s | {prep.train_seconds:.1f} (fit {prep.train_fit_seconds:.1f}) |",
        ]
    if rss_mib:
        out.append(
            f"| RSS of one API worker, {len(SNAPSHOT_TICKERS)} models loaded, MiB "
            f"(VmRSS, after the load) | {max(rss_mib):.0f} |"
        )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging("INFO")
    bench = BenchEnvironment(port=args.port, workers=args.workers, database=args.database)
    if args.app_root is not None:
        bench = dataclasses.replace(bench, app_root=args.app_root.resolve())
    bench.var_dir.mkdir(parents=True, exist_ok=True)
    prep: prepare.Preparation | None = None
    try:
        if not args.skip_prepare:
            prep = prepare.prepare(bench)
        timings = (
            []
            if args.skip_inference
            else inference.measure(bench.tracking_uri, SNAPSHOT_TICKERS[0])
        )
        username, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        prepare.create_bench_user(bench, username, password)
        recorder = (
            ProfileRecorder(args.profile, gil_only=args.profile_gil) if args.profile else None
        )
        results: list[CaseResult] = []
        with server.ApiServer(bench, expected_models=len(SNAPSHOT_TICKERS)) as api:
            token = api.token(username, password)
            cases = [c for c in build_cases(SNAPSHOT_TICKERS) if c.key in args.cases]
            for round_no in range(1, args.rounds + 1):
                logger.info("round %d of %d", round_no, args.rounds)
                for case in cases:
                    results.append(
                        _run_case(
                            api=api,
                            bench=bench,
                            case=case,
                            token=token,
                            args=args,
                            # one profile per case: its first round
                            recorder=recorder if round_no == 1 else None,
                        )
                    )
            rss = [server.worker_rss_mib(pid) for pid in api.worker_pids()]
    except (prepare.PrepareError, server.ServerError, load.LoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_SETUP
    text = render(
        machine=machine_description(bench.database_url),
        args=args,
        cases=results,
        timings=timings,
        prep=prep,
        rss_mib=rss,
    )
    output = args.output or bench.var_dir / "results.md"
    output.write_text(text, encoding="utf-8")
    print(text)
    print(f"(written to {output})")
    if recorder is not None:
        print(recorder.summary())
    code = EXIT_OK if all(c.durable for c in results) else EXIT_DURABILITY
    if args.scale:
        scaled = scale.main(
            ["--models", str(args.scale), "--database", args.database, "--port",
             str(args.port + 1), "--workers", str(args.workers), "--rounds", str(args.rounds),
             "--seconds", str(args.seconds), "--warmup", str(args.warmup),
             "--connections", str(args.connections), "--threads", str(args.threads)]
        )  # fmt: skip
        code = max(code, scaled)
    return code


if __name__ == "__main__":
    sys.exit(main())
