"""Group commit of ``prediction_log`` rows: one writer task on each worker's event loop, one
transaction for the rows of every request that is waiting.

A request hands its rows to :meth:`PredictionLogWriter.write` and waits until they are
committed (or the commit failed), so a 200 response is never sent for rows that are not
durable. Meanwhile other requests queue their rows; when the current commit returns, the
writer takes everything queued and commits it in one transaction. Under load one WAL flush
then covers many requests instead of one each (the batching that databases call *group
commit*, here done by the client); with a single request in flight it is an ordinary commit
with no added wait.

The writer is an asyncio task on the same event loop as the requests, with one
:class:`~sqlalchemy.ext.asyncio.AsyncConnection` (psycopg's async connection on Postgres,
aiosqlite on SQLite): while its ``INSERT`` or ``COMMIT`` waits for the database the loop
serves other requests, and no second thread competes with the event loop for the GIL
(decision 11).

Each successful commit is timed in ``stockcast_prediction_log_commit_seconds`` and its size
counted in ``stockcast_prediction_log_commit_requests`` (:mod:`app.core.monitoring`): every
prediction's response waits for a commit, so a slow disk shows there first.

On Postgres a batch is one statement (:func:`crud.insert_predictions`: atomic, and
idempotent through the unique ``(request_id, horizon_step)``), run on a connection in
autocommit mode: the statement commits itself, durably (``synchronous_commit``) before its
result comes back, in one round trip where ``BEGIN``, ``INSERT`` and ``COMMIT`` take three
(decision 15). On SQLite the rows are inserted and committed in a transaction.

Failures:

* the database is unreachable (``OperationalError``/``InterfaceError``): every request of
  the batch gets the error (503 through the app's handler), and the writer goes on with the
  next batch, so it recovers as soon as the database is back. The batch is stored whole or
  not at all (one transaction); on Postgres it may be stored whole although its requests got
  503, when the connection died after the statement committed and the retry could not
  connect (a 200 is never sent for rows that are not stored);
* any other error (a constraint, a bad value, a failing trigger; on Postgres also a float
  that is not finite, which the batch's JSON cannot carry): the batch is retried one request
  per transaction, so only the request whose rows are refused fails
  (with :class:`~common.exceptions.DatabaseUnavailableError`, 503: its prediction could not
  be logged);
* the writer never dies of an exception; a request waiting longer than
  ``timeout_seconds`` gets :class:`common.exceptions.DatabaseUnavailableError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.monitoring import PREDICTION_LOG_COMMIT_LATENCY, PREDICTION_LOG_COMMIT_REQUESTS
from app.features.stock_prediction import crud
from common.exceptions import DatabaseUnavailableError

logger = logging.getLogger(__name__)

#: Most rows committed in one transaction (30 requests of horizon 30 are 900 rows).
MAX_BATCH_ROWS = 5000
#: Longest a request waits for its commit, seconds.
DEFAULT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class _Pending:
    """One request's rows, and the future its request waits on."""

    rows: Sequence[dict[str, Any]]
    waiter: asyncio.Future[None]


def _settle(pending: _Pending, exc: BaseException | None) -> None:
    # the waiter is done already when its request was cancelled (client gone or timed
    # out): the rows are committed all the same, nobody is told
    if pending.waiter.done():
        return
    if exc is None:
        pending.waiter.set_result(None)
    else:
        pending.waiter.set_exception(exc)


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    # the request's deadline: its rows stay queued and are committed when the database
    # answers again, but the request stops waiting for them (503)
    if not waiter.done():
        waiter.set_exception(
            DatabaseUnavailableError(f"the prediction log was not committed within {timeout:.0f} s")
        )


def _failure(exc: BaseException) -> BaseException:
    """The exception a request sees for a failed commit: connection errors as they are."""
    if isinstance(exc, OperationalError | InterfaceError | DatabaseUnavailableError):
        return exc
    failed = DatabaseUnavailableError(f"the prediction log could not be committed: {exc}")
    failed.__cause__ = exc
    return failed


class PredictionLogWriter:
    """Commits the ``prediction_log`` rows of concurrent requests in shared transactions.

    Lives on one event loop: :meth:`start` it on the loop that serves the requests (the
    app's lifespan does), call :meth:`write` from that loop's coroutines, and await
    :meth:`stop` there.

    The writer keeps one connection of ``engine``'s pool for as long as it works (no
    checkout and ``pool_pre_ping`` per batch). A connection lost at the ``INSERT`` (the
    database restarted meanwhile) is replaced and the batch tried once more on a new one: on
    SQLite nothing of it was written (the transaction died with the connection); on Postgres
    the statement may have committed before the loss, and running it again stores what is
    missing and nothing twice. On SQLite a connection lost at the ``COMMIT`` is replaced too,
    but that batch fails (its outcome is unknown, so no 200 is sent for it); on Postgres the
    ``COMMIT`` is no round trip (autocommit).

    Args:
        engine: an async engine on the app's database
            (:func:`app.core.database.create_async_db_engine`).
        timeout_seconds: longest :meth:`write` waits for its commit, seconds.
        max_batch_rows: most rows per transaction.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None  # the writer task's only
        self._timeout = timeout_seconds
        self._max_rows = max_batch_rows
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()  # replaced by start(): an Event binds to one loop
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Transactions committed and requests they carried (for tests and logs).
        self.commits = 0
        self.requests_committed = 0

    @property
    def queued(self) -> int:
        """Requests waiting for a transaction to take their rows."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._task is not None and not self._stopping and not self._task.done()

    def start(self) -> None:
        """Start the writer task on the running event loop (idempotent).

        Raises:
            RuntimeError: no event loop is running in this thread.
        """
        if self.running:
            return
        self._stopping = False
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="prediction-log-writer"
        )

    async def stop(self) -> None:
        """Commit what is queued, then end the task and give its connection back."""
        task, self._stopping = self._task, True
        self._wakeup.set()
        if task is not None:
            await task
        self._task = None

    async def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Commit ``rows`` (one request's) with other requests' rows; return once committed.

        Cancelling the caller (a client that disconnects) does not withdraw the rows: they
        are committed with their batch, and no 200 was sent for them.

        Args:
            rows: column values of :class:`app.models.prediction_log.PredictionLog`.

        Raises:
            sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError: the database is
                unreachable (the app answers 503); nothing of the request is stored.
            common.exceptions.DatabaseUnavailableError: the database refused these rows (the
                cause is chained), no commit within ``timeout_seconds``, or the writer is not
                running; the app answers 503 as well.
        """
        if not rows:
            return
        if not self.running:
            raise DatabaseUnavailableError("the prediction log writer is not running")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._queue.append(_Pending(rows, waiter))
        self._wakeup.set()
        # a timer that fails the waiter, rather than asyncio.timeout(): the same deadline
        # for half the CPU (2.5 against 5 µs on uvloop; no task cancellation to undo)
        deadline = loop.call_later(self._timeout, _expire, waiter, self._timeout)
        try:
            await waiter
        finally:
            deadline.cancel()

    # -- the writer task -------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while self._queue or not self._stopping:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._commit_batch(self._next_batch())
        finally:
            # cancelled (the loop is closing without stop()): nobody is left waiting
            for pending in self._queue:
                _settle(pending, DatabaseUnavailableError("the prediction log writer stopped"))
            self._queue.clear()
            await self._release()

    def _next_batch(self) -> list[_Pending]:
        """Everything queued, up to ``max_batch_rows`` rows (at least one request)."""
        batch = [self._queue.popleft()]
        n_rows = len(batch[0].rows)
        while self._queue and n_rows + len(self._queue[0].rows) <= self._max_rows:
            pending = self._queue.popleft()
            batch.append(pending)
            n_rows += len(pending.rows)
        return batch

    async def _commit(self, batch: Sequence[_Pending]) -> None:
        rows = [row for pending in batch for row in pending.rows]
        try:
            await self._insert(rows)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            logger.warning("prediction log: connection lost at the insert; reconnecting")
            # nothing was written, or (Postgres) all of it: the statement is idempotent
            await self._insert(rows)
        connection = await self._held()
        try:
            await connection.commit()
        except BaseException:
            await self._release()
            raise

    async def _held(self) -> AsyncConnection:
        if self._connection is None:
            connection = await self.engine.connect()
            if connection.dialect.name == "postgresql":
                # the batch is one atomic, idempotent statement (crud): it commits itself
                connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            self._connection = connection
        return self._connection

    async def _insert(self, rows: Sequence[dict[str, Any]]) -> None:
        try:
            await crud.insert_predictions(await self._held(), rows)
        except BaseException:
            await self._release()
            raise

    async def _release(self) -> None:
        """Give the held connection back (rolled back, or discarded if it is dead)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except DBAPIError:
                logger.debug("prediction log: closing a dead connection failed", exc_info=True)

    async def _commit_batch(self, batch: list[_Pending]) -> None:
        began = time.perf_counter()
        try:
            await self._commit(batch)
        except (OperationalError, InterfaceError) as exc:
            logger.error("prediction log: database unavailable, %d requests fail", len(batch))
            self._fail(batch, exc)
            return
        except Exception as exc:  # refused rows: find the request they belong to
            if len(batch) == 1:
                logger.error("prediction log: rows refused: %s", exc)
                self._fail(batch, exc)
                return
            logger.warning("prediction log: batch of %d refused; one by one", len(batch))
            for pending in batch:
                await self._commit_batch([pending])
            return
        seconds = time.perf_counter() - began
        self.commits += 1
        self.requests_committed += len(batch)
        PREDICTION_LOG_COMMIT_LATENCY.observe(seconds)
        PREDICTION_LOG_COMMIT_REQUESTS.observe(len(batch))
        logger.debug(
            "prediction log: %d requests in one commit, %.1f ms", len(batch), seconds * 1000.0
        )
        for pending in batch:
            _settle(pending, None)

    @staticmethod
    def _fail(batch: Sequence[_Pending], exc: BaseException) -> None:
        failure = _failure(exc)
        for pending in batch:
            _settle(pending, failure)
