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


def parse_shard(value: str) -> tuple[int, int]:
    """Parse ``INDEX/COUNT`` (``"0/4"``), the shard option of a command line.

    Args:
        value: ``INDEX/COUNT`` with ``0 <= INDEX < COUNT``; in a Kubernetes Indexed Job,
            ``$(JOB_COMPLETION_INDEX)/COUNT``.

    Returns:
        ``(index, count)``.

    Raises:
        argparse.ArgumentTypeError: when ``value`` is not two integers with
            ``0 <= INDEX < COUNT`` (argparse prints it and exits with status 2).
    """
    index_text, _, count_text = value.partition("/")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(
            f"invalid shard {value!r}: use INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4"
        )
    return index, count


def shard_tickers(tickers: Sequence[str], *, index: int, count: int) -> list[str]:
    """The tickers that shard ``index`` of ``count`` handles: every ticker in exactly one shard.

    Tickers are de-duplicated (ignoring case and surrounding spaces), sorted, and dealt out
    round-robin: shard ``i`` takes positions ``i, i + count, i + 2*count, ...``. The result
    depends only on the set of tickers, not on their order, so parallel workers given the same
    list agree without talking to each other, and shard sizes differ by at most one.

    Args:
        tickers: Yahoo symbols as given (not validated here: the caller reports bad ones).
        index: this shard, ``0 <= index < count`` (a Kubernetes Indexed Job's
            ``JOB_COMPLETION_INDEX``).
        count: number of shards (the Job's ``completions``).

    Returns:
        This shard's tickers, stripped, upper-cased and sorted; empty when there are more
        shards than tickers.

    Raises:
        ValueError: when ``count < 1`` or ``index`` is outside ``0..count-1``.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need count >= 1 and 0 <= index < count")
    return sorted({ticker.strip().upper() for ticker in tickers})[index::count]
