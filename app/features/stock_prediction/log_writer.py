"""Group commit of ``prediction_log`` rows: one writer thread per process, one transaction
for the rows of every request that is waiting.

A request hands its rows to :meth:`PredictionLogWriter.write` and blocks until they are
committed (or the commit failed), so a 200 response is never sent for rows that are not
durable. Meanwhile other requests queue their rows; when the current commit returns, the
writer takes everything queued and commits it as one multi-row ``INSERT`` in one transaction.
Under load one WAL flush then covers many requests instead of one each (the batching that
databases call *group commit*, here done by the client); with a single request in flight it
is an ordinary commit with no added wait.

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

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.features.stock_prediction import crud
from common.db import DatabaseUnavailableError

logger = logging.getLogger(__name__)

#: Most rows committed in one transaction (30 requests of horizon 30 are 900 rows).
MAX_BATCH_ROWS = 5000
#: Longest a request waits for its commit, seconds.
DEFAULT_TIMEOUT_SECONDS = 30.0


@dataclass
class _Pending:
    rows: Sequence[dict[str, Any]]
    done: Future[None] = field(default_factory=Future)


class PredictionLogWriter:
    """Commits the ``prediction_log`` rows of concurrent requests in shared transactions.

    Args:
        session_factory: makes the writer's sessions (the app's factory).
        timeout_seconds: longest :meth:`write` waits for its commit, seconds.
        max_batch_rows: most rows per transaction.
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        self._session_factory = session_factory
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

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Commit ``rows`` (one request's), together with other requests' rows; block until done.

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
        pending = _Pending(rows)
        self._queue.put(pending)
        try:
            pending.done.result(timeout=self._timeout)
        except FutureTimeout as exc:
            raise DatabaseUnavailableError(
                f"the prediction log was not committed within {self._timeout:.0f} s"
            ) from exc
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # the commit failed otherwise: still no durable log -> 503
            raise DatabaseUnavailableError(
                f"the prediction log could not be committed: {exc}"
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
                return
            if item is not None:
                self._commit_batch([item])

    def _commit(self, batch: Sequence[_Pending]) -> None:
        rows = [row for pending in batch for row in pending.rows]
        with self._session_factory() as session:
            crud.insert_predictions(session, rows)
            session.commit()

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
            pending.done.set_result(None)

    @staticmethod
    def _fail(batch: Sequence[_Pending], exc: BaseException) -> None:
        for pending in batch:
            pending.done.set_exception(exc)
