"""Bars from a folder of CSV files, one per ticker: the offline snapshot.

Format (as in the shipped ``data_pipeline/snapshot/prices``): a header
``Date,Open,High,Low,Close,Adj Close,Volume``, ISO dates, one row per trading day, OHLC already
split/dividend adjusted (``Adj Close`` may be empty and is ignored).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from common.exchanges import listing_of
from data_pipeline.sources.base import EmptyResponseError, MalformedInputError, RawBars, SourceError

#: The snapshot shipped with the project (seven real tickers, to 2023-12-29).
DEFAULT_SNAPSHOT_DIR = Path(__file__).resolve().parent.parent / "snapshot" / "prices"
REQUIRED_CSV_COLUMNS = ("Date", "Open", "High", "Low", "Close", "Volume")


class TickerNotInSnapshotError(SourceError):
    """The snapshot folder has no CSV for the ticker."""


class SnapshotSource:
    """Reads ``<snapshot_dir>/<TICKER>.csv``."""

    name = "snapshot"

    def __init__(self, snapshot_dir: Path = DEFAULT_SNAPSHOT_DIR) -> None:
        self.snapshot_dir = Path(snapshot_dir)

    def fetch(self, ticker: str, *, start: dt.date | None) -> RawBars:
        """Rows of the ticker's CSV dated ``>= start``, as strings, unvalidated.

        Raises:
            TickerNotInSnapshotError: no ``<ticker>.csv`` in the folder.
            MalformedInputError: a required column is missing or the file cannot be parsed.
            EmptyResponseError: the file has no rows.
        """
        path = self.snapshot_dir / f"{ticker}.csv"
        if not path.is_file():
            raise TickerNotInSnapshotError(f"{ticker}: no file {path} in the snapshot")
        try:
            raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise MalformedInputError(f"{path}: cannot parse CSV: {exc}") from exc
        missing = [c for c in REQUIRED_CSV_COLUMNS if c not in raw.columns]
        if missing:
            raise MalformedInputError(
                f"{path}: missing column(s) {', '.join(missing)} "
                f"(rule: required_columns; expected {', '.join(REQUIRED_CSV_COLUMNS)})"
            )
        if raw.empty:
            raise EmptyResponseError(f"{path}: no rows")
        frame = raw[list(REQUIRED_CSV_COLUMNS)].rename(columns=str.lower)
        if start is not None:
            keep = frame["date"] >= start.isoformat()  # ISO strings sort like dates
            frame = frame[keep | (pd.to_datetime(frame["date"], errors="coerce").isna())]
        currency, exchange = listing_of(ticker)
        return RawBars(
            ticker=ticker,
            frame=frame,
            source=self.name,
            currency=currency,
            exchange=exchange,
            location=path.name,
            line_offset=2,
        )
