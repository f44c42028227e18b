"""GET and POST /predict/{ticker}: forecasts from the trained champion, logged to prediction_log."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import PredictionLog
from common.price_store import read_last_bars
from tests.app.conftest import LOOKBACK, TICKER, TICKER_WITHOUT_MODEL, Registry
from tests.app.factories import logged_rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_get_predicts_the_following_trading_days_from_the_stored_bars(
    client: TestClient, user_headers: dict[str, str], registry: Registry, app_sessions
) -> None:
    """The user gets 5 closes for B3's next 5 sessions after the last stored bar (2023-12-28):
    2023-12-29 and 2024-01-01 are B3 holidays, so the first target date is 2024-01-02."""
    response = client.get(f"/predict/{TICKER}?horizon=5", headers=user_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    with app_sessions() as session:
        last = read_last_bars(session, ticker=TICKER, n=1)
    assert body["ticker"] == TICKER
    assert body["as_of_date"] == last.dates[-1].isoformat()
    assert body["last_close"] == pytest.approx(float(last.close[-1]))
    assert body["currency"] == "BRL"
    assert body["input_source"] == "store"
    dates = [dt.date.fromisoformat(p["target_date"]) for p in body["predictions"]]
    assert last.dates[-1] == dt.date(2023, 12, 28)
    assert dates == [dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8)]
    for point in body["predictions"]:
        assert math.isfinite(point["predicted_close"]) and point["predicted_close"] > 0
        expected = (point["predicted_close"] / body["last_close"] - 1) * 100
        assert point["change_pct"] == pytest.approx(expected)
    model = body["model"]
    assert (model["name"], model["version"]) == (registry.name, registry.version)
    assert model["lookback"] == LOOKBACK
    for metric in ("mae", "mape", "mase"):
        assert model["metrics"][metric] == pytest.approx(registry.summary.metrics[metric], rel=1e-5)


def test_prediction_log_rows_equal_the_predicted_dates_served(
    client: TestClient, user_headers: dict[str, str], app_sessions, users: dict[str, str]
) -> None:
    """Each served target date has exactly one committed prediction_log row with its values."""
    body = client.get(f"/predict/{TICKER}?horizon=7", headers=user_headers).json()
    rows = logged_rows(app_sessions, body["prediction_id"])
    served = [(p["target_date"], p["predicted_close"]) for p in body["predictions"]]
    logged = [(r.target_date.isoformat(), r.predicted_close) for r in rows]
    assert logged == served
    assert [r.horizon_step for r in rows] == list(range(1, 8))
    with app_sessions() as session:
        from app.features.auth.crud import get_by_username  # noqa: PLC0415

        user = get_by_username(session, username=users["user"])
    assert user is not None
    for row in rows:
        assert row.ticker == TICKER and row.input_source == "store"
        assert row.as_of_date.isoformat() == body["as_of_date"]
        assert row.last_close == body["last_close"]
        assert (row.model_name, row.model_version) == (
            body["model"]["name"],
            body["model"]["version"],
        )
        assert row.user_id == user.id
        assert row.latency_ms > 0
        assert row.created_at.tzinfo is not None


def test_horizon_defaults_to_one_and_steps_agree_with_shorter_horizons(
    client: TestClient, user_headers: dict[str, str]
) -> None:
    """Without horizon one close is predicted; a longer horizon starts with the same close."""
    one = client.get(f"/predict/{TICKER}", headers=user_headers).json()
    three = client.get(f"/predict/{TICKER}?horizon=3", headers=user_headers).json()
    assert len(one["predictions"]) == 1 and one["horizon"] == 1
    assert three["predictions"][0] == one["predictions"][0]
    assert one["prediction_id"] != three["prediction_id"]


def test_lower_case_ticker_is_normalized(client: TestClient, user_headers: dict[str, str]) -> None:
    """petr4.sa is served as PETR4.SA."""
    response = client.get("/predict/petr4.sa", headers=user_headers)
    assert response.status_code == 200
    assert response.json()["ticker"] == TICKER


def test_max_horizon_is_served(client: TestClient, user_headers: dict[str, str]) -> None:
    """horizon=30 (the default maximum) returns 30 finite closes."""
    body = client.get(f"/predict/{TICKER}?horizon=30", headers=user_headers).json()
    assert len(body["predictions"]) == 30
    assert all(math.isfinite(p["predicted_close"]) for p in body["predictions"])


@pytest.mark.parametrize("horizon", ["0", "31", "-1", "abc", "2.5", "366"])
def test_horizon_out_of_range_is_422(
    client: TestClient, user_headers: dict[str, str], horizon: str
) -> None:
    """A horizon outside 1..30 (or not an integer) is refused with 422; nothing is logged."""
    response = client.get(f"/predict/{TICKER}?horizon={horizon}", headers=user_headers)
    assert response.status_code == 422
    if horizon == "31":  # within what any deployment may allow, above this one's maximum
        assert "between 1 and 30" in response.json()["detail"]
    else:
        assert response.json()["detail"][0]["loc"] == ["query", "horizon"]


@pytest.mark.parametrize(
    ("ticker", "why"),
    [
        ("PETR4$SA", "invalid ticker"),
        ("bad ticker", "invalid ticker"),
        ("A" * 21, "invalid ticker"),
        ("PETR4.SA;drop", "invalid ticker"),
        ("A" * 41, "at most 40 characters"),
    ],
)
def test_malformed_ticker_is_422(
    client: TestClient, user_headers: dict[str, str], ticker: str, why: str
) -> None:
    """A symbol outside Yahoo's syntax is refused with 422: the user sees the path parameter
    ``ticker`` named and the rule it broke, as for any other malformed parameter."""
    for response in (
        client.get(f"/predict/{ticker}", headers=user_headers),
        client.post(f"/predict/{ticker}", json={"closes": [30.0] * LOOKBACK}, headers=user_headers),
    ):
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["loc"] == ["path", "ticker"]
        assert why in error["msg"]


@pytest.mark.parametrize("ticker", ["ZZZZ9.SA", TICKER_WITHOUT_MODEL])
def test_ticker_without_model_is_404_naming_the_model(
    client: TestClient, user_headers: dict[str, str], ticker: str
) -> None:
    """A well-formed ticker with no champion (with or without bars) is 404 'no model'."""
    response = client.get(f"/predict/{ticker}", headers=user_headers)
    assert response.status_code == 404
    assert response.json()["detail"].startswith(f"no model is served for {ticker}")


def test_post_with_the_lookback_closes_predicts_like_get(
    client: TestClient, user_headers: dict[str, str], app_sessions
) -> None:
    """POSTing the last 20 stored closes gives GET's forecast, logged as input_source=client."""
    with app_sessions() as session:
        bars = read_last_bars(session, ticker=TICKER, n=LOOKBACK)
    closes = [float(c) for c in bars.close]
    as_of = bars.dates[-1].isoformat()
    posted = client.post(
        f"/predict/{TICKER}?horizon=4",
        json={"closes": closes, "as_of_date": as_of},
        headers=user_headers,
    )
    assert posted.status_code == 200, posted.text
    got = client.get(f"/predict/{TICKER}?horizon=4", headers=user_headers).json()
    body = posted.json()
    assert body["input_source"] == "client"
    assert [p["target_date"] for p in body["predictions"]] == [
        p["target_date"] for p in got["predictions"]
    ]
    for a, b in zip(body["predictions"], got["predictions"], strict=True):
        assert a["predicted_close"] == pytest.approx(b["predicted_close"], rel=1e-6)
    rows = logged_rows(app_sessions, body["prediction_id"])
    assert [(r.target_date.isoformat(), r.predicted_close) for r in rows] == [
        (p["target_date"], p["predicted_close"]) for p in body["predictions"]
    ]
    assert {r.input_source for r in rows} == {"client"}


def test_post_without_as_of_date_uses_today(
    client: TestClient, user_headers: dict[str, str]
) -> None:
    """Without as_of_date the target dates follow today's date (UTC)."""
    closes = [30.0 + 0.1 * i for i in range(LOOKBACK)]
    body = client.post(f"/predict/{TICKER}", json={"closes": closes}, headers=user_headers).json()
    assert body["as_of_date"] == dt.datetime.now(dt.UTC).date().isoformat()


@pytest.mark.parametrize(
    ("as_of", "why"), [("2100-01-04", "calendar ends on"), ("1990-01-02", "is before")]
)
def test_post_with_a_date_outside_the_exchange_calendar_is_422(
    client: TestClient, user_headers: dict[str, str], app_sessions, as_of: str, why: str
) -> None:
    """An as_of_date the exchange calendar does not cover is refused with 422 saying so, and
    nothing is logged."""
    closes = [30.0 + 0.1 * i for i in range(LOOKBACK)]
    with app_sessions() as session:
        before = session.scalar(select(func.count()).select_from(PredictionLog))
    response = client.post(
        f"/predict/{TICKER}?horizon=3",
        json={"closes": closes, "as_of_date": as_of},
        headers=user_headers,
    )
    assert response.status_code == 422, response.text
    assert why in response.json()["detail"] and "BVMF" in response.json()["detail"]
    with app_sessions() as session:
        assert session.scalar(select(func.count()).select_from(PredictionLog)) == before


@pytest.mark.parametrize(
    ("closes", "why"),
    [
        ([30.0] * (LOOKBACK - 1), "got 19"),
        ([30.0] * (LOOKBACK + 1), "got 21"),
        ([30.0] * (LOOKBACK - 1) + [float("nan")], "positions [19]"),
        ([float("inf")] + [30.0] * (LOOKBACK - 1), "positions [0]"),
        ([30.0] * (LOOKBACK - 2) + [-1.0, 0.0], "positions [18, 19]"),
    ],
    ids=["too-short", "too-long", "nan", "infinity", "non-positive"],
)
def test_post_with_wrong_closes_is_422_stating_the_expected_length(
    client: TestClient,
    user_headers: dict[str, str],
    app_sessions,
    closes: list[float],
    why: str,
) -> None:
    """Wrong length or non-finite/non-positive values: 422 saying exactly 20 are needed."""
    with app_sessions() as session:
        before = session.scalar(select(PredictionLog.id).order_by(PredictionLog.id.desc()).limit(1))
    response = client.post(
        f"/predict/{TICKER}",
        content=json.dumps({"closes": closes}),  # NaN / Infinity literals, as Python clients send
        headers={**user_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert f"exactly {LOOKBACK} finite, positive prices" in detail
    assert why in detail
    with app_sessions() as session:
        after = session.scalar(select(PredictionLog.id).order_by(PredictionLog.id.desc()).limit(1))
    assert after == before


@pytest.mark.parametrize(
    "payload", [{}, {"closes": "30,31"}, {"closes": []}, {"closes": [30.0, "x"]}]
)
def test_post_with_a_malformed_body_is_422(
    client: TestClient, user_headers: dict[str, str], payload: dict[str, object]
) -> None:
    """A body without a list of numbers under 'closes' is refused with 422."""
    response = client.post(f"/predict/{TICKER}", json=payload, headers=user_headers)
    assert response.status_code == 422


def test_post_for_ticker_without_model_is_404(
    client: TestClient, user_headers: dict[str, str]
) -> None:
    """POST for a ticker with no champion says which model is missing."""
    response = client.post(
        f"/predict/{TICKER_WITHOUT_MODEL}", json={"closes": [1.0] * 20}, headers=user_headers
    )
    assert response.status_code == 404
    assert TICKER_WITHOUT_MODEL in response.json()["detail"]
