"""Preparing the benchmark: database, migrations, the timed ingest, champions, the timed
training run and the bench user. Every step runs the project's own command line.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass

from sqlalchemy import create_engine, text

from bench.environment import REPO_ROOT, BenchEnvironment
from common.tickers import SNAPSHOT_TICKERS

logger = logging.getLogger(__name__)

#: The ticker of the timed training run (default config, into a throwaway MLflow store).
TIMED_TRAINING_TICKER = "PETR4.SA"


class PrepareError(RuntimeError):
    """A preparation command failed; the message names it and ends with its stderr."""


@dataclass(frozen=True)
class Preparation:
    """What preparing measured.

    Attributes:
        ingest_seconds: wall time of ingesting the seven snapshot tickers from 2000-01-01
            into an empty database (the whole command, seconds).
        ingest_bars: bars stored by that ingest.
        train_seconds: wall time of training one ticker with the default config (the whole
            command, TensorFlow import included, seconds).
        train_fit_seconds: of which fitting the network (``train_seconds`` of its summary).
        trained_missing: tickers whose champion had to be trained first.
    """

    ingest_seconds: float
    ingest_bars: int
    train_seconds: float
    train_fit_seconds: float
    trained_missing: list[str]


def _run(what: str, args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    logger.info("%s: %s", what, " ".join(args[1:]))
    done = subprocess.run(  # noqa: S603 - our own interpreter and modules
        args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, input=stdin, check=False
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise PrepareError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def recreate_database(bench: BenchEnvironment) -> None:
    """Drop and create the benchmark database, then ``alembic upgrade head`` on it."""
    admin = create_engine(bench.postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{bench.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{bench.database}"'))
    finally:
        admin.dispose()
    alembic = str(REPO_ROOT / ".venv" / "bin" / "alembic")
    if not shutil.which(alembic):
        alembic = "alembic"
    _run("migrate", [alembic, "upgrade", "head"], bench.env())


def prepare(bench: BenchEnvironment) -> Preparation:
    """Everything the load cases need; returns the ingest and training timings.

    Raises:
        PrepareError: a command failed (Postgres down, training failed ...).
    """
    bench.var_dir.mkdir(parents=True, exist_ok=True)
    py = bench.python()
    recreate_database(bench)

    began = time.perf_counter()
    out = _run(
        "ingest (timed)",
        [py, "-m", "data_pipeline", "ingest", "--source", "snapshot", "--start", "2000-01-01",
         "--no-findings", "--tickers", *SNAPSHOT_TICKERS],
        bench.env(),
    )  # fmt: skip
    ingest_seconds = time.perf_counter() - began
    summary = json.loads(out)
    bad = [t["ticker"] for t in summary["tickers"] if not t["ok"]]
    if bad:
        raise PrepareError(f"ingest failed for {bad}")
    bars = sum(int(t["inserted"]) + int(t["updated"]) for t in summary["tickers"])

    out = _run(
        "train missing champions",
        [py, "-m", "ml_lifecycle", "train", "--missing-only", "--tickers", *SNAPSHOT_TICKERS],
        bench.env(),
    )
    trained = [t["ticker"] for t in json.loads(out)["tickers"] if t.get("run_id")]

    timed_dir = bench.var_dir / "timed-training"
    shutil.rmtree(timed_dir, ignore_errors=True)
    timed_dir.mkdir(parents=True)
    began = time.perf_counter()
    out = _run(
        "train one ticker (timed)",
        [py, "-m", "ml_lifecycle", "train", "--tickers", TIMED_TRAINING_TICKER,
         "--reports-dir", str(timed_dir / "reports")],
        bench.env(MLFLOW_TRACKING_URI=f"sqlite:///{timed_dir / 'mlflow.db'}"),
    )  # fmt: skip
    train_seconds = time.perf_counter() - began
    fit = json.loads(out)["tickers"][0]
    if not fit["ok"]:
        raise PrepareError(f"timed training failed: {fit.get('error')}")
    return Preparation(
        ingest_seconds=ingest_seconds,
        ingest_bars=bars,
        train_seconds=train_seconds,
        train_fit_seconds=float(fit["train_seconds"]),
        trained_missing=trained,
    )


def create_bench_user(bench: BenchEnvironment, username: str, password: str) -> None:
    """Create the load generator's user with ``python -m app create-user`` (password on stdin)."""
    _run(
        "create bench user",
        [bench.python(), "-m", "app", "create-user", username],
        bench.env(),
        stdin=password + "\n",
    )
