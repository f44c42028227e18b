"""Judging a forecast on the held-out test window, against the naive baseline, with plots.

The naive (persistence) forecast of ``close[t]`` is ``close[t-1]``: tomorrow's close equals
today's, i.e. a predicted log return of 0. MASE is scaled by the in-sample naive error
(Hyndman & Koehler 2006), so the naive forecast's own test MASE is near, not exactly, 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ml_lifecycle.evaluation.metrics import METRIC_NAMES, forecast_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """Test-window metrics of the model and of the naive baseline.

    Attributes:
        model: :data:`~ml_lifecycle.evaluation.metrics.METRIC_NAMES` of the model.
        naive: the same metrics of the naive forecast.
        up_days: share of test days whose close rose, percent (the directional accuracy
            of always forecasting "up", the honest yardstick for directional accuracy).
        n_test: number of test forecasts.
    """

    model: dict[str, float]
    naive: dict[str, float]
    up_days: float
    n_test: int

    def flat(self) -> dict[str, float]:
        """``{"mae": ..., ..., "naive_mae": ..., ..., "up_days": ...}``."""
        return {
            **self.model,
            **{f"naive_{k}": v for k, v in self.naive.items()},
            "up_days": self.up_days,
        }


def evaluate_forecast(
    *,
    actual: npt.ArrayLike,
    predicted: npt.ArrayLike,
    previous: npt.ArrayLike,
    in_sample: npt.ArrayLike,
) -> Evaluation:
    """Metrics of a forecast and of the naive baseline on the same test window.

    Args:
        actual: actual closes ``(n,)``.
        predicted: forecast closes ``(n,)``.
        previous: close before each target ``(n,)``; also the naive forecast.
        in_sample: the training closes (MASE's scale).

    Returns:
        An :class:`Evaluation`.
    """
    prev = np.asarray(previous, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    model = forecast_metrics(act, predicted, previous=prev, in_sample=in_sample)
    naive = forecast_metrics(act, prev, previous=prev, in_sample=in_sample)
    assert set(model) == set(METRIC_NAMES)
    return Evaluation(
        model=model,
        naive=naive,
        up_days=float(100.0 * np.mean(act > prev)),
        n_test=len(act),
    )


def save_plots(
    *,
    ticker: str,
    dates: npt.ArrayLike,
    actual: npt.ArrayLike,
    predicted: npt.ArrayLike,
    naive: npt.ArrayLike,
    out_dir: Path,
    currency: str | None = None,
    title_suffix: str = "",
) -> list[Path]:
    """Write two PNGs of the test window: actual vs predicted, and the residuals.

    Args:
        ticker: for titles and file names.
        dates: target dates ``(n,)``.
        actual: actual closes ``(n,)``.
        predicted: model forecasts ``(n,)``.
        naive: naive forecasts ``(n,)``.
        out_dir: created if missing.
        currency: axis label unit.
        title_suffix: appended to titles (e.g. the model version).

    Returns:
        Paths of ``<ticker>_actual_vs_predicted.png`` and ``<ticker>_residuals.png``.
    """
    import matplotlib as mpl  # noqa: PLC0415 - plotting is only needed at evaluation time

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    x: Any = np.asarray(dates)
    act = np.asarray(actual, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    nav = np.asarray(naive, dtype=np.float64)
    unit = f" ({currency})" if currency else ""

    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(x, act, label="actual close", color="black", linewidth=1.2)
    ax.plot(x, pred, label="LSTM forecast", color="tab:blue", linewidth=1.0)
    ax.plot(x, nav, label="naive (previous close)", color="tab:orange", linewidth=0.8, alpha=0.7)
    ax.set_title(f"{ticker}: next-day close, test window{title_suffix}")
    ax.set_xlabel("date")
    ax.set_ylabel(f"close{unit}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    first = out_dir / f"{ticker}_actual_vs_predicted.png"
    fig.savefig(first, dpi=110)
    plt.close(fig)

    resid = act - pred
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    ax1.plot(x, resid, color="tab:blue", linewidth=0.8, label="LSTM")
    ax1.plot(x, act - nav, color="tab:orange", linewidth=0.6, alpha=0.6, label="naive")
    ax1.axhline(0, color="black", linewidth=0.8)
    ax1.set_title(f"{ticker}: residuals (actual - forecast){title_suffix}")
    ax1.set_ylabel(f"residual{unit}")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.hist(resid, bins=40, color="tab:blue", alpha=0.8)
    ax2.set_title("LSTM residual distribution")
    ax2.set_xlabel(f"residual{unit}")
    fig.autofmt_xdate()
    fig.tight_layout()
    second = out_dir / f"{ticker}_residuals.png"
    fig.savefig(second, dpi=110)
    plt.close(fig)
    return [first, second]
