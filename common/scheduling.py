"""Run a batch job on a cron schedule, or once: the loop of the data-pipeline and ML images.

One image serves three ways of running it:

* long-running (``docker compose up``): ``run_on_schedule(job, cron="0 22 * * 1-5",
  once=False, name="ingest")`` blocks, runs ``job`` at every fire time of the cron
  expression and logs each run; SIGTERM or SIGINT stops it cleanly (exit status 0), after
  the run in progress;
* one-shot (``docker compose run --rm``, a host crontab, a Kubernetes CronJob):
  ``once=True`` runs ``job`` immediately and returns its exit status;
* runs never overlap: a run still going at the next fire time is followed by one run right
  after it (the fire times it missed are coalesced), unless it overran by more than
  :data:`MISFIRE_GRACE_SECONDS`, in which case the schedule resumes at the next fire time.

Cron expressions are standard crontab, evaluated by cronsim: five fields, ``minute hour
day-of-month month day-of-week``, day-of-week ``0``-``7`` (0 and 7 are Sunday) or names, and
when both day-of-month and day-of-week are restricted a day matching either fires, exactly
as in ``crontab(5)``. Fire times are in the process's local time zone (``TZ``; UTC in the
project's containers unless ``TZ`` is set), daylight-saving changes included.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
import time
import zoneinfo
from collections.abc import Callable
from types import FrameType
from typing import Any

from cronsim import CronSim, CronSimError

logger = logging.getLogger(__name__)

_CRON_FIELDS = "minute hour day-of-month month day-of-week"
#: A run whose fire time was missed by less than this still runs (seconds).
MISFIRE_GRACE_SECONDS = 3600
#: How often the waiting loop looks at the clock and for a stop request (seconds).
_POLL_SECONDS = 0.2


def local_timezone() -> dt.tzinfo:
    """The process's time zone: ``TZ`` as an IANA name if set and known, else the system's."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    local = dt.datetime.now().astimezone().tzinfo
    assert local is not None  # astimezone() always sets one
    return local


def check_cron(cron: str) -> str:
    """``cron`` if it is a valid five-field crontab expression.

    Args:
        cron: ``minute hour day-of-month month day-of-week``, e.g. ``"0 22 * * 1-5"``
            (weekdays at 22:00) or ``"0 3 * * 6"`` (Saturdays at 03:00).

    Raises:
        ValueError: not five valid crontab fields; the message quotes the expression and
            names the field at fault.
    """
    next_fire_time(cron, now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    return cron


def next_fire_time(cron: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """The first fire time of ``cron`` strictly after ``now``, in ``now``'s time zone.

    Args:
        cron: a crontab expression (see :func:`check_cron`).
        now: an aware datetime; default: the current time in :func:`local_timezone`.

    Raises:
        ValueError: ``cron`` is not a valid crontab expression.
    """
    moment = now if now is not None else dt.datetime.now(local_timezone())
    if len(cron.split()) != 5:
        raise ValueError(
            f"invalid cron expression {cron!r}: expected 5 fields ({_CRON_FIELDS}), "
            f"got {len(cron.split())}; example: '0 22 * * 1-5' (weekdays at 22:00)"
        )
    try:
        return next(CronSim(cron, moment))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {cron!r}: {exc}") from exc


def run_job_logged(job: Callable[[], int], *, name: str) -> int:
    """Run ``job`` once, logging its start, duration and exit status.

    Args:
        job: the work; returns a process exit status (0 = success).
        name: label used in the log lines (``ingest``, ``train``).

    Returns:
        The job's exit status; 1 when it raised (the traceback is logged, not re-raised,
        so a schedule keeps going and a one-shot run exits non-zero).
    """
    logger.info("%s: run started", name)
    began = time.perf_counter()
    try:
        status = int(job())
    except Exception:
        logger.exception(
            "%s: run failed after %.1f s with an error", name, time.perf_counter() - began
        )
        return 1
    log = logger.info if status == 0 else logger.warning
    log("%s: run finished in %.1f s with exit status %d", name, time.perf_counter() - began, status)
    return status


def run_on_schedule(
    job: Callable[[], int],
    *,
    cron: str,
    once: bool,
    name: str,
    stop: threading.Event | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> int:
    """Run ``job`` now (``once=True``) or at every fire time of ``cron`` until stopped.

    Args:
        job: the work; returns a process exit status (0 = success).
        cron: standard crontab expression (see :func:`check_cron`); ignored when ``once``.
        once: run immediately, a single time, and return its exit status.
        name: label of the job in the log lines.
        stop: set by another thread to stop the schedule (as SIGTERM does).
        clock: the current aware time (default: now in :func:`local_timezone`).

    Returns:
        With ``once``: the job's exit status. Otherwise 0 once SIGTERM or SIGINT (main
        thread only) or ``stop`` stopped it; a run in progress is finished first. Failed runs
        are logged and do not stop the schedule.

    Raises:
        ValueError: ``cron`` is not a valid crontab expression (checked before anything runs).
    """
    if once:
        return run_job_logged(job, name=name)
    check_cron(cron)
    now = clock or (lambda: dt.datetime.now(local_timezone()))
    stop = stop or threading.Event()
    signals = _StopSignals()

    def stopping() -> bool:
        return stop.is_set() or signals.received is not None

    try:
        fire = next_fire_time(cron, now=now())
        logger.info("%s: scheduled with cron %r; next run at %s", name, cron, fire.isoformat())
        while not stopping():
            remaining = (fire - now()).total_seconds()
            if remaining > 0:
                time.sleep(min(remaining, _POLL_SECONDS))
                continue
            run_job_logged(job, name=name)
            fire = _next_run(cron, after=fire, now=now())
            logger.info("%s: next run at %s", name, fire.isoformat())
        if signals.received is not None:
            logger.info("%s: received %s, stopping", name, signals.received.name)
    finally:
        signals.restore()  # a second SIGTERM/SIGINT now acts as usual
    logger.info("%s: scheduler stopped", name)
    return 0


def _next_run(cron: str, *, after: dt.datetime, now: dt.datetime) -> dt.datetime:
    """When to run next, the run due at ``after`` having ended at ``now``: the next fire time,
    or, when fire times passed during the run, the latest of them (due at once: one run for
    all), unless even that one is more than :data:`MISFIRE_GRACE_SECONDS` old."""
    upcoming = next_fire_time(cron, now=after)
    latest_missed: dt.datetime | None = None
    while upcoming <= now:
        latest_missed, upcoming = upcoming, next_fire_time(cron, now=upcoming)
    if latest_missed is not None and (now - latest_missed).total_seconds() <= MISFIRE_GRACE_SECONDS:
        return latest_missed
    return upcoming


class _StopSignals:
    """Record the first SIGTERM/SIGINT of the main thread; nothing else happens in the handler.

    The handler only stores the signal: it raises nothing and takes no lock, so it is safe
    wherever it interrupts the main thread; the loop of :func:`run_on_schedule` sees it
    within ``_POLL_SECONDS``, or once the run in progress ends. Outside the main thread,
    where Python cannot install handlers, nothing is installed.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def restore(self) -> None:
        """Put the previous handlers back."""
        for signum, old in self._previous.items():
            signal.signal(signum, old)
        self._previous.clear()
