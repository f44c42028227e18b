"""Small factories of CSV files and bars for the data-pipeline tests."""

from __future__ import annotations

import shutil
from pathlib import Path

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"


def write_csv(folder: Path, ticker: str, rows: list[str], header: str = HEADER) -> Path:
    """Write ``<folder>/<ticker>.csv`` with ``header`` and the given data lines."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ticker}.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def copy_real(prices_dir: Path, folder: Path, *tickers: str) -> Path:
    """Copy real snapshot CSVs into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in tickers:
        shutil.copy(prices_dir / f"{t}.csv", folder / f"{t}.csv")
    return folder


def good_rows(n: int = 5, start_day: int = 2) -> list[str]:
    """``n`` valid bars on consecutive January 2023 weekdays from ``start_day``."""
    rows = []
    for i in range(n):
        price = 10.0 + i
        rows.append(
            f"2023-01-{start_day + i:02d},{price},{price + 1},{price - 1},{price + 0.5},,1000"
        )
    return rows
