"""The prediction_outcome view (migration 0006) and the five queries of docs/outcomes.md.

The test stores real PETR4.SA bars and a set of logged forecasts built by a small factory,
then checks the view and every documented query against values computed here from the CSV.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.models import PredictionLog
from common.price_store import PriceBar

DOC = Path(__file__).resolve().parent.parent / "docs" / "outcomes.md"
TICKER = "PETR4.SA"
#: bars stored up to here; forecasts whose target dates are later wait for their outcome
LAST_STORED = dt.date(2023, 12, 20)


def documented_queries() -> dict[str, str]:
    """``{name: sql}`` of the ```sql blocks of docs/outcomes.md marked ``-- query: name``."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    found = {}
    for block in blocks:
        marker = re.match(r"-- query: (\w+)\n", block)
        assert marker, f"a sql block of {DOC.name} has no '-- query: name' line"
        found[marker.group(1)] = block
    return found


def read_closes(prices_dir: Path) -> dict[dt.date, float]:
    with (prices_dir / f"{TICKER}.csv").open() as handle:
        return {dt.date.fromisoformat(r["Date"]): float(r["Close"]) for r in csv.DictReader(handle)}


@dataclass
class Logged:
    """A logged step and what the test expects of it."""

    row: dict[str, Any]
    realized: float | None


def make_log(closes: dict[dt.date, float]) -> list[Logged]:
    """Forecasts of horizon 3 from each session of 2023-12-11..2023-12-20, the model 2% off
    alternately up and down (version 1) or 1% (version 2); with bounds on every other origin,
    one forecast requested twice and one client forecast."""
    sessions = sorted(d for d in closes if d.year == 2023)
    origins = [d for d in sessions if dt.date(2023, 12, 11) <= d <= LAST_STORED]
    out: list[Logged] = []
    for k, origin in enumerate(origins):
        version = "1" if k < 4 else "2"
        repeats = 2 if k == 5 else 1
        source = "client" if k == 6 else "store"
        last = closes[origin]
        targets = [d for d in sessions if d > origin][:3]
        for _ in range(repeats):
            request_id = uuid.uuid4()
            for step, target in enumerate(targets, start=1):
                sign = 1 if (k + step) % 2 else -1
                predicted = last * (1 + sign * (0.02 if version == "1" else 0.01))
                width = 0.05 * last if k % 2 == 0 else None
                row = {
                    "request_id": request_id,
                    "ticker": TICKER,
                    "input_source": source,
                    "as_of_date": origin,
                    "target_date": target,
                    "horizon_step": step,
                    "predicted_close": predicted,
                    "last_close": last,
                    "model_name": f"stock-lstm-{TICKER}",
                    "model_version": version,
                    "latency_ms": 1.0,
                    "lower_80": predicted - width * 0.6 if width else None,
                    "upper_80": predicted + width * 0.6 if width else None,
                    "lower_95": predicted - width if width else None,
                    "upper_95": predicted + width if width else None,
                }
                out.append(Logged(row, closes[target] if target <= LAST_STORED else None))
    return out


def store(session: Session, closes: dict[dt.date, float], logged: list[Logged]) -> None:
    for day, close in closes.items():
        if dt.date(2023, 11, 1) <= day <= LAST_STORED:
            session.add(
                PriceBar(ticker=TICKER, date=day, open=close, high=close, low=close,
                         close=close, volume=1, currency="BRL", exchange="B3", source="snapshot")
            )  # fmt: skip
    session.add_all(PredictionLog(**item.row) for item in logged)
    session.flush()


@pytest.fixture
def logged(pg_session: Session, prices_dir: Path) -> list[Logged]:
    closes = read_closes(prices_dir)
    items = make_log(closes)
    store(pg_session, closes, items)
    return items


def realized_items(logged: list[Logged]) -> list[tuple[dict[str, Any], float]]:
    return [(i.row, i.realized) for i in logged if i.realized is not None]


def covered(row: dict[str, Any], level: int, realized: float) -> int | None:
    lower, upper = row[f"lower_{level}"], row[f"upper_{level}"]
    return None if lower is None else int(lower <= realized <= upper)


@pytest.mark.postgres
def test_each_logged_step_has_its_outcome(pg_session: Session, logged: list[Logged]) -> None:
    """Realized close, errors, naive errors, direction and coverage per step; NULL while the
    target date has no bar."""
    rows = pg_session.execute(
        text("SELECT * FROM prediction_outcome ORDER BY prediction_log_id")
    ).mappings().all()  # fmt: skip
    assert len(rows) == len(logged)
    for row, item in zip(rows, logged, strict=True):
        assert row["target_date"] == item.row["target_date"]
        realized = item.realized
        if realized is None:
            assert row["realized_close"] is None and row["ape"] is None
            assert row["direction_hit"] is None and row["covered_95"] is None
            continue
        predicted, last = item.row["predicted_close"], item.row["last_close"]
        assert row["realized_close"] == pytest.approx(realized)
        assert row["error"] == pytest.approx(predicted - realized)
        assert row["ape"] == pytest.approx(100 * abs(predicted - realized) / realized)
        assert row["naive_abs_error"] == pytest.approx(abs(last - realized))
        same_way = (predicted - last) * (realized - last) > 0
        assert row["direction_hit"] == int(same_way)
        assert row["covered_80"] == covered(item.row, 80, realized)
        assert row["covered_95"] == covered(item.row, 95, realized)


def run(session: Session, name: str) -> list[dict[str, Any]]:
    return [dict(r) for r in session.execute(text(documented_queries()[name])).mappings()]


def test_the_doc_has_the_five_queries() -> None:
    """Rolling MAE, model vs naive, coverage, worst misses, waiting."""
    assert set(documented_queries()) == {
        "rolling_mae", "model_vs_naive", "coverage", "worst_misses", "waiting"
    }  # fmt: skip


@pytest.mark.postgres
def test_rolling_mae_query(pg_session: Session, logged: list[Logged]) -> None:
    """Per target date the MAE of its steps, and the mean of the last 20 such MAEs."""
    by_day: dict[tuple[str, dt.date], list[float]] = defaultdict(list)
    for row, realized in realized_items(logged):
        by_day[(row["model_version"], row["target_date"])].append(
            abs(row["predicted_close"] - realized)
        )
    got = run(pg_session, "rolling_mae")
    assert [(r["model_version"], r["target_date"]) for r in got] == sorted(by_day)
    history: dict[str, list[float]] = defaultdict(list)
    for r in got:
        errors = by_day[(r["model_version"], r["target_date"])]
        history[r["model_version"]].append(sum(errors) / len(errors))
        assert r["n"] == len(errors)
        assert float(r["mae"]) == pytest.approx(history[r["model_version"]][-1])
        window = history[r["model_version"]][-20:]
        assert float(r["rolling_mae_20"]) == pytest.approx(sum(window) / len(window))


@pytest.mark.postgres
def test_model_vs_naive_query_counts_each_forecast_once(
    pg_session: Session, logged: list[Logged]
) -> None:
    """A forecast requested twice counts once; client forecasts are left out."""
    forecasts: dict[tuple[str, int], dict[dt.date, tuple[float, float]]] = defaultdict(dict)
    for row, realized in realized_items(logged):
        if row["input_source"] == "store":
            forecasts[(row["model_version"], row["horizon_step"])][row["as_of_date"]] = (
                abs(row["predicted_close"] - realized),
                abs(row["last_close"] - realized),
            )
    got = run(pg_session, "model_vs_naive")
    assert [(r["model_version"], r["horizon_step"]) for r in got] == sorted(forecasts)
    for r in got:
        pairs = list(forecasts[(r["model_version"], r["horizon_step"])].values())
        mae = sum(p[0] for p in pairs) / len(pairs)
        naive = sum(p[1] for p in pairs) / len(pairs)
        assert r["n"] == len(pairs)
        assert float(r["mae"]) == pytest.approx(mae)
        assert float(r["naive_mae"]) == pytest.approx(naive)
        assert float(r["relative_mae"]) == pytest.approx(mae / naive)


@pytest.mark.postgres
def test_coverage_query(pg_session: Session, logged: list[Logged]) -> None:
    """Coverage in percent over the steps that have bounds."""
    hits: dict[str, dict[int, list[int]]] = defaultdict(lambda: {80: [], 95: []})
    for row, realized in realized_items(logged):
        for level in (80, 95):
            value = covered(row, level, realized)
            if value is not None:
                hits[row["model_version"]][level].append(value)
    got = run(pg_session, "coverage")
    assert [r["model_version"] for r in got] == sorted(hits)
    for r in got:
        levels = hits[r["model_version"]]
        assert r["n"] == len(levels[95])
        for level in (80, 95):
            expected = 100 * sum(levels[level]) / len(levels[level])
            assert float(r[f"coverage_{level}_pct"]) == pytest.approx(expected)


@pytest.mark.postgres
def test_worst_misses_query(pg_session: Session, logged: list[Logged]) -> None:
    """The ten largest absolute percent errors, largest first."""
    apes = sorted(
        (100 * abs(row["predicted_close"] - realized) / realized for row, realized in
         realized_items(logged)),
        reverse=True,
    )  # fmt: skip
    got = run(pg_session, "worst_misses")
    assert [r["ape"] for r in got] == pytest.approx(apes[:10])


@pytest.mark.postgres
def test_waiting_query(pg_session: Session, logged: list[Logged]) -> None:
    """Target dates after the last stored bar, with their step counts, marked overdue (past)."""
    waiting: dict[dt.date, int] = defaultdict(int)
    for item in logged:
        if item.realized is None:
            waiting[item.row["target_date"]] += 1
    got = run(pg_session, "waiting")
    assert [(r["target_date"], r["steps"]) for r in got] == sorted(waiting.items())
    assert {r["status"] for r in got} == {"overdue"}  # 2023 dates are past


def test_the_view_and_the_queries_run_on_sqlite(sqlite_url: str, prices_dir: Path) -> None:
    """The embedded database of ``make run`` has the same view and runs the same queries."""
    engine = create_engine(sqlite_url)
    closes = read_closes(prices_dir)
    items = make_log(closes)
    try:
        with Session(engine) as session:
            store(session, closes, items)
            for name in documented_queries():
                assert run(session, name), f"query {name} returned nothing on SQLite"
            apes = session.scalars(
                text("SELECT ape FROM prediction_outcome ORDER BY prediction_log_id")
            ).all()
    finally:
        engine.dispose()
    for ape, item in zip(apes, items, strict=True):
        if item.realized is None:
            assert ape is None
        else:
            expected = 100 * abs(item.row["predicted_close"] - item.realized) / item.realized
            assert ape == pytest.approx(expected)
