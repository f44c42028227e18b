"""The LSTM-vs-naive table printed by ``make evaluate`` (from the train JSON summary)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """A Markdown table: test MAE, MAPE, MASE and directional accuracy, LSTM beside naive.

    Args:
        summary: the JSON document printed by ``python -m ml_lifecycle train``.

    Returns:
        The table, one row per ticker, plus a verdict column ("LSTM" when its MASE is lower,
        "naive" otherwise) and the training time in seconds; failed tickers show their error.
    """
    header = (
        "| ticker | test window | MAE LSTM | MAE naive | MAPE % LSTM | MAPE % naive "
        "| MASE LSTM | MASE naive | dir. acc. % LSTM | up days % | lower MASE | time s |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
    )
    rows = [header]
    wins = 0
    trained = 0
    for t in summary.get("tickers", []):
        if not t.get("ok"):
            rows.append(f"| {t['ticker']} | failed: {t.get('error')} |" + " |" * 10)
            continue
        m, n = t["metrics"], t["naive_metrics"]
        trained += 1
        better = m["mase"] < n["mase"]
        wins += better
        rows.append(
            f"| {t['ticker']} | {t['test_start']}..{t['test_end']} ({t['n_test']}) "
            f"| {_fmt(m['mae'])} | {_fmt(n['mae'])} | {_fmt(m['mape'], 2)} | {_fmt(n['mape'], 2)} "
            f"| {_fmt(m['mase'], 4)} | {_fmt(n['mase'], 4)} | {_fmt(m['directional_accuracy'], 1)} "
            f"| {_fmt(t.get('up_days'), 1)} | {'LSTM' if better else 'naive'} "
            f"| {_fmt(t['seconds'], 1)} |"
        )
    rows.append("")
    rows.append(
        f"LSTM beats the naive forecast (lower test MASE) on {wins} of {trained} tickers. "
        "Naive = tomorrow's close is today's close; its directional accuracy is ~0% by "
        "construction (it never predicts a move), so compare the LSTM's with 'up days %' "
        "(always predicting 'up') instead. MAE in the listing currency (BRL/USD)."
    )
    return "\n".join(rows)
