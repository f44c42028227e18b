"""The batch images' scheduler: crontab semantics, one-shot runs, logged runs, clean stop."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from common.scheduling import check_cron, next_fire_time, run_job_logged, run_on_schedule
from tests.conftest import REPO_ROOT

#: Sunday 2026-11-22 00:00 UTC.
SUNDAY = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)


def fire_times(cron: str, count: int, start: dt.datetime = SUNDAY) -> list[str]:
    out, moment = [], start
    for _ in range(count):
        fire = next_fire_time(cron, now=moment)
        out.append(fire.strftime("%a %d %H:%M"))
        moment = fire
    return out


class Clock:
    """Wall time that runs at real speed from ``start``, and jumps when a test moves it."""

    def __init__(self, start: dt.datetime) -> None:
        self.start, self.began, self.jumped = start, time.monotonic(), dt.timedelta()

    def __call__(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=time.monotonic() - self.began) + self.jumped


def test_weekday_ingest_cron_fires_monday_to_friday_at_22():
    assert fire_times("0 22 * * 1-5", 6) == [
        "Mon 23 22:00", "Tue 24 22:00", "Wed 25 22:00", "Thu 26 22:00", "Fri 27 22:00",
        "Mon 30 22:00",
    ]  # fmt: skip


def test_saturday_training_cron_fires_on_saturday_not_sunday():
    """Weekday 6 is Saturday, as in crontab (APScheduler's own numbering made it Sunday)."""
    assert fire_times("0 3 * * 6", 2) == ["Sat 28 03:00", "Sat 05 03:00"]


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("0 3 * * 0", ["Sun 22 03:00", "Sun 29 03:00"]),
        ("0 3 * * 7", ["Sun 22 03:00", "Sun 29 03:00"]),
        ("0 9 * * 5-7", ["Sun 22 09:00", "Fri 27 09:00", "Sat 28 09:00"]),
        ("0 9 * * */2", ["Sun 22 09:00", "Tue 24 09:00", "Thu 26 09:00", "Sat 28 09:00"]),
        ("0 9 * * mon-fri", ["Mon 23 09:00", "Tue 24 09:00"]),
        ("0 9 * * SAT,sun", ["Sun 22 09:00", "Sat 28 09:00"]),
        ("30 */6 * * *", ["Sun 22 00:30", "Sun 22 06:30", "Sun 22 12:30"]),
        # day-of-month and day-of-week both restricted: either fires, as in crontab(5)
        ("0 0 13 * 5", ["Fri 27 00:00", "Fri 04 00:00", "Fri 11 00:00", "Sun 13 00:00"]),
    ],
)
def test_crontab_weekday_numbering_matches_crontab5(cron, expected):
    assert fire_times(cron, len(expected)) == expected


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("0 22 * *", "expected 5 fields"),
        ("", "expected 5 fields"),
        ("0 25 * * *", "Bad hour"),
        ("61 * * * *", "Bad minute"),
        ("0 22 * * 8", "Bad day-of-week"),
        ("0 22 * * 5-1", "Bad day-of-week"),
        ("0 22 * * */0", "Bad day-of-week"),
        ("0 22 * * funday", "Bad day-of-week"),
    ],
)
def test_invalid_cron_is_a_value_error_quoting_the_expression(cron, fragment):
    """The user sees which expression is wrong and why, before anything is scheduled."""
    with pytest.raises(ValueError, match="invalid cron expression") as info:
        check_cron(cron)
    assert repr(cron) in str(info.value)
    assert fragment in str(info.value)


def test_invalid_cron_stops_scheduled_mode_before_the_job_runs():
    ran: list[int] = []

    def job() -> int:
        ran.append(1)
        return 0

    with pytest.raises(ValueError, match=r"'0 22 \* \*'"):
        run_on_schedule(job, cron="0 22 * *", once=False, name="ingest")
    assert ran == []


def test_once_runs_immediately_and_returns_the_jobs_exit_status(caplog):
    caplog.set_level(logging.INFO, logger="common.scheduling")
    calls = []

    def job() -> int:
        calls.append(time.monotonic())
        return 3

    # An unused, broken cron does not matter in one-shot mode (Kubernetes owns the schedule).
    assert run_on_schedule(job, cron="not a cron", once=True, name="ingest") == 3
    assert len(calls) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "ingest: run started"
    assert messages[1].startswith("ingest: run finished in ")
    assert messages[1].endswith("with exit status 3")
    assert caplog.records[1].levelno == logging.WARNING


def test_a_job_that_raises_is_logged_with_traceback_and_exits_1(caplog):
    def job() -> int:
        raise RuntimeError("yahoo said no")

    assert run_job_logged(job, name="ingest") == 1
    failure = caplog.records[-1]
    assert failure.levelno == logging.ERROR
    assert "ingest: run failed after" in failure.getMessage()
    assert failure.exc_info is not None
    assert "yahoo said no" in str(failure.exc_info[1])


def _schedule_in_thread(job, *, cron: str, clock: Clock, stop: threading.Event):
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            run_on_schedule(job, cron=cron, once=False, name="ingest", stop=stop, clock=clock)
        )
    )
    worker.start()
    return worker, result


def _wait_for_line(caplog, prefix: str, count: int = 1) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"no {count} log lines starting with {prefix!r}")


def test_scheduled_job_fires_is_logged_and_reports_the_next_fire_time(caplog):
    """Half a second before Monday 22:00 the schedule starts; the job runs at 22:00 and the
    log says the next run is Tuesday 22:00; a stop request ends the loop with status 0."""
    caplog.set_level(logging.INFO, logger="common.scheduling")
    ran = threading.Event()

    def job() -> int:
        ran.set()
        return 0

    clock = Clock(dt.datetime(2026, 11, 23, 21, 59, 59, 500_000, tzinfo=dt.UTC))
    stop = threading.Event()
    worker, result = _schedule_in_thread(job, cron="0 22 * * 1-5", clock=clock, stop=stop)
    assert ran.wait(10), "the scheduled job never ran"
    (next_line,) = _wait_for_line(caplog, "ingest: next run at ")
    stop.set()
    worker.join(10)
    assert result == [0]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (
        "ingest: scheduled with cron '0 22 * * 1-5'; next run at 2026-11-23T22:00:00+00:00"
    )
    assert "ingest: run started" in messages
    assert any(m.endswith("with exit status 0") for m in messages)
    assert next_line == "ingest: next run at 2026-11-24T22:00:00+00:00"
    assert messages[-1] == "ingest: scheduler stopped"


def test_fire_times_missed_during_a_long_run_give_one_run_right_after_it(caplog):
    """An hourly job whose 11:00 run lasts past 12:00, 13:00 and 14:00 runs once more right
    away (the three missed fire times coalesced), then waits for 15:00."""
    caplog.set_level(logging.INFO, logger="common.scheduling")
    clock = Clock(dt.datetime(2026, 11, 23, 10, 59, 59, 800_000, tzinfo=dt.UTC))
    runs: list[dt.datetime] = []

    def job() -> int:
        runs.append(clock())
        if len(runs) == 1:
            clock.jumped += dt.timedelta(hours=3, minutes=5)  # a run lasting 3 h 5 min
        return 0

    stop = threading.Event()
    worker, result = _schedule_in_thread(job, cron="0 * * * *", clock=clock, stop=stop)
    lines = _wait_for_line(caplog, "ingest: next run at ", count=2)
    stop.set()
    worker.join(10)
    assert result == [0]
    assert len(runs) == 2
    assert lines == [
        "ingest: next run at 2026-11-23T14:00:00+00:00",  # due already: runs at once
        "ingest: next run at 2026-11-23T15:00:00+00:00",
    ]


def test_sigterm_stops_the_long_running_mode_with_exit_status_0():
    """``docker stop`` sends SIGTERM: the process logs it and exits 0, not 143."""
    script = textwrap.dedent(
        """
        import logging, sys
        from common.scheduling import run_on_schedule
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        sys.exit(run_on_schedule(lambda: 0, cron="0 3 * * 6", once=False, name="train"))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    )
    assert proc.stderr is not None
    first = next(line for line in proc.stderr if line.startswith("INFO:common.scheduling:"))
    assert "train: scheduled with cron '0 3 * * 6'; next run at " in first
    fire = dt.datetime.fromisoformat(first.strip().rsplit(" ", 1)[-1])
    assert (fire.isoweekday(), fire.hour, fire.minute) == (6, 3, 0)  # Saturday 03:00
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "train: received SIGTERM, stopping" in rest
    assert "train: scheduler stopped" in rest
