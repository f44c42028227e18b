"""The ingest use case: fetch, validate, upsert, for many tickers, each in its own transaction."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from common import price_store
from common.db import first_line
from common.exceptions import DatabaseUnavailableError, InvalidTickerError
from common.exchanges import listing_of
from common.tickers import normalize_ticker
from data_pipeline.processing.validation import Severity, clean_bars
from data_pipeline.sources.base import BarSource, SourceError, SourceUnavailableError
from data_pipeline.storage.upsert import upsert_bars

logger = logging.getLogger(__name__)

SourceName = Literal["yahoo", "snapshot", "auto"]


@dataclass
class TickerReport:
    """Outcome of one ticker: counts, where the bars came from, and what was found."""

    ticker: str
    ok: bool = False
    source: str | None = None
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    warnings: int = 0
    first_date: str | None = None
    last_date: str | None = None
    error: str | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class IngestSummary:
    """Reports of every ticker of one run."""

    tickers: list[TickerReport]
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every ticker succeeded."""
        return all(t.ok for t in self.tickers)

    def to_dict(self, *, with_findings: bool = True) -> dict[str, Any]:
        """JSON-ready form (``findings`` per ticker dropped when ``with_findings`` is False)."""
        out = []
        for t in self.tickers:
            d = asdict(t)
            if not with_findings:
                d.pop("findings")
            out.append(d)
        return {"ok": self.ok, "seconds": round(self.seconds, 3), "tickers": out}


def ingest_ticker(
    session: Session,
    *,
    ticker: str,
    source: BarSource,
    start: dt.date | None,
    overlap_days: int = 5,
) -> TickerReport:
    """Fetch, validate and upsert one ticker inside the caller's transaction.

    Incremental: without ``start``, fetching begins ``overlap_days`` calendar days before the
    newest stored bar (so revised bars are picked up), or at the beginning of history when
    nothing is stored yet.

    Raises:
        SourceError: the source failed (the caller rolls back: nothing partial is stored).
    """
    began = time.perf_counter()
    report = TickerReport(ticker=ticker, source=source.name)
    if start is None:
        last = price_store.last_bar_date(session, ticker=ticker)
        if last is not None:
            start = last - dt.timedelta(days=overlap_days)
    raw = source.fetch(ticker, start=start)
    result = clean_bars(
        raw.frame, ticker=ticker, location=raw.location, line_offset=raw.line_offset
    )
    for finding in result.findings:
        logger.debug("%s", finding)
    if result.findings:
        tally = Counter(f"{f.rule}({f.severity.value})" for f in result.findings)
        logger.info("%s findings: %s", ticker, ", ".join(f"{k} x{n}" for k, n in tally.items()))
    # a known market's table (common/exchanges.py) wins over what the source reports
    currency, exchange = listing_of(ticker)
    upsert = upsert_bars(
        session,
        ticker=ticker,
        rows=result.bars.to_dict("records"),  # type: ignore[arg-type]
        source=raw.source,
        currency=currency or raw.currency,
        exchange=exchange or raw.exchange,
    )
    report.fetched = len(raw.frame)
    report.inserted, report.updated, report.unchanged = (
        upsert.inserted,
        upsert.updated,
        upsert.unchanged,
    )
    report.rejected = sum(1 for f in result.findings if f.severity is Severity.REJECTED)
    report.warnings = sum(1 for f in result.findings if f.severity is Severity.WARNING)
    report.findings = [f.to_dict() for f in result.findings]
    if len(result.bars):
        report.first_date = result.bars["date"].iloc[0].isoformat()
        report.last_date = result.bars["date"].iloc[-1].isoformat()
    report.ok = True
    report.seconds = time.perf_counter() - began
    return report


def _is_connection_error(exc: OperationalError) -> bool:
    return exc.connection_invalidated or "connect" in str(exc.orig).lower()


def run_ingest(
    *,
    session_factory: Callable[[], Session],
    tickers: Sequence[str],
    source: SourceName,
    sources: dict[str, BarSource],
    start: dt.date | None = None,
    overlap_days: int = 5,
    pacing_seconds: float = 0.0,
) -> IngestSummary:
    """Ingest many tickers; one failing does not stop the others.

    Each ticker runs in its own transaction: either all its valid bars are stored, or
    nothing is. With ``source="auto"``, Yahoo is tried first and, as soon as it proves
    unreachable, the snapshot serves that ticker and every later one (the report says which).

    Args:
        session_factory: makes a new :class:`Session`.
        tickers: symbols in Yahoo syntax; invalid ones are reported, not fetched.
        source: ``yahoo``, ``snapshot`` or ``auto``.
        sources: the source objects by name (``yahoo``, ``snapshot``).
        start: fetch bars from this date (default: incremental, see :func:`ingest_ticker`).
        overlap_days: incremental overlap, calendar days.
        pacing_seconds: pause between Yahoo requests.

    Raises:
        DatabaseUnavailableError: the database cannot be reached (nothing more is tried).
    """
    began = time.perf_counter()
    reports: list[TickerReport] = []
    active = "yahoo" if source == "auto" else source
    for position, requested in enumerate(tickers, start=1):
        try:
            ticker = normalize_ticker(requested)
        except InvalidTickerError as exc:
            reports.append(TickerReport(ticker=requested, error=str(exc)))
            logger.error("[%d/%d] %s", position, len(tickers), exc)
            continue
        if active == "yahoo" and position > 1 and pacing_seconds:
            time.sleep(pacing_seconds)
        while True:
            try:
                with session_factory() as session, session.begin():
                    report = ingest_ticker(
                        session,
                        ticker=ticker,
                        source=sources[active],
                        start=start,
                        overlap_days=overlap_days,
                    )
            except SourceUnavailableError as exc:
                if source == "auto" and active == "yahoo":
                    logger.warning("%s; falling back to the offline snapshot", exc)
                    active = "snapshot"
                    continue
                report = TickerReport(ticker=ticker, source=active, error=str(exc))
            except SourceError as exc:
                report = TickerReport(ticker=ticker, source=active, error=str(exc))
            except OperationalError as exc:
                if _is_connection_error(exc):
                    raise DatabaseUnavailableError(first_line(exc)) from exc
                report = TickerReport(ticker=ticker, source=active, error=f"database: {exc.orig}")
            break
        reports.append(report)
        if report.ok:
            logger.info(
                "[%d/%d] %s from %s: %d fetched, %d inserted, %d updated, %d rejected, "
                "%d warnings (%.2f s)",
                position,
                len(tickers),
                ticker,
                report.source,
                report.fetched,
                report.inserted,
                report.updated,
                report.rejected,
                report.warnings,
                report.seconds,
            )
        else:
            logger.error("[%d/%d] %s failed: %s", position, len(tickers), ticker, report.error)
    return IngestSummary(tickers=reports, seconds=time.perf_counter() - began)
