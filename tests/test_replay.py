"""The whole loop on real data, replayed: ingest, train, predict, ingest what happened, judge.

PETR4.SA's shipped CSV is split at :data:`SPLIT`: the store first holds the bars up to it, a
tiny champion is trained on them and a horizon-5 forecast is served through the API; then the
following bars are ingested (the rest of the CSV). The realized outcomes in the SQL view, the
accuracy endpoint and the Prometheus gauges must all equal the numbers this test computes on
its own from the CSV.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.features.model_accuracy.gauges import refresh_accuracy_gauges
from app.main import create_app
from common.db import create_db_engine, make_session_factory
from tests.app.factories import create_user, make_settings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TICKER = "PETR4.SA"
SPLIT = dt.date(2023, 11, 30)
HORIZON = 5
PASSWORD = "correct horse battery staple"


def csv_rows(prices_dir: Path) -> list[dict[str, str]]:
    with (prices_dir / f"{TICKER}.csv").open() as handle:
        return list(csv.DictReader(handle))


def ingest(url: str, snapshot_dir: Path) -> None:
    from data_pipeline.run_pipeline import ingest_ticker  # noqa: PLC0415
    from data_pipeline.sources.snapshot import SnapshotSource  # noqa: PLC0415

    engine = create_db_engine(url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            report = ingest_ticker(
                session, ticker=TICKER, source=SnapshotSource(snapshot_dir), start=None
            )
            assert report.ok, report.error
    finally:
        engine.dispose()


@pytest.fixture
def replay(fresh_pg_url: str, prices_dir: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Bars to SPLIT, a champion trained on them, a running app and a logged-in user."""
    from ml_lifecycle.config import load_config  # noqa: PLC0415
    from ml_lifecycle.tracking import Tracking  # noqa: PLC0415
    from ml_lifecycle.train import train_and_register  # noqa: PLC0415

    rows = csv_rows(prices_dir)
    early = tmp_path / "early"
    early.mkdir()
    with (early / f"{TICKER}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if dt.date.fromisoformat(r["Date"]) <= SPLIT)
    ingest(fresh_pg_url, early)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    engine = create_db_engine(fresh_pg_url)
    sessions = make_session_factory(engine)
    try:
        summary = train_and_register(
            session_factory=sessions,
            ticker=TICKER,
            config=load_config(
                lookback=20,
                units=8,
                epochs=2,
                history_bars=800,
                folds=2,
                fold_bars=30,
                interval_steps=5,
            ),
            tracking=Tracking(uri=tracking_uri),
            reports_dir=tmp_path / "reports",
        )
        assert summary.ok and summary.alias == "champion"
        with sessions() as session:
            create_user(session, "ana")
        settings = make_settings(database_url=fresh_pg_url, tracking_uri=tracking_uri)
        with TestClient(create_app(settings, configure_process=False)) as client:
            token = client.post("/auth/token", data={"username": "ana", "password": PASSWORD})
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            yield {"client": client, "headers": headers, "rows": rows, "url": fresh_pg_url,
                   "engine": engine, "version": str(summary.version)}  # fmt: skip
    finally:
        engine.dispose()


def gauge(metrics_text: str, name: str) -> float:
    found = re.search(rf'^{name}\{{ticker="{re.escape(TICKER)}"\}} (\S+)$', metrics_text, re.M)
    assert found, f"no {name} for {TICKER} in /metrics"
    return float(found.group(1))


def test_the_outcomes_of_a_served_forecast_after_its_bars_are_ingested(
    replay: dict[str, Any], prices_dir: Path
) -> None:
    client, headers = replay["client"], replay["headers"]
    forecast = client.get(f"/predict/{TICKER}?horizon={HORIZON}", headers=headers).json()
    assert forecast["as_of_date"] == SPLIT.isoformat()

    # what happened, from the CSV alone
    closes = {dt.date.fromisoformat(r["Date"]): float(r["Close"]) for r in replay["rows"]}
    following = sorted(d for d in closes if d > SPLIT)[:HORIZON]
    last_close = closes[SPLIT]
    # the served target dates are the sessions PETR4.SA really traded on
    targets = [dt.date.fromisoformat(p["target_date"]) for p in forecast["predictions"]]
    assert targets == following
    assert forecast["last_close"] == pytest.approx(last_close)
    predicted = [p["predicted_close"] for p in forecast["predictions"]]
    realized = [closes[d] for d in following]
    errors = [p - r for p, r in zip(predicted, realized, strict=True)]
    naive_errors = [last_close - r for r in realized]
    mae = sum(abs(e) for e in errors) / HORIZON
    naive_mae = sum(abs(e) for e in naive_errors) / HORIZON
    hits = [
        (p > last_close) == (r > last_close) and (p < last_close) == (r < last_close)
        for p, r in zip(predicted, realized, strict=True)
    ]

    # before the bars arrive: waiting, n = 0
    before = client.get(f"/models/{TICKER}/accuracy", headers=headers).json()
    assert before["n"] == 0 and before["mae"] is None

    ingest(replay["url"], prices_dir)

    # 1. the SQL view
    with replay["engine"].connect() as conn:
        view = conn.execute(
            text(
                "SELECT target_date, realized_close, error, ape, naive_error, direction_hit, "
                "covered_95 FROM prediction_outcome WHERE request_id = :id ORDER BY horizon_step"
            ),
            {"id": forecast["prediction_id"]},
        ).all()
    assert [row.target_date for row in view] == following
    for row, real, error, naive in zip(view, realized, errors, naive_errors, strict=True):
        assert row.realized_close == pytest.approx(real)
        assert row.error == pytest.approx(error)
        assert row.ape == pytest.approx(100 * abs(error) / real)
        assert row.naive_error == pytest.approx(naive)
    assert [row.direction_hit for row in view] == [int(h) for h in hits]
    bounds_95 = [
        next((i["lower"], i["upper"]) for i in point["intervals"] if i["level"] == 95.0)
        for point in forecast["predictions"]
    ]
    assert [row.covered_95 for row in view] == [
        int(low <= real <= high) for (low, high), real in zip(bounds_95, realized, strict=True)
    ]

    # 2. the accuracy endpoint
    body = client.get(f"/models/{TICKER}/accuracy?window=60", headers=headers).json()
    assert (body["model_version"], body["n"], body["n_target_dates"]) == (
        replay["version"], HORIZON, HORIZON
    )  # fmt: skip
    assert body["mae"] == pytest.approx(mae)
    assert body["naive_mae"] == pytest.approx(naive_mae)
    assert body["relative_mae"] == pytest.approx(mae / naive_mae)
    assert body["directional_accuracy"] == pytest.approx(100 * sum(hits) / HORIZON)

    # 3. the gauges, after the timer's refresh
    service = client.app.state.prediction_service
    refresh_accuracy_gauges(
        session_factory=service.session_factory, predictor=service.predictor, window=60
    )
    metrics = client.get("/metrics").text
    assert gauge(metrics, "stockcast_realized_outcomes") == HORIZON
    assert gauge(metrics, "stockcast_realized_mae") == pytest.approx(mae)
    assert gauge(metrics, "stockcast_realized_relative_mae") == pytest.approx(mae / naive_mae)
    assert gauge(metrics, "stockcast_realized_directional_accuracy_percent") == pytest.approx(
        100 * sum(hits) / HORIZON
    )
