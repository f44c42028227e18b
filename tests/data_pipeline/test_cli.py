"""``python -m data_pipeline`` as an operator runs it: real subprocess, real Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.data_pipeline.factories import copy_real, good_rows, write_csv

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, database_url: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PIPELINE_YAHOO_PACING_SECONDS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "data_pipeline", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
    )


def count_rows(url: str, ticker: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(text("select count(*) from price_bar where ticker = :t"), {"t": ticker})
            )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_malformed_files_are_reported_and_valid_tickers_still_stored(
    tmp_path: Path, prices_dir: Path, fresh_pg_url: str
) -> None:
    """One run, several broken CSVs: each error names the file, row/column and rule; exit 1."""
    snap = copy_real(prices_dir, tmp_path / "snap", "PETR4.SA")
    write_csv(
        snap, "NOCLOSE", ["2023-01-02,1,2,0.5,,1"], header="Date,Open,High,Low,Adj Close,Volume"
    )
    write_csv(
        snap, "BADROWS", [*good_rows(4), "2023-01-09,abc,11,9,10,,100", "2023-01-10,10,9,11,10,,5"]
    )
    result = run_cli(
        "ingest",
        "--source",
        "snapshot",
        "--snapshot-dir",
        str(snap),
        "--start",
        "2000-01-01",
        "--tickers",
        "NOCLOSE",
        "BADROWS",
        "PETR4.SA",
        database_url=fresh_pg_url,
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    by_ticker = {t["ticker"]: t for t in summary["tickers"]}
    assert not by_ticker["NOCLOSE"]["ok"]
    assert "NOCLOSE.csv" in by_ticker["NOCLOSE"]["error"]
    assert "missing column(s) Close" in by_ticker["NOCLOSE"]["error"]
    bad = by_ticker["BADROWS"]
    assert bad["ok"] and bad["inserted"] == 4 and bad["rejected"] == 2
    assert {(f["location"], f["rule"]) for f in bad["findings"]} == {
        ("BADROWS.csv:6", "non_numeric"),
        ("BADROWS.csv:7", "high_below_low"),
    }
    assert by_ticker["PETR4.SA"]["ok"]
    assert count_rows(fresh_pg_url, "PETR4.SA") == by_ticker["PETR4.SA"]["inserted"] > 3000
    assert count_rows(fresh_pg_url, "NOCLOSE") == 0
    assert (
        "[1/3] NOCLOSE failed" in result.stderr and "[3/3] PETR4.SA from snapshot" in result.stderr
    )


@pytest.mark.postgres
def test_invalid_ticker_is_a_clear_error_and_others_continue(
    prices_dir: Path, fresh_pg_url: str
) -> None:
    result = run_cli(
        "ingest",
        "--source",
        "snapshot",
        "--snapshot-dir",
        str(prices_dir),
        "--no-findings",
        "--tickers",
        "BAD TICKER!",
        "SPY",
        "NOTINSNAP",
        database_url=fresh_pg_url,
    )
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    errors = {t["ticker"]: t["error"] for t in summary["tickers"]}
    assert "invalid ticker 'BAD TICKER!'" in errors["BAD TICKER!"]
    assert "no file" in errors["NOTINSNAP"]
    assert errors["SPY"] is None
    assert count_rows(fresh_pg_url, "SPY") > 6000


def test_database_unreachable_is_one_clear_line_and_exit_3(tmp_path: Path) -> None:
    """No traceback wall: a single 'error: database unavailable at ...' line."""
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1
    result = run_cli("ingest", "--source", "snapshot", "--tickers", "SPY", database_url=url)
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "database unavailable at postgresql+psycopg://postgres@127.0.0.1:1/nowhere" in errors[0]
    assert result.stdout == ""


@pytest.mark.postgres
def test_second_identical_run_inserts_and_updates_nothing(
    prices_dir: Path, fresh_pg_url: str
) -> None:
    args = (
        "ingest",
        "--source",
        "snapshot",
        "--snapshot-dir",
        str(prices_dir),
        "--tickers",
        "CMIG4.SA",
        "AAPL",
        "--no-findings",
    )
    first = json.loads(run_cli(*args, database_url=fresh_pg_url).stdout)
    second = json.loads(run_cli(*args, database_url=fresh_pg_url).stdout)
    assert all(t["inserted"] > 3000 for t in first["tickers"])
    assert [(t["inserted"], t["updated"]) for t in second["tickers"]] == [(0, 0), (0, 0)]
    coverage = json.loads(run_cli("coverage", database_url=fresh_pg_url).stdout)
    assert [(c["ticker"], c["last_date"]) for c in coverage] == [
        ("AAPL", "2023-12-29"),
        ("CMIG4.SA", "2023-12-28"),
    ]


def test_bad_start_date_is_a_usage_error() -> None:
    result = run_cli("ingest", "--start", "yesterday", database_url="sqlite:///:memory:")
    assert result.returncode == 2
    assert "'yesterday' is not a date (YYYY-MM-DD)" in result.stderr
