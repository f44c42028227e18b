"""Is a ticker's champion due for retraining? Staleness and input drift, from the registry.

``python -m ml_lifecycle train --stale-only`` (and the training schedule) retrains a ticker
only when :func:`champion_health` says so: no champion yet, a champion more than
``ML_STALE_AFTER_BARS`` bars behind the price store, or one whose recent inputs drifted
(PSI of the last ``ML_DRIFT_WINDOW_BARS`` bars against its training distribution at or above
``ML_PSI_DRIFT``; :mod:`common.drift`). The API reports the same numbers with every forecast.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from common.drift import DRIFT_WINDOW_BARS, PSI_DRIFT, STALE_AFTER_BARS, DriftReport, drift_report
from common.model_contract import ModelMetadata, registered_model_name
from common.price_store import count_bars_after, read_last_bars

logger = logging.getLogger(__name__)

SessionFactory = Callable[[], Session]


@dataclass(frozen=True)
class ChampionHealth:
    """Staleness and drift of one ticker's champion, and whether to retrain it.

    Attributes:
        ticker: the ticker.
        version: the champion's version (None: no champion).
        last_train_bar: the last bar the champion was trained and evaluated on.
        bars_behind: stored bars after ``last_train_bar``.
        drift: its drift report on the recent bars (None without a champion).
        retrain: whether ``train --stale-only`` retrains the ticker.
        reason: why (or why not), one line.
    """

    ticker: str
    version: str | None
    last_train_bar: dt.date | None
    bars_behind: int | None
    drift: DriftReport | None
    retrain: bool
    reason: str


def champion_metadata(*, ticker: str, tracking_uri: str) -> tuple[str, ModelMetadata] | None:
    """``(version, metadata)`` of ``ticker``'s champion, or None when it has none.

    Raises:
        RegistryReadError / MlflowException: the registry or the artifacts cannot be read.
    """
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    from common.registry import champion_version, load_metadata  # noqa: PLC0415

    name = registered_model_name(ticker)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = champion_version(client, name)
    if version is None:
        return None
    return version, load_metadata(client, name, version)


def assess(
    session: Session,
    *,
    ticker: str,
    version: str,
    metadata: ModelMetadata,
    drift_window_bars: int = DRIFT_WINDOW_BARS,
    stale_after_bars: int = STALE_AFTER_BARS,
    psi_drift: float = PSI_DRIFT,
) -> ChampionHealth:
    """Staleness and drift of a champion against the price store (one count, one read).

    Args:
        session: on the price store.
        ticker, version, metadata: the champion.
        drift_window_bars: recent bars compared with the training distribution.
        stale_after_bars: more bars than this behind the store is stale.
        psi_drift: PSI from which the inputs have drifted.
    """
    behind = count_bars_after(session, ticker=ticker, after=metadata.last_bar_date)
    bars = read_last_bars(session, ticker=ticker, n=drift_window_bars)
    report = drift_report(
        metadata.input_distributions,
        bars.as_mapping(),
        lookback=metadata.lookback,
        features=metadata.features,
        drift=psi_drift,
    )
    reasons = []
    if behind > stale_after_bars:
        reasons.append(f"stale: {behind} bars behind (> {stale_after_bars})")
    if report.status == "drift":
        reasons.append(f"drifting: PSI {report.psi:.3f} >= {psi_drift}")
    reason = "; ".join(reasons) or (
        f"fresh: {behind} bars behind, drift {report.status}"
        + (f" (PSI {report.psi:.3f})" if report.psi is not None else "")
    )
    return ChampionHealth(
        ticker=ticker,
        version=version,
        last_train_bar=metadata.last_bar_date,
        bars_behind=behind,
        drift=report,
        retrain=bool(reasons),
        reason=reason,
    )


def champion_health(
    *,
    session_factory: SessionFactory,
    ticker: str,
    tracking_uri: str,
    drift_window_bars: int = DRIFT_WINDOW_BARS,
    stale_after_bars: int = STALE_AFTER_BARS,
    psi_drift: float = PSI_DRIFT,
) -> ChampionHealth:
    """:func:`assess` of ``ticker``'s champion; a ticker without one is to be trained."""
    found = champion_metadata(ticker=ticker, tracking_uri=tracking_uri)
    if found is None:
        return ChampionHealth(ticker, None, None, None, None, True, "no champion yet")
    version, metadata = found
    with session_factory() as session:
        return assess(
            session,
            ticker=ticker,
            version=version,
            metadata=metadata,
            drift_window_bars=drift_window_bars,
            stale_after_bars=stale_after_bars,
            psi_drift=psi_drift,
        )
