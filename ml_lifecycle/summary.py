"""What the CLI prints: one summary per ticker (JSON) and the walk-forward table (Markdown)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TickerTrainSummary:
    """What one ticker's ``train`` or ``backtest`` produced (one entry of the JSON summary).

    Attributes:
        ticker: normalized ticker.
        ok: the run finished (and, for ``train``, a version was registered and the gate
            could decide).
        registered_model: ``stock-lstm-<TICKER>``.
        version: the new model version (``"3"``), or None (backtest, failure).
        alias: ``champion`` or ``challenger``.
        promoted: the new version became champion.
        gate_failed: the champion could not be re-evaluated, so it was kept (fails closed).
        reason: why it was (not) promoted, or the error.
        metrics: pooled walk-forward metrics (see :func:`ml_lifecycle.backtest.score`).
        fold_metrics: the same per fold.
        combination_weight: the served version's shrinkage weight toward naive.
        folds: walk-forward folds; fold_bars: bars per fold.
        test_start / test_end: dates of the first and last walk-forward targets.
        seconds: wall time of the whole ticker; train_seconds: time in ``fit``.
        n_bars: bars stored.
        onnx_max_abs_diff: largest ONNX-vs-Keras difference of the registered network.
        run_id: the MLflow run.
        error: the error message on failure.
    """

    ticker: str
    ok: bool = False
    registered_model: str = ""
    version: str | None = None
    alias: str | None = None
    promoted: bool = False
    gate_failed: bool = False
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    fold_metrics: list[dict[str, float]] = field(default_factory=list)
    combination_weight: float | None = None
    folds: int = 0
    fold_bars: int = 0
    test_start: str | None = None
    test_end: str | None = None
    seconds: float = 0.0
    train_seconds: float = 0.0
    n_bars: int = 0
    onnx_max_abs_diff: float | None = None
    run_id: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (floats rounded to 6 significant digits, NaN as None)."""
        out = asdict(self)
        out["metrics"] = {k: _round(v) for k, v in out["metrics"].items()}
        out["fold_metrics"] = [{k: _round(v) for k, v in m.items()} for m in out["fold_metrics"]]
        for key in ("seconds", "train_seconds", "onnx_max_abs_diff", "combination_weight"):
            out[key] = _round(out[key])
        return out


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def summary_json(summaries: list[TickerTrainSummary]) -> str:
    """The CLI's JSON summary: ``{"ok": bool, "tickers": [TickerTrainSummary.to_dict(), ...]}``."""
    return json.dumps(
        {"ok": all(s.ok for s in summaries), "tickers": [s.to_dict() for s in summaries]},
        indent=2,
    )


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The walk-forward table of ``make evaluate`` and the README.

    Args:
        summary: the JSON document printed by ``python -m ml_lifecycle backtest`` (or
            ``train``).

    Returns:
        One row per ticker: folds and test dates, relative MAE vs naive and vs the random
        walk with drift, the Diebold-Mariano p-value (HLN), MASE, directional accuracy beside
        the share of up days, the mean combination weight, empirical coverage of the 80% and
        95% intervals (one step and every step), and the fit seconds; failed tickers show
        their error. A closing paragraph says how to read it.
    """
    header = (
        "| ticker | walk-forward targets | rel. MAE vs naive | DM p | rel. MAE vs drift "
        "| MASE | dir. acc. % | up days % | w | cover 80% | cover 95% | cover 80/95% (1..H) "
        "| fit s |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [header]
    not_worse = 0
    ok = 0
    for t in summary.get("tickers", []):
        if not t.get("ok"):
            rows.append(
                f"| {t['ticker']} | failed: {t.get('error') or t.get('reason')} |" + " |" * 11
            )
            continue
        m = t["metrics"]
        ok += 1
        not_worse += (m.get("relative_mae") or math.inf) <= 1.0
        rows.append(
            f"| {t['ticker']} | {t['test_start']}..{t['test_end']} "
            f"({t['folds']}x{t['fold_bars']}) | {_fmt(m.get('relative_mae'), 4)} "
            f"| {_fmt(m.get('dm_pvalue'), 2)} | {_fmt(m.get('relative_mae_drift'), 4)} "
            f"| {_fmt(m.get('mase'), 3)} | {_fmt(m.get('directional_accuracy'), 1)} "
            f"| {_fmt(m.get('up_days'), 1)} | {_fmt(m.get('combination_weight'), 2)} "
            f"| {_fmt(m.get('coverage_80'), 1)} | {_fmt(m.get('coverage_95'), 1)} "
            f"| {_fmt(m.get('coverage_80_all_steps'), 1)}"
            f"/{_fmt(m.get('coverage_95_all_steps'), 1)} "
            f"| {_fmt(t.get('train_seconds'), 0)} |"
        )
    rows.append("")
    rows.append(
        f"Pooled walk-forward relative MAE vs naive <= 1.00 on {not_worse} of {ok} tickers. "
        "Relative MAE = MAE of the one-step forecasts / MAE of the naive forecast (tomorrow's "
        "close = today's) on the same targets; DM p = two-sided Harvey-Leybourne-Newbold "
        "Diebold-Mariano p-value on absolute errors; w = mean combination weight (0 = the "
        "version serves exactly the naive forecast, because the network showed no significant "
        "skill on its validation windows). Directional accuracy counts a forecast of no "
        "change as wrong on a day that moved, so with w = 0 it is ~0%: compare it with 'up "
        "days %' (always forecasting 'up'). Coverage = percent of actual closes inside the "
        "interval (nominal 80% and 95%)."
    )
    return "\n".join(rows)
