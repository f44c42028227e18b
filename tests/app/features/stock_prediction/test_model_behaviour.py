"""Behaviour of the served champion that follows from its features, whatever it learned.

The features are log ratios inside the window and the target is the next log return, so the
model sees no price level: closes scaled by ``k`` (a split, another currency) must give
forecasts scaled by ``k``, step after step.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from common.price_store import read_last_bars
from tests.app.conftest import LOOKBACK, TICKER

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.mark.parametrize("k", [0.01, 0.5, 3.0, 1_000.0])
def test_closes_scaled_by_k_give_forecasts_scaled_by_k(
    client: TestClient,
    user_headers: dict[str, str],
    app_sessions: Callable[[], Session],
    k: float,
) -> None:
    """POSTing the last real PETR4.SA closes times ``k`` returns every predicted close times
    ``k`` (and the same change in percent) over a 5-day horizon."""
    with app_sessions() as session:
        bars = read_last_bars(session, ticker=TICKER, n=LOOKBACK)
    closes = [float(c) for c in bars.close]

    def predict(values: list[float]) -> list[dict[str, float]]:
        response = client.post(
            f"/predict/{TICKER}?horizon=5", json={"closes": values}, headers=user_headers
        )
        assert response.status_code == 200, response.text
        points: list[dict[str, float]] = response.json()["predictions"]
        return points

    base, scaled = predict(closes), predict([k * c for c in closes])
    for one, other in zip(base, scaled, strict=True):
        assert other["predicted_close"] == pytest.approx(k * one["predicted_close"], rel=1e-6)
        assert other["change_pct"] == pytest.approx(one["change_pct"], abs=1e-4)
