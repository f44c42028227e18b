"""Drift (:mod:`common.drift`) and staleness of a served model, computed from the store.

Computed per model version at most every ``APP_HEALTH_CACHE_SECONDS`` (a read of the last
``APP_DRIFT_WINDOW_BARS`` bars, in the thread pool) and kept in a per-worker cache; each
computation also sets the ``stockcast_input_drift_*`` and ``stockcast_model_bars_behind``
gauges. The served models are computed together (one read of the bars of each 100) after the
first load and with each refresh of the realized-accuracy gauges, and the models a reload
loaded right after it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app.core.cache import ExpiringCache
from app.core.config import AppSettings
from app.core.monitoring import INPUT_DRIFT_KS, INPUT_DRIFT_PSI, MODEL_BARS_BEHIND
from app.features.model_health.schemas import DriftRead, StaleRead
from app.features.stock_prediction.predictor import ServedModel
from common.drift import drift_report
from common.price_store import Bars, count_bars_after, read_last_bars_of_many

logger = logging.getLogger(__name__)

#: Models whose drift windows one statement of :meth:`HealthMonitor.compute_all` reads: 100
#: windows of 250 bars are 25,000 rows held at once, not all 500 models' 125,000.
HEALTH_BATCH = 100


@dataclass(frozen=True)
class ModelHealth:
    """The ``drift`` and ``stale`` of one model version, as served."""

    drift: DriftRead
    stale: StaleRead


def compute_health(session: Session, model: ServedModel, settings: AppSettings) -> ModelHealth:
    """Drift of the ticker's last ``APP_DRIFT_WINDOW_BARS`` stored bars against the model's
    recorded input distributions, and the stored bars after its last bar; sets the gauges.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unavailable.
    """
    return compute_health_of_many(session, [model], settings)[0]


def compute_health_of_many(
    session: Session, models: Sequence[ServedModel], settings: AppSettings
) -> list[ModelHealth]:
    """:func:`compute_health` of each of ``models``, in order, with ONE read of their bars
    (:func:`~common.price_store.read_last_bars_of_many`). A model's bars behind are counted
    from that window when its last training bar is in it (a retrained model's usually is),
    else by a query of its own.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unavailable.
    """
    n = settings.drift_window_bars
    windows = read_last_bars_of_many(session, windows=[(m.ticker, n) for m in models])
    return [_health(session, model, windows[(model.ticker, n)], settings) for model in models]


def _health(session: Session, model: ServedModel, bars: Bars, settings: AppSettings) -> ModelHealth:
    metadata = model.metadata
    if not len(bars):
        behind = None
    elif len(bars) < settings.drift_window_bars or bars.dates[0] <= metadata.last_bar_date:
        behind = int(np.count_nonzero(bars.dates > metadata.last_bar_date))  # all bars after it
    else:
        behind = count_bars_after(session, ticker=model.ticker, after=metadata.last_bar_date)
    report = drift_report(
        metadata.input_distributions,
        bars.as_mapping(),
        lookback=metadata.lookback,
        features=metadata.features,
        moderate=settings.psi_moderate,
        drift=settings.psi_drift,
    )
    INPUT_DRIFT_PSI.labels(ticker=model.ticker).set(math.nan if report.psi is None else report.psi)
    INPUT_DRIFT_KS.labels(ticker=model.ticker).set(math.nan if report.ks is None else report.ks)
    MODEL_BARS_BEHIND.labels(ticker=model.ticker).set(math.nan if behind is None else behind)
    return ModelHealth(
        drift=DriftRead(psi=report.psi, ks=report.ks, status=report.status, window_bars=len(bars)),
        stale=StaleRead(
            last_train_bar=metadata.last_bar_date,
            bars_behind=behind,
            stale=behind is not None and behind > settings.stale_after_bars,
        ),
    )


class HealthMonitor:
    """The per-worker cache of :class:`ModelHealth` by ``(ticker, model version)``.

    Filled by the requests (a model not in it is computed on its own) and, for many models at
    once, by :meth:`compute_all` (every served model after the first load and with each
    refresh of the realized-accuracy gauges; the models a reload loaded, after it), so that
    the first request of each of 500 models does not compute its own.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: AppSettings,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self._cache: ExpiringCache[tuple[str, str], ModelHealth] = ExpiringCache(
            ttl_seconds=settings.health_cache_seconds, maxsize=1_024, timer=timer
        )

    def compute_all(self, models: Sequence[ServedModel]) -> None:
        """Compute the health of every model of ``models`` now (blocking: one session, one read
        of the bars of each :data:`HEALTH_BATCH` models) and keep it for
        ``APP_HEALTH_CACHE_SECONDS``; sets the gauges.

        Raises:
            sqlalchemy.exc.OperationalError: the database is unavailable (the batches done
                are kept).
        """
        with self.session_factory() as session:
            for start in range(0, len(models), HEALTH_BATCH):
                batch = models[start : start + HEALTH_BATCH]
                healths = compute_health_of_many(session, batch, self.settings)
                for model, health in zip(batch, healths, strict=True):
                    self._cache.put((model.ticker, model.version), health)

    def compute_after_load(self, models: Sequence[ServedModel]) -> None:
        """:meth:`compute_all` for models just loaded, so that each one's first request does
        not compute its own; never raises: a failure is logged (the requests then compute
        them, as they would have)."""
        try:
            self.compute_all(models)
        except Exception as exc:
            logger.warning("drift and staleness not computed after the load: %s", exc)

    async def get(self, model: ServedModel) -> ModelHealth:
        """The model's health, cached for ``APP_HEALTH_CACHE_SECONDS``.

        Raises:
            sqlalchemy.exc.OperationalError: the database is unavailable on a miss (503).
        """

        def compute() -> ModelHealth:
            with self.session_factory() as session:
                return compute_health(session, model, self.settings)

        return await self._cache.get_or_load(
            (model.ticker, model.version), compute, keep=lambda _: True
        )
