"""Leak-free preprocessing: chronological split, windows built after the split, scaler
fit on the training part only.

The bars (oldest first) are cut, *before* any window is built, into three consecutive
segments: train, validation, test. A window's target is the log return of the bar right
after it; a sample belongs to the segment of its target bar. Windows of the validation and
test segments use the ``lookback`` bars just before the segment as context (the past is
known at forecast time); no training window or target touches a bar of a later segment.
The standard scalers of the features and of the target are fit on the training windows
only and then applied to every segment.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.features import FloatArray, make_supervised, scale
from common.model_contract import ScalerParams
from common.price_store import Bars
from ml_lifecycle.config import TrainConfig
from ml_lifecycle.exceptions import InsufficientBarsError


@dataclass(frozen=True)
class SplitBounds:
    """Bar indices of the three segments: ``[0, train_end)``, ``[train_end, val_end)``,
    ``[val_end, n_bars)``. A target bar index ``t`` belongs to the segment holding ``t``."""

    n_bars: int
    train_end: int
    val_end: int


@dataclass(frozen=True)
class Segment:
    """Windows of one segment and what is needed to turn forecasts into prices.

    Attributes:
        x: scaled features, shape ``(n_windows, lookback, n_features)``, float32.
        y: scaled target (next log return), shape ``(n_windows,)``, float32.
        y_raw: unscaled next log return, shape ``(n_windows,)``.
        last_close: close of each window's last bar ``T`` (listing currency), ``(n_windows,)``.
        actual_close: close of the target bar ``T+1``, ``(n_windows,)``.
        target_dates: dates of the target bars, ``(n_windows,)``.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    y_raw: FloatArray
    last_close: FloatArray
    actual_close: FloatArray
    target_dates: npt.NDArray[np.object_]

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class PreparedData:
    """Everything a training run needs, split and scaled."""

    ticker: str
    bounds: SplitBounds
    train: Segment
    val: Segment
    test: Segment
    feature_scaler: ScalerParams
    target_scaler: ScalerParams
    train_closes: FloatArray
    dates: npt.NDArray[np.object_]
    currency: str | None

    @property
    def last_train_date(self) -> dt.date:
        """Date of the last bar of the training segment."""
        return self.dates[self.bounds.train_end - 1]  # type: ignore[no-any-return]

    @property
    def last_bar_date(self) -> dt.date:
        """Date of the last bar used (end of the test segment)."""
        return self.dates[-1]  # type: ignore[no-any-return]


def split_bounds(n_bars: int, config: TrainConfig, *, ticker: str = "?") -> SplitBounds:
    """Chronological split of ``n_bars`` bars into train, validation and test segments.

    The test segment is the last ``round(n_bars * test_fraction)`` bars, validation the
    ``round(n_bars * val_fraction)`` before it, training the rest. Training yields
    ``train_len - lookback`` windows; validation and test one window per bar.

    Raises:
        InsufficientBarsError: when a segment would have fewer than ``min_split_windows``
            windows (the message names the ticker, the bar count and the minimum).
    """
    m = config.min_split_windows

    def fits(n: int) -> bool:
        n_test, n_val = _n_test(n, config), _n_val(n, config)
        return n - n_test - n_val - config.lookback >= m and n_val >= m and n_test >= m

    required = config.lookback + 3 * m
    while not fits(required):
        required += 1
    detail = (
        f"lookback {config.lookback} + at least {m} windows in each of train, validation "
        f"and test with val_fraction {config.val_fraction}, test_fraction {config.test_fraction}"
    )
    if n_bars < required:
        raise InsufficientBarsError(ticker, n_bars, required, detail)
    n_test, n_val = _n_test(n_bars, config), _n_val(n_bars, config)
    return SplitBounds(n_bars=n_bars, train_end=n_bars - n_test - n_val, val_end=n_bars - n_test)


def _n_test(n: int, config: TrainConfig) -> int:
    return math.floor(n * config.test_fraction + 0.5)


def _n_val(n: int, config: TrainConfig) -> int:
    return math.floor(n * config.val_fraction + 0.5)


def segment_windows(
    bars: Mapping[str, npt.ArrayLike],
    *,
    start: int,
    stop: int,
    lookback: int,
    features: tuple[str, ...] | list[str],
) -> tuple[FloatArray, FloatArray]:
    """Unscaled windows whose target bar index lies in ``[start, stop)``.

    Only bars ``start - lookback .. stop - 1`` are read: the segment and the ``lookback``
    bars before it (for the training segment, ``start = lookback``).

    Returns:
        ``(x, y)`` of shapes ``(stop - start, lookback, n_features)`` and ``(stop - start,)``.
    """
    if start < lookback:
        raise ValueError(f"the first target index {start} needs {lookback} bars before it")
    sliced = {k: np.asarray(v)[start - lookback : stop] for k, v in bars.items()}
    return make_supervised(sliced, lookback, list(features))


def fit_scaler(values: npt.ArrayLike) -> ScalerParams:
    """Standard scaler over all leading axes: mean and std of the last axis.

    A zero std (a constant feature, e.g. ``rel_log_close`` at the last bar only) becomes 1.
    """
    arr = np.asarray(values, dtype=np.float64)
    flat = arr.reshape(-1, arr.shape[-1]) if arr.ndim > 1 else arr.reshape(-1, 1)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return ScalerParams(mean=[float(v) for v in mean], scale=[float(v) for v in std])


def _segment(
    *,
    bars: Mapping[str, Any],
    dates: npt.NDArray[np.object_],
    x_raw: FloatArray,
    y_raw: FloatArray,
    start: int,
    stop: int,
    fscaler: ScalerParams,
    tscaler: ScalerParams,
) -> Segment:
    close = np.asarray(bars["close"], dtype=np.float64)
    return Segment(
        x=scale(x_raw, fscaler.mean, fscaler.scale).astype(np.float32),
        y=scale(y_raw, tscaler.mean[0], tscaler.scale[0]).astype(np.float32),
        y_raw=y_raw,
        last_close=close[start - 1 : stop - 1],
        actual_close=close[start:stop],
        target_dates=dates[start:stop],
    )


def prepare_data(bars: Bars, config: TrainConfig) -> PreparedData:
    """Split, window and scale one ticker's bars without leaking the future into training.

    Args:
        bars: chronological bars of one ticker (the most recent ``history_bars`` are used).
        config: lookback, features, split fractions.

    Returns:
        :class:`PreparedData` with scaled train/validation/test segments and the scalers.

    Raises:
        InsufficientBarsError: no bars, or too few for the lookback and the split sizes.
    """
    mapping: dict[str, Any] = bars.as_mapping()
    dates = bars.dates
    if config.history_bars is not None and len(bars) > config.history_bars:
        mapping = {k: v[-config.history_bars :] for k, v in mapping.items()}
        dates = dates[-config.history_bars :]
    n = len(dates)
    b = split_bounds(n, config, ticker=bars.ticker)
    lk, feats = config.lookback, config.features
    x_tr, y_tr = segment_windows(mapping, start=lk, stop=b.train_end, lookback=lk, features=feats)
    x_va, y_va = segment_windows(
        mapping, start=b.train_end, stop=b.val_end, lookback=lk, features=feats
    )
    x_te, y_te = segment_windows(mapping, start=b.val_end, stop=n, lookback=lk, features=feats)
    fscaler = fit_scaler(x_tr)
    tscaler = fit_scaler(y_tr)
    close = np.asarray(mapping["close"], dtype=np.float64)
    common: dict[str, Any] = {
        "bars": mapping,
        "dates": dates,
        "fscaler": fscaler,
        "tscaler": tscaler,
    }
    return PreparedData(
        ticker=bars.ticker,
        bounds=b,
        train=_segment(**common, x_raw=x_tr, y_raw=y_tr, start=lk, stop=b.train_end),
        val=_segment(**common, x_raw=x_va, y_raw=y_va, start=b.train_end, stop=b.val_end),
        test=_segment(**common, x_raw=x_te, y_raw=y_te, start=b.val_end, stop=n),
        feature_scaler=fscaler,
        target_scaler=tscaler,
        train_closes=close[: b.train_end],
        dates=dates,
        currency=bars.currency,
    )


@dataclass(frozen=True)
class FitData:
    """The bars one model version is fit on, split into training and validation windows.

    Attributes:
        ticker: normalized ticker.
        bars: OHLCV arrays of the fit window ``(n,)`` (the only bars the fit may read).
        dates: bar dates ``(n,)``.
        train_end: first validation target index; training targets are
            ``[lookback, train_end)``, validation targets ``[train_end, n)``.
        train: scaled training windows; val: scaled validation windows.
        feature_scaler / target_scaler: fit on the training windows only.
        currency: listing currency, when known.
    """

    ticker: str
    bars: dict[str, FloatArray]
    dates: npt.NDArray[np.object_]
    train_end: int
    train: Segment
    val: Segment
    feature_scaler: ScalerParams
    target_scaler: ScalerParams
    currency: str | None

    @property
    def n_bars(self) -> int:
        """Bars in the fit window."""
        return len(self.dates)


def fit_window_bars(config: TrainConfig) -> int:
    """The fewest bars a fit window needs: lookback + ``min_split_windows`` training and
    validation windows each, with ``val_fraction`` of the window for validation."""
    m = config.min_split_windows
    n = config.lookback + 2 * m
    while n - _n_val(n, config) - config.lookback < m or _n_val(n, config) < m:
        n += 1
    return n


def prepare_fit(
    bars: Mapping[str, npt.ArrayLike],
    dates: npt.ArrayLike,
    config: TrainConfig,
    *,
    ticker: str,
    currency: str | None = None,
) -> FitData:
    """Split the bars of one fit window into training and validation windows, scaled.

    The window is the last ``history_bars`` of ``bars``; its last ``val_fraction`` of bars
    are validation targets (early stopping, the combination weight and the interval
    calibration), the rest training targets. The scalers see training windows only.

    Args:
        bars: OHLCV arrays ``(n_bars,)`` up to the last bar the fit may know, oldest first.
        dates: their dates ``(n_bars,)``.
        config: lookback, features, ``val_fraction``, ``history_bars``.
        ticker: for error messages; currency: listing currency.

    Raises:
        InsufficientBarsError: fewer bars than :func:`fit_window_bars`.
    """
    all_dates = np.asarray(dates, dtype=object)
    n = len(all_dates)
    keep = n if config.history_bars is None else min(n, config.history_bars)
    required = fit_window_bars(config)
    if keep < required:
        raise InsufficientBarsError(
            ticker,
            n,
            required,
            f"lookback {config.lookback} + at least {config.min_split_windows} windows in "
            f"each of train and validation with val_fraction {config.val_fraction}",
        )
    mapping = {k: np.asarray(v, dtype=np.float64)[n - keep :] for k, v in bars.items()}
    window_dates = all_dates[n - keep :]
    train_end = keep - _n_val(keep, config)
    lk, feats = config.lookback, config.features
    x_tr, y_tr = segment_windows(mapping, start=lk, stop=train_end, lookback=lk, features=feats)
    x_va, y_va = segment_windows(mapping, start=train_end, stop=keep, lookback=lk, features=feats)
    fscaler, tscaler = fit_scaler(x_tr), fit_scaler(y_tr)
    common: dict[str, Any] = {
        "bars": mapping,
        "dates": window_dates,
        "fscaler": fscaler,
        "tscaler": tscaler,
    }
    return FitData(
        ticker=ticker,
        bars=mapping,
        dates=window_dates,
        train_end=train_end,
        train=_segment(**common, x_raw=x_tr, y_raw=y_tr, start=lk, stop=train_end),
        val=_segment(**common, x_raw=x_va, y_raw=y_va, start=train_end, stop=keep),
        feature_scaler=fscaler,
        target_scaler=tscaler,
        currency=currency,
    )
