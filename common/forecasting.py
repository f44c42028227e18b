"""The forecast core, shared by serving, the promotion gate, the backtest and the pyfunc model.

One :class:`Forecaster` turns raw bars into forecasts with a registered model version:

1. features of the last ``lookback`` bars (:mod:`common.features`), scaled with the
   version's feature scaler;
2. the network (ONNX, or any callable with the same contract) gives the scaled next log
   return, unscaled with the target scaler: ``r_net``;
3. the forecast combination of the version (:class:`~common.model_contract.Combination`):
   ``r = w * (r_net - drift)``. ``w = 0`` is exactly the naive forecast (tomorrow's close =
   today's); ``w = 1, drift = 0`` is the raw network;
4. multi-step (horizon ``h``): a synthetic bar whose OHLC are the last bar's times ``exp(r)``
   is appended, the window slides by one bar, and steps 1-3 repeat;
5. prediction intervals (:class:`~common.model_contract.IntervalCalibration`): normalised
   split-conformal bounds ``close_k * exp(+-q_k(level) * sigma_T)``, where ``sigma_T`` is the
   EWMA volatility of the window's log returns (RiskMetrics 1996, lambda 0.94) and
   ``q_k(level)`` the conformal quantile of the scores ``|log(actual / forecast)| / sigma_T``
   at step ``k`` on validation residuals (Vovk, Gammerman & Shafer 2005; Papadopoulos et al.
   2002 for normalised scores; Lei et al. 2018 for the finite-sample quantile).

Pure numpy; onnxruntime is imported only when an ONNX model is opened.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.exceptions import ModelLoadError
from common.features import PRICE_COLUMNS, FloatArray, features_of_windows, required_columns
from common.model_contract import IntervalCalibration, ModelMetadata

#: RiskMetrics' decay of the EWMA variance of daily returns (J.P. Morgan, RiskMetrics 1996).
EWMA_LAMBDA = 0.94
#: Scale floor, so a window of constant closes still gets a (tiny) interval.
MIN_SIGMA = 1e-6

#: Maps scaled windows ``(batch, lookback, n_features)`` float32 to scaled outputs ``(batch,)``.
Network = Callable[[npt.NDArray[np.float32]], npt.ArrayLike]


def ewma_volatility(closes: npt.ArrayLike, lam: float = EWMA_LAMBDA) -> FloatArray:
    """EWMA volatility of the log returns inside each window (RiskMetrics 1996).

    ``sigma_T^2 = sum_i w_i r_{T-i}^2 / sum_i w_i`` with ``w_i = lam^i`` over the ``L - 1``
    log returns of a window of ``L`` closes (normalised, since the window is finite).

    Args:
        closes: ``(n_windows, L)`` closes, oldest first, ``L >= 2``.
        lam: decay in ``(0, 1)``.

    Returns:
        ``(n_windows,)`` daily volatility of log returns (unit-free), at least :data:`MIN_SIGMA`.
    """
    c = np.asarray(closes, dtype=np.float64)
    r = np.diff(np.log(c), axis=1)
    weights = lam ** np.arange(r.shape[1] - 1, -1, -1, dtype=np.float64)
    var = (r * r) @ weights / weights.sum()
    out: FloatArray = np.maximum(np.sqrt(var), MIN_SIGMA)
    return out


def conformal_quantile(scores: npt.ArrayLike, level: float) -> float:
    """Split-conformal quantile: the ``ceil((n + 1) * level / 100)``-th smallest score.

    With exchangeable scores this gives coverage >= ``level`` percent (Lei et al. 2018,
    "Distribution-free predictive inference for regression", JASA 113, Thm 2.2). When
    ``(n + 1) * level / 100 > n`` the largest score is used (coverage then falls short).

    Raises:
        ValueError: no scores, or ``level`` outside ``(0, 100)``.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    if s.size == 0 or not 0.0 < level < 100.0:
        raise ValueError(f"need scores and a level in (0, 100), got {s.size} scores, {level}")
    rank = min(math.ceil((s.size + 1) * level / 100.0), s.size)
    return float(s[rank - 1])


def interval_quantiles(calibration: IntervalCalibration, levels: Sequence[float]) -> FloatArray:
    """Conformal score quantiles ``(len(levels), n_steps)`` for any levels in ``(0, 100)``.

    Levels between the stored grid points are interpolated linearly; levels outside the
    grid take the nearest end.
    """
    grid = np.asarray(calibration.levels, dtype=np.float64)
    table = np.asarray(calibration.quantiles, dtype=np.float64)  # (n_steps, n_grid)
    return np.stack([[np.interp(lv, grid, row) for row in table] for lv in levels])


@dataclass(frozen=True)
class ForecastPaths:
    """Forecasts from ``n`` origins, ``horizon`` steps each.

    Attributes:
        log_returns: predicted log returns ``(n, horizon)``, combination applied.
        closes: predicted closes ``(n, horizon)``, listing currency.
        sigma: EWMA volatility of each origin's window ``(n,)`` (None when not computed).
        inference_seconds: time spent in the network, seconds.
    """

    log_returns: FloatArray
    closes: FloatArray
    sigma: FloatArray | None
    inference_seconds: float


class Forecaster:
    """A model version ready to forecast: metadata, network and constants derived once."""

    def __init__(self, metadata: ModelMetadata, network: Network) -> None:
        """Wrap ``network`` (see :data:`Network`) with the version's ``metadata``."""
        self.metadata = metadata
        self.network = network
        self.lookback = metadata.lookback
        self.features = tuple(metadata.features)
        self.columns = tuple(sorted({"close", *required_columns(metadata.features)}))
        self.feature_mean = np.asarray(metadata.feature_scaler.mean, dtype=np.float64)
        self.feature_scale = np.asarray(metadata.feature_scaler.scale, dtype=np.float64)
        self.target_mean = float(metadata.target_scaler.mean[0])
        self.target_scale = float(metadata.target_scaler.scale[0])
        self.weight = float(metadata.combination.weight)
        self.drift = float(metadata.combination.drift)
        self.ewma_lambda = (
            metadata.intervals.ewma_lambda if metadata.intervals is not None else EWMA_LAMBDA
        )
        # per-model constants, so a forecast allocates only its own buffers
        self._offsets = np.arange(-self.lookback + 1, 1)
        weights = self.ewma_lambda ** np.arange(self.lookback - 2, -1, -1, dtype=np.float64)
        self._ewma_weights = weights / weights.sum()

    @classmethod
    def from_onnx(cls, metadata: ModelMetadata, onnx: bytes | str) -> Forecaster:
        """A forecaster running ``onnx`` (bytes or a file path) in onnxruntime, one thread.

        Raises:
            ModelLoadError: unsupported target, scaler lengths not matching the features, or
                a graph that does not map ``(1, lookback, n_features)`` float32 to a finite value.
        """
        import onnxruntime as ort  # noqa: PLC0415 - only model loading needs it

        label = f"{metadata.ticker} model"
        if metadata.target != "log_return":
            raise ModelLoadError(f"{label}: unsupported target {metadata.target!r}")
        n_features = len(metadata.features)
        if len(metadata.feature_scaler.mean) != n_features or len(metadata.target_scaler.mean) != 1:
            raise ModelLoadError(f"{label}: scaler lengths do not match the features")
        try:
            required_columns(metadata.features)
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # no per-session memory arena: a served process holds hundreds of small sessions
            options.enable_cpu_mem_arena = False
            session = ort.InferenceSession(
                onnx, sess_options=options, providers=["CPUExecutionProvider"]
            )
            input_name = session.get_inputs()[0].name
            output_names = [session.get_outputs()[0].name]

            def run(x: npt.NDArray[np.float32]) -> npt.ArrayLike:
                out: npt.ArrayLike = session.run(output_names, {input_name: x})[0]
                return out

            probe = np.asarray(run(np.zeros((1, metadata.lookback, n_features), np.float32)))
        except Exception as exc:
            raise ModelLoadError(f"{label}: cannot run the ONNX model: {exc}") from exc
        if probe.size < 1 or not np.all(np.isfinite(probe)):
            raise ModelLoadError(f"{label}: the ONNX model returned {probe!r} on a probe")
        return cls(metadata, run)

    def network_log_returns(self, windows: Mapping[str, FloatArray]) -> FloatArray:
        """The network's own next log returns ``r_net`` ``(n,)`` for windows ``(n, lookback)``."""
        x = features_of_windows(windows, self.features)
        x_scaled = ((x - self.feature_mean) / self.feature_scale).astype(np.float32)
        out = np.asarray(self.network(x_scaled), dtype=np.float64).reshape(len(x_scaled), -1)
        result: FloatArray = out[:, 0] * self.target_scale + self.target_mean
        return result

    def forecast_paths(
        self,
        bars: Mapping[str, npt.ArrayLike],
        origins: npt.ArrayLike,
        horizon: int,
        *,
        with_sigma: bool = True,
    ) -> ForecastPaths:
        """Forecast ``horizon`` closes after each origin bar, feeding forecasts back in.

        Args:
            bars: OHLCV arrays ``(n_bars,)``, oldest first; only :attr:`columns` are read,
                and for origin ``o`` only bars ``o - lookback + 1 .. o``.
            origins: indices of the last known bar of each forecast ``(n,)``,
                each ``>= lookback - 1``.
            horizon: steps (trading days) to forecast, ``>= 1``.
            with_sigma: compute each window's EWMA volatility (needed for intervals only).

        Returns:
            :class:`ForecastPaths`; ``closes[i, k]`` forecasts bar ``origins[i] + k + 1``
            (``sigma`` is None when ``with_sigma`` is False).

        Raises:
            ValueError: ``horizon < 1`` or an origin without ``lookback`` bars up to it.
        """
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        idx = np.asarray(origins, dtype=np.int64).reshape(-1)
        lookback = self.lookback
        if idx.size and (idx.min() < lookback - 1):
            raise ValueError(f"need {lookback} bars up to each origin, got origin {idx.min()}")
        single = int(idx[0]) if idx.size == 1 else None
        offsets = None if single is not None else idx[:, None] + self._offsets
        buffers: dict[str, FloatArray] = {}
        for column in self.columns:
            values = np.asarray(bars[column], dtype=np.float64)
            if idx.size and idx.max() >= len(values):
                raise ValueError(f"origin {idx.max()} is past the last of {len(values)} bars")
            buffer = np.empty((idx.size, lookback + horizon), dtype=np.float64)
            if single is not None:  # the API's case: a slice, no fancy indexing
                buffer[0, :lookback] = values[single - lookback + 1 : single + 1]
            else:
                buffer[:, :lookback] = values[offsets]
            buffers[column] = buffer
        close = buffers["close"]
        sigma = None
        if with_sigma:
            r = np.diff(np.log(close[:, :lookback]), axis=1)
            sigma = np.maximum(np.sqrt((r * r) @ self._ewma_weights), MIN_SIGMA)
        returns = np.empty((idx.size, horizon), dtype=np.float64)
        inference = 0.0
        for step in range(horizon):
            end = step + lookback
            if self.weight == 0.0:
                r = np.zeros(idx.size)
            else:
                window = {c: b[:, step:end] for c, b in buffers.items()}
                began = time.perf_counter()
                r = self.weight * (self.network_log_returns(window) - self.drift)
                inference += time.perf_counter() - began
            ratio = np.exp(r)
            for column, buffer in buffers.items():
                # a synthetic bar: the last bar's prices times exp(r), its volume unchanged
                step_ratio = ratio if column in PRICE_COLUMNS else 1.0
                buffer[:, end] = buffer[:, end - 1] * step_ratio
            returns[:, step] = r
        return ForecastPaths(
            log_returns=returns,
            closes=close[:, lookback:].copy(),
            sigma=sigma,
            inference_seconds=inference,
        )

    def step_quantiles(self, levels: Sequence[float], horizon: int) -> FloatArray | None:
        """Conformal score quantiles ``(len(levels), horizon)``, or None without calibration.

        Steps beyond the calibrated ones grow with the square root of the step (a random
        walk's spread), from the last calibrated step.
        """
        calibration = self.metadata.intervals
        if calibration is None or not levels:
            return None
        q = interval_quantiles(calibration, levels)
        n_cal = q.shape[1]
        if horizon <= n_cal:
            return q[:, :horizon]
        extra = np.sqrt(np.arange(n_cal + 1, horizon + 1) / n_cal)
        return np.concatenate([q, q[:, -1:] * extra], axis=1)


def interval_bounds(paths: ForecastPaths, quantiles: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Lower and upper bounds ``(n_levels, n, horizon)`` around ``paths.closes``.

    ``close * exp(-+ q[level, step] * sigma)``: symmetric in log price, so the bounds stay
    positive and the interval of a step widens with its conformal quantile.

    Raises:
        ValueError: ``paths`` were computed without ``sigma``.
    """
    if paths.sigma is None:
        raise ValueError("interval bounds need forecast paths computed with_sigma=True")
    spread = np.exp(quantiles[:, None, :] * paths.sigma[None, :, None])
    closes = paths.closes[None, :, :]
    return closes / spread, closes * spread
