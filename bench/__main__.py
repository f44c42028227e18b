"""``python -m bench``: prepare, load-test the API with wrk, time inference, print one table.

Steps (each logs a line): re-create the ``stockcast_bench`` database and migrate it; ingest
the seven snapshot tickers (timed); train the champions missing from ``var/bench/mlflow.db``;
train one ticker with the default config (timed, into a throwaway store); time inference
(ONNX as served vs Keras ``predict``); start ``python -m app serve`` with 2 workers, the
ceiling beside it (:mod:`bench.bare_app`: a bare FastAPI app on the same server, workers and
options) and the durable ceiling (:mod:`bench.durable_app`: the bare app plus one
prediction_log row per request, committed through the API's group-commit writer); run the wrk
cases in ``--rounds`` interleaved rounds (each a warm-up, then the measured run; after each,
check that the rows added to ``prediction_log`` equal the predicted dates the server
answered); read a worker's RSS. Each case's median round is shown with every round beside
it, as a share of the ceiling, of the API's own ``/health`` and of the durable ceiling, and
the targets of issue 19 are judged on it. The table goes to stdout and to
``var/bench/results.md``.

Exit codes: 0 done (targets met or not: the table says), 1 a durability check failed,
2 preparation or the server failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import platform
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import inference, load, prepare, scale, server
from bench.environment import BenchEnvironment
from bench.measure import Measurement, measure, median_round
from bench.profile import ProfileRecorder
from common.logging_setup import configure_logging
from common.tickers import SNAPSHOT_TICKERS

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_DURABILITY, EXIT_SETUP = 0, 1, 2


#: Where a case sends its requests: the API, the ceiling (the bare FastAPI app) or the durable
#: ceiling (the bare app plus one committed prediction_log row per request).
API, CEILING, DURABLE = "api", "ceiling", "durable"


@dataclass(frozen=True)
class Case:
    """One wrk case.

    Attributes:
        key: short name (``--cases``).
        label: the table's name of the case.
        paths: GET request paths, taken in turn (empty for a POST case).
        authenticated: sends the bearer token (and predicts: the durability check counts).
        server: :data:`API`, :data:`CEILING` or :data:`DURABLE`.
        posts: for a POST case, the tickers to POST fresh windows to, in turn.
    """

    key: str
    label: str
    paths: list[str]
    authenticated: bool
    server: str = API
    posts: tuple[load.PostTarget, ...] = ()

    @property
    def logs_predictions(self) -> bool:
        """Whether its requests add prediction_log rows (the API's predictions, and the
        durable ceiling's one row per request)."""
        return self.authenticated or self.server == DURABLE


@dataclass(frozen=True)
class Target:
    """A target of issue 19: a case's share of the ceiling, and a p99 bound if any.

    A round meets it when the share and the p99 are within bounds, every response was 2xx
    and the durability check passed.
    """

    case_key: str
    min_share_of_ceiling: float
    max_p99_ms: float | None = None

    def describe(self) -> str:
        """E.g. ``>= 40% of the ceiling, p99 < 20 ms``."""
        text = f">= {self.min_share_of_ceiling:.0%} of the ceiling"
        return text if self.max_p99_ms is None else f"{text}, p99 < {self.max_p99_ms:g} ms"

    def met_by(self, measured: CaseResult, ceiling: CaseResult) -> bool:
        """Whether ``measured`` (a round of the case) meets the target against ``ceiling``."""
        r = measured.result
        share = r.rps / ceiling.result.rps if ceiling.result.rps else 0.0
        return (
            share >= self.min_share_of_ceiling
            and (self.max_p99_ms is None or r.p99_ms < self.max_p99_ms)
            and r.non2xx + r.socket_errors == 0
            and measured.durable
        )


#: Issue 19's targets (2 workers, c32, median of 3 rounds, durability check passing).
TARGETS = (
    Target("health", 0.80),
    Target("h1", 0.40, 20.0),
    Target("post", 0.30, 25.0),
)


@dataclass(frozen=True)
class CaseResult(Measurement):
    """A measured round of a case, with its durability check (:class:`Measurement`)."""

    case: Case
    round_no: int = 1


def build_cases(tickers: Sequence[str], posts: Sequence[load.PostTarget] = ()) -> list[Case]:
    """The load cases; the predict cases cycle over ``tickers``, the POST case over ``posts``."""
    return [
        Case(
            "ceiling",
            "0. ceiling: bare FastAPI app, GET / (same server and workers)",
            ["/"],
            False,
            server=CEILING,
        ),
        Case(
            "durable",
            "0b. durable ceiling: bare FastAPI app + one group-committed prediction_log row "
            "per request",
            ["/"],
            False,
            server=DURABLE,
        ),
        Case("health", "1. GET /health (no auth, no database)", ["/health"], False),
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
        Case(
            "post",
            "4. POST /predict/{ticker}?horizon=1, a fresh random window per request",
            [],
            True,
            posts=tuple(posts),
        ),
    ]


CASE_KEYS = [case.key for case in build_cases([])]


def post_targets(
    api: server.ApiServer, token: str, tickers: Sequence[str]
) -> list[load.PostTarget]:
    """The POST case's targets: each of ``tickers`` whose served model accepts closes, with
    its lookback and latest stored close (``GET /models``, then one ``GET /predict``).

    Raises:
        LoadError: no served model of ``tickers`` accepts closes.
    """
    served = {m["ticker"]: m for m in api.served_models()}
    targets = [
        load.PostTarget(
            path=f"/predict/{t}?horizon=1",
            lookback=int(served[t]["lookback"]),
            price=api.last_close(t, token),
        )
        for t in tickers
        if t in served and served[t]["accepts_closes"]
    ]
    if not targets:
        raise load.LoadError(
            f"the POST case needs a served model that accepts closes; none of {list(tickers)} "
            "does (GET /models: accepts_closes)"
        )
    return targets


def build_parser() -> argparse.ArgumentParser:
    """Options of ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured run per case")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up run per case")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure the cases this many times, interleaved (ceiling, health, h1, ..., "
        "ceiling, ...); the table shows each case's median round and every round",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument("--port", type=int, default=8765, help="the API's port")
    parser.add_argument(
        "--ceiling-port", type=int, default=None, help="the bare app's port (default: --port + 1)"
    )
    parser.add_argument(
        "--durable-port",
        type=int,
        default=None,
        help="the durable ceiling's port (default: --port + 2)",
    )
    parser.add_argument(
        "--database",
        default=BenchEnvironment.database,
        help="the benchmark's own Postgres database, dropped and re-created "
        "(another name lets two checkouts run at once)",
    )
    parser.add_argument("--cases", nargs="+", choices=CASE_KEYS, default=CASE_KEYS)
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
    ceiling: server.CeilingServer,
    durable: server.DurableCeilingServer | None,
    bench: BenchEnvironment,
    case: Case,
    token: str,
    args: argparse.Namespace,
    recorder: ProfileRecorder | None,
    round_no: int,
) -> CaseResult:
    script_path = bench.var_dir / f"{case.key}.lua"
    token_sent = token if case.authenticated else None
    script = (
        load.write_post_script(script_path, case.posts, token_sent)
        if case.posts
        else load.write_script(script_path, case.paths, token_sent)
    )
    target: server.ApiServer | server.CeilingServer | server.DurableCeilingServer = api
    if case.server == CEILING:
        target = ceiling
    elif case.server == DURABLE:
        if durable is None:
            raise load.LoadError("the durable ceiling's case needs its server (not started)")
        target = durable
    measurement = measure(
        api=api,
        target=target,
        script=script,
        warmup=args.warmup,
        seconds=args.seconds,
        connections=args.connections,
        threads=args.threads,
        label=case.label,
        recorder=recorder,
        profile_key=case.key,
    )
    measured = CaseResult(
        **measurement.values(),
        case=case,
        round_no=round_no,
    )
    result = measured.result
    logger.info(
        "round %d, %s: %.0f req/s, p50 %.2f ms, p99 %.2f ms, non-2xx %d; prediction_log "
        "+%d rows, %d dates served: %s",
        round_no, case.label, result.rps, result.p50_ms, result.p99_ms, result.non2xx,
        measured.rows_added, measured.points_served, "OK" if measured.durable else "MISMATCH",
    )  # fmt: skip
    return measured


def rounds_by_case(cases: Sequence[CaseResult]) -> dict[str, list[CaseResult]]:
    """The measured rounds of each case, by case key, in the order measured."""
    rounds: dict[str, list[CaseResult]] = {}
    for c in cases:
        rounds.setdefault(c.case.key, []).append(c)
    return rounds


def _share(part: CaseResult, whole: CaseResult | None) -> float | None:
    if whole is None or not whole.result.rps:
        return None
    return part.result.rps / whole.result.rps


def _same_round(of_case: Sequence[CaseResult], round_no: int) -> CaseResult | None:
    return next((c for c in of_case if c.round_no == round_no), None)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _share_each_round(
    c: CaseResult, of_case: Sequence[CaseResult], wholes: Sequence[CaseResult]
) -> str:
    """``c`` over the median of ``wholes``, and in brackets each of ``of_case`` over the same
    round of ``wholes`` (``-`` without ``wholes``), e.g. ``25% (20%, 25%, 31%)``."""
    if not wholes:
        return "-"
    each = ", ".join(_pct(_share(x, _same_round(wholes, x.round_no))) for x in of_case)
    return f"{_pct(_share(c, median_round(wholes)))} ({each})"


def case_table(cases: Sequence[CaseResult]) -> list[str]:
    """The Markdown table of the cases: each case's median round, every round beside it.

    Shares: the case's median round over the ceiling's (bare FastAPI app) median round, over
    ``/health``'s and over the durable ceiling's (the bare app plus one committed
    prediction_log row per request); in brackets each round over the same round's ceiling
    (or durable ceiling).
    """
    out = [
        "| case | requests/s (median round) | requests/s of each round | share of ceiling "
        "(each round) | share of /health | share of durable ceiling (each round) | p50 ms | "
        "p99 ms | p99 ms of each round | non-2xx | server CPU ms per req | machine CPU busy | "
        "requests per commit (mean/max) | prediction_log rows = dates served (all rounds) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rounds = rounds_by_case(cases)
    ceilings = rounds.get("ceiling", [])
    durables = rounds.get("durable", [])
    health = median_round(rounds["health"]) if "health" in rounds else None
    for of_case in rounds.values():
        c = median_round(of_case)
        r = c.result
        of_ceiling = _share_each_round(c, of_case, ceilings)
        of_durable = _share_each_round(c, of_case, durables)
        cpu_ms = c.worker_cpu_seconds / r.requests * 1000 if r.requests else 0.0
        busy = f"{c.machine_busy_pct:.0f}%"
        mean, most = c.per_commit
        batching = f"{mean:.1f} / {most}" if most else "-"
        durable = all(x.durable for x in of_case)
        rows, points = sum(x.rows_added for x in of_case), sum(x.points_served for x in of_case)
        check = (
            f"{'yes' if durable else 'NO'} ({rows} = {points})"
            if c.case.logs_predictions
            else f"{'yes' if durable else 'NO'} (no predictions: {rows} rows)"
        )
        each = ", ".join(f"{x.result.rps:,.0f}" for x in of_case)
        each_p99 = ", ".join(f"{x.result.p99_ms:.1f}" for x in of_case)
        out.append(
            f"| {c.case.label} | {r.rps:,.0f} | {each} | {of_ceiling} | "
            f"{_pct(_share(c, health))} | {of_durable} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{each_p99} | "
            f"{r.non2xx + r.socket_errors} | {cpu_ms:.2f} | {busy} | {batching} | {check} |"
        )
    return out


@dataclass(frozen=True)
class TargetVerdict:
    """A target judged on the median rounds, and on every round against its own ceiling.

    Attributes:
        target: the target.
        shown: the case's median round.
        share: its requests/s over the ceiling's median round.
        met: whether the median round meets the target against the ceiling's median round.
        rounds: ``(share, met)`` of each round, against the same round's ceiling.
        durable_share: for a case that logs predictions, its median round over the durable
            ceiling's median round (None when that was not measured, or for ``/health``).
        durable_rounds: each round over the same round's durable ceiling (None where missing).
    """

    target: Target
    shown: CaseResult
    share: float
    met: bool
    rounds: list[tuple[float, bool]]
    durable_share: float | None = None
    durable_rounds: list[float | None] = dataclasses.field(default_factory=list)


def evaluate_targets(cases: Sequence[CaseResult]) -> list[TargetVerdict]:
    """The verdict of each of :data:`TARGETS` whose case and the ceiling were measured."""
    rounds = rounds_by_case(cases)
    ceilings = rounds.get("ceiling")
    if not ceilings:
        return []
    ceiling = median_round(ceilings)
    durables = rounds.get("durable", [])
    durable = median_round(durables) if durables else None
    verdicts = []
    for target in TARGETS:
        of_case = rounds.get(target.case_key)
        if not of_case:
            continue
        shown = median_round(of_case)
        each = []
        for x in of_case:
            own = _same_round(ceilings, x.round_no) or ceiling
            each.append((_share(x, own) or 0.0, target.met_by(x, own)))
        logs = shown.case.logs_predictions and durable is not None
        verdicts.append(
            TargetVerdict(
                target=target,
                shown=shown,
                share=_share(shown, ceiling) or 0.0,
                met=target.met_by(shown, ceiling),
                rounds=each,
                durable_share=_share(shown, durable) if logs else None,
                durable_rounds=(
                    [_share(x, _same_round(durables, x.round_no)) for x in of_case] if logs else []
                ),
            )
        )
    return verdicts


def target_table(cases: Sequence[CaseResult]) -> list[str]:
    """The Markdown table of issue 19's targets: the verdict on the median rounds, how many
    rounds met it (a round also needs only 2xx responses and its durability check), and for
    the cases that log predictions their share of the durable ceiling (median round, and each
    round over the same round's), followed by the durable ceiling's own share of the ceiling:
    how much of each gap is the durable insert and how much the API."""
    verdicts = evaluate_targets(cases)
    if not verdicts:
        return ["Targets: not judged (the ceiling case or the target cases were not measured)."]
    out = [
        "| target (issue 19) | needed | median round | verdict | rounds that met it | "
        "share of the durable ceiling (each round) |",
        "|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        p99 = f", p99 {v.shown.result.p99_ms:.1f} ms" if v.target.max_p99_ms is not None else ""
        each = ", ".join(f"{share:.0%} {'met' if met else 'missed'}" for share, met in v.rounds)
        of_durable = (
            "-"
            if v.durable_share is None
            else f"{v.durable_share:.0%} ({', '.join(_pct(x) for x in v.durable_rounds)})"
        )
        out.append(
            f"| {v.shown.case.label} | {v.target.describe()} | {v.share:.0%}{p99} | "
            f"**{'met' if v.met else 'NOT met'}** | "
            f"{sum(met for _, met in v.rounds)} of {len(v.rounds)} ({each}) | {of_durable} |"
        )
    out += ["", durable_ceiling_note(cases)]
    return out


def durable_ceiling_note(cases: Sequence[CaseResult]) -> str:
    """One sentence: the durable ceiling's median round as a share of the ceiling's (each
    round over the same round's ceiling), i.e. what one durably committed row per request
    leaves of the ceiling on this host; or that it was not measured."""
    rounds = rounds_by_case(cases)
    durables, ceilings = rounds.get("durable"), rounds.get("ceiling")
    if not durables or not ceilings:
        return "Durable ceiling: not measured with the ceiling (no share of it)."
    d = median_round(durables)
    return (
        f"Durable ceiling (the bare app plus one group-committed prediction_log row per "
        f"request): {d.result.rps:,.0f} req/s in its median round, "
        f"{_share_each_round(d, durables, ceilings)} of the ceiling: what one row per request, "
        "committed before the answer, leaves of the ceiling on this host. A case's share of "
        "the ceiling is its share of the durable ceiling times this (median rounds)."
    )


#: Packages that decide what the server does per request (uvicorn picks uvloop and httptools
#: when they are installed).
SERVER_PACKAGES = ("uvicorn", "uvloop", "httptools", "granian", "fastapi", "starlette", "orjson")


def server_packages() -> str:
    """Installed versions of :data:`SERVER_PACKAGES`, e.g. ``uvicorn 0.30.1, uvloop 0.19.0``."""
    found = []
    for name in SERVER_PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


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
        f"- server packages (the API's and the ceiling's): {server_packages()}",
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
        "of the cases interleaved, each case's median round shown (by requests/s) with every "
        f"round beside it; API: `python -m app serve`, {args.workers} workers (uvicorn), bearer "
        "token, every prediction logged to Postgres (group commit) before its response; "
        f"ceiling: the bare FastAPI app of bench/bare_app.py on the same server, "
        f"{args.workers} workers; durable ceiling: the same bare app plus one prediction_log "
        "row per request, committed through the API's group-commit writer before its response "
        "(bench/durable_app.py). Shares of the ceiling, of /health and of the durable ceiling "
        "compare the median rounds; the shares in brackets compare each round with the same "
        "round's ceiling (or durable ceiling)."
    )
    out += case_table(cases)
    out += ["", *target_table(cases)]
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
        ceiling_port = args.ceiling_port or args.port + 1
        durable_port = args.durable_port or args.port + 2
        with contextlib.ExitStack() as servers:
            api = servers.enter_context(
                server.ApiServer(bench, expected_models=len(SNAPSHOT_TICKERS))
            )
            ceiling = servers.enter_context(server.CeilingServer(bench, port=ceiling_port))
            durable = (
                servers.enter_context(
                    server.DurableCeilingServer(
                        bench,
                        port=durable_port,
                        user_id=server.app_user_id(bench.database_url, username),
                    )
                )
                if "durable" in args.cases
                else None
            )
            token = api.token(username, password)
            posts = post_targets(api, token, SNAPSHOT_TICKERS) if "post" in args.cases else []
            cases = [c for c in build_cases(SNAPSHOT_TICKERS, posts) if c.key in args.cases]
            for round_no in range(1, args.rounds + 1):
                logger.info("round %d of %d", round_no, args.rounds)
                for case in cases:
                    results.append(
                        _run_case(
                            api=api,
                            ceiling=ceiling,
                            durable=durable,
                            bench=bench,
                            case=case,
                            token=token,
                            args=args,
                            # one profile per case: its first round
                            recorder=recorder if round_no == 1 else None,
                            round_no=round_no,
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
