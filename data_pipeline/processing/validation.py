"""Validation and cleaning of daily OHLCV bars.

Real Yahoo Finance downloads have defects. Found in the shipped snapshot, for example:

* placeholder bars on exchange holidays (B3 especially): ``volume == 0`` and
  ``open == high == low == close`` (the previous close carried forward). Not a trade;
  rejected as ``zero_volume_placeholder``.
* bars whose high is below the open or close, or whose low is above them
  (``ohlc_inconsistent``, e.g. CMIG4.SA 2013-01-22): at least one price is wrong and we
  cannot tell which, so the bar is rejected.

Real events must survive: AAPL fell 52 % on 2000-09-29 and US markets were closed from
2001-09-11 to 2001-09-14. Large moves are therefore reported as *warnings* and stored.

Rules are declared once, as a pandera schema, and every failure is reported as a
:class:`Finding` with ticker, date, rule and (for files) the line number.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
#: Relative tolerance of the OHLC consistency checks (Yahoo rounds prices to ~6 digits).
OHLC_TOLERANCE = 1e-4
#: A close-to-close log return beyond this is reported (and still stored).
LARGE_MOVE_LOG_RETURN = 0.4


class Severity(enum.StrEnum):
    """``rejected``: the bar is not stored. ``warning``: stored, but worth a look."""

    REJECTED = "rejected"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem found in one bar (or a whole input, when ``date`` is None)."""

    ticker: str
    date: dt.date | None
    rule: str
    severity: Severity
    detail: str
    location: str | None = None  # "file.csv:123" when the bar came from a file

    def __str__(self) -> str:
        where = f"{self.location} " if self.location else ""
        day = self.date.isoformat() if self.date else "-"
        return f"{where}{self.ticker} {day} [{self.rule}] {self.severity.value}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["date"] = self.date.isoformat() if self.date else None
        d["severity"] = self.severity.value
        return d


@dataclass(frozen=True)
class CleanResult:
    """Bars that passed validation, and everything that was found on the way."""

    bars: pd.DataFrame
    findings: list[Finding]

    @property
    def rejected(self) -> int:
        """Number of input rows not kept."""
        return sum(1 for f in self.findings if f.severity is Severity.REJECTED and f.date)


def _ohlc_consistent(df: pd.DataFrame) -> pd.Series:
    hi = df[["open", "close"]].max(axis=1) * (1 - OHLC_TOLERANCE)
    lo = df[["open", "close"]].min(axis=1) * (1 + OHLC_TOLERANCE)
    bad = (df["high"] < hi) | (df["low"] > lo)
    return ~bad.fillna(False)


def _not_placeholder(df: pd.DataFrame) -> pd.Series:
    flat = (df["open"] == df["high"]) & (df["high"] == df["low"]) & (df["low"] == df["close"])
    return ~(flat & (df["volume"] == 0))


def _not_in_future(df: pd.DataFrame) -> pd.Series:
    tomorrow = pd.Timestamp(dt.datetime.now(tz=dt.UTC).date() + dt.timedelta(days=1))
    return df["date"] < tomorrow


_POSITIVE = pa.Check.gt(0, error="non_positive_price")
_PRICE = {c: pa.Column(float, checks=_POSITIVE, nullable=False, coerce=True) for c in PRICE_COLUMNS}

#: The bar rules. Each check's ``error`` is the rule name reported in findings.
BAR_SCHEMA = pa.DataFrameSchema(
    {
        "date": pa.Column("datetime64[ns]", nullable=False, coerce=True),
        **_PRICE,
        "volume": pa.Column(
            float, checks=pa.Check.ge(0, error="negative_volume"), nullable=False, coerce=True
        ),
    },
    checks=[
        pa.Check(lambda df: df["high"] >= df["low"], error="high_below_low"),
        pa.Check(_ohlc_consistent, error="ohlc_inconsistent"),
        pa.Check(_not_placeholder, error="zero_volume_placeholder"),
        pa.Check(_not_in_future, error="future_date"),
    ],
    strict=False,
)

_RULE_DETAIL = {
    "non_positive_price": "price must be > 0",
    "negative_volume": "volume must be >= 0",
    "high_below_low": "high is below low",
    "ohlc_inconsistent": "high below max(open, close) or low above min(open, close)",
    "zero_volume_placeholder": "volume 0 with open = high = low = close (no trading that day)",
    "future_date": "date is in the future",
    "not_nullable": "missing value",
}

_RULE_ORDER = {rule: n for n, rule in enumerate(_RULE_DETAIL)}


def _parse(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, tuple[str, str]]]:
    """Coerce types; remember which rows could not be parsed and why."""
    df = raw.copy()
    bad: dict[int, tuple[str, str]] = {}
    dates = pd.to_datetime(df["date"], errors="coerce", format="mixed")
    for i in df.index[dates.isna()]:
        bad.setdefault(i, ("unparseable_date", f"date {raw.at[i, 'date']!r} is not a date"))
    df["date"] = dates.dt.tz_localize(None) if dates.dt.tz is not None else dates
    df["date"] = df["date"].dt.normalize()
    for col in OHLCV_COLUMNS:
        as_num = pd.to_numeric(df[col], errors="coerce")
        missing = df[col].isna() | (df[col].astype(str).str.strip() == "")
        for i in df.index[as_num.isna() & ~missing]:
            bad.setdefault(i, ("non_numeric", f"{col} {raw.at[i, col]!r} is not a number"))
        for i in df.index[missing]:
            bad.setdefault(i, ("missing_value", f"{col} is empty"))
        for i in df.index[np.isinf(as_num.fillna(0))]:
            bad.setdefault(i, ("non_numeric", f"{col} is infinite"))
        df[col] = as_num
    return df, bad


def clean_bars(
    raw: pd.DataFrame,
    *,
    ticker: str,
    location: str | None = None,
    line_offset: int = 2,
) -> CleanResult:
    """Validate raw bars and return the trustworthy ones, sorted by date.

    Args:
        raw: one row per bar with columns ``date, open, high, low, close, volume`` (strings or
            numbers; prices in the listing currency, volume in shares). Its index is the row
            position in the input (0-based).
        ticker: the ticker, for the findings.
        location: a file name; findings then carry ``file:line``.
        line_offset: line number of row 0 in the file (2 for a CSV with a header line).

    Returns:
        :class:`CleanResult`: ``bars`` has the same columns with ``date`` as
        :class:`datetime.date`, unique and ascending, and only rows that passed every
        rejecting rule; ``findings`` lists every rejected row and every warning.

    Raises:
        KeyError: when a required column is missing (callers check columns first).
    """
    if not raw.index.is_unique:
        raw = raw.reset_index(drop=True)
    findings: list[Finding] = []

    def where(i: int) -> str | None:
        return f"{location}:{i + line_offset}" if location else None

    def day(df: pd.DataFrame, i: int) -> dt.date | None:
        value: Any = df.at[i, "date"]
        return None if pd.isna(value) else pd.Timestamp(value).date()

    df, unparseable = _parse(raw)
    for i, (rule, detail) in sorted(unparseable.items()):
        findings.append(Finding(ticker, day(df, i), rule, Severity.REJECTED, detail, where(i)))
    df = df.drop(index=list(unparseable))

    # Duplicate dates: identical copies keep the first; conflicting copies are all rejected,
    # because we cannot tell which one Yahoo meant.
    dup_mask = df.duplicated("date", keep=False)
    if dup_mask.any():
        drop: list[int] = []
        for _, group in df[dup_mask].groupby("date"):
            identical = len(group[list(OHLCV_COLUMNS)].drop_duplicates()) == 1
            victims = group.index[1:] if identical else group.index
            detail = "identical copy of an earlier row" if identical else "conflicting rows"
            for i in victims:
                findings.append(
                    Finding(
                        ticker,
                        day(df, i),
                        "duplicate_date",
                        Severity.REJECTED,
                        f"date appears {len(group)} times ({detail})",
                        where(i),
                    )
                )
            drop.extend(victims)
        df = df.drop(index=drop)

    try:
        BAR_SCHEMA.validate(df, lazy=True)
    except SchemaErrors as err:
        cases = err.failure_cases.dropna(subset=["index"])
        failed: dict[int, str] = {}
        for _, case in cases.iterrows():
            i = int(case["index"])
            check = str(case["check"])
            rule = check if check in _RULE_DETAIL else check.split("(", maxsplit=1)[0]
            # One finding per row: the most specific rule (earliest in _RULE_DETAIL) wins.
            if i not in failed or _RULE_ORDER.get(rule, 99) < _RULE_ORDER.get(failed[i], 99):
                failed[i] = rule
        for i, rule in sorted(failed.items()):
            row = df.loc[i]
            prices = ", ".join(f"{c}={row[c]:g}" for c in OHLCV_COLUMNS)
            detail = f"{_RULE_DETAIL.get(rule, rule)} ({prices})"
            findings.append(Finding(ticker, day(df, i), rule, Severity.REJECTED, detail, where(i)))
        df = df.drop(index=list(failed))

    df = df.sort_values("date", kind="stable")
    # Warnings: kept, but reported.
    log_ret = np.log(df["close"]).diff()
    for i in df.index[log_ret.abs() > LARGE_MOVE_LOG_RETURN]:
        move = float(np.expm1(log_ret.at[i]))
        detail = f"close moved {move:+.1%} from the previous bar; kept (real events do this)"
        findings.append(
            Finding(ticker, day(df, i), "large_move", Severity.WARNING, detail, where(i))
        )

    out = df[["date", *OHLCV_COLUMNS]].copy()
    out["date"] = out["date"].dt.date
    out["volume"] = out["volume"].round().astype("int64")
    return CleanResult(bars=out.reset_index(drop=True), findings=findings)
