"""Where a ticker trades: its exchange, listing currency and trading sessions.

A forecast's target dates are the exchange's next *sessions* (days it trades), taken from
the ``exchange_calendars`` library (holidays, early closes and one-off closures kept by its
maintainers), never from our own holiday lists. A B3 forecast made on 2023-12-28 is dated
2024-01-02, 2024-01-03, ...: B3 is closed on 2023-12-29 and 2024-01-01.

Which exchange a Yahoo symbol belongs to is read from three tables, first match wins:

1. :data:`SYMBOL_EXCHANGES`: symbols whose exchange the syntax does not tell (indices such
   as ``^BVSP``, US listings known to trade on Nasdaq or NYSE Arca);
2. :data:`SUFFIX_EXCHANGES`: Yahoo's exchange suffixes (``PETR4.SA`` -> B3);
3. a bare symbol (letters, digits, ``-``: ``AAPL``, ``BRK-B``) is a US listing: NYSE, whose
   sessions Nasdaq and NYSE Arca share.

Anything else (an unknown suffix, an index or future not in the tables) has no known
exchange: :func:`exchange_of` returns None and :func:`next_sessions` is not possible for it.
To add a market, add an :class:`Exchange` to :data:`EXCHANGES` (its ``calendar`` one of
``exchange_calendars.get_calendar_names()``) and its suffix or symbols to the tables; a data
migration then fixes the ``currency``/``exchange`` of rows already stored.

The calendar library (and pandas) is imported on the first calendar lookup only, so
importing this module is cheap.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import re
import warnings
from dataclasses import dataclass

#: First date the calendars cover: the price history the project ingests starts here.
CALENDAR_START = dt.date(2000, 1, 1)


@dataclass(frozen=True)
class Exchange:
    """An exchange whose sessions and currency are known.

    Attributes:
        code: the short name stored in ``price_bar.exchange`` (``"B3"``).
        name: its full name.
        mic: ISO 10383 market identifier code (``"BVMF"``).
        calendar: the ``exchange_calendars`` calendar name of its sessions.
        currency: ISO 4217 code of its listings' prices (index points count in it too).
    """

    code: str
    name: str
    mic: str
    calendar: str
    currency: str


B3 = Exchange("B3", "B3 S.A. - Brasil, Bolsa, Balcão (São Paulo)", "BVMF", "BVMF", "BRL")
NYSE = Exchange("NYSE", "New York Stock Exchange", "XNYS", "XNYS", "USD")
NASDAQ = Exchange("NASDAQ", "Nasdaq Stock Market", "XNAS", "XNAS", "USD")
NYSE_ARCA = Exchange("NYSEARCA", "NYSE Arca (exchange-traded funds)", "ARCX", "XNYS", "USD")

#: Every known exchange by code.
EXCHANGES: dict[str, Exchange] = {e.code: e for e in (B3, NYSE, NASDAQ, NYSE_ARCA)}

#: Yahoo suffix (upper case, with the dot) -> exchange code.
SUFFIX_EXCHANGES: dict[str, str] = {".SA": "B3"}

#: Whole symbols (upper case) -> exchange code, for what the syntax does not tell.
SYMBOL_EXCHANGES: dict[str, str] = {
    "^BVSP": "B3",  # Ibovespa, in BRL points
    "^GSPC": "NYSE",  # S&P 500
    "^DJI": "NYSE",  # Dow Jones Industrial Average
    "^IXIC": "NASDAQ",  # Nasdaq Composite
    "AAPL": "NASDAQ",
    "MSFT": "NASDAQ",
    "SPY": "NYSEARCA",
}

#: Exchange of a bare symbol (no suffix, no ``^`` or ``=``): a US listing.
BARE_SYMBOL_EXCHANGE = "NYSE"
_BARE_SYMBOL = re.compile(r"^[A-Z0-9\-]+$")


class UnknownExchangeError(LookupError):
    """The ticker's exchange is not in the tables of :mod:`common.exchanges`."""

    def __init__(self, ticker: str) -> None:
        super().__init__(
            f"no exchange calendar is known for {ticker}: its target dates cannot be dated; "
            "add its suffix or symbol to common/exchanges.py"
        )
        self.ticker = ticker


class CalendarRangeError(ValueError):
    """A date outside the range the exchange's calendar covers."""


def exchange_of(ticker: str) -> Exchange | None:
    """The exchange of a Yahoo symbol, or None when the tables do not know it.

    Args:
        ticker: a Yahoo symbol, any case (``"petr4.sa"``, ``"^BVSP"``, ``"AAPL"``).

    Returns:
        ``B3`` for ``.SA`` symbols and ``^BVSP``; the US exchange of a bare symbol (NYSE
        unless :data:`SYMBOL_EXCHANGES` says otherwise); None for anything else.
    """
    symbol = ticker.strip().upper()
    code = SYMBOL_EXCHANGES.get(symbol)
    if code is None and "." in symbol:
        code = SUFFIX_EXCHANGES.get(symbol[symbol.rfind(".") :])
    if code is None and _BARE_SYMBOL.fullmatch(symbol):
        code = BARE_SYMBOL_EXCHANGE
    return EXCHANGES[code] if code is not None else None


def listing_of(ticker: str) -> tuple[str | None, str | None]:
    """``(currency, exchange code)`` of a ticker, ``(None, None)`` when unknown."""
    exchange = exchange_of(ticker)
    return (exchange.currency, exchange.code) if exchange is not None else (None, None)


@functools.cache
def _sessions(calendar: str) -> tuple[dt.date, ...]:
    """Every session of ``calendar`` the library knows from :data:`CALENDAR_START` on."""
    import exchange_calendars  # noqa: PLC0415 - pandas-heavy, loaded on first use

    with warnings.catch_warnings():
        # the library's own use of pandas APIs that pandas plans to change; not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        found = exchange_calendars.get_calendar(calendar, start=CALENDAR_START.isoformat())
    return tuple(day.date() for day in found.sessions)


def next_sessions(exchange: Exchange, as_of: dt.date, count: int) -> tuple[dt.date, ...]:
    """The ``count`` sessions of ``exchange`` after ``as_of`` (``as_of`` need not be one).

    Args:
        exchange: where the ticker trades (:func:`exchange_of`).
        as_of: the date of the last known close.
        count: how many sessions, ``>= 1``.

    Returns:
        ``count`` dates, ascending: ``B3`` after 2023-12-28 gives 2024-01-02, 2024-01-03, ...

    Raises:
        CalendarRangeError: ``as_of`` is before :data:`CALENDAR_START`, or the sessions run
            past the calendar's last one (``exchange_calendars`` knows about one year ahead).
    """
    return _next_sessions(exchange.calendar, as_of, count)


@functools.lru_cache(maxsize=4_096)
def _next_sessions(calendar: str, as_of: dt.date, count: int) -> tuple[dt.date, ...]:
    sessions = _sessions(calendar)
    if as_of < CALENDAR_START:
        raise CalendarRangeError(
            f"{as_of} is before {CALENDAR_START}, the first date of the {calendar} calendar"
        )
    start = bisect.bisect_right(sessions, as_of)
    found = sessions[start : start + count]
    if len(found) < count:
        raise CalendarRangeError(
            f"the {calendar} calendar ends on {sessions[-1]}: {count} sessions after {as_of} "
            "are not known yet"
        )
    return found


def warm_calendars(exchanges: set[Exchange]) -> None:
    """Load the calendars of ``exchanges`` now (a server calls this at startup, so that no
    request pays the first load, about 0.1-0.5 s per calendar)."""
    for exchange in exchanges:
        _sessions(exchange.calendar)
