"""Command line of the ML lifecycle (``stockcast-ml`` or ``python -m ml_lifecycle``):
``train``, ``backtest``, ``evaluate``, ``report``, ``schedule``.

A thin layer: it parses arguments, builds the settings once and calls the stage modules
(:mod:`ml_lifecycle.train`, :mod:`ml_lifecycle.backtest`, :mod:`ml_lifecycle.evaluate`,
:mod:`ml_lifecycle.summary`). Progress goes to stderr as log lines (one per fold, one per
ticker); the JSON summary goes to stdout. Exit codes: 0 every ticker succeeded, 1 at least
one failed (including a champion the promotion gate could not re-evaluate), 2 bad usage or
config, 3 database or MLflow unavailable.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError

from common.db import create_db_engine, make_session_factory, redact_url
from common.logging_setup import configure_logging
from common.tickers import add_tickers_option, parse_shard, shard_tickers
from ml_lifecycle.config import MLSettings, get_settings
from ml_lifecycle.tracking import Tracking

if TYPE_CHECKING:
    from ml_lifecycle.summary import TickerTrainSummary

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
    "val_fraction": (float, "share of each fit window's bars for validation"),
    "min_split_windows": (int, "minimum windows per split"),
    "history_bars": (int, "fit on at most the most recent N bars"),
    "folds": (int, "walk-forward test folds"),
    "fold_bars": (int, "bars per walk-forward fold"),
    "seed": (int, "random seed"),
}


def _add_config_options(command: argparse.ArgumentParser, settings: MLSettings) -> None:
    add_tickers_option(command, settings.tickers)
    command.add_argument(
        "--config",
        type=Path,
        default=settings.config_path,
        help="training config YAML (default: ml_lifecycle/configs/default.yaml)",
    )
    for flag, (kind, text) in _OVERRIDES.items():
        command.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=kind, help=text)
    command.add_argument(
        "--features",
        nargs="+",
        default=None,
        metavar="FEATURE",
        help="feature names (rel_log_close hl_range oc_return)",
    )
    command.add_argument(
        "--reports-dir",
        type=Path,
        default=settings.reports_dir,
        help=f"where the PNG plots are written (default: {settings.reports_dir})",
    )


def build_parser(settings: MLSettings | None = None) -> argparse.ArgumentParser:
    """The argument parser (sub-commands ``train``, ``backtest``, ``tune``, ``evaluate``,
    ``report``, ``schedule``); defaults come from ``settings`` (default: the process's)."""
    settings = settings or get_settings()
    parser = argparse.ArgumentParser(prog="python -m ml_lifecycle", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train", help="backtest walk-forward, fit, register and maybe promote (the gate)"
    )
    _add_config_options(train, settings)
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

    backtest = sub.add_parser(
        "backtest", help="walk-forward backtest (rolling origin) against the naive forecast"
    )
    _add_config_options(backtest, settings)
    backtest.add_argument(
        "--horizon", type=int, default=1, help="steps forecast from each origin (default 1)"
    )

    tune = sub.add_parser(
        "tune", help="Optuna search (TPE, median pruning) scored on validation folds only"
    )
    _add_config_options(tune, settings)
    tune.add_argument("--trials", type=int, default=20, help="maximum trials (default 20)")
    tune.add_argument(
        "--timeout", type=float, default=None, help="seconds after which no trial starts"
    )
    tune.add_argument(
        "--validation-folds", type=int, default=3, help="validation folds per trial (default 3)"
    )
    tune.add_argument(
        "--output",
        type=Path,
        default=Path("var/tuned.yaml"),
        help="where the best config is written, for `train --config` (default var/tuned.yaml)",
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


def _schedule(args: argparse.Namespace, settings: MLSettings) -> int:
    """``schedule [--once]``: ``train --stale-only`` with the default settings, on
    ML_SCHEDULE_CRON: tickers without a champion, or whose champion is stale or drifting.

    Each run is a full ``train`` (fresh connections, MLflow checked), so a database or
    MLflow outage fails that run only; the schedule goes on.
    """
    from common.scheduling import run_on_schedule  # noqa: PLC0415 - only this command needs it

    cron = settings.schedule_cron
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
    from ml_lifecycle.exceptions import MLflowUnavailableError  # noqa: PLC0415
    from ml_lifecycle.tracking import check_tracking  # noqa: PLC0415

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


def _load_config(args: argparse.Namespace) -> Any:
    from ml_lifecycle.config import load_config  # noqa: PLC0415

    overrides = {flag: getattr(args, flag) for flag in _OVERRIDES}
    if args.features is not None:
        overrides["features"] = tuple(args.features)
    return load_config(args.config, **overrides)


def _each_ticker(
    args: argparse.Namespace, tracking: Tracking, run: Callable[[str], TickerTrainSummary | None]
) -> int:
    """Run ``run`` for every requested ticker; print the JSON summary; the exit code."""
    from common.exceptions import InvalidTickerError  # noqa: PLC0415
    from ml_lifecycle.exceptions import InsufficientBarsError  # noqa: PLC0415
    from ml_lifecycle.summary import TickerTrainSummary, summary_json  # noqa: PLC0415

    summaries: list[TickerTrainSummary] = []
    tickers = list(args.tickers)
    shard = getattr(args, "shard", None)  # train only
    if shard is not None:
        index, count = shard
        tickers = shard_tickers(tickers, index=index, count=count)
        logger.info("shard %d/%d: %s", index, count, " ".join(tickers) or "no tickers")
    for position, requested in enumerate(tickers, start=1):
        logger.info("[%d/%d] %s: %s", position, len(tickers), requested, args.command)
        try:
            summary = run(requested)
            if summary is None:
                continue
        except (InvalidTickerError, InsufficientBarsError) as exc:
            summary = TickerTrainSummary(ticker=requested, error=str(exc), reason=str(exc))
            logger.error("[%d/%d] %s", position, len(tickers), exc)
        except OperationalError:
            raise
        except Exception as exc:
            down = _tracking_down(tracking.uri)
            if down is not None:
                print(summary_json(summaries))
                print(f"error: {down} (while processing {requested})", file=sys.stderr)
                return EXIT_UNAVAILABLE
            summary = TickerTrainSummary(
                ticker=requested, error=f"{type(exc).__name__}: {_first_line(exc)}"
            )
            logger.exception("[%d/%d] %s failed", position, len(tickers), requested)
        if summary.gate_failed:
            logger.error("[%d/%d] %s: %s", position, len(tickers), summary.ticker, summary.reason)
        summaries.append(summary)
    print(summary_json(summaries))
    failed = [s.ticker for s in summaries if not s.ok]
    logger.info(
        "done: %d succeeded, %d failed%s",
        len(summaries) - len(failed),
        len(failed),
        f" ({', '.join(failed)})" if failed else "",
    )
    return EXIT_OK if not failed else EXIT_TICKER_FAILED


def _train(
    args: argparse.Namespace, session_factory: Any, tracking: Tracking, *, settings: MLSettings
) -> int:
    from common.model_contract import registered_model_name  # noqa: PLC0415
    from common.tickers import normalize_ticker  # noqa: PLC0415
    from ml_lifecycle.health import champion_health  # noqa: PLC0415
    from ml_lifecycle.registry import has_champion  # noqa: PLC0415
    from ml_lifecycle.train import train_and_register  # noqa: PLC0415

    config = _load_config(args)

    def run(requested: str) -> TickerTrainSummary | None:
        ticker = normalize_ticker(requested)
        name = registered_model_name(ticker)
        if args.missing_only and has_champion(tracking.client(), name):
            logger.info("%s already has a champion; skipped", ticker)
            return None
        if args.stale_only:
            health = champion_health(
                session_factory=session_factory,
                ticker=ticker,
                tracking_uri=tracking.uri,
                drift_window_bars=settings.drift_window_bars,
                stale_after_bars=settings.stale_after_bars,
                psi_drift=settings.psi_drift,
            )
            if not health.retrain:
                logger.info("%s: champion v%s %s; skipped", ticker, health.version, health.reason)
                return None
            logger.info("%s: %s", ticker, health.reason)
        return train_and_register(
            session_factory=session_factory,
            ticker=ticker,
            config=config,
            tracking=tracking,
            force_promote=args.force_promote,
            reports_dir=args.reports_dir,
        )

    return _each_ticker(args, tracking, run)


def _backtest(args: argparse.Namespace, session_factory: Any, tracking: Tracking) -> int:
    from ml_lifecycle.backtest import backtest_ticker  # noqa: PLC0415

    config = _load_config(args)
    if args.horizon < 1:
        print(f"error: --horizon must be >= 1, got {args.horizon}", file=sys.stderr)
        return EXIT_USAGE

    def run(requested: str) -> TickerTrainSummary:
        return backtest_ticker(
            session_factory=session_factory,
            ticker=requested,
            config=config,
            tracking=tracking,
            horizon=args.horizon,
            reports_dir=args.reports_dir,
        )

    return _each_ticker(args, tracking, run)


def _tune(args: argparse.Namespace, session_factory: Any, tracking: Tracking) -> int:
    from ml_lifecycle.tune import result_dict, tune  # noqa: PLC0415

    config = _load_config(args)
    if args.trials < 1 or args.validation_folds < 1:
        print("error: --trials and --validation-folds must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    from common.exceptions import InvalidTickerError  # noqa: PLC0415
    from ml_lifecycle.exceptions import InsufficientBarsError  # noqa: PLC0415

    try:
        result = tune(
            session_factory=session_factory,
            tickers=list(args.tickers),
            base=config,
            tracking=tracking,
            trials=args.trials,
            timeout=args.timeout,
            output=args.output,
            validation_folds=args.validation_folds,
        )
    except (InvalidTickerError, InsufficientBarsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TICKER_FAILED
    print(json.dumps(result_dict(result), indent=2, default=str))
    logger.info(
        "best validation relative MAE %.4f (default config %.4f) in %.0f s; config: %s",
        result.best_score, result.baseline_score, result.seconds, result.config_path,
    )  # fmt: skip
    return EXIT_OK


def _evaluate(args: argparse.Namespace, session_factory: Any, tracking: Tracking) -> int:
    from ml_lifecycle.evaluate import evaluate_champion  # noqa: PLC0415
    from ml_lifecycle.exceptions import ChampionNotFoundError, InsufficientBarsError  # noqa: PLC0415

    results: list[dict[str, Any]] = []
    for requested in args.tickers:
        try:
            results.append(
                {
                    "ok": True,
                    **evaluate_champion(
                        session_factory=session_factory, ticker=requested, tracking=tracking
                    ),
                }
            )
        except (ChampionNotFoundError, InsufficientBarsError, ValueError) as exc:
            logger.error("%s", exc)
            results.append({"ticker": requested, "ok": False, "error": str(exc)})
        except OperationalError:
            raise
        except Exception as exc:
            down = _tracking_down(tracking.uri)
            if down is not None:
                print(f"error: {down} (while evaluating {requested})", file=sys.stderr)
                return EXIT_UNAVAILABLE
            logger.exception("%s: evaluation failed", requested)
            results.append({"ticker": requested, "ok": False, "error": _first_line(exc)})
    ok = all(r["ok"] for r in results)
    print(json.dumps({"ok": ok, "tickers": results}, indent=2))
    return EXIT_OK if ok else EXIT_TICKER_FAILED


def _report(args: argparse.Namespace) -> int:
    from ml_lifecycle.summary import markdown_table  # noqa: PLC0415

    try:
        document = json.loads(args.summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read train summary {args.summary}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(markdown_table(document))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (the console script ``stockcast-ml``); returns the exit code."""
    from ml_lifecycle.exceptions import ConfigError  # noqa: PLC0415

    settings = get_settings()
    args = build_parser(settings).parse_args(argv)
    configure_logging(settings.log_level)
    _quiet_libraries()
    if args.command == "report":
        return _report(args)
    if args.command == "schedule":
        return _schedule(args, settings)

    from ml_lifecycle.exceptions import MLflowUnavailableError  # noqa: PLC0415
    from ml_lifecycle.tracking import check_tracking  # noqa: PLC0415

    tracking = Tracking(
        uri=settings.mlflow_tracking_uri,
        experiment_name=settings.experiment_name,
        artifact_root=settings.artifact_root,
    )
    try:
        check_tracking(tracking.uri)
    except MLflowUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    engine = create_db_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    logger.info("price store %s, MLflow %s", redact_url(settings.database_url), tracking.uri)
    commands: dict[str, Callable[[argparse.Namespace, Any, Tracking], int]] = {
        "train": functools.partial(_train, settings=settings),
        "backtest": _backtest,
        "tune": _tune,
        "evaluate": _evaluate,
    }
    try:
        return commands[args.command](args, session_factory, tracking)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OperationalError as exc:
        print(
            f"error: database unavailable at {redact_url(settings.database_url)}: "
            f"{_first_line(exc)}",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    finally:
        engine.dispose()
