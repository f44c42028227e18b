"""Prometheus metrics: HTTP metrics by route template, plus the model metrics of the service.

Everything is defined at module level (collectors register once per process, however many
apps are created); :func:`instrument` adds the middleware and ``GET /metrics`` to one app.

Custom metrics:

* ``stockcast_predictions_total{ticker, model_version, endpoint}``: prediction requests served;
* ``stockcast_predicted_points_total{ticker, model_version}``: predicted target dates served;
* ``stockcast_model_inference_seconds{ticker}``: wall time of the model's forward passes for
  one forecast (all horizon steps), seconds; observed when a forecast is computed, i.e. once
  per cached lookback window, model version and horizon (the requests that reuse it add no
  observation);
* ``stockcast_model_version_loaded{ticker}``: the registered-model version served per ticker;
* ``stockcast_prediction_log_commit_seconds``: wall time of one group commit of
  ``prediction_log`` rows (the statement, or the transaction, carrying the rows of every
  request that was waiting), seconds; successful commits only. Every prediction's response
  waits for one of these, so its tail is part of the API's;
* ``stockcast_failed_logins_total{reason}``: refused logins, ``credentials`` or ``limited``;
* ``stockcast_prediction_log_commit_requests``: requests whose rows one group commit carried
  (``_sum / _count`` is the mean batch);
* realized accuracy of each ticker's served champion over its last ``APP_ACCURACY_WINDOW``
  realized target dates, as ``GET /models/{ticker}/accuracy`` reports it, refreshed every
  ``APP_ACCURACY_REFRESH_SECONDS`` by a timer (not per request):
  ``stockcast_realized_outcomes{ticker}`` (forecast steps counted),
  ``stockcast_realized_mae{ticker}`` (listing currency), ``stockcast_realized_relative_mae``
  (MAE / naive MAE), ``stockcast_realized_directional_accuracy_percent`` and
  ``stockcast_realized_coverage_percent{ticker, level}`` (level 80 or 95); NaN while unknown;
* drift and staleness of each served champion (``app/features/model_health``), set whenever
  they are computed (per model version every ``APP_HEALTH_CACHE_SECONDS`` at most, and by the
  same timer): ``stockcast_input_drift_psi{ticker}``, ``stockcast_input_drift_ks{ticker}``,
  ``stockcast_model_bars_behind{ticker}``.

HTTP metrics (:class:`HttpMetricsMiddleware`): ``http_requests_total{handler, method,
status}`` and ``http_request_duration_seconds{handler, method}`` (buckets from 1 ms), the names
and labels of prometheus-fastapi-instrumentator that the dashboards and alert rules use;
``handler`` is the route template (``/predict/{ticker}``), ``none`` for a path no route matches.

Several workers (``APP_WORKERS > 1``): each worker is a process with its own counters, and a
scrape reaches only one of them. ``python -m app serve`` therefore runs prometheus_client's
multiprocess mode: it points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh, empty folder before the
workers start, every worker writes its values to memory-mapped files there, and ``GET
/metrics`` (on any worker) adds up the files of all workers: counters and histograms are
summed, the model-version gauge takes the maximum over the live workers (``livemax``), and
the realized-accuracy gauges the value a live worker wrote last (``livemostrecent``: every
worker computes the same numbers from the same database). Without
the variable (tests, embedding the app) the metrics stay in the process, as usual.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import MULTIPROC_DIR_ENV, get_settings
from app.core.exceptions import InvalidCredentialsError

logger = logging.getLogger(__name__)

#: Request latency buckets, seconds: fine enough for millisecond responses.
HTTP_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
#: Inference latency buckets, seconds: a tiny LSTM step takes well under a millisecond.
INFERENCE_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0
)  # fmt: skip

#: Commit latency buckets, seconds: a WAL flush on a local disk takes about 1-5 ms.
COMMIT_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0
)  # fmt: skip
#: Requests per group commit: 1 when idle, tens under load.
COMMIT_REQUESTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

PREDICTIONS_SERVED = Counter(
    "stockcast_predictions",
    "Prediction requests served, by ticker, model version and endpoint (store: GET, from the "
    "stored bars; client: POST, from the client's closes).",
    ["ticker", "model_version", "endpoint"],
)
PREDICTED_POINTS = Counter(
    "stockcast_predicted_points",
    "Predicted target dates served (one per horizon step).",
    ["ticker", "model_version"],
)
INFERENCE_LATENCY = Histogram(
    "stockcast_model_inference_seconds",
    "Time spent in the model's forward passes for one forecast (all horizon steps), seconds;"
    " once per cached window, model version and horizon.",
    ["ticker"],
    buckets=INFERENCE_LATENCY_BUCKETS,
)
MODEL_VERSION_LOADED = Gauge(
    "stockcast_model_version_loaded",
    "Registered-model version of the champion served per ticker.",
    ["ticker"],
    # with several workers: the highest version any live worker serves (they poll the same
    # registry, so they agree once each has polled)
    multiprocess_mode="livemax",
)

PREDICTION_LOG_COMMIT_LATENCY = Histogram(
    "stockcast_prediction_log_commit_seconds",
    "Wall time of one group commit of prediction_log rows (every waiting request's rows in "
    "one statement or transaction), seconds; successful commits only.",
    buckets=COMMIT_LATENCY_BUCKETS,
)
FAILED_LOGINS = Counter(
    "stockcast_failed_logins",
    "Refused logins: credentials (wrong username or password), limited (429, too many "
    "recent failures for the username or client address).",
    ["reason"],
)
PREDICTION_LOG_COMMIT_REQUESTS = Histogram(
    "stockcast_prediction_log_commit_requests",
    "Requests whose prediction_log rows one group commit carried.",
    buckets=COMMIT_REQUESTS_BUCKETS,
)

# every worker refreshes these from the same view: the latest write of a live worker is right
_ACCURACY_MODE: Final = "livemostrecent"
REALIZED_OUTCOMES = Gauge(
    "stockcast_realized_outcomes",
    "Realized forecast steps of the served champion counted in the realized-accuracy gauges "
    "(its last APP_ACCURACY_WINDOW realized target dates).",
    ["ticker"],
    multiprocess_mode=_ACCURACY_MODE,
)
REALIZED_MAE = Gauge(
    "stockcast_realized_mae",
    "Realized MAE of the served champion's forecasts, listing currency.",
    ["ticker"],
    multiprocess_mode=_ACCURACY_MODE,
)
REALIZED_RELATIVE_MAE = Gauge(
    "stockcast_realized_relative_mae",
    "Realized MAE of the served champion / MAE of the naive forecast of the same origins "
    "(above 1: persistence does better).",
    ["ticker"],
    multiprocess_mode=_ACCURACY_MODE,
)
REALIZED_DIRECTIONAL_ACCURACY = Gauge(
    "stockcast_realized_directional_accuracy_percent",
    "Percent of the served champion's realized forecast steps whose move had the right sign.",
    ["ticker"],
    multiprocess_mode=_ACCURACY_MODE,
)
REALIZED_COVERAGE = Gauge(
    "stockcast_realized_coverage_percent",
    "Percent of realized closes inside the served champion's prediction interval, by level.",
    ["ticker", "level"],
    multiprocess_mode=_ACCURACY_MODE,
)

INPUT_DRIFT_PSI = Gauge(
    "stockcast_input_drift_psi",
    "Largest Population Stability Index of the served champion's input series (recent "
    "APP_DRIFT_WINDOW_BARS bars against the bars it was built on); 0.1 moderate, 0.25 drift.",
    ["ticker"],
    multiprocess_mode=_ACCURACY_MODE,
)
INPUT_DRIFT_KS = Gauge(
    "stockcast_input_drift_ks",
    "Largest two-sample Kolmogorov-Smirnov statistic of the served champion's input series.",
    ["ticker"],
    multiprocess_mode=_ACCURACY_MODE,
)
MODEL_BARS_BEHIND = Gauge(
    "stockcast_model_bars_behind",
    "Bars stored after the last bar the served champion was built on.",
    ["ticker"],
    multiprocess_mode=_ACCURACY_MODE,
)


#: Where the metrics are exposed on the API's port (and the handler the HTTP metrics leave out).
METRICS_PATH: Final = "/metrics"

HTTP_REQUESTS = Counter(
    "http_requests",
    "Total number of requests by method, status and handler.",
    ["method", "status", "handler"],
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Wall time from the request's arrival at the app to its last response byte, seconds, by "
    "route template.",
    ["method", "handler"],
    buckets=HTTP_LATENCY_BUCKETS,
)


def _flat_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes of ``routes`` with each included router replaced by its routes (FastAPI
    keeps ``include_router`` routers as one entry whose routes carry the full path)."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            for context in contexts():
                yield getattr(context, "starlette_route", None) or context
        else:
            yield route


def _route_template(scope: Scope) -> str:
    """The template of the route that served ``scope`` (``/predict/{ticker}``), else ``none``.

    FastAPI's router puts the matched route (or, for a 405, the route whose path matched) in
    ``scope["route"]``; only requests it never routed (404s, the docs pages, bodies refused by
    the edge) are matched again here, against the app's routes.
    """
    route = scope.get("route")
    if route is None:
        partial = None
        for candidate in _flat_routes(getattr(scope.get("app"), "routes", ())):
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
            if match is Match.PARTIAL and partial is None:
                partial = candidate
        route = route or partial
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "none"


class HttpMetricsMiddleware:
    """Pure ASGI middleware counting every HTTP request and timing it by route template.

    Per request: one clock read at each end, one dict lookup for the label values' children
    and three value updates (the counter, the histogram's bucket and sum); the route template
    comes from the router's own match.

    Args:
        app: the application.
        excluded_handlers: route templates not measured (the scrape endpoint).
    """

    def __init__(
        self, app: ASGIApp, *, excluded_handlers: frozenset[str] = frozenset({METRICS_PATH})
    ) -> None:
        self.app = app
        self.excluded_handlers = excluded_handlers
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # an exception before the response started

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self._observe(scope, status, time.perf_counter() - began)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        handler = _route_template(scope)
        if handler in self.excluded_handlers:
            return
        method: str = scope["method"]
        key = (method, handler, status)
        series = self._series.get(key)
        if series is None:
            series = (
                HTTP_REQUESTS.labels(method, str(status), handler),
                HTTP_REQUEST_DURATION.labels(method, handler),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)


def metrics_registry() -> CollectorRegistry:
    """The registry a scrape reads: every worker's files in multiprocess mode, else this
    process's collectors."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def _check_metrics_access(request: Request) -> None:
    """Refuse a scrape the settings do not allow on the API's port.

    Raises:
        HTTPException: 404 when ``APP_METRICS_PORT`` moves the metrics to their own port.
        InvalidCredentialsError: 401 when ``APP_METRICS_TOKEN`` is set and the request does
            not carry it as ``Authorization: Bearer <token>``.
    """
    settings = getattr(request.app.state, "settings", None) or get_settings()
    if settings.metrics_port is not None:
        raise HTTPException(status_code=404, detail="Not Found")
    if settings.metrics_token is None:
        return
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        credentials.strip().encode(), expected
    ):
        raise InvalidCredentialsError("a valid metrics token is required (APP_METRICS_TOKEN)")


def metrics(request: Request) -> Response:
    """Prometheus metrics of every worker (text exposition format)."""
    _check_metrics_access(request)
    return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_PLAIN_0_0_4)


def instrument(app: FastAPI) -> None:
    """Add :class:`HttpMetricsMiddleware` (outermost) and ``GET /metrics`` to ``app``."""
    app.add_middleware(HttpMetricsMiddleware)
    app.add_api_route(
        METRICS_PATH,
        metrics,
        methods=["GET"],
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"description": "Prometheus text exposition format 0.0.4"},
            401: {"description": "APP_METRICS_TOKEN is set and the request lacks it"},
            404: {"description": "APP_METRICS_PORT serves the metrics on their own port"},
        },
    )


def serve_metrics_port(host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve the metrics on ``host:port`` in a daemon thread of this process: from the
    supervisor of ``python -m app serve``, in multiprocess mode, the sum of every worker's.

    Returns:
        The HTTP server and its thread (``server.shutdown()`` stops it).

    Raises:
        OSError: the port is in use.
    """
    server, thread = start_http_server(port, addr=host, registry=metrics_registry())
    logger.info("metrics on http://%s:%d/metrics (not on the API's port)", host, port)
    return server, thread


def mark_worker_exited() -> None:
    """Forget this process's live gauges in multiprocess mode (call when a worker stops).

    Without it a stopped worker's ``livemax`` gauge values would linger in the folder until
    the server restarts. Does nothing outside multiprocess mode.
    """
    if os.environ.get(MULTIPROC_DIR_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
        logger.debug("multiprocess metrics: worker %d marked dead", os.getpid())
