"""Input drift: how far the recent bars are from what a model version was trained on.

At training, :func:`training_distributions` summarizes each *input series* (the daily log
returns of the closes, and the values of every feature over the windows) of the bars the
version was built on as an :class:`InputDistribution`, stored in the version's
:class:`~common.model_contract.ModelMetadata`. ``ml_lifecycle`` passes every bar of the
training, validation and test splits: were the reference the fitting split alone, the recent
bars (always in the later splits) would never enter it, and a ticker whose last year differs
from its earlier years would be found drifting, and retrained, every week. At serving,
:func:`drift_report` compares the same series computed on the recent bars with it, by two
statistics:

* **Population Stability Index** (PSI) over the training deciles:
  ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)``, with ``e_i`` the training and ``a_i`` the recent
  share of bin ``i`` (shares floored at :data:`PSI_EPSILON` so an empty bin stays finite).
  Siddiqi (2006), *Credit Risk Scorecards*, Wiley, ch. 8; Yurdakul (2018), "Statistical
  properties of population stability index", PhD thesis, Western Michigan University. Rule of
  thumb from both: below 0.1 no significant change, 0.1-0.25 a moderate change, above 0.25 a
  significant shift (:data:`PSI_MODERATE`, :data:`PSI_DRIFT`). Yurdakul shows PSI grows with
  the bins and shrinks with the sample: with ``B`` bins and ``n`` recent values a sample from
  the training distribution itself has ``E[PSI] ~ (B - 1) / n``, so the recent window should
  be long (250 bars: about 0.04 for 10 bins).
* **Two-sample Kolmogorov-Smirnov statistic** ``D = sup_x |F_train(x) - F_recent(x)|``
  (Smirnov 1948; Massey 1951, "The Kolmogorov-Smirnov test for goodness of fit", JASA 46).
  The training ECDF is represented by its percentiles (:data:`N_QUANTILES` + 1 of them) and
  interpolated linearly between them, so ``D`` is exact to about ``1 / N_QUANTILES``.

Pure numpy and pydantic: the API imports this module on its request path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from common.features import log_returns, window_features

FloatArray = npt.NDArray[np.float64]

#: PSI below this: no significant change (Siddiqi 2006; Yurdakul 2018).
PSI_MODERATE = 0.1
#: PSI above this: a significant shift, the model's inputs no longer look like its training.
PSI_DRIFT = 0.25
#: Equal-frequency bins of the training values for the PSI (deciles, as in Siddiqi 2006).
N_BINS = 10
#: Percentiles kept for the KS statistic.
N_QUANTILES = 100
#: Floor of a bin's share in the PSI, so that an empty bin gives a large but finite term.
PSI_EPSILON = 1e-4
#: Recent bars compared with the training distribution by default: a trading year, so that
#: the PSI's sampling noise ``(N_BINS - 1) / n`` stays well under :data:`PSI_MODERATE`.
DRIFT_WINDOW_BARS = 250
#: A champion more bars than this behind the store is stale: about a month of sessions, four
#: missed weekly retrains.
STALE_AFTER_BARS = 21
#: The input series that is not a feature: daily log returns of the closes.
LOG_RETURN = "log_return"
#: The series the headline PSI/KS and the status are taken from: per-bar quantities.
#: ``rel_log_close`` is left out: it is the path inside a window, a sum of the window's log
#: returns, so over a year its distribution follows that year's trend (a random walk's) and
#: its PSI is large without any change of regime (0.2-0.6 between samples of one process);
#: its information is the log returns', which are in.
STATUS_INPUTS = frozenset({LOG_RETURN, "hl_range", "oc_return"})

DriftStatus = Literal["stable", "moderate", "drift", "unknown"]


class InputDistribution(BaseModel):
    """The training distribution of one input series.

    Attributes:
        n: training values summarized.
        bin_edges: inner edges of the PSI bins (the training deciles, duplicates removed),
            ascending; bin ``i`` holds ``bin_edges[i-1] <= x < bin_edges[i]``.
        proportions: share of the training values in each bin, ``len(bin_edges) + 1`` values
            summing to 1 (0.1 each unless values tie at an edge).
        quantiles: the 0th, 1st, ..., 100th training percentiles (the KS statistic's ECDF).
    """

    n: int = Field(gt=0)
    bin_edges: list[float]
    proportions: list[float]
    quantiles: list[float]


def _finite(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _shares(edges: Sequence[float], values: FloatArray) -> FloatArray:
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(bins, minlength=len(edges) + 1) / len(values)


def summarize(values: npt.ArrayLike) -> InputDistribution:
    """The :class:`InputDistribution` of ``values`` (any shape; non-finite values dropped).

    Raises:
        ValueError: no finite value.
    """
    x = _finite(values)
    if len(x) == 0:
        raise ValueError("no finite values to summarize")
    deciles = np.quantile(x, np.linspace(0, 1, N_BINS + 1)[1:-1])
    edges = [float(e) for e in np.unique(deciles)]
    return InputDistribution(
        n=len(x),
        bin_edges=edges,
        proportions=[float(p) for p in _shares(edges, x)],
        quantiles=[float(q) for q in np.quantile(x, np.linspace(0, 1, N_QUANTILES + 1))],
    )


def input_series(
    *, closes: npt.ArrayLike, windows: npt.ArrayLike, features: Sequence[str]
) -> dict[str, FloatArray]:
    """The input series compared for drift: ``log_return`` and one per feature.

    Args:
        closes: chronological closes, shape ``(n_bars,)``.
        windows: raw (unscaled) feature values, shape ``(n_windows, lookback, n_features)``.
        features: the feature names, in the windows' last-axis order.

    Returns:
        ``{"log_return": (n_bars - 1,), "<feature>": (n_windows * lookback,)}``.
    """
    w = np.asarray(windows, dtype=np.float64)
    out = {LOG_RETURN: log_returns(closes)}
    for j, name in enumerate(features):
        out[name] = w[:, :, j].ravel()
    return out


def training_distributions(
    *, closes: npt.ArrayLike, windows: npt.ArrayLike, features: Sequence[str]
) -> dict[str, InputDistribution]:
    """Summaries of the training split's input series, for the model version's metadata.

    Args: as :func:`input_series` (the training closes and training windows).
    """
    series = input_series(closes=closes, windows=windows, features=features)
    return {name: summarize(values) for name, values in series.items()}


def recent_series(
    bars: Mapping[str, npt.ArrayLike], *, lookback: int, features: Sequence[str]
) -> dict[str, FloatArray]:
    """The input series of recent bars (OHLCV arrays, chronological), as at training.

    Raises:
        ValueError: fewer bars than ``lookback``.
    """
    windows = window_features(bars, lookback, features)
    return input_series(closes=bars["close"], windows=windows, features=features)


def psi(expected: InputDistribution, recent: npt.ArrayLike) -> float:
    """Population Stability Index of ``recent`` against the training bins (module docstring).

    Raises:
        ValueError: no finite recent value.
    """
    x = _finite(recent)
    if len(x) == 0:
        raise ValueError("no finite recent values")
    e = np.maximum(np.asarray(expected.proportions, dtype=np.float64), PSI_EPSILON)
    a = np.maximum(_shares(expected.bin_edges, x), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _train_cdf(q: FloatArray, x: FloatArray, *, right: bool) -> FloatArray:
    """``F_train(x)`` (``right``) or its left limit ``F_train(x-)`` from the percentiles ``q``
    (``q[k]`` at probability ``k / (len(q) - 1)``), linear between distinct percentiles."""
    m = len(q) - 1
    k = np.searchsorted(q, x, side="right" if right else "left")
    lo = np.clip(k - 1, 0, m)
    hi = np.clip(k, 0, m)
    gap = q[hi] - q[lo]
    frac = np.divide(x - q[lo], gap, out=np.zeros_like(x), where=gap > 0)
    cdf = (lo + np.clip(frac, 0.0, 1.0)) / m
    return np.where(k == 0, 0.0, np.where(k > m, 1.0, cdf))


def ks_statistic(expected: InputDistribution, recent: npt.ArrayLike) -> float:
    """Two-sample Kolmogorov-Smirnov ``D`` of ``recent`` against the training percentiles.

    ``F_train`` is linear between distinct percentiles, 0 below the minimum and 1 from the
    maximum on, with a jump at a tied run of percentiles (a value the training split holds
    many times). ``D`` is the largest gap between ``F_train`` and the recent ECDF, both taken
    just at and just before every recent value and every percentile. Between 0 and 1.

    Raises:
        ValueError: no finite recent value.
    """
    x = np.sort(_finite(recent))
    if len(x) == 0:
        raise ValueError("no finite recent values")
    q = np.asarray(expected.quantiles, dtype=np.float64)
    points = np.concatenate([x, q])
    n = len(x)
    at = np.searchsorted(x, points, side="right") / n
    before = np.searchsorted(x, points, side="left") / n
    return float(
        max(
            np.abs(at - _train_cdf(q, points, right=True)).max(),
            np.abs(before - _train_cdf(q, points, right=False)).max(),
        )
    )


@dataclass(frozen=True)
class DriftReport:
    """Drift of the recent inputs of one model version.

    Attributes:
        psi: the largest PSI over the :data:`STATUS_INPUTS` series (None: unknown).
        ks: the largest KS statistic over them (None: unknown).
        status: ``stable`` (psi < moderate), ``moderate``, ``drift`` (psi >= drift), or
            ``unknown`` (the version stores no training distribution, or too few bars).
        by_input: ``{series: (psi, ks)}`` of every series with a training distribution.
        n_bars: recent bars compared.
    """

    psi: float | None
    ks: float | None
    status: DriftStatus
    by_input: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_bars: int = 0


def drift_status(
    value: float, *, moderate: float = PSI_MODERATE, drift: float = PSI_DRIFT
) -> DriftStatus:
    """``stable`` below ``moderate``, ``drift`` at or above ``drift``, else ``moderate``."""
    if value >= drift:
        return "drift"
    return "moderate" if value >= moderate else "stable"


def drift_report(
    distributions: Mapping[str, InputDistribution],
    bars: Mapping[str, npt.ArrayLike],
    *,
    lookback: int,
    features: Sequence[str],
    moderate: float = PSI_MODERATE,
    drift: float = PSI_DRIFT,
) -> DriftReport:
    """Compare the recent ``bars`` with a model version's training ``distributions``.

    Args:
        distributions: ``ModelMetadata.input_distributions`` (empty for versions trained
            before drift was recorded: status ``unknown``).
        bars: the recent OHLCV arrays, chronological, at least ``lookback + 1`` bars.
        lookback: the model's lookback; features: its features.
        moderate: PSI threshold of a moderate change; drift: of a significant one.

    Returns:
        A :class:`DriftReport` whose ``psi``/``ks`` are the maxima over the
        :data:`STATUS_INPUTS` series that have a training distribution.
    """
    n_bars = len(np.asarray(bars["close"]))
    if not distributions or n_bars < max(lookback, 2) + 1:
        return DriftReport(psi=None, ks=None, status="unknown", n_bars=n_bars)
    series = recent_series(bars, lookback=lookback, features=features)
    by_input = {
        name: (psi(distributions[name], values), ks_statistic(distributions[name], values))
        for name, values in series.items()
        if name in distributions and len(_finite(values))
    }
    headline = [v for name, v in by_input.items() if name in STATUS_INPUTS]
    if not headline:
        return DriftReport(psi=None, ks=None, status="unknown", by_input=by_input, n_bars=n_bars)
    worst_psi = max(v[0] for v in headline)
    return DriftReport(
        psi=worst_psi,
        ks=max(v[1] for v in headline),
        status=drift_status(worst_psi, moderate=moderate, drift=drift),
        by_input=by_input,
        n_bars=n_bars,
    )
