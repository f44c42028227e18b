"""Staleness and drift of a trained champion, and what ``train --stale-only`` decides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session

from common.drift import LOG_RETURN
from common.exceptions import RegistryReadError
from common.model_contract import ONNX_ARTIFACT, ModelMetadata, registered_model_name
from common.price_store import Bars
from common.registry import load_version
from data_pipeline.storage.upsert import upsert_bars
from ml_lifecycle.health import assess, champion_health, champion_metadata
from ml_lifecycle.tracking import Tracking, default_artifact_location
from ml_lifecycle.train import train_and_register
from tests.ml_lifecycle.conftest import TICKER, tiny_config

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def champion(ml_session_factory, tracking_uri, tmp_path_factory) -> tuple[str, ModelMetadata]:
    """PETR4.SA trained tiny on its last 600 bars and registered as champion."""
    summary = train_and_register(
        session_factory=ml_session_factory,
        ticker=TICKER,
        config=tiny_config(),
        tracking=Tracking(uri=tracking_uri),
        reports_dir=tmp_path_factory.mktemp("reports"),
    )
    assert summary.ok
    found = champion_metadata(ticker=TICKER, tracking_uri=tracking_uri)
    assert found is not None
    return found


def test_the_champion_records_the_distribution_of_every_input(champion) -> None:
    """600 bars, lookback 20: 599 log returns, and 581 windows x 20 values of rel_log_close."""
    _version, metadata = champion
    distributions = metadata.input_distributions
    assert set(distributions) == {LOG_RETURN, "rel_log_close"}
    assert distributions[LOG_RETURN].n == 599
    assert distributions["rel_log_close"].n == (600 - 20 + 1) * 20
    assert sum(distributions[LOG_RETURN].proportions) == pytest.approx(1.0)


def test_a_fresh_champion_is_not_retrained(
    champion, ml_session_factory: Callable[[], Session], tracking_uri: str
) -> None:
    """Trained on the newest bars: 0 bars behind, no drift; --stale-only skips it."""
    health = champion_health(
        session_factory=ml_session_factory, ticker=TICKER, tracking_uri=tracking_uri
    )
    assert health.version == champion[0] and health.bars_behind == 0
    assert health.drift is not None and health.drift.status != "drift"
    assert not health.retrain and health.reason.startswith("fresh: 0 bars behind")


def test_a_champion_30_bars_behind_is_stale(
    champion, ml_session_factory: Callable[[], Session], petr_bars: Bars
) -> None:
    """Built on bars up to 30 sessions ago: retrained, saying why."""
    version, metadata = champion
    older = metadata.model_copy(update={"last_bar_date": petr_bars.dates[-31]})
    with ml_session_factory() as session:
        health = assess(session, ticker=TICKER, version=version, metadata=older)
    assert health.bars_behind == 30 and health.retrain
    assert health.reason == "stale: 30 bars behind (> 21)"


def test_a_champion_whose_recent_inputs_drifted_is_retrained(
    champion, ml_session_factory: Callable[[], Session], petr_bars: Bars
) -> None:
    """A year of bars with 5x PETR4.SA's volatility: PSI above 0.25, retrained."""
    version, metadata = champion
    returns = np.diff(np.log(petr_bars.close))
    rng = np.random.default_rng(16)
    closes = petr_bars.close[-251] * np.exp(np.cumsum(rng.normal(0, 5 * returns.std(), 250)))
    rows = [
        {"date": d, "open": c, "high": c, "low": c, "close": c, "volume": 1}
        for d, c in zip(petr_bars.dates[-250:], closes, strict=True)
    ]
    with ml_session_factory() as session:
        upsert_bars(session, ticker="WILD.SA", rows=rows, source="snapshot", currency="BRL")
        health = assess(session, ticker="WILD.SA", version=version, metadata=metadata)
        session.rollback()
    assert health.drift is not None and health.drift.status == "drift"
    assert health.retrain and health.reason.startswith("drifting: PSI")
    assert health.bars_behind == 0


def test_the_champion_metadata_is_read_without_its_network(champion, tracking_uri: str) -> None:
    """Drift and staleness need the metadata only: with every model.onnx of the store moved
    away, champion_metadata still answers, while a full load names the missing network."""
    location = default_artifact_location(tracking_uri)
    assert location is not None and location.startswith("file://")
    networks = sorted(Path(location.removeprefix("file://")).rglob(ONNX_ARTIFACT))
    assert networks, "the trained champion logged no model.onnx"
    for network in networks:
        network.rename(network.with_suffix(".moved"))
    try:
        assert champion_metadata(ticker=TICKER, tracking_uri=tracking_uri) == champion
        client = Tracking(uri=tracking_uri).client()
        with pytest.raises(RegistryReadError, match=f"cannot download {ONNX_ARTIFACT}"):
            load_version(client, registered_model_name(TICKER), champion[0])
    finally:
        for network in networks:
            network.with_suffix(".moved").rename(network)
