"""Group commit of prediction_log rows: every 200 is logged, batched, and failures are exact.

Concurrency is made deterministic with the real database: a test transaction holds
``LOCK TABLE prediction_log`` so the writer's first INSERT waits, the other requests queue
behind it, and releasing the lock lets the queued requests commit together.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.core.database import create_async_db_engine
from app.features.stock_prediction.log_writer import PredictionLogWriter
from app.features.stock_prediction.predictor import Predictor
from app.main import create_app
from app.models.prediction_log import PredictionLog
from common.db import create_db_engine, make_session_factory
from common.exceptions import DatabaseUnavailableError
from tests.app.conftest import TICKER, Registry, ingest, login
from tests.app.factories import create_user, make_settings

pytestmark = [pytest.mark.postgres]


def _row(request_id: uuid.UUID, step: int = 1, **overrides: Any) -> dict[str, Any]:
    import datetime as dt  # noqa: PLC0415

    row: dict[str, Any] = {
        "request_id": request_id,
        "user_id": None,
        "ticker": TICKER,
        "input_source": "store",
        "as_of_date": dt.date(2023, 12, 28),
        "target_date": dt.date(2023, 12, 28) + dt.timedelta(days=step),
        "horizon_step": step,
        "predicted_close": 37.5,
        "last_close": 37.0,
        "model_name": "stock-lstm-PETR4.SA",
        "model_version": "1",
        "latency_ms": 1.0,
    }
    row.update(overrides)
    return row


def run_with_writer(
    url: str, scenario: Callable[[PredictionLogWriter], Awaitable[None]], **kwargs: Any
) -> PredictionLogWriter:
    """Run ``scenario`` on an event loop of its own with a started writer on ``url`` (as a
    worker's requests share its loop and writer); the writer is stopped afterwards."""

    async def main() -> PredictionLogWriter:
        writer = PredictionLogWriter(create_async_db_engine(url), **kwargs)
        writer.start()
        try:
            await scenario(writer)
        finally:
            await writer.stop()
            await writer.engine.dispose()
        return writer

    return asyncio.run(main())


def _rows_of(sessions: Callable[[], Session], request_id: uuid.UUID) -> int:
    with sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(PredictionLog)
                .where(PredictionLog.request_id == request_id)
            )
            or 0
        )


@contextmanager
def _table_locked(engine: Engine) -> Iterator[None]:
    """Hold an exclusive lock on prediction_log (writes wait) until the block exits."""
    with engine.connect() as conn:
        conn.execute(text("LOCK TABLE prediction_log IN EXCLUSIVE MODE"))
        yield
        conn.rollback()


def _wait_for_lock_waiter(engine: Engine, timeout: float = 10.0) -> None:
    """Block until some session of this database waits for a lock (the writer's INSERT)."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            if waiting:
                return
            conn.rollback()
            time.sleep(0.02)
    raise AssertionError("the writer never waited for the table lock")


# -- the writer on its own -----------------------------------------------------------------
async def _until_queued(writer: PredictionLogWriter, requests: int) -> None:
    """Return once ``requests`` requests wait in the writer's queue (10 s at most)."""
    async with asyncio.timeout(10):
        while writer.queued < requests:
            await asyncio.sleep(0)


async def _queue_behind_a_held_commit(
    engine: Engine,
    writer: PredictionLogWriter,
    first: list[dict[str, Any]],
    rest: list[list[dict[str, Any]]],
    *,
    hold_seconds: float = 0.0,
) -> None:
    """Write ``first`` while the table is locked, so its commit is held; queue each of
    ``rest`` behind it; keep the lock ``hold_seconds`` more (a slow commit); then release it
    and wait (10 s at most) for all."""
    with _table_locked(engine):
        held = asyncio.create_task(writer.write(first))
        await asyncio.to_thread(_wait_for_lock_waiter, engine)
        queued = [asyncio.create_task(writer.write(rows)) for rows in rest]
        await _until_queued(writer, len(rest))  # all queued behind the held commit
        await asyncio.sleep(hold_seconds)
        assert not held.done()
    async with asyncio.timeout(10):
        await asyncio.gather(held, *queued)


@pytest.fixture
def writer_db(fresh_pg_url: str) -> Iterator[tuple[str, Engine, Callable[[], Session]]]:
    """An empty migrated database of this test's own: (url, engine, session factory)."""
    engine = create_db_engine(fresh_pg_url)
    yield fresh_pg_url, engine, make_session_factory(engine)
    engine.dispose()


def test_concurrent_writes_are_all_committed_in_fewer_transactions(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """40 requests write at once while the first commit is held: every row is stored, and
    the 39 that queued share transactions (group commit) instead of one commit each."""
    url, engine, sessions = writer_db
    ids = [uuid.uuid4() for _ in range(40)]

    async def scenario(writer: PredictionLogWriter) -> None:
        rest = [[_row(i, 1), _row(i, 2)] for i in ids[1:]]
        await _queue_behind_a_held_commit(engine, writer, [_row(ids[0])], rest)

    writer = run_with_writer(url, scenario)
    assert [_rows_of(sessions, i) for i in ids] == [1] + [2] * 39
    assert writer.requests_committed == 40
    assert writer.commits <= 3


def test_every_commit_is_timed_and_counted_in_the_metrics(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """An operator sees each group commit in /metrics: one held for 0.3 s by a lock lands in
    the commit-latency histogram above 0.25 s, and the requests per commit add up to the
    40 requests written."""
    url, engine, _ = writer_db
    ids = [uuid.uuid4() for _ in range(40)]

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    before = {
        "commits": sample("stockcast_prediction_log_commit_seconds_count"),
        "fast": sample("stockcast_prediction_log_commit_seconds_bucket", {"le": "0.25"}),
        "requests": sample("stockcast_prediction_log_commit_requests_sum"),
    }

    async def scenario(writer: PredictionLogWriter) -> None:
        rest = [[_row(i)] for i in ids[1:]]
        await _queue_behind_a_held_commit(engine, writer, [_row(ids[0])], rest, hold_seconds=0.3)

    writer = run_with_writer(url, scenario)
    commits = sample("stockcast_prediction_log_commit_seconds_count") - before["commits"]
    fast = sample("stockcast_prediction_log_commit_seconds_bucket", {"le": "0.25"})
    assert commits == writer.commits
    assert commits - (fast - before["fast"]) >= 1  # the held commit took longer than 0.25 s
    assert sample("stockcast_prediction_log_commit_requests_sum") - before["requests"] == 40


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_every_column_is_stored_as_written(
    backend: str, writer_db: tuple[str, Engine, Callable[[], Session]], sqlite_url: str
) -> None:
    """The rows of a batch (one statement of arrays on Postgres, an executemany on SQLite)
    read back exactly as written: ids, dates, prices, a user and no user, each step."""
    url = writer_db[0] if backend == "postgres" else sqlite_url
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        user_id = create_user(session, f"writer-{backend}")
    first, second = uuid.uuid4(), uuid.uuid4()
    written = [
        _row(first, 1, user_id=user_id, predicted_close=37.123456789, latency_ms=0.25),
        _row(first, 2, user_id=user_id, predicted_close=37.5),
        _row(second, 1, ticker="AAPL", input_source="client", model_version="12"),
    ]

    async def scenario(writer: PredictionLogWriter) -> None:
        await asyncio.gather(writer.write(written[:2]), writer.write(written[2:]))

    run_with_writer(url, scenario)
    columns = list(written[0])
    with make_session_factory(engine)() as session:
        stored = session.execute(
            select(*(getattr(PredictionLog, c) for c in columns)).order_by(PredictionLog.id)
        ).all()
    engine.dispose()
    assert [dict(zip(columns, row, strict=True)) for row in stored] == written


def test_a_batch_never_exceeds_max_batch_rows(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """Queued requests are split into transactions of at most ``max_batch_rows`` rows, and
    one request is never split: 10 queued requests of 3 rows with a limit of 7 rows take
    five transactions of two requests each (plus the one that held the table)."""
    url, engine, sessions = writer_db
    ids = [uuid.uuid4() for _ in range(10)]

    async def scenario(writer: PredictionLogWriter) -> None:
        with _table_locked(engine):
            first = asyncio.create_task(writer.write([_row(uuid.uuid4())]))
            await asyncio.to_thread(_wait_for_lock_waiter, engine)
            rest = [asyncio.create_task(writer.write([_row(i, s) for s in (1, 2, 3)])) for i in ids]
            await _until_queued(writer, len(rest))
        async with asyncio.timeout(10):
            await asyncio.gather(first, *rest)

    writer = run_with_writer(url, scenario, max_batch_rows=7)
    assert [_rows_of(sessions, i) for i in ids] == [3] * 10
    assert (writer.commits, writer.requests_committed) == (6, 11)


def test_a_refused_request_fails_alone_and_leaves_no_rows(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """A request whose rows the database refuses (a ticker longer than the column) gets
    DatabaseUnavailableError (503) and stores none of its rows; the requests committed in
    the same batch are stored in full."""
    url, engine, sessions = writer_db
    good = [uuid.uuid4() for _ in range(5)]
    bad = uuid.uuid4()

    async def scenario(writer: PredictionLogWriter) -> None:
        with _table_locked(engine):
            holder = asyncio.create_task(writer.write([_row(uuid.uuid4())]))
            await asyncio.to_thread(_wait_for_lock_waiter, engine)
            requests = [asyncio.create_task(writer.write([_row(i, 1), _row(i, 2)])) for i in good]
            refused = asyncio.create_task(
                writer.write([_row(bad, 1), _row(bad, 2, ticker="X" * 200)])
            )
            await _until_queued(writer, len(requests) + 1)
        async with asyncio.timeout(10):
            await asyncio.gather(holder, *requests)
            with pytest.raises(DatabaseUnavailableError, match="could not be committed"):
                await refused
        assert writer.running

    writer = run_with_writer(url, scenario)
    assert [_rows_of(sessions, i) for i in good] == [2] * 5
    assert _rows_of(sessions, bad) == 0
    assert writer.running is False


def test_a_request_that_stops_waiting_still_has_its_rows_committed(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """A client that disconnects while its commit is held (the request is cancelled) gets
    no 200, but its rows are not lost or half-written: they are committed with their batch,
    and the writer keeps working."""
    url, engine, sessions = writer_db
    gone, next_one = uuid.uuid4(), uuid.uuid4()

    async def scenario(writer: PredictionLogWriter) -> None:
        with _table_locked(engine):
            request = asyncio.create_task(writer.write([_row(gone, 1), _row(gone, 2)]))
            await asyncio.to_thread(_wait_for_lock_waiter, engine)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        await writer.write([_row(next_one)])

    run_with_writer(url, scenario)
    assert [_rows_of(sessions, i) for i in (gone, next_one)] == [2, 1]


def test_a_request_not_committed_in_time_is_told_so(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """A commit held longer than the writer's timeout answers DatabaseUnavailableError
    (503) instead of hanging; the rows still go in once the table is free."""
    url, engine, sessions = writer_db
    late = uuid.uuid4()

    async def scenario(writer: PredictionLogWriter) -> None:
        with (
            _table_locked(engine),
            pytest.raises(DatabaseUnavailableError, match="not committed within 1 s"),
        ):
            await writer.write([_row(late)])

    run_with_writer(url, scenario, timeout_seconds=1.0)
    assert _rows_of(sessions, late) == 1


def test_a_stopped_writer_refuses_writes_and_stop_commits_what_was_queued(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """Stopping commits every request already queued; a write after the stop fails at once
    with DatabaseUnavailableError (503) instead of waiting for a writer that is gone."""
    url, _engine, sessions = writer_db
    queued = [uuid.uuid4() for _ in range(5)]

    async def scenario(writer: PredictionLogWriter) -> None:
        requests = [asyncio.create_task(writer.write([_row(i)])) for i in queued]
        await asyncio.sleep(0)  # queued, not yet committed
        await writer.stop()
        await asyncio.gather(*requests)
        with pytest.raises(DatabaseUnavailableError, match="not running"):
            await writer.write([_row(uuid.uuid4())])

    run_with_writer(url, scenario)
    assert [_rows_of(sessions, i) for i in queued] == [1] * 5


@pytest.fixture
def outage_db(pg_server: Any, pg_template: str) -> Iterator[tuple[str, str, Callable[[], Session]]]:
    """A database of its own for outages: (name, url, sessions)."""
    name = f"stockcast_test_writer_{uuid.uuid4().hex[:8]}"
    url = pg_server.create(name, template=pg_template)
    engine = create_db_engine(url)
    try:
        yield name, url, make_session_factory(engine)
    finally:
        engine.dispose()
        pg_server.set_outage(name, down=False)
        pg_server.drop(name)


def test_the_writer_survives_a_database_outage(
    pg_server: Any, outage_db: tuple[str, str, Callable[[], Session]]
) -> None:
    """While Postgres refuses connections a write fails with the database error (the app's
    503) and stores nothing; once it is back the same writer commits again."""
    name, url, sessions = outage_db
    before, during, after = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    async def scenario(writer: PredictionLogWriter) -> None:
        await writer.write([_row(before)])
        pg_server.set_outage(name, down=True)
        with pytest.raises((OperationalError, InterfaceError)):
            await writer.write([_row(during)])
        assert writer.running
        pg_server.set_outage(name, down=False)
        await writer.write([_row(after)])

    run_with_writer(url, scenario)
    assert [_rows_of(sessions, i) for i in (before, during, after)] == [1, 0, 1]


def test_a_connection_dropped_while_idle_costs_no_request(
    pg_server: Any, outage_db: tuple[str, str, Callable[[], Session]]
) -> None:
    """The writer keeps one connection; when the server drops it between two requests (a
    restart, an idle timeout), the next request's rows are still committed, on a new one."""
    name, url, sessions = outage_db
    first, second = uuid.uuid4(), uuid.uuid4()

    async def scenario(writer: PredictionLogWriter) -> None:
        await writer.write([_row(first)])
        pg_server.set_outage(name, down=True)  # terminates every backend, the writer's too
        pg_server.set_outage(name, down=False)
        await writer.write([_row(second)])

    run_with_writer(url, scenario)
    assert [_rows_of(sessions, i) for i in (first, second)] == [1, 1]


def test_a_batch_run_again_stores_each_row_once(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """A batch whose connection was lost after its statement committed is run again on a new
    connection (its outcome was unknown): rows already stored stay as they were and are not
    stored twice, the missing ones are stored. Here the same request's rows are written a
    second time, with one more step and another value for the first."""
    url, _engine, sessions = writer_db
    request = uuid.uuid4()

    async def scenario(writer: PredictionLogWriter) -> None:
        await writer.write([_row(request, 1), _row(request, 2)])
        again = [_row(request, 1, predicted_close=99.0), _row(request, 2), _row(request, 3)]
        await writer.write(again)

    run_with_writer(url, scenario)
    with sessions() as session:
        stored = session.execute(
            select(PredictionLog.horizon_step, PredictionLog.predicted_close)
            .where(PredictionLog.request_id == request)
            .order_by(PredictionLog.horizon_step)
        ).all()
    assert [tuple(row) for row in stored] == [(1, 37.5), (2, 37.5), (3, 37.5)]


def test_a_value_that_is_not_a_finite_number_is_refused_with_its_request_alone(
    writer_db: tuple[str, Engine, Callable[[], Session]],
) -> None:
    """A NaN bound (JSON has none) fails its request with 503 and stores none of its rows; a
    request written beside it is stored, and the writer goes on."""
    url, _engine, sessions = writer_db
    good, bad = uuid.uuid4(), uuid.uuid4()

    async def scenario(writer: PredictionLogWriter) -> None:
        outcomes = await asyncio.gather(
            writer.write([_row(good, 1)]),
            writer.write([_row(bad, 1), _row(bad, 2, lower_80=float("nan"))]),
            return_exceptions=True,
        )
        assert outcomes[0] is None
        assert isinstance(outcomes[1], DatabaseUnavailableError)
        await writer.write([_row(uuid.uuid4(), 1)])

    run_with_writer(url, scenario)
    assert (_rows_of(sessions, good), _rows_of(sessions, bad)) == (1, 0)


def test_the_writer_commits_on_sqlite_too(sqlite_url: str) -> None:
    """The embedded default (make run): concurrent writes to SQLite are all stored."""
    ids = [uuid.uuid4() for _ in range(20)]

    async def scenario(writer: PredictionLogWriter) -> None:
        async with asyncio.timeout(10):
            await asyncio.gather(*(writer.write([_row(i)]) for i in ids))

    run_with_writer(sqlite_url, scenario)
    engine = create_db_engine(sqlite_url)
    assert [_rows_of(make_session_factory(engine), i) for i in ids] == [1] * 20
    engine.dispose()


# -- through the API -----------------------------------------------------------------------
def test_concurrent_predictions_are_all_logged_before_their_200(
    client: TestClient,
    user_headers: dict[str, str],
    app_engine: Engine,
    app_sessions: Callable[[], Session],
) -> None:
    """24 concurrent GET /predict (horizons 1..24) while the log table is locked: none
    answers before the lock is released, then every one answers 200 and each response's
    prediction_id has exactly ``horizon`` rows, committed in fewer transactions than
    requests."""
    writer: PredictionLogWriter = client.app.state.prediction_service.log_writer  # type: ignore[attr-defined]
    commits_before = writer.commits
    horizons = list(range(1, 25))

    def get(h: int) -> Any:
        return client.get(f"/predict/{TICKER}?horizon={h}", headers=user_headers)

    with ThreadPoolExecutor(max_workers=len(horizons)) as pool:
        with _table_locked(app_engine):
            futures = [pool.submit(get, h) for h in horizons]
            _wait_for_lock_waiter(app_engine)
            time.sleep(0.5)
            assert not any(f.done() for f in futures)  # no 200 before the commit
        responses = [f.result(timeout=30) for f in futures]
    assert [r.status_code for r in responses] == [200] * len(horizons)
    for h, response in zip(horizons, responses, strict=True):
        assert _rows_of(app_sessions, uuid.UUID(response.json()["prediction_id"])) == h
    assert writer.commits - commits_before < len(horizons)


@pytest.fixture
def failing_app(
    pg_server: Any, pg_template: str, prices_dir: Path, registry: Registry
) -> Iterator[tuple[TestClient, Engine]]:
    """An app on a database of its own whose prediction_log refuses, at COMMIT (a deferred
    constraint trigger), any row with horizon_step > 5."""
    name = f"stockcast_test_gc_{uuid.uuid4().hex[:8]}"
    url = pg_server.create(name, template=pg_template)
    ingest(url, prices_dir, TICKER)
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_long_horizon() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.horizon_step > 5 THEN "
                "RAISE EXCEPTION 'horizon_step % refused at commit', NEW.horizon_step; "
                "END IF; RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE CONSTRAINT TRIGGER refuse_long_horizon AFTER INSERT ON prediction_log "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_long_horizon()"
            )
        )
    with make_session_factory(engine)() as session:
        create_user(session, "ana")
    predictor = Predictor(tracking_uri=registry.tracking_uri)
    settings = make_settings(database_url=url, tracking_uri=registry.tracking_uri)
    try:
        with TestClient(create_app(settings, predictor=predictor, configure_process=False)) as c:
            yield c, engine
    finally:
        engine.dispose()
        pg_server.drop(name)


def test_a_failing_commit_answers_503_to_exactly_its_requests(
    failing_app: tuple[TestClient, Engine],
) -> None:
    """Horizon-1 and horizon-10 requests queued into the same group commit, whose COMMIT
    refuses horizon steps > 5: each horizon-10 request gets 503 and none of its rows is
    stored; each horizon-1 request gets 200 and its row is stored."""
    client, engine = failing_app
    headers = {"Authorization": f"Bearer {login(client, 'ana')}"}
    horizons = [1, 10, 1, 1, 10, 1]
    lock = threading.Lock()
    responses: dict[int, Any] = {}

    def get(index: int) -> None:
        response = client.get(f"/predict/{TICKER}?horizon={horizons[index]}", headers=headers)
        with lock:
            responses[index] = response

    with ThreadPoolExecutor(max_workers=len(horizons)) as pool:
        with _table_locked(engine):
            first = pool.submit(get, 0)
            _wait_for_lock_waiter(engine)
            rest = [pool.submit(get, i) for i in range(1, len(horizons))]
            time.sleep(0.5)
        for future in [first, *rest]:
            future.result(timeout=30)
    statuses = [responses[i].status_code for i in range(len(horizons))]
    assert statuses == [200 if h == 1 else 503 for h in horizons]
    assert all(responses[i].headers.get("Retry-After") for i, h in enumerate(horizons) if h > 1)
    sessions = make_session_factory(engine)
    with sessions() as session:
        stored = session.execute(select(PredictionLog.request_id, PredictionLog.horizon_step)).all()
    ok_ids = {
        uuid.UUID(responses[i].json()["prediction_id"]) for i, h in enumerate(horizons) if h == 1
    }
    assert {row.request_id for row in stored} == ok_ids
    assert {row.horizon_step for row in stored} == {1}
    # the app keeps serving
    assert client.get(f"/predict/{TICKER}?horizon=2", headers=headers).status_code == 200


def test_predictions_on_the_embedded_sqlite_default_are_all_logged(
    sqlite_url: str, prices_dir: Path, registry: Registry
) -> None:
    """`make run`'s database is SQLite: 16 concurrent GET /predict all answer 200 and each
    prediction_id has its rows, read through the async path (cache misses in the thread
    pool) and committed by the writer's own SQLite connection."""
    ingest(sqlite_url, prices_dir, TICKER)
    engine = create_db_engine(sqlite_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        create_user(session, "sqlite-user")
    settings = make_settings(database_url=sqlite_url, tracking_uri=registry.tracking_uri)
    try:
        with TestClient(create_app(settings, configure_process=False)) as client:
            headers = {"Authorization": f"Bearer {login(client, 'sqlite-user')}"}
            with ThreadPoolExecutor(max_workers=16) as pool:
                responses = list(
                    pool.map(
                        lambda h: client.get(f"/predict/{TICKER}?horizon={h}", headers=headers),
                        range(1, 17),
                    )
                )
        assert [r.status_code for r in responses] == [200] * 16
        rows = [_rows_of(sessions, uuid.UUID(r.json()["prediction_id"])) for r in responses]
        assert rows == list(range(1, 17))
    finally:
        engine.dispose()
