"""Command line of the ML lifecycle: ``python -m ml_lifecycle train|evaluate|report|schedule``.

Progress goes to stderr as log lines (one per epoch, one per ticker); the JSON summary goes
to stdout. Exit codes: 0 every ticker succeeded, 1 at least one failed, 2 bad usage or
config, 3 database or MLflow unavailable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from common.db import create_db_engine, make_session_factory, redact_url
from common.logging_setup import configure_logging
from common.tickers import add_tickers_option, parse_shard, shard_tickers
from ml_lifecycle.config import get_settings

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_TICKER_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

#: CLI flags that override fields of the training config (flag -> TrainConfig field, type).
_OVERRIDES: dict[str, tuple[type, str]] = {
    "lookback": (int, "bars per input window"),
    "units": (int, "units per LSTM layer"),
    "layers": (int, "stacked LSTM layers"),
    "dropout": (float, "dropout after each LSTM layer"),
    "epochs": (int, "maximum epochs"),
    "batch_size": (int, "windows per gradient step"),
    "patience": (int, "early-stopping patience, epochs"),
    "learning_rate": (float, "Adam learning rate"),
    "val_fraction": (float, "share of bars for validation"),
    "test_fraction": (float, "share of bars for testing"),
    "min_split_windows": (int, "minimum windows per split"),
    "history_bars": (int, "use only the most recent N bars"),
    "seed": (int, "random seed"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands ``train``, ``evaluate`` and ``report``)."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m ml_lifecycle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, evaluate, register and maybe promote")
    add_tickers_option(train, settings.tickers)
    train.add_argument(
        "--config",
        type=Path,
        default=settings.config_path,
        help="training config YAML (default: ml_lifecycle/training/configs/default.yaml)",
    )
    for flag, (kind, text) in _OVERRIDES.items():
        train.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=text)
    train.add_argument(
        "--features",
        nargs="+",
        default=None,
        metavar="FEATURE",
        help="feature names (rel_log_close hl_range oc_return)",
    )
    train.add_argument(
        "--force-promote",
        action="store_true",
        help="make each new version champion even when it does not beat the current one",
    )
    train.add_argument(
        "--missing-only",
        action="store_true",
        help="train only the tickers whose registered model has no champion yet",
    )
    train.add_argument(
        "--shard",
        type=parse_shard,
        default=None,
        metavar="INDEX/COUNT",
        help="train only this shard's share of the tickers (sorted, dealt round-robin), "
        "e.g. 0/4; in a Kubernetes Indexed Job: $(JOB_COMPLETION_INDEX)/4",
    )
    train.add_argument(
        "--stale-only",
        action="store_true",
        help="train only the tickers without a champion, or whose champion is stale (more "
        "than ML_STALE_AFTER_BARS bars behind the store) or drifting (input PSI over the last "
        "ML_DRIFT_WINDOW_BARS bars >= ML_PSI_DRIFT); the training schedule uses it",
    )
    train.add_argument(
        "--reports-dir",
        type=Path,
        default=settings.reports_dir,
        help=f"where the PNG plots are written (default: {settings.reports_dir})",
    )

    evaluate = sub.add_parser("evaluate", help="re-evaluate each champion on the latest data")
    add_tickers_option(evaluate, settings.tickers)

    report = sub.add_parser(
        "report", help="print a Markdown table of LSTM vs naive from a train JSON summary"
    )
    report.add_argument("summary", type=Path, help="file written by `train` (its stdout)")

    schedule = sub.add_parser(
        "schedule",
        help="train --stale-only the default tickers at every ML_SCHEDULE_CRON fire time, "
        "or --once",
    )
    schedule.add_argument(
        "--once",
        action="store_true",
        help="run one training now and exit with its status (host crontab, Kubernetes CronJob)",
    )
    return parser


def _schedule(args: argparse.Namespace) -> int:
    """``schedule [--once]``: ``train --stale-only`` with the default settings, on
    ML_SCHEDULE_CRON: tickers without a champion, or whose champion is stale or drifting.

    Each run is a full ``train`` (fresh connections, MLflow checked), so a database or
    MLflow outage fails that run only; the schedule goes on.
    """
    from common.scheduling import run_on_schedule  # noqa: PLC0415 - only this command needs it

    cron = get_settings().schedule_cron
    try:
        return run_on_schedule(
            lambda: main(["train", "--stale-only"]), cron=cron, once=args.once, name="train"
        )
    except ValueError as exc:
        print(f"error: ML_SCHEDULE_CRON: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _first_line(exc: BaseException) -> str:
    detail: Any = exc.orig if isinstance(exc, OperationalError) else exc
    text = str(detail).strip()
    return text.splitlines()[0] if text else type(detail).__name__


def _tracking_down(tracking_uri: str) -> str | None:
    """After an unexpected error: the reason if the tracking store went away, else None."""
    from ml_lifecycle.tracking import MLflowUnavailableError, check_tracking  # noqa: PLC0415

    try:
        check_tracking(tracking_uri)
    except MLflowUnavailableError as exc:
        return str(exc)
    return None


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # stdout is the JSON summary: no "View run ... at" lines from a tracking server
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for noisy in ("tf2onnx", "mlflow", "absl", "h5py", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # the python_model is this project's own class, pickled by reference: no need to warn
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")


def _train(args: argparse.Namespace, session_factory: Any, tracking_uri: str) -> int:
    from common.exceptions import InvalidTickerError  # noqa: PLC0415
    from common.tickers import normalize_ticker  # noqa: PLC0415
    from ml_lifecycle.training.config import ConfigError, load_config  # noqa: PLC0415
    from ml_lifecycle.training.data import InsufficientBarsError  # noqa: PLC0415
    from ml_lifecycle.workflow import (  # noqa: PLC0415
        TickerTrainSummary,
        has_champion,
        summary_json,
        train_and_register,
    )

    overrides = {flag: getattr(args, flag) for flag in _OVERRIDES}
    if args.features is not None:
        overrides["features"] = tuple(args.features)
    try:
        config = load_config(args.config, **overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    summaries: list[TickerTrainSummary] = []
    tickers = list(args.tickers)
    if args.shard is not None:
        index, count = args.shard
        tickers = shard_tickers(tickers, index=index, count=count)
        logger.info("shard %d/%d: %s", index, count, " ".join(tickers) or "no tickers")
    for position, requested in enumerate(tickers, start=1):
        try:
            ticker = normalize_ticker(requested)
            if args.missing_only and has_champion(ticker=ticker, tracking_uri=tracking_uri):
                logger.info(
                    "[%d/%d] %s already has a champion; skipped", position, len(tickers), ticker
                )
                continue
            if args.stale_only:
                health = _health(ticker, session_factory, tracking_uri)
                if not health.retrain:
                    logger.info(
                        "[%d/%d] %s: champion v%s %s; skipped",
                        position, len(tickers), ticker, health.version, health.reason,
                    )  # fmt: skip
                    continue
                logger.info("[%d/%d] %s: %s", position, len(tickers), ticker, health.reason)
            logger.info("[%d/%d] %s: training", position, len(tickers), ticker)
            summary = train_and_register(
                session_factory=session_factory,
                ticker=ticker,
                config=config,
                tracking_uri=tracking_uri,
                force_promote=args.force_promote,
                reports_dir=args.reports_dir,
            )
        except (InvalidTickerError, InsufficientBarsError) as exc:
            summary = TickerTrainSummary(ticker=requested, error=str(exc), reason=str(exc))
            logger.error("[%d/%d] %s", position, len(tickers), exc)
        except OperationalError:
            raise
        except Exception as exc:
            down = _tracking_down(tracking_uri)
            if down is not None:
                print(summary_json(summaries))
                print(f"error: {down} (while training {requested})", file=sys.stderr)
                return EXIT_UNAVAILABLE
            summary = TickerTrainSummary(
                ticker=requested, error=f"{type(exc).__name__}: {_first_line(exc)}"
            )
            logger.exception("[%d/%d] %s failed", position, len(tickers), requested)
        summaries.append(summary)
    print(summary_json(summaries))
    failed = [s.ticker for s in summaries if not s.ok]
    logger.info(
        "done: %d trained, %d failed%s",
        len(summaries) - len(failed),
        len(failed),
        f" ({', '.join(failed)})" if failed else "",
    )
    return EXIT_OK if not failed else EXIT_TICKER_FAILED


def _health(ticker: str, session_factory: Any, tracking_uri: str) -> Any:
    """The champion's staleness and drift, with the ML_ settings' thresholds."""
    from ml_lifecycle.health import champion_health  # noqa: PLC0415

    settings = get_settings()
    return champion_health(
        session_factory=session_factory,
        ticker=ticker,
        tracking_uri=tracking_uri,
        drift_window_bars=settings.drift_window_bars,
        stale_after_bars=settings.stale_after_bars,
        psi_drift=settings.psi_drift,
    )


def _evaluate(args: argparse.Namespace, session_factory: Any, tracking_uri: str) -> int:
    from ml_lifecycle.training.data import InsufficientBarsError  # noqa: PLC0415
    from ml_lifecycle.workflow import ChampionNotFoundError, evaluate_champion  # noqa: PLC0415

    results: list[dict[str, Any]] = []
    for requested in args.tickers:
        try:
            results.append(
                {
                    "ok": True,
                    **evaluate_champion(
                        session_factory=session_factory, ticker=requested, tracking_uri=tracking_uri
                    ),
                }
            )
        except (ChampionNotFoundError, InsufficientBarsError, ValueError) as exc:
            logger.error("%s", exc)
            results.append({"ticker": requested, "ok": False, "error": str(exc)})
        except OperationalError:
            raise
        except Exception as exc:
            down = _tracking_down(tracking_uri)
            if down is not None:
                print(f"error: {down} (while evaluating {requested})", file=sys.stderr)
                return EXIT_UNAVAILABLE
            logger.exception("%s: evaluation failed", requested)
            results.append({"ticker": requested, "ok": False, "error": _first_line(exc)})
    ok = all(r["ok"] for r in results)
    print(json.dumps({"ok": ok, "tickers": results}, indent=2))
    return EXIT_OK if ok else EXIT_TICKER_FAILED


def _report(args: argparse.Namespace) -> int:
    from ml_lifecycle.report import markdown_table  # noqa: PLC0415

    try:
        document = json.loads(args.summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read train summary {args.summary}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(markdown_table(document))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    _quiet_libraries()
    if args.command == "report":
        return _report(args)
    if args.command == "schedule":
        return _schedule(args)

    from ml_lifecycle.tracking import MLflowUnavailableError, check_tracking  # noqa: PLC0415

    tracking_uri = settings.mlflow_tracking_uri
    try:
        check_tracking(tracking_uri)
    except MLflowUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    engine = create_db_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    logger.info("price store %s, MLflow %s", redact_url(settings.database_url), tracking_uri)
    try:
        if args.command == "train":
            return _train(args, session_factory, tracking_uri)
        return _evaluate(args, session_factory, tracking_uri)
    except OperationalError as exc:
        print(
            f"error: database unavailable at {redact_url(settings.database_url)}: "
            f"{_first_line(exc)}",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    finally:
        engine.dispose()
