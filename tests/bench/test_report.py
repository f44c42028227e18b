"""The benchmark's table: each case's median round, the ratio to bare, the target verdict."""

from __future__ import annotations

import argparse

from bench.__main__ import CaseResult, build_cases, median_round, render
from bench.load import LoadResult

CASES = {case.key: case for case in build_cases(["PETR4.SA"])}


def _round(key: str, requests: int, *, p99_ms: float = 10.0, durable: bool = True) -> CaseResult:
    points = requests if key != "bare" else 0
    return CaseResult(
        case=CASES[key],
        result=LoadResult(
            requests=requests, seconds=1.0, p50_ms=5.0, p99_ms=p99_ms, non2xx=0, socket_errors=0
        ),
        rows_added=points if durable else points - 1,
        points_served=points,
        worker_cpu_seconds=0.5,
        machine_busy_pct=95.0,
        per_commit=(4.0, 9) if key != "bare" else (0.0, 0),
    )


def _table(rounds: list[CaseResult]) -> str:
    args = argparse.Namespace(
        connections=32, threads=1, warmup=3.0, seconds=1.0, rounds=3, workers=2
    )
    return render(machine=[], args=args, cases=rounds, timings=[], prep=None, rss_mib=[])


def test_the_median_round_is_shown_with_every_round_beside_it() -> None:
    """Three rounds of 9,000 / 10,000 / 11,000 bare and 3,300 / 3,600 / 3,000 predictions:
    the table shows 10,000 and 3,300 (the medians), 33% of bare, and the target not met."""
    rounds = [
        _round("bare", 9_000), _round("h1", 3_300),
        _round("bare", 10_000), _round("h1", 3_600),
        _round("bare", 11_000), _round("h1", 3_000),
    ]  # fmt: skip
    table = _table(rounds)
    assert "| 10,000 | 9,000, 10,000, 11,000 |" in table
    assert "| 3,300 | 3,300, 3,600, 3,000 |" in table
    assert "| 33% |" in table
    assert "**NOT met** (33%, p99 10.00 ms)" in table


def test_the_target_needs_both_the_ratio_and_the_p99() -> None:
    """35% of bare with p99 under 25 ms is met; the same rate with a 30 ms p99 is not."""
    fast = _table([_round("bare", 10_000), _round("h1", 3_500, p99_ms=20.0)])
    slow = _table([_round("bare", 10_000), _round("h1", 3_500, p99_ms=30.0)])
    assert "**met** (35%, p99 20.00 ms)" in fast
    assert "**NOT met** (35%, p99 30.00 ms)" in slow


def test_every_rounds_p99_is_shown_so_a_tail_outside_the_median_round_is_visible() -> None:
    """The verdict uses the median round (by requests/s); the p99 of the other rounds,
    here 31.7 and 17.9 ms around a median round of 29.3 ms, is printed beside it."""
    table = _table([
        _round("bare", 9_000), _round("h1", 3_400, p99_ms=29.3),
        _round("bare", 9_000), _round("h1", 3_500, p99_ms=17.9),
        _round("bare", 9_000), _round("h1", 3_300, p99_ms=31.7),
    ])  # fmt: skip
    assert "| 3,400 | 3,400, 3,500, 3,300 | 5.00 | 29.30 | 29.3, 17.9, 31.7 |" in table


def test_a_round_that_lost_rows_fails_the_durability_column() -> None:
    """One round whose rows do not match its dates marks the case NO, summed over rounds."""
    table = _table([_round("h1", 100), _round("h1", 100, durable=False), _round("h1", 100)])
    assert "| NO (299 = 300) |" in table


def test_median_round_of_an_even_count_is_the_lower_middle() -> None:
    """Two rounds: the slower one is shown (never the better of two)."""
    slow, fast = _round("h1", 1_000), _round("h1", 2_000)
    assert median_round([fast, slow]) is slow
