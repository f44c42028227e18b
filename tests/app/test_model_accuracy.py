"""GET /models/{ticker}/accuracy and the realized-accuracy gauges."""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.features.model_accuracy.gauges import refresh_accuracy_gauges
from app.models import PredictionLog
from tests.app.conftest import TICKER, TICKER_WITHOUT_MODEL, Registry

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def csv_closes(prices_dir: Path) -> dict[dt.date, float]:
    with (prices_dir / f"{TICKER}.csv").open() as handle:
        return {dt.date.fromisoformat(r["Date"]): float(r["Close"]) for r in csv.DictReader(handle)}


def log_rows(
    closes: dict[dt.date, float], *, version: str, origins: list[dt.date], drift: float
) -> list[dict[str, Any]]:
    """Horizon-2 forecasts from each origin: ``last_close * (1 + drift)`` for step 1 and
    ``(1 - drift)`` for step 2, 95% bounds of +-1.5% around the forecast."""
    sessions = sorted(closes)
    rows = []
    for origin in origins:
        request_id = uuid.uuid4()
        targets = [d for d in sessions if d > origin][:2]
        for step, (target, sign) in enumerate(zip(targets, (1, -1), strict=True), start=1):
            predicted = closes[origin] * (1 + sign * drift)
            rows.append(
                {
                    "request_id": request_id, "ticker": TICKER, "input_source": "store",
                    "as_of_date": origin, "target_date": target, "horizon_step": step,
                    "predicted_close": predicted, "last_close": closes[origin],
                    "model_name": f"stock-lstm-{TICKER}", "model_version": version,
                    "latency_ms": 1.0, "lower_95": predicted * 0.985,
                    "upper_95": predicted * 1.015,
                }
            )  # fmt: skip
    return rows


def expected(rows: list[dict[str, Any]], closes: dict[dt.date, float]) -> dict[str, float]:
    """MAE, naive MAE, relative MAE, directional accuracy and 95% coverage, by hand."""
    errors, naive, hits, covered = [], [], [], []
    for r in rows:
        real = closes[r["target_date"]]
        errors.append(abs(r["predicted_close"] - real))
        naive.append(abs(r["last_close"] - real))
        up_predicted = r["predicted_close"] > r["last_close"]
        hits.append(up_predicted == (real > r["last_close"]))
        covered.append(r["lower_95"] <= real <= r["upper_95"])
    mae, naive_mae = sum(errors) / len(errors), sum(naive) / len(naive)
    return {
        "n": len(rows),
        "mae": mae,
        "naive_mae": naive_mae,
        "relative_mae": mae / naive_mae,
        "directional_accuracy": 100 * sum(hits) / len(hits),
        "coverage_95": 100 * sum(covered) / len(covered),
    }


@pytest.fixture
def realized_log(
    app_sessions: Callable[[], Session], registry: Registry, prices_dir: Path
) -> Iterator[dict[str, Any]]:
    """The champion's forecasts from 2023-12-01..2023-12-15 (one logged twice) and an older
    version's from 2023-11; removed afterwards."""
    closes = csv_closes(prices_dir)
    december = [d for d in sorted(closes) if dt.date(2023, 12, 1) <= d <= dt.date(2023, 12, 15)]
    november = [d for d in sorted(closes) if dt.date(2023, 11, 6) <= d <= dt.date(2023, 11, 10)]
    champion = log_rows(closes, version=registry.version, origins=december, drift=0.01)
    again = [{**r, "request_id": uuid.UUID(int=1)} for r in champion[:2]]
    older = log_rows(closes, version="0", origins=november, drift=0.02)
    with app_sessions() as session:
        session.add_all(PredictionLog(**r) for r in champion + again + older)
        session.commit()
    yield {"closes": closes, "champion": champion, "older": older}
    with app_sessions() as session:
        ids = {r["request_id"] for r in champion + again + older}
        session.execute(delete(PredictionLog).where(PredictionLog.request_id.in_(ids)))
        session.commit()


def test_no_realized_outcomes_yet_is_200_with_n_0(
    client: TestClient, user_headers: dict[str, str], registry: Registry
) -> None:
    """Forecasts whose target dates have no bar yet: n = 0 and null metrics, not an error."""
    client.get(f"/predict/{TICKER}?horizon=3", headers=user_headers)  # dated 2024: no bars
    response = client.get(f"/models/{TICKER}/accuracy", headers=user_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["ticker"], body["window"], body["n"]) == (TICKER, 60, 0)
    assert body["model_version"] == registry.version
    assert body["mae"] is None and body["relative_mae"] is None and body["versions"] == []


def test_realized_accuracy_of_the_champion_and_of_each_version(
    client: TestClient, user_headers: dict[str, str], realized_log: dict[str, Any]
) -> None:
    """The champion's numbers are those computed by hand from the CSV closes; a forecast
    logged twice counts once; the older version is reported on its own."""
    closes = realized_log["closes"]
    body = client.get(f"/models/{TICKER}/accuracy?window=60", headers=user_headers).json()
    want = expected(realized_log["champion"], closes)
    for key, value in want.items():
        assert body[key] == pytest.approx(value), key
    assert body["coverage_80"] is None  # no 80% bounds logged
    versions = {v["model_version"]: v for v in body["versions"]}
    older = expected(realized_log["older"], closes)
    assert versions["0"]["mae"] == pytest.approx(older["mae"])
    assert versions["0"]["n"] == older["n"]
    assert versions[body["model_version"]]["mae"] == pytest.approx(want["mae"])


def test_window_counts_the_last_realized_target_dates(
    client: TestClient, user_headers: dict[str, str], realized_log: dict[str, Any]
) -> None:
    """window=2: only the forecasts whose target date is one of the last two."""
    rows = realized_log["champion"]
    last_two = sorted({r["target_date"] for r in rows})[-2:]
    kept = [r for r in rows if r["target_date"] in last_two]
    body = client.get(f"/models/{TICKER}/accuracy?window=2", headers=user_headers).json()
    assert body["n"] == len(kept) and body["n_target_dates"] == 2
    assert body["mae"] == pytest.approx(expected(kept, realized_log["closes"])["mae"])


def gauge(metrics_text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics_text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    raise AssertionError(f"no sample {name}{{{wanted}}}")


def test_gauges_agree_with_the_endpoint_after_a_refresh(
    client: TestClient, user_headers: dict[str, str], realized_log: dict[str, Any]
) -> None:
    """The timer's refresh sets per-ticker gauges equal to GET /models/{ticker}/accuracy."""
    service = client.app.state.prediction_service  # type: ignore[attr-defined]
    assert (
        refresh_accuracy_gauges(
            session_factory=service.session_factory, predictor=service.predictor, window=60
        )
        == 1
    )
    body = client.get(f"/models/{TICKER}/accuracy?window=60", headers=user_headers).json()
    text = client.get("/metrics").text
    assert gauge(text, "stockcast_realized_outcomes", ticker=TICKER) == body["n"]
    assert gauge(text, "stockcast_realized_mae", ticker=TICKER) == pytest.approx(body["mae"])
    assert gauge(text, "stockcast_realized_relative_mae", ticker=TICKER) == pytest.approx(
        body["relative_mae"]
    )
    assert gauge(
        text, "stockcast_realized_directional_accuracy_percent", ticker=TICKER
    ) == pytest.approx(body["directional_accuracy"])
    assert gauge(
        text, "stockcast_realized_coverage_percent", ticker=TICKER, level="95"
    ) == pytest.approx(body["coverage_95"])
    assert math.isnan(gauge(text, "stockcast_realized_coverage_percent", ticker=TICKER, level="80"))


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        (f"/models/{TICKER_WITHOUT_MODEL}/accuracy", 404, "no model is served"),
        ("/models/ZZZZ9.SA/accuracy", 404, "no model is served"),
        (f"/models/{TICKER}/accuracy?window=0", 422, "greater than or equal to 1"),
        (f"/models/{TICKER}/accuracy?window=-5", 422, "greater than or equal to 1"),
        ("/models/BAD$/accuracy", 422, "ticker"),
    ],
)
def test_bad_accuracy_requests(
    client: TestClient, user_headers: dict[str, str], path: str, status: int, says: str
) -> None:
    """Unknown ticker 404, window < 1 or a malformed ticker 422, each saying why."""
    response = client.get(path, headers=user_headers)
    assert response.status_code == status, response.text
    assert says in str(response.json()["detail"])


def test_accuracy_needs_a_token(client: TestClient) -> None:
    """Without a bearer token: 401."""
    assert client.get(f"/models/{TICKER}/accuracy").status_code == 401
