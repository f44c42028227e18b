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
from apscheduler.schedulers.background import BackgroundScheduler

from common.scheduling import cron_trigger, next_fire_time, run_job_logged, run_on_schedule
from tests.conftest import REPO_ROOT

#: Sunday 2026-11-22 00:00 UTC.
SUNDAY = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)


def fire_times(cron: str, count: int, start: dt.datetime = SUNDAY) -> list[str]:
    trigger = cron_trigger(cron, timezone="UTC")
    out, moment = [], start
    for _ in range(count):
        fire = next_fire_time(trigger, now=moment)
        assert fire is not None
        out.append(fire.strftime("%a %d %H:%M"))
        moment = fire + dt.timedelta(seconds=1)
    return out


def test_weekday_ingest_cron_fires_monday_to_friday_at_22():
    assert fire_times("0 22 * * 1-5", 6) == [
        "Mon 23 22:00", "Tue 24 22:00", "Wed 25 22:00", "Thu 26 22:00", "Fri 27 22:00",
        "Mon 30 22:00",
    ]  # fmt: skip


def test_saturday_training_cron_fires_on_saturday_not_sunday():
    """APScheduler alone would read weekday 6 as Sunday; the user's crontab means Saturday."""
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
    ],
)
def test_crontab_weekday_numbering_matches_crontab5(cron, expected):
    assert fire_times(cron, len(expected)) == expected


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("0 22 * *", "expected 5 fields"),
        ("", "expected 5 fields"),
        ("0 25 * * *", "higher than the maximum value (23)"),
        ("61 * * * *", "higher than the maximum value (59)"),
        ("0 22 * * 8", "day-of-week '8' is not 0-7"),
        ("0 22 * * 5-1", "runs backwards"),
        ("0 22 * * */0", "step '0' is not a positive number"),
        ("0 22 * * funday", "day-of-week 'funday'"),
    ],
)
def test_invalid_cron_is_a_value_error_quoting_the_expression(cron, fragment):
    """The user sees which expression is wrong and why, before anything is scheduled."""
    with pytest.raises(ValueError, match="invalid cron expression") as info:
        cron_trigger(cron)
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


def test_scheduled_job_fires_is_logged_and_reports_the_next_fire_time(caplog, monkeypatch):
    """Real BackgroundScheduler: the job is made due now, runs, and the log says when next."""
    caplog.set_level(logging.INFO, logger="common.scheduling")
    ran = threading.Event()
    started: list[BackgroundScheduler] = []
    original_start = BackgroundScheduler.start

    def start_now(self: BackgroundScheduler, *args, **kwargs):
        started.append(self)
        # add_job happened already; make the job due immediately instead of on Monday 22:00.
        job = self.get_jobs()[0]
        job.modify(next_run_time=dt.datetime.now(dt.UTC))
        return original_start(self, *args, **kwargs)

    monkeypatch.setattr(BackgroundScheduler, "start", start_now)

    def job() -> int:
        ran.set()
        return 0

    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            run_on_schedule(job, cron="0 22 * * 1-5", once=False, name="ingest")
        )
    )
    worker.start()
    assert ran.wait(10), "the scheduled job never ran"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        r.getMessage().startswith("ingest: next run at") for r in caplog.records
    ):
        time.sleep(0.05)
    started[0].shutdown(wait=True)
    worker.join(10)
    assert result == [0]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("ingest: scheduled with cron '0 22 * * 1-5'; next run at ")
    assert "ingest: run started" in messages
    assert any(m.endswith("with exit status 0") for m in messages)
    next_line = next(m for m in messages if m.startswith("ingest: next run at "))
    fire = dt.datetime.fromisoformat(next_line.removeprefix("ingest: next run at "))
    assert fire.hour == 22
    assert fire.minute == 0
    assert fire.isoweekday() <= 5  # Monday..Friday
    assert messages[-1] == "ingest: scheduler stopped"


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
