"""Prediction intervals: in GET and POST /predict, in prediction_log, in GET /models, and the
APP_INTERVAL_LEVELS setting that chooses them."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core.config import AppSettings
from common.price_store import read_last_bars
from tests.app.conftest import LOOKBACK, TICKER
from tests.app.factories import logged_rows
from tests.app.test_cli import run_cli


def check_intervals(body: dict[str, Any]) -> None:
    """Every step has an 80% interval inside a 95% one around the forecast, wider later."""
    widths = []
    for point in body["predictions"]:
        by_level = {i["level"]: i for i in point["intervals"]}
        assert set(by_level) == {80.0, 95.0}
        p80, p95, close = by_level[80.0], by_level[95.0], point["predicted_close"]
        assert p95["lower"] < p80["lower"] < close < p80["upper"] < p95["upper"]
        widths.append(p95["upper"] - p95["lower"])
    assert widths == sorted(widths) and widths[0] < widths[-1]


@pytest.mark.postgres
@pytest.mark.slow
def test_get_returns_intervals_and_prediction_log_stores_them(
    client: TestClient, user_headers: dict[str, str], app_sessions
) -> None:
    body = client.get(f"/predict/{TICKER}?horizon=5", headers=user_headers).json()
    check_intervals(body)
    rows = logged_rows(app_sessions, body["prediction_id"])
    for row, point in zip(rows, body["predictions"], strict=True):
        by_level = {i["level"]: i for i in point["intervals"]}
        assert (row.lower_80, row.upper_80) == (by_level[80.0]["lower"], by_level[80.0]["upper"])
        assert (row.lower_95, row.upper_95) == (by_level[95.0]["lower"], by_level[95.0]["upper"])


@pytest.mark.postgres
@pytest.mark.slow
def test_post_from_closes_returns_the_same_intervals_as_get(
    client: TestClient, user_headers: dict[str, str], app_sessions
) -> None:
    with app_sessions() as session:
        bars = read_last_bars(session, ticker=TICKER, n=LOOKBACK)
    payload = {"closes": [float(c) for c in bars.close], "as_of_date": bars.dates[-1].isoformat()}
    posted = client.post(f"/predict/{TICKER}?horizon=3", json=payload, headers=user_headers)
    assert posted.status_code == 200, posted.text
    check_intervals(posted.json())
    got = client.get(f"/predict/{TICKER}?horizon=3", headers=user_headers).json()
    for a, b in zip(posted.json()["predictions"], got["predictions"], strict=True):
        for x, y in zip(a["intervals"], b["intervals"], strict=True):
            assert x["lower"] == pytest.approx(y["lower"], rel=1e-6)
            assert x["upper"] == pytest.approx(y["upper"], rel=1e-6)
    rows = logged_rows(app_sessions, posted.json()["prediction_id"])
    assert all(r.lower_80 is not None and r.upper_95 is not None for r in rows)


@pytest.mark.postgres
@pytest.mark.slow
def test_models_show_the_combination_weight_and_interval_levels(
    client: TestClient, user_headers: dict[str, str]
) -> None:
    models = client.get("/models", headers=user_headers).json()
    served = next(m for m in models if m["ticker"] == TICKER)
    assert 0.0 <= served["combination_weight"] <= 1.0
    assert served["interval_levels"] == [80.0, 95.0]
    assert {"relative_mae", "coverage_80", "coverage_95"} <= set(served["metrics"])


def test_interval_levels_are_read_as_comma_separated_percents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_INTERVAL_LEVELS", "95, 50,80")
    assert AppSettings(_env_file=None).interval_levels == (50.0, 80.0, 95.0)
    monkeypatch.setenv("APP_INTERVAL_LEVELS", "")
    assert AppSettings(_env_file=None).interval_levels == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "0 is not a coverage level"),
        ("80,100", "100 is not a coverage level"),
        ("abc", "'abc' is not a number"),
    ],
)
def test_bad_interval_levels_are_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("APP_INTERVAL_LEVELS", value)
    with pytest.raises(ValidationError, match=message):
        AppSettings(_env_file=None)


@pytest.mark.postgres
def test_serve_with_bad_interval_levels_stops_with_one_line(fresh_pg_url: str) -> None:
    """The operator sees which variable is wrong and why; exit 2; no server starts."""
    result = run_cli(fresh_pg_url, "serve", "--port", "1", env={"APP_INTERVAL_LEVELS": "abc"})
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings: APP_INTERVAL_LEVELS: 'abc'")
