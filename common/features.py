"""The model's feature set and windowing, shared by training and serving.

Pure numpy, no pandas: the API imports this module on its request path.

Every feature of a window is computed from the bars *inside* that window only, so a client
that sends exactly ``lookback`` closes gives the server everything it needs, and no window
ever sees a bar after its last one. Prices may be in any currency: every feature is a log
ratio and therefore unit-free.

Features (name: formula, for bar ``t`` of a window whose last bar is ``T``):

* ``rel_log_close``: ``log(close[t] / close[T])``, the path of the close relative to the
  last close (0 at ``t = T``). Needs only closes.
* ``hl_range``: ``log(high[t] / low[t])``, the bar's range (a volatility proxy, Parkinson 1980).
* ``oc_return``: ``log(close[t] / open[t])``, the intraday return.
* ``log_return``: ``r[t] = log(close[t] / close[t-1])``, the close-to-close log return (0 at
  the window's first bar, whose previous close is outside the window).
* ``open_log_return`` / ``high_log_return`` / ``low_log_return``: ``log(X[t] / close[t-1])``
  for X = open, high, low (0 at the first bar): the OHLC log returns against the previous
  close.
* ``volume_zscore``: ``(v[t] - mean(v)) / std(v)`` with ``v = log(1 + volume)`` over the
  window (0 when the window's volume is constant).
* ``realized_volatility``: ``sqrt(mean(r[t-4..t]^2))``, the realised volatility of the last
  five daily log returns inside the window (Andersen, Bollerslev, Diebold & Labys 2001, with
  daily instead of intraday returns; fewer at the window's start).
* ``rsi``: Wilder's relative strength index over 14 bars (Wilder 1978, "New Concepts in
  Technical Trading Systems"), ``RSI = 100 - 100 / (1 + avg gain / avg loss)`` with Wilder's
  smoothing ``avg[t] = avg[t-1] + (x[t] - avg[t-1]) / 14`` started at the window's first
  return, rescaled to ``(RSI - 50) / 100`` (range -0.5..0.5; 0 without moves).
* ``macd``: the MACD line (Appel 1979) of the log close, ``EMA12 - EMA26``, with
  ``EMA[t] = EMA[t-1] + alpha (x[t] - EMA[t-1])``, ``alpha = 2 / (span + 1)``, started at the
  window's first log close; a log-price difference, so unit-free.

The target is the next log return ``log(close[T+1] / close[T])``; a predicted close is
``close[T] * exp(predicted log return)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from common.exceptions import UnknownFeatureError

FloatArray = npt.NDArray[np.float64]

#: Which OHLCV columns each feature reads.
FEATURE_COLUMNS: dict[str, tuple[str, ...]] = {
    "rel_log_close": ("close",),
    "hl_range": ("high", "low"),
    "oc_return": ("open", "close"),
    "log_return": ("close",),
    "open_log_return": ("open", "close"),
    "high_log_return": ("high", "close"),
    "low_log_return": ("low", "close"),
    "volume_zscore": ("volume",),
    "realized_volatility": ("close",),
    "rsi": ("close",),
    "macd": ("close",),
}
DEFAULT_FEATURES: tuple[str, ...] = ("rel_log_close",)
CLOSE_ONLY_FEATURES = frozenset(
    {"rel_log_close", "log_return", "realized_volatility", "rsi", "macd"}
)
#: Columns that are prices (scaled by a synthetic bar's return when forecasting ahead).
PRICE_COLUMNS = frozenset({"open", "high", "low", "close"})
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW = 12, 26
REALIZED_VOLATILITY_BARS = 5


def check_features(features: Sequence[str]) -> None:
    """Raise :class:`UnknownFeatureError` unless every name is a known feature."""
    unknown = [f for f in features if f not in FEATURE_COLUMNS]
    if unknown or not features:
        raise UnknownFeatureError(
            f"unknown or empty feature set {list(features)}; known: {sorted(FEATURE_COLUMNS)}"
        )


def required_columns(features: Sequence[str]) -> list[str]:
    """The OHLCV columns needed to compute ``features`` (e.g. ``["close"]``)."""
    check_features(features)
    return sorted({c for f in features for c in FEATURE_COLUMNS[f]})


def log_returns(close: npt.ArrayLike) -> FloatArray:
    """Log returns ``log(close[t] / close[t-1])``, shape ``(n - 1,)`` for ``n`` closes."""
    c = np.asarray(close, dtype=np.float64)
    return np.diff(np.log(c))


def _windows(values: FloatArray, lookback: int) -> FloatArray:
    if len(values) == lookback:
        # one window (the API's multi-step forecast, once per step): the same view as
        # sliding_window_view's, without its ~9 µs of overhead
        return values.reshape(1, lookback)
    return np.lib.stride_tricks.sliding_window_view(values, lookback)


def window_features(
    bars: Mapping[str, npt.ArrayLike], lookback: int, features: Sequence[str]
) -> FloatArray:
    """Feature tensor of every window of ``lookback`` consecutive bars.

    Args:
        bars: OHLCV arrays keyed ``open``/``high``/``low``/``close``/``volume``, each of
            shape ``(n_bars,)``, in chronological order; only :func:`required_columns` are read.
        lookback: bars per window (>= 2).
        features: feature names, see the module docstring.

    Returns:
        Array of shape ``(n_bars - lookback + 1, lookback, n_features)``; window ``i`` covers
        bars ``i .. i + lookback - 1``.

    Raises:
        UnknownFeatureError: for a feature name that is not defined.
        ValueError: if ``lookback < 2`` or there are fewer than ``lookback`` bars.
    """
    check_features(features)
    if lookback < 2:
        raise ValueError(f"lookback must be >= 2, got {lookback}")
    cols = {c: np.asarray(bars[c], dtype=np.float64) for c in required_columns(features)}
    n_bars = len(next(iter(cols.values())))
    if n_bars < lookback:
        raise ValueError(f"need at least lookback={lookback} bars, got {n_bars}")
    return features_of_windows({c: _windows(v, lookback) for c, v in cols.items()}, features)


def features_of_windows(
    windows: Mapping[str, npt.NDArray[np.float64]], features: Sequence[str]
) -> FloatArray:
    """Feature tensor of windows given as 2-D arrays of bars.

    Args:
        windows: for each column in :func:`required_columns`, an array of shape
            ``(n_windows, lookback)``: row ``i`` holds window ``i``'s bars, oldest first.
        features: feature names, see the module docstring (assumed checked).

    Returns:
        Array of shape ``(n_windows, lookback, n_features)``; each value depends only on the
        bars of its own window.
    """
    first = next(iter(windows.values()))
    out = np.empty((*first.shape, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        if name == "rel_log_close":
            w = np.log(windows["close"])
            out[:, :, j] = w - w[:, -1:]
        elif name == "hl_range":
            out[:, :, j] = np.log(windows["high"] / windows["low"])
        elif name == "oc_return":
            out[:, :, j] = np.log(windows["close"] / windows["open"])
        elif name == "log_return":
            out[:, :, j] = _returns(windows["close"])
        elif name in ("open_log_return", "high_log_return", "low_log_return"):
            column = name.removesuffix("_log_return")
            ratio = np.zeros(first.shape)
            ratio[:, 1:] = np.log(windows[column][:, 1:] / windows["close"][:, :-1])
            out[:, :, j] = ratio
        elif name == "volume_zscore":
            v = np.log1p(np.maximum(windows["volume"], 0.0))
            std = v.std(axis=1, keepdims=True)
            out[:, :, j] = np.where(
                std > 0, (v - v.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0), 0.0
            )
        elif name == "realized_volatility":
            out[:, :, j] = _realized_volatility(_returns(windows["close"]))
        elif name == "rsi":
            out[:, :, j] = _rsi(_returns(windows["close"]))
        elif name == "macd":
            x = np.log(windows["close"])
            out[:, :, j] = _ema(x, MACD_FAST) - _ema(x, MACD_SLOW)
    return out


def _returns(close: FloatArray) -> FloatArray:
    r = np.zeros(close.shape)
    r[:, 1:] = np.diff(np.log(close), axis=1)
    return r


def _realized_volatility(r: FloatArray) -> FloatArray:
    squares = np.cumsum(r * r, axis=1)
    k = REALIZED_VOLATILITY_BARS
    total = squares.copy()
    total[:, k:] -= squares[:, :-k]
    count = np.minimum(np.arange(1, r.shape[1] + 1), k)
    out: FloatArray = np.sqrt(total / count)
    return out


def _ema(x: FloatArray, span: int) -> FloatArray:
    alpha = 2.0 / (span + 1.0)
    out = np.empty(x.shape)
    out[:, 0] = x[:, 0]
    for t in range(1, x.shape[1]):
        out[:, t] = out[:, t - 1] + alpha * (x[:, t] - out[:, t - 1])
    return out


def _rsi(r: FloatArray) -> FloatArray:
    gain, loss = np.maximum(r, 0.0), np.maximum(-r, 0.0)
    avg_gain, avg_loss = np.empty(r.shape), np.empty(r.shape)
    avg_gain[:, 0], avg_loss[:, 0] = gain[:, 0], loss[:, 0]
    for t in range(1, r.shape[1]):
        avg_gain[:, t] = avg_gain[:, t - 1] + (gain[:, t] - avg_gain[:, t - 1]) / RSI_PERIOD
        avg_loss[:, t] = avg_loss[:, t - 1] + (loss[:, t] - avg_loss[:, t - 1]) / RSI_PERIOD
    total = avg_gain + avg_loss
    share = np.divide(avg_gain, total, out=np.full(r.shape, 0.5), where=total > 0)
    out: FloatArray = share - 0.5  # (RSI - 50) / 100, RSI = 100 * gain / (gain + loss)
    return out


def make_supervised(
    bars: Mapping[str, npt.ArrayLike], lookback: int, features: Sequence[str]
) -> tuple[FloatArray, FloatArray]:
    """Windows with their next-bar targets, for training and evaluation.

    Args:
        bars: OHLCV arrays of shape ``(n_bars,)``, chronological.
        lookback: bars per window.
        features: feature names.

    Returns:
        ``(X, y)``: ``X`` of shape ``(n_bars - lookback, lookback, n_features)`` and ``y`` of
        shape ``(n_bars - lookback,)`` with ``y[i] = log(close[i+lookback] / close[i+lookback-1])``,
        the log return of the bar right after window ``i``.

    Raises:
        ValueError: if there are fewer than ``lookback + 1`` bars.
    """
    close = np.asarray(bars["close"], dtype=np.float64)
    if len(close) < lookback + 1:
        raise ValueError(f"need at least lookback + 1 = {lookback + 1} bars, got {len(close)}")
    x = window_features(bars, lookback, features)[:-1]
    y = log_returns(close)[lookback - 1 :]
    return x, y


def scale(values: npt.ArrayLike, mean: npt.ArrayLike, std: npt.ArrayLike) -> FloatArray:
    """Standard scaling ``(values - mean) / std``, broadcasting over the last axis."""
    out: FloatArray = (np.asarray(values, dtype=np.float64) - np.asarray(mean)) / np.asarray(std)
    return out


def unscale(values: npt.ArrayLike, mean: npt.ArrayLike, std: npt.ArrayLike) -> FloatArray:
    """Inverse of :func:`scale`: ``values * std + mean``."""
    out: FloatArray = np.asarray(values, dtype=np.float64) * np.asarray(std) + np.asarray(mean)
    return out
