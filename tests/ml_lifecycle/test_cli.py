"""``python -m ml_lifecycle`` in a subprocess, as an operator runs it: real Postgres, a real
MLflow store in a temp dir, exit codes and the messages a person reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from common.db import create_db_engine
from tests.ml_lifecycle.conftest import TICKER, TINY_BARS, TINY_TICKER, store_bars

TINY_FLAGS = [
    "--lookback",
    "20",
    "--units",
    "8",
    "--epochs",
    "2",
    "--patience",
    "2",
    "--history-bars",
    "600",
    "--folds",
    "2",
    "--fold-bars",
    "30",
]


def run_cli(args: list[str], *, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    return subprocess.run(
        [sys.executable, "-m", "ml_lifecycle", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def stored_db_url(fresh_pg_url: str, prices_dir: Path) -> str:
    """A Postgres database of the test's own holding PETR4.SA and TINY.SA."""
    engine = create_db_engine(fresh_pg_url)
    with Session(engine) as session:
        store_bars(session, prices_dir)
        session.commit()
    engine.dispose()
    return fresh_pg_url


@pytest.mark.postgres
@pytest.mark.slow
def test_bad_tickers_get_clear_errors_while_the_others_train_and_exit_is_nonzero(
    stored_db_url: str, tmp_path: Path
):
    """The user sees, per bad ticker, an error naming it and its bar counts; the good ticker
    is still trained and registered; the JSON summary says which failed; exit code 1."""
    env = {"DATABASE_URL": stored_db_url, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    result = run_cli(
        ["train", "--tickers", "NOPE.SA", TINY_TICKER, TICKER, *TINY_FLAGS], cwd=tmp_path, **env
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    by_ticker = {t["ticker"]: t for t in summary["tickers"]}
    assert summary["ok"] is False
    assert not by_ticker["NOPE.SA"]["ok"]
    assert by_ticker["NOPE.SA"]["error"].startswith("NOPE.SA: 0 bars stored, need at least")
    assert by_ticker[TINY_TICKER]["error"].startswith(
        f"{TINY_TICKER}: {TINY_BARS} bars stored, need at least"
    )
    good = by_ticker[TICKER]
    assert good["ok"] and good["version"] == "1" and good["alias"] == "champion"
    assert {"relative_mae", "dm_pvalue", "coverage_80", "coverage_95"} <= set(good["metrics"])
    assert f"{TICKER} fold 1/2" in result.stderr and f"{TICKER} fold 2/2" in result.stderr
    assert "NOPE.SA: 0 bars stored" in result.stderr
    assert (tmp_path / "var" / "reports" / TICKER / f"{TICKER}_walk_forward.png").is_file()

    # --missing-only skips the ticker that now has a champion
    again = run_cli(["train", "--missing-only", "--tickers", TICKER], cwd=tmp_path, **env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["tickers"] == []
    assert f"{TICKER} already has a champion; skipped" in again.stderr

    # evaluate re-scores the champion; a ticker without one is an error, exit 1
    evaluated = run_cli(["evaluate", "--tickers", TICKER, TINY_TICKER], cwd=tmp_path, **env)
    assert evaluated.returncode == 1
    document = json.loads(evaluated.stdout)
    assert document["tickers"][0]["ok"] and document["tickers"][0]["version"] == "1"
    assert "no champion" in document["tickers"][1]["error"]

    # the table of make evaluate
    (tmp_path / "summary.json").write_text(result.stdout, encoding="utf-8")
    table = run_cli(["report", "summary.json"], cwd=tmp_path, **env)
    assert table.returncode == 0
    assert "| rel. MAE vs naive | DM p |" in table.stdout
    assert f"| {TICKER} |" in table.stdout and "| NOPE.SA | failed: NOPE.SA: 0 bars" in table.stdout


def test_unreachable_mlflow_is_one_clear_line_and_exit_3(tmp_path: Path):
    """The user sees one line naming the tracking URI, no traceback, exit code 3."""
    result = run_cli(
        ["train", "--tickers", TICKER],
        cwd=tmp_path,
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
        DATABASE_URL=f"sqlite:///{tmp_path}/none.db",
    )
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: MLflow tracking store unavailable at http://127.0.0.1:9")


def test_unreachable_database_is_a_clear_error_and_exit_3(tmp_path: Path):
    """The user sees 'database unavailable' with the redacted URL, no traceback, exit code 3."""
    result = run_cli(
        ["train", "--tickers", TICKER],
        cwd=tmp_path,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
        DATABASE_URL="postgresql+psycopg://stockcast:secret@127.0.0.1:1/stockcast",
    )
    assert result.returncode == 3
    assert (
        "error: database unavailable at postgresql+psycopg://stockcast:***@127.0.0.1:1"
        in result.stderr
    )
    assert "secret" not in result.stderr and "Traceback" not in result.stderr


def test_invalid_config_is_a_usage_error_exit_2(tmp_path: Path):
    """A bad hyperparameter is named in one error line; exit code 2; nothing is trained."""
    result = run_cli(
        ["train", "--tickers", TICKER, "--dropout", "1.5"],
        cwd=tmp_path,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
        DATABASE_URL=f"sqlite:///{tmp_path}/none.db",
    )
    assert result.returncode == 2
    assert "error: invalid training config" in result.stderr and "dropout" in result.stderr


def attempted_tickers(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The tickers a ``train`` run worked on, from its JSON summary."""
    return [t["ticker"] for t in json.loads(result.stdout)["tickers"]]


def test_two_shards_together_train_every_ticker_exactly_once(sqlite_url: str, tmp_path: Path):
    """``train --shard 0/2`` and ``--shard 1/2`` (two pods of an Indexed Job) split the list.

    The store is empty, so each chosen ticker stops at its bar count, without training: the
    summary still names every ticker the run worked on.
    """
    tickers = ["PETR4.SA", "VALE3.SA", "BBAS3.SA", "CMIG4.SA", "AAPL", "MSFT", "SPY"]
    env = {"DATABASE_URL": sqlite_url, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    runs = [
        run_cli(["train", "--shard", shard, "--tickers", *tickers], cwd=tmp_path, **env)
        for shard in ("0/2", "1/2")
    ]
    first, second = (attempted_tickers(run) for run in runs)
    assert sorted(first + second) == sorted(tickers)
    assert abs(len(first) - len(second)) <= 1
    assert f"shard 0/2: {' '.join(first)}" in runs[0].stderr
    assert all("0 bars stored" in run.stderr for run in runs)


def test_a_bad_shard_is_a_usage_error_exit_2(tmp_path: Path):
    result = run_cli(["train", "--shard", "2/2"], cwd=tmp_path)
    assert result.returncode == 2
    assert "argument --shard: invalid shard '2/2': use INDEX/COUNT" in result.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_stale_only_trains_a_ticker_without_champion_then_skips_the_fresh_one(
    stored_db_url: str, tmp_path: Path
):
    """The schedule's command: the first run trains (no champion yet), the next one finds
    the champion fresh (0 bars behind, no drift) and skips it, saying so."""
    env = {"DATABASE_URL": stored_db_url, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    first = run_cli(
        ["train", "--stale-only", "--tickers", TICKER, *TINY_FLAGS], cwd=tmp_path, **env
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert [t["ticker"] for t in json.loads(first.stdout)["tickers"]] == [TICKER]
    assert f"{TICKER}: no champion yet" in first.stderr
    again = run_cli(
        ["train", "--stale-only", "--tickers", TICKER, *TINY_FLAGS], cwd=tmp_path, **env
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["tickers"] == []
    assert f"{TICKER}: champion v1 fresh: 0 bars behind" in again.stderr
