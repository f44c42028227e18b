"""Command line of the data pipeline: ``python -m data_pipeline ingest|coverage|schedule``.

Progress goes to stderr as log lines (one per ticker); the JSON summary goes to stdout.
Exit codes: 0 every ticker succeeded, 1 at least one failed, 2 bad usage, 3 database down.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import OperationalError

from common.db import create_db_engine, first_line, make_session_factory, redact_url
from common.exceptions import DatabaseUnavailableError
from common.logging_setup import configure_logging
from common.tickers import add_tickers_option
from data_pipeline.config import get_settings
from data_pipeline.sources.base import BarSource
from data_pipeline.sources.snapshot import SnapshotSource
from data_pipeline.sources.yfinance_collector import YFinanceCollector

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_TICKER_FAILED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


def _iso_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands ``ingest``, ``coverage`` and ``schedule``)."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m data_pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="fetch, validate and store daily bars")
    add_tickers_option(ingest, settings.tickers)
    ingest.add_argument(
        "--source",
        choices=["yahoo", "snapshot", "auto"],
        default="yahoo",
        help="yahoo, the CSV snapshot, or auto (Yahoo, falling back to the snapshot "
        "when Yahoo cannot be reached). Default: yahoo",
    )
    ingest.add_argument(
        "--snapshot-dir",
        type=Path,
        default=settings.snapshot_dir,
        help="folder of <TICKER>.csv files (default: the shipped snapshot)",
    )
    ingest.add_argument(
        "--start",
        type=_iso_date,
        default=None,
        help="fetch from this date, YYYY-MM-DD (default: incremental from the last stored bar)",
    )
    ingest.add_argument(
        "--no-findings", action="store_true", help="leave the per-bar findings out of the JSON"
    )
    sub.add_parser("coverage", help="print what the store holds per ticker, as JSON")
    schedule = sub.add_parser(
        "schedule",
        help="ingest the default tickers at every PIPELINE_SCHEDULE_CRON fire time, or --once",
    )
    schedule.add_argument(
        "--once",
        action="store_true",
        help="run one ingest now and exit with its status (host crontab, Kubernetes CronJob)",
    )
    schedule.add_argument(
        "--source",
        choices=["yahoo", "snapshot", "auto"],
        default="yahoo",
        help="where the scheduled ingest fetches bars (default: yahoo)",
    )
    return parser


def _schedule(args: argparse.Namespace) -> int:
    """``schedule [--once]``: the ingest of the default tickers on the configured cron."""
    from common.scheduling import run_on_schedule  # noqa: PLC0415 - only this command needs it

    settings = get_settings()
    ingest_args = argparse.Namespace(
        command="ingest",
        tickers=settings.tickers,
        source=args.source,
        snapshot_dir=settings.snapshot_dir,
        start=None,
        no_findings=True,
    )
    try:
        return run_on_schedule(
            lambda: _run(ingest_args), cron=settings.schedule_cron, once=args.once, name="ingest"
        )
    except ValueError as exc:
        print(f"error: PIPELINE_SCHEDULE_CRON: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from common import price_store  # noqa: PLC0415
    from data_pipeline.run_pipeline import run_ingest  # noqa: PLC0415 - pandas is slow to import

    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    try:
        if args.command == "coverage":
            with session_factory() as session:
                rows = price_store.list_tickers(session)
            print(
                json.dumps(
                    [
                        {
                            "ticker": r.ticker,
                            "first_date": r.first_date.isoformat(),
                            "last_date": r.last_date.isoformat(),
                            "n_bars": r.n_bars,
                        }
                        for r in rows
                    ],
                    indent=2,
                )
            )
            return EXIT_OK
        sources: dict[str, BarSource] = {
            "snapshot": SnapshotSource(args.snapshot_dir),
            "yahoo": YFinanceCollector(
                cache_dir=settings.yahoo_cache_dir,
                max_attempts=1 if args.source == "auto" else settings.yahoo_max_attempts,
                backoff_initial=settings.yahoo_backoff_seconds,
            ),
        }
        logger.info(
            "ingesting %d ticker(s) from %s into %s",
            len(args.tickers),
            args.source,
            redact_url(settings.database_url),
        )
        summary = run_ingest(
            session_factory=session_factory,
            tickers=args.tickers,
            source=args.source,
            sources=sources,
            start=args.start,
            overlap_days=settings.overlap_days,
            pacing_seconds=settings.yahoo_pacing_seconds,
        )
    except (DatabaseUnavailableError, OperationalError) as exc:
        print(
            f"error: database unavailable at {redact_url(settings.database_url)}: "
            f"{first_line(exc)}",
            file=sys.stderr,
        )
        return EXIT_DATABASE
    finally:
        engine.dispose()
    print(json.dumps(summary.to_dict(with_findings=not args.no_findings), indent=2))
    failed = [t.ticker for t in summary.tickers if not t.ok]
    logger.info(
        "done in %.2f s: %d ok, %d failed%s",
        summary.seconds,
        len(summary.tickers) - len(failed),
        len(failed),
        f" ({', '.join(failed)})" if failed else "",
    )
    return EXIT_OK if summary.ok else EXIT_TICKER_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(get_settings().log_level)
    if args.command == "schedule":
        return _schedule(args)
    return _run(args)
