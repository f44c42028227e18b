"""The batch containers' commands as compose, cron and a Kubernetes CronJob run them.

``python -m data_pipeline schedule`` is the pipeline image's default command: long-running on
``PIPELINE_SCHEDULE_CRON``; ``schedule --once`` is the one-shot form. Real subprocesses, a
real migrated database, the shipped CSV snapshot (Yahoo cannot be reached from tests).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO_ROOT

TWO_TICKERS = '["PETR4.SA","AAPL"]'


def next_fire_then_sigterm(proc: subprocess.Popen[str]) -> tuple[str, dt.datetime, str]:
    """Read a scheduler's 'next run at' log line, then stop it like ``docker stop`` does.

    Returns the line, the fire time it announces, and the rest of its stderr after SIGTERM.
    """
    try:
        assert proc.stderr is not None
        line = next(line for line in proc.stderr if "next run at" in line)
        fire = dt.datetime.fromisoformat(line.strip().rsplit(" ", 1)[-1])
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return line, fire, rest


def pipeline_env(database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "PIPELINE_TICKERS": TWO_TICKERS,
        "PIPELINE_YAHOO_PACING_SECONDS": "0",
        "TZ": "UTC",
        **extra,
    }


def stored_tickers(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select ticker, count(*) from price_bar group by ticker"))
            return {ticker: int(n) for ticker, n in rows}
    finally:
        engine.dispose()


def test_schedule_once_ingests_the_default_tickers_and_exits_with_the_ingest_status(
    sqlite_url: str,
) -> None:
    """What a Kubernetes CronJob runs: one ingest of PIPELINE_TICKERS, exit 0, bars stored."""
    result = subprocess.run(
        [sys.executable, "-m", "data_pipeline", "schedule", "--once", "--source", "snapshot"],
        capture_output=True,
        text=True,
        env=pipeline_env(sqlite_url, PIPELINE_SCHEDULE_CRON="this is not used with --once"),
        cwd=REPO_ROOT,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ingest: run started" in result.stderr
    assert "with exit status 0" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["ok"] is True
    assert [t["ticker"] for t in summary["tickers"]] == ["PETR4.SA", "AAPL"]
    counts = stored_tickers(sqlite_url)
    assert set(counts) == {"PETR4.SA", "AAPL"}
    assert min(counts.values()) > 1000  # years of daily bars each


def test_schedule_with_an_invalid_cron_exits_2_naming_the_variable_and_expression(
    sqlite_url: str,
) -> None:
    """A typo in PIPELINE_SCHEDULE_CRON: the container exits at once with the reason, exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "data_pipeline", "schedule"],
        capture_output=True,
        text=True,
        env=pipeline_env(sqlite_url, PIPELINE_SCHEDULE_CRON="0 22 * * 1-5 extra"),
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "error: PIPELINE_SCHEDULE_CRON: invalid cron expression '0 22 * * 1-5 extra'" in (
        result.stderr
    )
    assert "expected 5 fields" in result.stderr
    assert stored_tickers(sqlite_url) == {}


@pytest.mark.parametrize(
    ("cron", "weekdays", "hour"),
    [("0 22 * * 1-5", {1, 2, 3, 4, 5}, 22), ("0 3 * * 6", {6}, 3)],
)
def test_long_running_schedule_logs_the_next_fire_time_and_stops_on_sigterm(
    sqlite_url: str, cron: str, weekdays: set[int], hour: int
) -> None:
    """``docker compose up``: the log says when the next ingest runs; ``docker stop`` exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_pipeline", "schedule"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=pipeline_env(sqlite_url, PIPELINE_SCHEDULE_CRON=cron),
        cwd=REPO_ROOT,
    )
    line, fire, rest = next_fire_then_sigterm(proc)
    assert f"ingest: scheduled with cron '{cron}'" in line
    assert fire.isoweekday() in weekdays
    assert (fire.hour, fire.minute) == (hour, 0)
    assert fire.utcoffset() == dt.timedelta(0)  # TZ=UTC
    assert dt.timedelta(0) < fire - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7)
    assert proc.returncode == 0
    assert "ingest: received SIGTERM, stopping" in rest
    assert stored_tickers(sqlite_url) == {}  # nothing ran before the first fire time


def ml_env(database_url: str, tracking_uri: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "TZ": "UTC",
        **extra,
    }


def test_ml_schedule_with_an_invalid_cron_exits_2_naming_the_variable(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A typo in ML_SCHEDULE_CRON: the training container exits at once with the reason."""
    result = subprocess.run(
        [sys.executable, "-m", "ml_lifecycle", "schedule"],
        capture_output=True,
        text=True,
        env=ml_env(sqlite_url, f"sqlite:///{tmp_path / 'mlflow.db'}", ML_SCHEDULE_CRON="0 3 * *"),
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "error: ML_SCHEDULE_CRON: invalid cron expression '0 3 * *'" in result.stderr


def test_ml_schedule_defaults_to_saturday_0300_and_stops_on_sigterm(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = ml_env(sqlite_url, f"sqlite:///{tmp_path / 'mlflow.db'}")
    env.pop("ML_SCHEDULE_CRON", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_lifecycle", "schedule"],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,  # no .env here: the default applies
    )
    line, fire, rest = next_fire_then_sigterm(proc)
    assert "train: scheduled with cron '0 3 * * 6'" in line
    assert (fire.isoweekday(), fire.hour, fire.minute) == (6, 3, 0)  # Saturday 03:00
    assert proc.returncode == 0
    assert "train: received SIGTERM, stopping" in rest


@pytest.mark.slow
def test_ml_schedule_once_trains_and_registers_a_champion(
    tmp_path: Path, sqlite_url: str, prices_dir: Path
) -> None:
    """The training CronJob: one run of ``train`` on ML_TICKERS, exit 0, a champion registered."""
    ingest = subprocess.run(
        [sys.executable, "-m", "data_pipeline", "ingest", "--source", "snapshot",
         "--snapshot-dir", str(prices_dir), "--tickers", "PETR4.SA", "--no-findings"],
        capture_output=True, text=True, env=pipeline_env(sqlite_url), cwd=REPO_ROOT,
        timeout=300, check=False,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(
        "lookback: 20\nunits: 8\nepochs: 2\nhistory_bars: 800\nfolds: 2\nfold_bars: 30\n"
    )
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "ml_lifecycle", "schedule", "--once"],
        capture_output=True,
        text=True,
        env=ml_env(
            sqlite_url, tracking_uri, ML_TICKERS='["PETR4.SA"]', ML_CONFIG_PATH=str(tiny),
            ML_REPORTS_DIR=str(tmp_path / "reports"), ML_SCHEDULE_CRON="not used with --once",
        ),
        cwd=tmp_path,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train: run started" in result.stderr
    assert "train: run finished in" in result.stderr
    assert "with exit status 0" in result.stderr
    summary = json.loads(result.stdout)
    assert [t["ticker"] for t in summary["tickers"]] == ["PETR4.SA"]
    from ml_lifecycle.registry import has_champion  # noqa: PLC0415
    from ml_lifecycle.tracking import Tracking  # noqa: PLC0415

    assert has_champion(Tracking(tracking_uri).client(), "stock-lstm-PETR4.SA")
