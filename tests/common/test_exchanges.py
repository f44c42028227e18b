"""Exchanges, listing currencies and the sessions that target dates are taken from."""

from __future__ import annotations

import datetime as dt

import pytest

from common.exchanges import (
    B3,
    CALENDAR_START,
    NASDAQ,
    NYSE,
    CalendarRangeError,
    exchange_of,
    listing_of,
    next_sessions,
)


@pytest.mark.parametrize(
    ("ticker", "exchange", "currency"),
    [
        ("PETR4.SA", "B3", "BRL"),
        ("petr4.sa", "B3", "BRL"),
        ("^BVSP", "B3", "BRL"),
        ("AAPL", "NASDAQ", "USD"),
        ("SPY", "NYSEARCA", "USD"),
        ("BRK-B", "NYSE", "USD"),
        ("^GSPC", "NYSE", "USD"),
    ],
)
def test_known_tickers_map_to_their_exchange_and_currency(
    ticker: str, exchange: str, currency: str
) -> None:
    """B3 for .SA and the Ibovespa (in BRL, not USD), US exchanges in USD for US symbols."""
    assert listing_of(ticker) == (currency, exchange)


@pytest.mark.parametrize("ticker", ["VOD.L", "^FTSE", "BRL=X", "CL=F"])
def test_unknown_markets_are_not_guessed(ticker: str) -> None:
    """A suffix, index or future the table does not list has no exchange (not 'US')."""
    assert exchange_of(ticker) is None
    assert listing_of(ticker) == (None, None)


def test_b3_sessions_after_2023_12_28_skip_the_year_end_holidays() -> None:
    """B3 is closed on 2023-12-29 (last weekday of the year) and 2024-01-01."""
    assert next_sessions(B3, dt.date(2023, 12, 28), 3) == (
        dt.date(2024, 1, 2),
        dt.date(2024, 1, 3),
        dt.date(2024, 1, 4),
    )


def test_carnival_is_not_a_b3_session_but_a_nyse_one() -> None:
    """Carnival Monday and Tuesday 2024 (12-13 Feb) are B3 holidays, US sessions."""
    friday = dt.date(2024, 2, 9)
    assert next_sessions(B3, friday, 1) == (dt.date(2024, 2, 14),)
    assert next_sessions(NYSE, friday, 2) == (dt.date(2024, 2, 12), dt.date(2024, 2, 13))
    assert next_sessions(NASDAQ, dt.date(2023, 12, 29), 1) == (dt.date(2024, 1, 2),)


def test_sessions_after_a_non_session_start_on_the_next_session() -> None:
    """A Saturday as_of gives the following Monday first."""
    assert next_sessions(NYSE, dt.date(2024, 3, 2), 1) == (dt.date(2024, 3, 4),)


def test_dates_outside_the_calendar_are_a_clear_error() -> None:
    """Before the calendar's start or past its end: CalendarRangeError naming the bound."""
    with pytest.raises(CalendarRangeError, match="ends on"):
        next_sessions(B3, dt.date(2100, 1, 4), 1)
    with pytest.raises(CalendarRangeError, match="is before"):
        next_sessions(B3, CALENDAR_START - dt.timedelta(days=1), 1)
