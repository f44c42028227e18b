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

HTTP metrics (prometheus-fastapi-instrumentator): ``http_requests_total{handler, method,
status}``, ``http_request_duration_seconds{handler, method}`` with buckets from 1 ms,
``http_request_duration_highr_seconds`` and request/response sizes.

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

import functools
import logging
import os
from collections.abc import Callable
from typing import Final

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import Counter, Gauge, Histogram
from prometheus_fastapi_instrumentator import Instrumentator, metrics

from app.core.config import MULTIPROC_DIR_ENV

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


@functools.cache
def _http_metrics() -> Callable[[metrics.Info], None]:
    """The HTTP metrics (requests, latency by route template), created once per process and
    shared by every app: a second app creating its own would find the names registered and
    measure nothing."""
    instrumentation = metrics.default(
        latency_highr_buckets=HTTP_LATENCY_BUCKETS, latency_lowr_buckets=HTTP_LATENCY_BUCKETS
    )
    assert instrumentation is not None  # the first creation in this process
    return instrumentation


def instrument(app: FastAPI) -> None:
    """Add the HTTP metrics middleware and ``GET /metrics`` to ``app``."""
    Instrumentator(
        should_group_status_codes=False,
        should_group_untemplated=True,
        excluded_handlers=["/metrics"],
    ).add(_http_metrics()).instrument(app).expose(
        app,
        include_in_schema=True,
        tags=["ops"],
        response_class=PlainTextResponse,
        summary="Prometheus metrics",
        responses={200: {"description": "Prometheus text exposition format 0.0.4"}},
    )


def mark_worker_exited() -> None:
    """Forget this process's live gauges in multiprocess mode (call when a worker stops).

    Without it a stopped worker's ``livemax`` gauge values would linger in the folder until
    the server restarts. Does nothing outside multiprocess mode.
    """
    if os.environ.get(MULTIPROC_DIR_ENV):
        from prometheus_client import multiprocess  # noqa: PLC0415

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
        logger.debug("multiprocess metrics: worker %d marked dead", os.getpid())
