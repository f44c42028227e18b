"""The 500-model bench's copies: symbols of the same exchange, as many as asked, distinct."""

from __future__ import annotations

import datetime as dt

import pytest

from bench.scale import plan_copies
from common.exchanges import exchange_of, next_sessions
from common.tickers import SNAPSHOT_TICKERS, normalize_ticker


def test_copies_make_the_asked_number_of_models_on_their_sources_calendar_and_currency() -> None:
    """500 models = the 7 shipped + 493 copies, each a valid symbol whose exchange has the same
    currency and the same next 30 sessions after the snapshot's last bar as the champion it
    copies (a copy of AAPL, a Nasdaq listing, is a bare symbol, hence NYSE: same sessions)."""
    copies = plan_copies(500)
    assert len(copies) == 493 and not set(copies) & set(SNAPSHOT_TICKERS)
    for symbol, source in copies.items():
        assert normalize_ticker(symbol) == symbol
        mine, theirs = exchange_of(symbol), exchange_of(source)
        assert mine is not None and theirs is not None, symbol
        assert mine.currency == theirs.currency, symbol
        last_bar = dt.date(2023, 12, 29)
        assert next_sessions(mine, last_bar, 30) == next_sessions(theirs, last_bar, 30), symbol
    assert set(copies.values()) == set(SNAPSHOT_TICKERS)


def test_fewer_models_than_the_shipped_champions_is_refused() -> None:
    """--models 5 cannot be 7 champions plus copies: a clear error, not a silent 7."""
    with pytest.raises(ValueError, match="at least 7 models"):
        plan_copies(5)
