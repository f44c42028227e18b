"""Group commit of ``prediction_log`` rows: one writer thread per process, one transaction
for the rows of every request that is waiting.

A request hands its rows to :meth:`PredictionLogWriter.write_async` and waits until they are
committed (or the commit failed), so a 200 response is never sent for rows that are not
durable. The event loop is not blocked meanwhile: the writer thread settles the request's
asyncio future with ``call_soon_threadsafe``, so a waiting request costs no thread.

Meanwhile other requests queue their rows; when the current commit returns, the writer takes
everything queued and commits it as one multi-row ``INSERT`` in one transaction. Under load
one WAL flush then covers many requests instead of one each (the batching that databases
call *group commit*, here done by the client); with a single request in flight it is an
ordinary commit with no added wait.

Failures:

* the database is unreachable (``OperationalError``/``InterfaceError``): every request of
  the batch gets the error (503 through the app's handler); nothing of the batch is stored
  (one transaction), and the writer goes on with the next batch, so it recovers as soon as
  the database is back;
* any other database error (a constraint, a bad value, a failing trigger): the batch is
  retried one request per transaction, so only the request whose rows are refused fails
  (with :class:`common.db.DatabaseUnavailableError`, 503: its prediction could not be logged);
* the writer never dies of an exception; a request waiting longer than
  ``timeout_seconds`` gets :class:`common.db.DatabaseUnavailableError`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from app.features.stock_prediction import crud
from common.db import DatabaseUnavailableError

logger = logging.getLogger(__name__)

#: Most rows committed in one transaction (30 requests of horizon 30 are 900 rows).
MAX_BATCH_ROWS = 5000
#: Longest a request waits for its commit, seconds.
DEFAULT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class _Pending:
    """One request's rows, and the future on its event loop that waits for their commit."""

    rows: Sequence[dict[str, Any]]
    loop: asyncio.AbstractEventLoop
    waiter: asyncio.Future[None]


def _settle_waiter(waiter: asyncio.Future[None], exc: BaseException | None) -> None:
    # runs on the event loop; the waiter is done already when its request was cancelled
    # (client gone or timed out): the rows are committed all the same, nobody is told
    if waiter.done():
        return
    if exc is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(exc)


def _failure(exc: BaseException) -> BaseException:
    """The exception a request sees for a failed commit: connection errors as they are."""
    if isinstance(exc, OperationalError | InterfaceError | DatabaseUnavailableError):
        return exc
    failed = DatabaseUnavailableError(f"the prediction log could not be committed: {exc}")
    failed.__cause__ = exc
    return failed


class PredictionLogWriter:
    """Commits the ``prediction_log`` rows of concurrent requests in shared transactions.

    The writer thread keeps one connection of ``engine``'s pool for as long as it works
    (no checkout and ``pool_pre_ping`` per batch). A connection found dead at the
    ``INSERT`` (the database restarted meanwhile) is replaced and the batch tried once more
    on a new one, since nothing of it was written; a connection lost at the ``COMMIT`` is
    replaced too, but that batch fails (its outcome is unknown, so no 200 is sent for it).

    Args:
        engine: the app's engine.
        timeout_seconds: longest :meth:`write` waits for its commit, seconds.
        max_batch_rows: most rows per transaction.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        self._engine = engine
        self._connection: Connection | None = None  # the writer thread's only
        self._timeout = timeout_seconds
        self._max_rows = max_batch_rows
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Transactions committed and requests they carried (for tests and logs).
        self.commits = 0
        self.requests_committed = 0

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        with self._lock:
            if self.running:
                return
            self._thread = threading.Thread(
                target=self._run, name="prediction-log-writer", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread (waits up to ``timeout`` seconds)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=timeout)

    async def write_async(self, rows: Sequence[dict[str, Any]]) -> None:
        """Commit ``rows`` (one request's) with other requests' rows; return once committed.

        Waits on an asyncio future that the writer thread settles, so the event loop is not
        blocked. Cancelling the caller (a client that disconnects) does not withdraw the
        rows: they are committed with their batch, and no 200 was sent for them.

        Args:
            rows: column values of :class:`app.models.prediction_log.PredictionLog`.

        Raises:
            sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError: the database is
                unreachable (the app answers 503); nothing of the request is stored.
            common.db.DatabaseUnavailableError: the database refused these rows (the cause is
                chained), no commit within ``timeout_seconds``, or the writer is not running;
                the app answers 503 as well.
        """
        if not rows:
            return
        if not self.running:
            raise DatabaseUnavailableError("the prediction log writer is not running")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(rows, loop, waiter))
        try:
            async with asyncio.timeout(self._timeout):
                await waiter
        except TimeoutError as exc:
            raise DatabaseUnavailableError(
                f"the prediction log was not committed within {self._timeout:.0f} s"
            ) from exc

    # -- the writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch, n_rows = [first], len(first.rows)
            while n_rows < self._max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                n_rows += len(item.rows)
            self._commit_batch(batch)
        # commit what arrived after the stop sentinel rather than leave it waiting
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._commit_batch([item])
        self._release()

    def _commit(self, batch: Sequence[_Pending]) -> None:
        rows = [row for pending in batch for row in pending.rows]
        try:
            self._insert(rows)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            logger.warning("prediction log: connection lost before the insert; reconnecting")
            self._insert(rows)  # nothing was written: once more, on a new connection
        try:
            self._held().commit()
        except BaseException:
            self._release()
            raise

    def _held(self) -> Connection:
        if self._connection is None:
            self._connection = self._engine.connect()
        return self._connection

    def _insert(self, rows: Sequence[dict[str, Any]]) -> None:
        try:
            crud.insert_predictions(self._held(), rows)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        """Give the held connection back (rolled back, or discarded if it is dead)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except DBAPIError:
                logger.debug("prediction log: closing a dead connection failed", exc_info=True)

    def _commit_batch(self, batch: list[_Pending]) -> None:
        began = time.perf_counter()
        try:
            self._commit(batch)
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
                self._commit_batch([pending])
            return
        self.commits += 1
        self.requests_committed += len(batch)
        logger.debug(
            "prediction log: %d requests in one commit, %.1f ms",
            len(batch),
            (time.perf_counter() - began) * 1000.0,
        )
        for pending in batch:
            self._settle(pending, None)

    @classmethod
    def _fail(cls, batch: Sequence[_Pending], exc: BaseException) -> None:
        failure = _failure(exc)
        for pending in batch:
            cls._settle(pending, failure)

    @staticmethod
    def _settle(pending: _Pending, exc: BaseException | None) -> None:
        try:
            pending.loop.call_soon_threadsafe(_settle_waiter, pending.waiter, exc)
        except RuntimeError:  # the request's event loop is closed: nobody waits any more
            logger.warning("prediction log: a request's event loop closed before its commit")
