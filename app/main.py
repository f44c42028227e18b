"""The FastAPI application: ``create_app()`` and the module-level ``app`` for uvicorn.

Creating the app does no I/O: the database engine, the settings check and the model loading
happen in the lifespan (at server start), so ``import app.main`` is cheap and side-effect free.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from app.core.config import DEFAULT_MAX_BODY_BYTES, AppSettings, get_settings
from app.core.database import create_async_db_engine
from app.core.exceptions import register_handlers
from app.core.middleware import EdgeMiddleware
from app.core.monitoring import instrument, mark_worker_exited
from app.features.auth.dependencies import make_user_cache, make_verified_tokens
from app.features.auth.rate_limit import make_login_limiter
from app.features.auth.router import router as auth_router
from app.features.docs.router import router as docs_router
from app.features.model_accuracy.gauges import AccuracyRefresher, refresh_accuracy_gauges
from app.features.model_accuracy.router import router as accuracy_router
from app.features.ops.router import router as ops_router
from app.features.stock_prediction.log_writer import PredictionLogWriter
from app.features.stock_prediction.predictor import Predictor
from app.features.stock_prediction.router import router as predict_router
from app.features.stock_prediction.service import PredictionService, make_window_store
from common.db import create_db_engine, make_session_factory, redact_url
from common.exchanges import exchange_of, warm_calendars
from common.logging_setup import configure_logging

logger = logging.getLogger(__name__)

DESCRIPTION = """
Daily close forecasts for stocks, from each ticker's champion LSTM (served as ONNX).

1. `POST /auth/token` with form fields `username` and `password` returns a bearer token.
2. `GET /predict/{ticker}?horizon=5` forecasts the next 5 trading days from the stored bars;
   `POST /predict/{ticker}` forecasts from closes you send.
3. Every forecast is logged to the `prediction_log` table; once the bars of its target dates
   are ingested, `GET /models/{ticker}/accuracy` tells how the champion's forecasts turned out
   (the `prediction_outcome` view in SQL); `GET /metrics` exposes Prometheus metrics.

Target dates are the next sessions of the ticker's exchange (B3, NYSE, Nasdaq), holidays
included, from the `exchange_calendars` library.
"""


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now out of the garbage collector's reach.

    A worker holds about 300,000 objects after startup (the libraries, the app, the
    models), and every full (generation 2) collection traversed all of them: 180-260 ms
    with the event loop stopped, every few seconds under load, which set the p99 latency
    (the p99 latency). Frozen objects are never traversed again, so a full
    collection only looks at what was allocated since. Frozen objects are still freed by
    reference counting when released; only reference cycles among them (e.g. in a champion
    replaced later) stay until the process ends. See :func:`gc.freeze`.
    """
    began = time.perf_counter()
    gc.collect()
    gc.freeze()
    logger.info(
        "startup heap frozen: %d objects, %.0f ms",
        gc.get_freeze_count(),
        (time.perf_counter() - began) * 1000.0,
    )


def bound_registry_calls(settings: AppSettings) -> None:
    """Bound every MLflow HTTP call of this process: ``APP_REGISTRY_TIMEOUT_SECONDS`` per
    attempt and ``APP_REGISTRY_MAX_RETRIES`` retries (MLflow's defaults, 120 s and 7 retries
    with backoff, held an unreachable registry for minutes). An explicit
    ``MLFLOW_HTTP_REQUEST_TIMEOUT``/``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` wins."""
    os.environ.setdefault(
        "MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(settings.registry_timeout_seconds)))
    )
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.registry_max_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def serve_routes(app: FastAPI, *routers: APIRouter) -> None:
    """Serve the routers' path operations from the app's own route table, in this order.

    ``app.include_router`` (FastAPI 0.137 and later) keeps each router as a node that every
    request walks into, and walks again once matched: with five routers, a fifth of the app's
    CPU for a ``GET /health`` (docs/performance.md). Each router's routes already carry its
    prefix, tags and responses, so the paths, the handlers and the OpenAPI document are the
    same; what is not carried is an ``include_router`` argument (none is used) and the app's
    ``dependency_overrides`` (tests replace parts of ``app.state`` instead).

    Raises:
        TypeError: a router holds something other than path operations (an included router,
            a mount), which this would serve without its prefix or context.
    """
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                raise TypeError(f"{route!r} of a router is not a path operation")
        app.router.routes.extend(router.routes)


def create_app(
    settings: AppSettings | None = None,
    *,
    predictor: Predictor | None = None,
    configure_process: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build the API.

    Args:
        settings: the settings to use (default: :func:`get_settings` at startup, which
            refuses a missing/placeholder/short secret key outside development).
        predictor: a ready predictor (default: one on ``MLFLOW_TRACKING_URI``, loaded at
            startup and polled every ``APP_MODEL_POLL_SECONDS``).
        configure_process: set up the process the app runs in, at startup: logging, and
            :func:`freeze_startup_heap` once the models are loaded. Off in tests, whose one
            process runs many apps.
        clock: the monotonic clock, seconds, of the per-worker caches' expiry (tests move it).

    Returns:
        The FastAPI app; nothing is connected until its lifespan starts.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        active = settings or get_settings()
        if configure_process:
            configure_logging(active.log_level)
            # no MLflow download progress bars in the server's log (an explicit setting wins)
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        engine = create_db_engine(
            active.database_url,
            pool_size=active.db_pool_size,
            max_overflow=active.db_max_overflow,
        )
        served = (
            predictor
            if predictor is not None
            else Predictor(
                tracking_uri=active.mlflow_tracking_uri, interval_levels=active.interval_levels
            )
        )
        session_factory = make_session_factory(engine)
        log_writer = PredictionLogWriter(create_async_db_engine(active.database_url))
        app.state.settings = active
        app.state.session_factory = session_factory
        app.state.user_cache = make_user_cache(active, timer=clock)
        app.state.verified_tokens = make_verified_tokens(active)
        app.state.login_limiter = make_login_limiter(active)
        app.state.prediction_service = PredictionService(
            predictor=served,
            windows=make_window_store(active, session_factory, timer=clock),
            log_writer=log_writer,
            session_factory=session_factory,
            settings=active,
        )
        health = app.state.prediction_service.health
        logger.info(
            "starting (%s): database %s, registry %s",
            active.environment,
            redact_url(active.database_url),
            served.tracking_uri,
        )
        bound_registry_calls(active)

        def after_first_load() -> None:
            # the first calendar load imports pandas: done here, before the heap is frozen
            warm_calendars({e for m in served.served() if (e := exchange_of(m.ticker))})
            health.compute_after_load(served.served())
            if configure_process:
                freeze_startup_heap()

        # the models load in the background: the server listens at once, and /ready says 503
        # (and /predict 503 with Retry-After) until the registry has answered
        served.start_polling(
            active.model_poll_seconds,
            load_now=True,
            on_first_load=after_first_load,
            on_reload=lambda report: health.compute_after_load(report.models),
        )
        if active.model_startup_wait_seconds > 0:
            await anyio.to_thread.run_sync(
                served.first_load_done.wait, active.model_startup_wait_seconds
            )
        log_writer.start()
        accuracy = AccuracyRefresher(
            functools.partial(
                refresh_accuracy_gauges,
                session_factory=session_factory,
                predictor=served,
                window=active.accuracy_window,
                health=health,
            ),
            interval_seconds=active.accuracy_refresh_seconds,
        )
        accuracy.start()
        try:
            yield
        finally:
            await accuracy.stop()
            await anyio.to_thread.run_sync(served.stop_polling)
            await log_writer.stop()
            await log_writer.engine.dispose()
            engine.dispose()
            mark_worker_exited()

    app = FastAPI(
        title="stockcast API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # served by app.features.docs: local assets, and APP_DOCS says who may read them
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # no OpenTelemetry here: else FastAPI looks up the global providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    register_handlers(app)
    serve_routes(app, auth_router, predict_router, ops_router, accuracy_router, docs_router)
    # added before the metrics middleware, so that one (outside it) counts its 413s and 500s
    app.add_middleware(EdgeMiddleware, default_max_body_bytes=DEFAULT_MAX_BODY_BYTES)
    instrument(app)
    return app


app = create_app()
