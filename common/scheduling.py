"""Run a batch job on a cron schedule, or once: the loop of the data-pipeline and ML images.

One image serves three ways of running it:

* long-running (``docker compose up``): ``run_on_schedule(job, cron="0 22 * * 1-5",
  once=False, name="ingest")`` blocks, runs ``job`` at every fire time of the cron
  expression and logs each run; SIGTERM or SIGINT stops it cleanly (exit status 0);
* one-shot (``docker compose run --rm``, a host crontab, a Kubernetes CronJob):
  ``once=True`` runs ``job`` immediately and returns its exit status;
* the scheduler is APScheduler 3.x (``BackgroundScheduler``, the calling thread waits for a
  stop request): a run still going when the next fire time comes is not started twice, and
  fire times missed while the process was busy are coalesced into one run.

Cron expressions are standard crontab: five fields, ``minute hour day-of-month month
day-of-week``, with day-of-week ``0``-``7`` where 0 and 7 are Sunday, as in ``crontab(5)``.
APScheduler 3.x numbers weekdays from Monday = 0 (its issue #286), so
:func:`cron_trigger` rewrites the day-of-week field into weekday names before building
the trigger: ``1-5`` means Monday to Friday here, exactly as in a crontab. One difference
remains: when both day-of-month and day-of-week are restricted, a fire time must match both
(crontab fires when either matches); keep one of the two at ``*``.

Fire times are in the process's local time zone (the ``TZ`` environment variable; UTC in
the project's containers unless ``TZ`` is set).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

logger = logging.getLogger(__name__)

#: Weekday names in crontab order: index 0 (and 7) is Sunday.
_CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_FIELDS = "minute hour day-of-month month day-of-week"
#: A run whose fire time was missed by less than this still runs (seconds).
MISFIRE_GRACE_SECONDS = 3600


def _weekday_number(token: str, expr: str) -> int:
    """``"5"`` or ``"fri"`` -> 5 (crontab numbering, 0 and 7 are Sunday)."""
    lowered = token.strip().lower()
    if lowered in _CRON_WEEKDAYS:
        return _CRON_WEEKDAYS.index(lowered)
    if lowered.isdigit() and 0 <= int(lowered) <= 7:
        return int(lowered)
    raise ValueError(
        f"invalid cron expression {expr!r}: day-of-week {token!r} is not 0-7 or sun..sat"
    )


def _crontab_weekdays(field: str, expr: str) -> str:
    """Rewrite a crontab day-of-week field into APScheduler weekday names.

    Supports ``*``, single days, ranges (``1-5``, ``mon-fri``, ``5-7``), steps
    (``*/2``, ``1-5/2``) and comma lists, with crontab numbering (0 and 7 are Sunday).

    Returns:
        ``"*"`` when every day is selected, else a comma list such as ``"mon,tue,wed"``.

    Raises:
        ValueError: a part of the field is not crontab syntax.
    """
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(
                    f"invalid cron expression {expr!r}: day-of-week step {step_text!r} "
                    "is not a positive number"
                )
            step = int(step_text)
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            start_text, _, end_text = base.partition("-")
            first, last = _weekday_number(start_text, expr), _weekday_number(end_text, expr)
            if last < first:
                raise ValueError(
                    f"invalid cron expression {expr!r}: day-of-week range {base!r} runs backwards"
                )
        else:
            first = _weekday_number(base, expr)
            last = 7 if step_text else first  # crontab: "N/step" means "N-7/step"
        days.update(day % 7 for day in range(first, last + 1, step))
    if len(days) == 7:
        return "*"
    return ",".join(_CRON_WEEKDAYS[day] for day in sorted(days))


def cron_trigger(cron: str, *, timezone: dt.tzinfo | str | None = None) -> CronTrigger:
    """Build an APScheduler trigger from a standard five-field crontab expression.

    Args:
        cron: ``minute hour day-of-month month day-of-week``, e.g. ``"0 22 * * 1-5"``
            (weekdays at 22:00) or ``"0 3 * * 6"`` (Saturdays at 03:00). Day-of-week uses
            crontab numbering (0 and 7 are Sunday) or names (``mon-fri``).
        timezone: time zone of the fire times; default: the local one (``TZ``).

    Returns:
        A :class:`~apscheduler.triggers.cron.CronTrigger` whose fire times match ``crontab(5)``.

    Raises:
        ValueError: the expression is not five valid crontab fields; the message quotes it.
    """
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron expression {cron!r}: expected 5 fields ({_CRON_FIELDS}), "
            f"got {len(fields)}; example: '0 22 * * 1-5' (weekdays at 22:00)"
        )
    fields[4] = _crontab_weekdays(fields[4], cron)
    try:
        return CronTrigger.from_crontab(" ".join(fields), timezone=timezone)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {cron!r}: {exc}") from exc


def next_fire_time(trigger: CronTrigger, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """The first fire time of ``trigger`` after ``now`` (default: the current time)."""
    moment = now if now is not None else dt.datetime.now(dt.UTC)
    fire: dt.datetime | None = trigger.get_next_fire_time(None, moment)
    return fire


def run_job_logged(job: Callable[[], int], *, name: str) -> int:
    """Run ``job`` once, logging its start, duration and exit status.

    Args:
        job: the work; returns a process exit status (0 = success).
        name: label used in the log lines (``ingest``, ``train``).

    Returns:
        The job's exit status; 1 when it raised (the traceback is logged, not re-raised,
        so a scheduler keeps going and a one-shot run exits non-zero).
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


def run_on_schedule(job: Callable[[], int], *, cron: str, once: bool, name: str) -> int:
    """Run ``job`` now (``once=True``) or at every fire time of ``cron`` until stopped.

    Args:
        job: the work; returns a process exit status (0 = success).
        cron: standard crontab expression (see :func:`cron_trigger`); ignored when ``once``.
        once: run immediately, a single time, and return its exit status.
        name: label of the job in the log lines.

    Returns:
        With ``once``: the job's exit status. Otherwise 0 once SIGTERM or SIGINT (main
        thread only) or a ``shutdown()`` of the scheduler from elsewhere stopped it; a run in
        progress is finished first. Failed runs are logged and do not stop the schedule.

    Raises:
        ValueError: ``cron`` is not a valid crontab expression (checked before anything runs).
    """
    if once:
        return run_job_logged(job, name=name)
    trigger = cron_trigger(cron)
    scheduler = BackgroundScheduler(
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": MISFIRE_GRACE_SECONDS,
        }
    )

    def scheduled_run() -> None:
        run_job_logged(job, name=name)
        logger.info("%s: next run at %s", name, _format(next_fire_time(trigger)))

    scheduler.add_job(scheduled_run, trigger, id=name, name=name)
    shut_down = threading.Event()
    scheduler.add_listener(lambda _event: shut_down.set(), EVENT_SCHEDULER_SHUTDOWN)
    signals = _StopSignals()
    try:
        logger.info(
            "%s: scheduled with cron %r; next run at %s",
            name,
            cron,
            _format(next_fire_time(trigger)),
        )
        scheduler.start()
        while signals.received is None and not shut_down.wait(_STOP_POLL_SECONDS):
            pass
        if signals.received is not None:
            logger.info("%s: received %s, stopping", name, signals.received.name)
    finally:
        signals.restore()  # a second SIGTERM/SIGINT now acts as usual
        if scheduler.running:
            scheduler.shutdown(wait=True)  # a run in progress is finished first
    logger.info("%s: scheduler stopped", name)
    return 0


def _format(moment: dt.datetime | None) -> str:
    return moment.isoformat() if moment is not None else "never"


#: How often the waiting thread looks for a stop request (seconds).
_STOP_POLL_SECONDS = 0.2


class _StopSignals:
    """Record the first SIGTERM/SIGINT of the main thread; nothing else happens in the handler.

    The handler only stores the signal: it raises nothing and takes no lock, so it is safe
    wherever it interrupts the main thread (an exception raised from a handler could land
    inside APScheduler's start-up while it held a lock, and the process hung on SIGTERM).
    The waiting loop of :func:`run_on_schedule` sees it within ``_STOP_POLL_SECONDS``.
    Outside the main thread, where Python cannot install handlers, nothing is installed.
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
