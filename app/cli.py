"""Command line of the API: ``python -m app serve|create-user|ensure-demo-user|recent-predictions``.

Passwords are never taken from the command line: ``create-user`` prompts for one (or reads
the first line of stdin when stdin is not a terminal); ``ensure-demo-user`` takes
``DEMO_PASSWORD`` or generates one and prints it once.

Exit codes: 0 done, 1 user invalid or already exists, 2 bad usage or settings (e.g. a
placeholder APP_SECRET_KEY), 3 database down.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.core.config import MULTIPROC_DIR_ENV, get_settings
from app.core.listeners import serve_app
from common.db import create_db_engine, first_line, make_session_factory, redact_url
from common.logging_setup import configure_logging
from common.settings import LayerSettings
from common.tickers import normalize_ticker

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3
DEMO_USERNAME = "demo"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per task)."""
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="serve the API with uvicorn (APP_HOST/APP_PORT/APP_WORKERS)"
    )
    serve.add_argument("--host", default=None, help="default: APP_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="default: APP_PORT (8000)")
    serve.add_argument("--workers", type=int, default=None, help="default: APP_WORKERS (1)")
    create = sub.add_parser("create-user", help="create a user; the password is prompted for")
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="may call admin routes")
    create.add_argument(
        "--if-missing", action="store_true", help="exit 0 without change if the user exists"
    )
    demo = sub.add_parser(
        "ensure-demo-user",
        help="create user 'demo' unless it exists (password: DEMO_PASSWORD or generated)",
    )
    demo.add_argument(
        "--base-url", default=None, help=f"URL in the commands to try (default {DEFAULT_BASE_URL})"
    )
    recent = sub.add_parser("recent-predictions", help="print the newest prediction_log rows")
    recent.add_argument("--limit", type=int, default=10)
    recent.add_argument("--ticker", default=None)
    return parser


def _read_password(username: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {username}: ")
        if first != getpass.getpass("repeat it: "):
            raise ValueError("the passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _fresh_metrics_dir() -> tuple[Path, bool]:
    """An empty multiprocess-metrics folder for this server start: ``(folder, temporary)``.

    ``PROMETHEUS_MULTIPROC_DIR`` if set (created if missing, its ``*.db`` files of an earlier
    run deleted, so counters restart at zero with the server), else a new temporary folder
    that is removed when the server stops. Must run before any worker imports
    prometheus_client: the variable selects the multiprocess value class at import.
    """
    configured = os.environ.get(MULTIPROC_DIR_ENV)
    if configured:
        folder = Path(configured)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return folder, False
    folder = Path(tempfile.mkdtemp(prefix="stockcast-metrics-"))
    os.environ[MULTIPROC_DIR_ENV] = str(folder)
    return folder, True


def _serve(args: argparse.Namespace) -> int:
    settings = get_settings()
    metrics_dir, temporary = _fresh_metrics_dir()
    logger.info("multiprocess metrics in %s", metrics_dir)
    host, port = args.host or settings.host, args.port or settings.port
    workers = args.workers or settings.workers
    access_log = settings.access_log_enabled
    logger.info("access log %s (APP_ACCESS_LOG)", "on" if access_log else "off")
    try:
        if settings.metrics_port is not None:
            from app.core.monitoring import serve_metrics_port  # noqa: PLC0415 - after the env

            serve_metrics_port(host, settings.metrics_port)
        serve_app("app.main:app", host=host, port=port, workers=workers, access_log=access_log)
    finally:
        if temporary:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return EXIT_OK


def _try_commands(base_url: str, password: str | None) -> str:
    shown = password if password is not None else "$DEMO_PASSWORD"
    return f"""
Try it (the API serves on {base_url}; docs at {base_url}/docs):

  T=$(curl -s -X POST {base_url}/auth/token -d "username={DEMO_USERNAME}&password={shown}" \\
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -H "Authorization: Bearer $T" '{base_url}/predict/PETR4.SA?horizon=5'
  curl {base_url}/models
  curl {base_url}/metrics | grep stockcast_
  .venv/bin/python -m app recent-predictions
"""


def _print_recent(session: Session, *, limit: int, ticker: str | None) -> None:
    from app.features.stock_prediction import crud  # noqa: PLC0415

    rows = crud.recent(session, limit=limit, ticker=ticker)
    print(
        f"{'created_at':<26} {'ticker':<10} {'as_of':<10} {'target':<10} {'step':>4} "
        f"{'predicted_close':>15} {'last_close':>10} model"
    )
    for r in rows:
        print(
            f"{r.created_at.isoformat(timespec='seconds'):<26} {r.ticker:<10} "
            f"{r.as_of_date.isoformat():<10} {r.target_date.isoformat():<10} {r.horizon_step:>4} "
            f"{r.predicted_close:>15.4f} {r.last_close:>10.4f} {r.model_name} v{r.model_version}"
        )
    if not rows:
        print("(no predictions logged yet)")


def _ensure_demo_user(session: Session, *, base_url: str) -> None:
    from app.features.auth import crud, service  # noqa: PLC0415

    if crud.get_by_username(session, username=DEMO_USERNAME) is not None:
        print(f"user '{DEMO_USERNAME}' exists; its password is unchanged")
        print(_try_commands(base_url, None))
        return
    password = os.environ.get("DEMO_PASSWORD") or None
    if password is None:
        password = secrets.token_urlsafe(12)
        service.create_user(
            session=session, username=DEMO_USERNAME, password=password, is_admin=False
        )
        print(f"created user '{DEMO_USERNAME}' with password {password} (generated, shown once)")
        print(_try_commands(base_url, password))
        return
    service.create_user(session=session, username=DEMO_USERNAME, password=password, is_admin=False)
    print(f"created user '{DEMO_USERNAME}' with the password in DEMO_PASSWORD")
    print(_try_commands(base_url, None))


def _create_user(session: Session, *, username: str, admin: bool, if_missing: bool) -> None:
    from app.features.auth import crud, service  # noqa: PLC0415

    if if_missing and crud.get_by_username(session, username=username) is not None:
        print(f"user '{username}' exists; nothing changed")
        return
    password = _read_password(username)
    user = service.create_user(
        session=session, username=username, password=password, is_admin=admin
    )
    print(f"created user '{user.username}'{' (admin)' if user.is_admin else ''}")


def _database_command(args: argparse.Namespace) -> int:
    # only the database URL is needed: no token-signing key (and no warning about it)
    settings = LayerSettings()
    engine = create_db_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            if args.command == "recent-predictions":
                ticker = normalize_ticker(args.ticker) if args.ticker else None
                _print_recent(session, limit=args.limit, ticker=ticker)
            elif args.command == "ensure-demo-user":
                base_url = args.base_url or DEFAULT_BASE_URL
                _ensure_demo_user(session, base_url=base_url)
            else:
                _create_user(
                    session, username=args.username, admin=args.admin, if_missing=args.if_missing
                )
    except ValueError as exc:  # InvalidUserError, InvalidTickerError, mismatched passwords
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (OperationalError, InterfaceError) as exc:
        print(
            f"error: database unavailable at {redact_url(settings.database_url)}: "
            f"{first_line(exc)}",
            file=sys.stderr,
        )
        return EXIT_DATABASE
    finally:
        engine.dispose()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        try:
            settings = get_settings()
        except ValidationError as exc:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            print(f"error: invalid settings: {problems}", file=sys.stderr)
            return EXIT_USAGE
        configure_logging(settings.log_level)
        return _serve(args)
    configure_logging(LayerSettings().log_level)
    return _database_command(args)
