"""What every bar source returns and raises."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import pandas as pd


@dataclass(frozen=True)
class RawBars:
    """Unvalidated bars of one ticker, as a source delivered them.

    ``frame`` has columns ``date, open, high, low, close, volume`` (values may be strings or
    numbers, rows in input order). ``location`` names the file for file-based sources, and
    ``line_offset`` is the file line of ``frame``'s first row.
    """

    ticker: str
    frame: pd.DataFrame
    source: str
    currency: str | None = None
    exchange: str | None = None
    location: str | None = None
    line_offset: int = 2


class SourceError(RuntimeError):
    """A ticker's bars could not be fetched; the message says why."""


class SourceUnavailableError(SourceError):
    """The source itself cannot be reached (no network, DNS failure): no point trying others."""


class RateLimitedError(SourceError):
    """The source asked us to slow down (HTTP 429, Yahoo's ``YFRateLimitError``)."""


class EmptyResponseError(SourceError):
    """The source answered with no bars: an unknown or delisted ticker, or a bad answer."""


class MalformedInputError(SourceError):
    """The input is not in the expected format (e.g. a CSV without a required column)."""


class BarSource(Protocol):
    """Anything that returns a ticker's bars from a start date on."""

    name: str

    def fetch(self, ticker: str, *, start: dt.date | None) -> RawBars:
        """Bars of ``ticker`` with ``date >= start`` (all when ``start`` is None)."""
        ...
