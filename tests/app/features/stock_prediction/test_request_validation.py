"""Hostile and malformed input: a clear 4xx, never a 500, a null, an echo of the input or a row.

Each case reproduces a failure of issue 18 (the number in the test's docstring).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.exceptions import ForecastOverflowError
from app.features.stock_prediction.predictor import Forecast, Predictor, ServedModel
from app.features.stock_prediction.windows import finite_forecast
from app.models import PredictionLog
from tests.app.conftest import LOOKBACK, TICKER, serving
from tests.app.factories import mean_onnx_model

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLOSES = [30.0 + 0.1 * i for i in range(LOOKBACK)]


def logged_rows(sessions: Callable[[], Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(PredictionLog)) or 0)


@pytest.fixture
def no_rows_written(app_sessions: Callable[[], Session]) -> Iterator[None]:
    """The test's requests write no prediction_log row."""
    before = logged_rows(app_sessions)
    yield
    assert logged_rows(app_sessions) == before


def post(client: TestClient, headers: dict[str, str], body: Any, horizon: int = 1) -> Any:
    return client.post(
        f"/predict/{TICKER}?horizon={horizon}",
        content=json.dumps(body),
        headers={**headers, "Content-Type": "application/json"},
    )


@pytest.mark.parametrize("as_of_date", ["9999-12-31", "0001-01-01", "1969-12-31", "2201-01-01"])
def test_a_far_as_of_date_is_422_naming_the_field(
    client: TestClient, user_headers: dict[str, str], no_rows_written: None, as_of_date: str
) -> None:
    """Failure 1: as_of_date 9999-12-31 was a 500 (date overflow); now a 422 on the field."""
    response = post(client, user_headers, {"closes": CLOSES, "as_of_date": as_of_date}, 30)
    assert response.status_code == 422, response.text
    assert ["body", "as_of_date"] in [e["loc"] for e in response.json()["detail"]]


@pytest.mark.parametrize("as_of_date", ["2200-12-31", "1970-01-01"])
def test_an_as_of_date_beyond_the_exchange_calendar_is_a_clear_422(
    client: TestClient, user_headers: dict[str, str], no_rows_written: None, as_of_date: str
) -> None:
    """Inside the accepted range but outside the exchange calendar: 422 naming the calendar."""
    response = post(client, user_headers, {"closes": CLOSES, "as_of_date": as_of_date}, 30)
    assert response.status_code == 422, response.text
    assert "calendar" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"closes": [True] * LOOKBACK}, "closes"),
        ({"closes": ["25.1"] * LOOKBACK}, "closes"),
        ({"closes": CLOSES, "as_of_date": 0}, "as_of_date"),
        ({"closes": CLOSES, "as_of_date": 1700000000}, "as_of_date"),
        ({"closes": CLOSES, "as_of_date": "2023-12-28T00:00:00"}, "as_of_date"),
    ],
    ids=["bool-closes", "string-closes", "as-of-date-zero", "as-of-date-epoch", "datetime"],
)
def test_no_lax_coercion_of_closes_or_as_of_date(
    client: TestClient,
    user_headers: dict[str, str],
    no_rows_written: None,
    body: dict[str, Any],
    field: str,
) -> None:
    """Failure 9: true was taken as 1.0 and "25.1" and 0 were accepted; now each is a 422."""
    response = post(client, user_headers, body)
    assert response.status_code == 422, response.text
    assert field in {e["loc"][1] for e in response.json()["detail"]}


def test_integer_closes_are_still_prices(client: TestClient, user_headers: dict[str, str]) -> None:
    """JSON has one number type: 30 is a close as much as 30.0."""
    response = post(client, user_headers, {"closes": [30 + i for i in range(LOOKBACK)]})
    assert response.status_code == 200, response.text


def test_huge_closes_are_422_not_null_rows(
    client: TestClient, user_headers: dict[str, str], no_rows_written: None
) -> None:
    """Failure 2: 1e308 closes gave 200 with null predictions and Infinity rows; now 422."""
    closes = [1e308] * (LOOKBACK - 1) + [1.7e308]
    response = post(client, user_headers, {"closes": closes}, 30)
    assert response.status_code == 422, response.text
    assert "finite, positive prices" in response.json()["detail"]


def test_a_forecast_that_overflows_is_a_clear_422(
    client: TestClient, user_headers: dict[str, str], settings: Any, no_rows_written: None
) -> None:
    """A model whose forecast overflows float64 answers 422 saying so, and logs nothing."""
    # the mean of the scaled window times a huge target scale: a return of ~1e8 per step
    model = mean_onnx_model(
        ticker=TICKER, lookback=LOOKBACK, features=["rel_log_close"], target_scale=1e9
    )
    predictor = Predictor(tracking_uri=settings.mlflow_tracking_uri)
    predictor.add(model)
    # falling closes: every relative log close is positive, so the forecast return explodes
    falling = [10.0 * 0.99**i for i in range(LOOKBACK)]
    with serving(client, predictor=predictor):
        response = post(client, user_headers, {"closes": falling}, 5)
    assert response.status_code == 422, response.text
    assert "overflow" in response.json()["detail"]


def test_a_422_does_not_echo_a_large_body(client: TestClient, user_headers: dict[str, str]) -> None:
    """Failure 4: a 422 echoed every input value; now it names the fields, not their values."""
    body = {"closes": ["x" * 20] * 10_000}
    response = post(client, user_headers, body)
    assert response.status_code == 422
    assert len(response.content) < 8_000
    assert "x" * 20 not in response.text
    detail = response.json()["detail"]
    assert all(set(error) <= {"loc", "msg", "type"} for error in detail)


def test_responses_never_hold_non_finite_numbers(
    client: TestClient, user_headers: dict[str, str]
) -> None:
    """Closes at the top of the accepted range still give finite numbers (or a 422)."""
    response = post(client, user_headers, {"closes": [1e9] * LOOKBACK}, 30)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert all(math.isfinite(p["predicted_close"]) for p in response.json()["predictions"])


def test_an_interval_bound_that_overflows_is_refused_like_a_close() -> None:
    """Finite closes with an infinite upper bound are refused (the 422 of an overflow), not
    answered with ``null`` bounds nor handed to prediction_log, which refuses them (503)."""

    class WideIntervals:
        ticker = TICKER

        def forecast(self, bars: Any, horizon: int) -> Forecast:
            closes = np.full(horizon, 10.0)
            return Forecast(
                closes=closes,
                log_returns=np.zeros(horizon),
                inference_seconds=0.0,
                lower=np.full((1, horizon), 9.0),
                upper=np.full((1, horizon), np.inf),
            )

    with pytest.raises(ForecastOverflowError):
        finite_forecast(cast(ServedModel, WideIntervals()), {"close": np.ones(LOOKBACK)}, 3)
