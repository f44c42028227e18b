"""Ticker symbols in Yahoo Finance's syntax."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from common.exceptions import InvalidTickerError

#: The seven tickers of the shipped snapshot: the default of every layer's ticker list.
SNAPSHOT_TICKERS = ("PETR4.SA", "VALE3.SA", "BBAS3.SA", "CMIG4.SA", "AAPL", "MSFT", "SPY")

#: Letters, digits and the punctuation Yahoo uses: ``.`` (exchange suffix, ``PETR4.SA``),
#: ``-`` (share classes, ``BRK-B``), ``^`` (indices, ``^BVSP``) and ``=`` (FX and futures,
#: ``BRL=X``, ``CL=F``). At most 20 characters.
TICKER_PATTERN = r"^[A-Za-z0-9.\-\^=]{1,20}$"
_TICKER_RE = re.compile(TICKER_PATTERN)


def normalize_ticker(ticker: str) -> str:
    """Validate a ticker symbol and return it upper-cased.

    Args:
        ticker: a symbol such as ``"petr4.sa"`` or ``"AAPL"``.

    Returns:
        The symbol upper-cased (``"PETR4.SA"``).

    Raises:
        InvalidTickerError: when the symbol has characters Yahoo does not use, is empty or
            is longer than 20 characters.
    """
    candidate = ticker.strip()
    if not _TICKER_RE.fullmatch(candidate):
        raise InvalidTickerError(ticker)
    return candidate.upper()


def add_tickers_option(parser: argparse.ArgumentParser, default: Sequence[str]) -> None:
    """Add ``--tickers A B C`` (one option, many Yahoo symbols) with ``default`` to a CLI."""
    parser.add_argument(
        "--tickers",
        nargs="+",
        default=list(default),
        metavar="TICKER",
        help=f"Yahoo symbols (default: {' '.join(default)})",
    )
