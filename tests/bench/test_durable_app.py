"""The durable ceiling: the bare app plus one prediction_log row per request, committed
through the API's group-commit writer to a real Postgres before the response."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.durable_app import create_app
from bench.environment import BenchEnvironment
from bench.server import DurableCeilingServer, app_user_id, prediction_log_rows
from tests.processes import free_port


def _add_user(url: str, username: str) -> int:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return int(
                conn.execute(
                    text(
                        "INSERT INTO app_user (username, password_hash) VALUES (:u, 'x') "
                        "RETURNING id"
                    ),
                    {"u": username},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _logged_rows(url: str) -> list[dict[str, object]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execute(text("SELECT * FROM prediction_log ORDER BY id"))
            return [dict(row._mapping) for row in result]
    finally:
        engine.dispose()


def test_every_answer_is_a_committed_row_of_its_own_shaped_like_a_predict_row(
    fresh_pg_url: str,
) -> None:
    """Five requests, five rows committed by the time each answer arrives: one per request id
    the answers name, horizon step 1 of a stored-bars forecast with both interval levels, and
    the user the rows were given (the foreign key holds)."""
    user_id = _add_user(fresh_pg_url, "bench-user")
    answered = []
    with TestClient(create_app(fresh_pg_url, user_id=user_id)) as client:
        for expected_rows in range(1, 6):
            response = client.get("/")
            assert response.status_code == 200
            answered.append(uuid.UUID(response.json()["prediction_id"]))
            assert prediction_log_rows(fresh_pg_url) == expected_rows

    rows = _logged_rows(fresh_pg_url)
    assert [row["request_id"] for row in rows] == answered
    assert len(set(answered)) == 5
    for row in rows:
        assert row["user_id"] == user_id
        assert row["horizon_step"] == 1
        assert row["input_source"] == "store"
        assert row["ticker"] == "PETR4.SA"
        assert row["lower_95"] < row["lower_80"] < row["predicted_close"]  # type: ignore[operator]
        assert row["predicted_close"] < row["upper_80"] < row["upper_95"]  # type: ignore[operator]


def test_a_user_that_does_not_exist_is_refused_as_the_api_would_refuse_it(
    fresh_pg_url: str,
) -> None:
    """Rows that break prediction_log's foreign key are not committed, and no 200 is sent."""
    with TestClient(create_app(fresh_pg_url, user_id=999_999), raise_server_exceptions=False) as c:
        assert c.get("/").status_code == 500
    assert prediction_log_rows(fresh_pg_url) == 0


def test_the_durable_ceiling_server_counts_the_rows_it_answered_for(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    """Started by the benchmark with two workers on the bench database: every answer over
    fresh connections (spread over both workers) adds one row with the bench user's id, and
    the predicted dates summed over the workers' metrics files equal the rows added (the
    durability check of its case); stopping it ends the workers."""
    database = make_url(fresh_pg_url).database
    assert database is not None
    bench = dataclasses.replace(BenchEnvironment(workers=2, database=database), var_dir=tmp_path)
    user_id = _add_user(bench.database_url, "bench-user")
    assert app_user_id(bench.database_url, "bench-user") == user_id

    with DurableCeilingServer(bench, port=free_port(), user_id=user_id) as durable:
        workers = durable.worker_pids()
        assert len(workers) == 2
        rows_before, points_before = prediction_log_rows(fresh_pg_url), durable.predicted_points()
        for _ in range(20):
            with httpx.Client(base_url=durable.base_url) as fresh:
                response = fresh.get("/")
                assert response.status_code == 200
                assert "server" not in response.headers
        assert prediction_log_rows(fresh_pg_url) - rows_before == 20
        assert durable.predicted_points() - points_before == 20
        proc = durable.proc
        assert proc is not None

    assert {row["user_id"] for row in _logged_rows(fresh_pg_url)} == {user_id}
    assert proc.poll() is not None
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
