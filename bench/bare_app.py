"""The benchmark's ceiling: a bare FastAPI app served as ``python -m app serve`` serves the API.

``python -m bench.bare_app --port P --workers N`` serves :data:`app` (one ``async def``
returning a small dict: no middleware, no auth, no database, no metrics, no access log) with
the server the API uses and the API's server options: uvicorn's supervisor, ``N`` workers,
each on its own ``SO_REUSEPORT`` socket (:mod:`app.core.listeners`), uvicorn's default loop
and HTTP implementations (uvloop and httptools when installed, as for the API), no
``server`` header. What the API serves less than this is the cost of the API itself, not of
the server or of the machine.

Both go through :func:`app.core.listeners.serve_app`, so server, workers, sockets and options
stay the same.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from fastapi import FastAPI

#: The import string the server's workers load.
APP_IMPORT = "bench.bare_app:app"

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/")
async def root() -> dict[str, str]:
    """A constant small JSON object, ``{"status": "ok"}``."""
    return {"status": "ok"}


def serve(*, host: str, port: int, workers: int) -> None:
    """Serve :data:`app` with ``workers`` uvicorn workers until SIGTERM/SIGINT.

    With more than one worker on Linux, each worker listens on its own ``SO_REUSEPORT``
    socket, as ``python -m app serve`` does; otherwise uvicorn's own listener.

    Raises:
        OSError: the port is in use.
    """
    from app.core.listeners import serve_app  # noqa: PLC0415

    serve_app(APP_IMPORT, host=host, port=port, workers=workers, access_log=False)


def run_cli(
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str | None,
    serve_app_with: Callable[..., None],
) -> int:
    """Parse ``--host``, ``--port`` and ``--workers`` and serve; returns the exit code.

    The command line of every benchmark app: ``serve_app_with(host=, port=, workers=)`` runs
    until SIGTERM/SIGINT, then 0 is returned.

    Raises:
        SystemExit: bad arguments (argparse's usage message, exit code 2).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    serve_app_with(host=args.host, port=args.port, workers=args.workers)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.bare_app``; returns the exit code (0 after a clean stop)."""
    return run_cli(argv, prog="python -m bench.bare_app", description=__doc__, serve_app_with=serve)


if __name__ == "__main__":
    sys.exit(main())
