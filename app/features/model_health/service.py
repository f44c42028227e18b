"""Drift (:mod:`common.drift`) and staleness of a served model, computed from the store.

Computed per model version at most every ``APP_HEALTH_CACHE_SECONDS`` (one count and one read
of the last ``APP_DRIFT_WINDOW_BARS`` bars, in the thread pool) and kept in a per-worker
cache; each computation also sets the ``stockcast_input_drift_*`` and
``stockcast_model_bars_behind`` gauges.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.core.cache import ExpiringCache
from app.core.config import AppSettings
from app.core.monitoring import INPUT_DRIFT_KS, INPUT_DRIFT_PSI, MODEL_BARS_BEHIND
from app.features.model_health.schemas import DriftRead, StaleRead
from app.features.stock_prediction.predictor import ServedModel
from common.drift import drift_report
from common.price_store import count_bars_after, read_last_bars


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
    metadata = model.metadata
    bars = read_last_bars(session, ticker=model.ticker, n=settings.drift_window_bars)
    behind = (
        count_bars_after(session, ticker=model.ticker, after=metadata.last_bar_date)
        if len(bars)
        else None
    )
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
    """The per-worker cache of :class:`ModelHealth` by ``(ticker, model version)``."""

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

    def compute(self, model: ServedModel) -> ModelHealth:
        """:func:`compute_health` now, on a session of its own (blocking)."""
        with self.session_factory() as session:
            return compute_health(session, model, self.settings)

    async def get(self, model: ServedModel) -> ModelHealth:
        """The model's health, cached for ``APP_HEALTH_CACHE_SECONDS``.

        Raises:
            sqlalchemy.exc.OperationalError: the database is unavailable on a miss (503).
        """
        return await self._cache.get_or_load(
            (model.ticker, model.version), lambda: self.compute(model), keep=lambda _: True
        )
