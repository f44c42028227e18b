"""Validation rules on real and on deliberately broken bars."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from data_pipeline.processing.validation import Severity, clean_bars
from data_pipeline.sources.snapshot import SnapshotSource


def _clean(prices_dir: Path, ticker: str):
    raw = SnapshotSource(prices_dir).fetch(ticker, start=None)
    return raw, clean_bars(raw.frame, ticker=ticker, location=raw.location)


def test_b3_holiday_placeholders_are_rejected_with_ticker_date_and_rule(prices_dir: Path) -> None:
    """A zero-volume bar with O=H=L=C is a holiday placeholder, not a trade: never stored."""
    raw, result = _clean(prices_dir, "PETR4.SA")
    placeholders = [f for f in result.findings if f.rule == "zero_volume_placeholder"]
    assert placeholders, "the real PETR4.SA snapshot has holiday placeholder bars"
    first = placeholders[0]
    assert first.ticker == "PETR4.SA"
    assert first.severity is Severity.REJECTED
    assert first.location is not None and first.location.startswith("PETR4.SA.csv:")
    kept = set(result.bars["date"])
    assert all(f.date not in kept for f in placeholders)
    # The file line points at the offending row.
    line = int(first.location.split(":")[1])
    assert raw.frame.loc[line - 2, "date"] == first.date.isoformat()
    assert raw.frame.loc[line - 2, "volume"] == "0"


def test_ohlc_inconsistent_bar_is_rejected(prices_dir: Path) -> None:
    """CMIG4.SA 2013-01-22 closes above its own high: one of the prices is wrong."""
    _, result = _clean(prices_dir, "CMIG4.SA")
    bad_day = dt.date(2013, 1, 22)
    assert any(f.date == bad_day and f.rule == "ohlc_inconsistent" for f in result.findings)
    assert bad_day not in set(result.bars["date"])


def test_real_crash_is_kept_and_reported_as_warning(prices_dir: Path) -> None:
    """AAPL really fell 52 % on 2000-09-29: stored, with a large_move warning."""
    _, result = _clean(prices_dir, "AAPL")
    crash = dt.date(2000, 9, 29)
    warning = [f for f in result.findings if f.date == crash]
    assert [f.rule for f in warning] == ["large_move"]
    assert warning[0].severity is Severity.WARNING
    assert "-51" in warning[0].detail or "-52" in warning[0].detail
    assert crash in set(result.bars["date"])
    assert not [f for f in result.findings if f.severity is Severity.REJECTED]


def test_clean_bars_are_sorted_unique_and_consistent(prices_dir: Path) -> None:
    _, result = _clean(prices_dir, "BBAS3.SA")
    bars = result.bars
    assert bars["date"].is_monotonic_increasing and bars["date"].is_unique
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1) * (1 - 1e-4)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1) * (1 + 1e-4)).all()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        ("2023-01-04,abc,11,9,10,,100", "non_numeric"),
        ("2023-01-04,10,11,9,,,100", "missing_value"),
        ("2023-01-04,-10,11,9,10,,100", "non_positive_price"),
        ("2023-01-04,0,11,9,10,,100", "non_positive_price"),
        ("2023-01-04,10,9,11,10,,100", "high_below_low"),
        ("2023-01-04,10,11,9,12,,100", "ohlc_inconsistent"),
        ("2023-01-04,10,11,9,10,,-5", "negative_volume"),
        ("not-a-date,10,11,9,10,,100", "unparseable_date"),
        ("2999-01-04,10,11,9,10,,100", "future_date"),
    ],
)
def test_each_rule_names_file_line_and_rule(tmp_path: Path, row: str, rule: str) -> None:
    """The user sees ``FILE.csv:LINE TICKER DATE [rule] rejected: ...`` and the row is dropped."""
    lines = [
        "2023-01-02,10,11,9,10.5,,100",
        "2023-01-03,10,11,9,10.5,,100",
        row,
        "2023-01-05,10,11,9,10.5,,100",
    ]
    frame = pd.DataFrame(
        [line.split(",") for line in lines],
        columns=["date", "open", "high", "low", "close", "adj", "volume"],
    )
    result = clean_bars(frame, ticker="TEST", location="TEST.csv")
    rejected = [f for f in result.findings if f.severity is Severity.REJECTED]
    assert [(f.rule, f.location) for f in rejected] == [(rule, "TEST.csv:4")]
    assert "TEST.csv:4 TEST" in str(rejected[0]) and f"[{rule}]" in str(rejected[0])
    assert len(result.bars) == 3


def test_duplicate_dates_identical_keep_one_conflicting_keep_none() -> None:
    frame = pd.DataFrame(
        {
            "date": ["2023-01-02", "2023-01-02", "2023-01-03", "2023-01-03", "2023-01-04"],
            "open": [10, 10, 10, 10, 10],
            "high": [11, 11, 11, 12, 11],
            "low": [9, 9, 9, 9, 9],
            "close": [10, 10, 10, 10, 10],
            "volume": [5, 5, 5, 5, 5],
        }
    )
    result = clean_bars(frame, ticker="DUP")
    assert [d.isoformat() for d in result.bars["date"]] == ["2023-01-02", "2023-01-04"]
    dups = [f for f in result.findings if f.rule == "duplicate_date"]
    assert len(dups) == 3  # one identical copy, two conflicting rows
    assert {str(f.date) for f in dups} == {"2023-01-02", "2023-01-03"}
