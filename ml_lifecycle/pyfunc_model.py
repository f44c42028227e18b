"""The MLflow pyfunc wrapper: raw bars in, next-close forecast out.

``mlflow.pyfunc.load_model("models:/stock-lstm-<TICKER>@champion").predict(bars)`` where
``bars`` is a DataFrame with columns ``date, open, high, low, close, volume`` (oldest first,
at least ``lookback`` rows; only the last ``lookback`` are used). The network runs through
the ONNX artifact, so predicting does not import TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from common.features import required_columns
from common.forecasting import Forecaster
from common.model_contract import ModelMetadata
from ml_lifecycle.exceptions import InsufficientInputError

#: Columns of the pyfunc's output DataFrame (one row per call).
OUTPUT_COLUMNS = ("last_bar_date", "last_close", "predicted_log_return", "predicted_close")


class LstmForecaster(PythonModel):
    """Next-close forecaster from raw daily bars (artifacts: metadata.json, model.onnx)."""

    def load_context(self, context: Any) -> None:
        """Read the metadata and open the ONNX network (called once by MLflow on load)."""
        self.metadata = ModelMetadata.model_validate_json(
            Path(context.artifacts["metadata"]).read_text(encoding="utf-8")
        )
        self.forecaster = Forecaster.from_onnx(self.metadata, str(context.artifacts["onnx"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Forecast the close of the bar after the last input bar.

        Args:
            context: MLflow's model context (unused after :meth:`load_context`).
            model_input: bars with ``date, open, high, low, close, volume``, oldest first;
                prices in the listing currency.
            params: unused.

        Returns:
            One row: ``last_bar_date``, ``last_close``, ``predicted_log_return``
            (``log(close[T+1] / close[T])``) and ``predicted_close`` (listing currency).

        Raises:
            InsufficientInputError: fewer rows than ``lookback`` or a missing column.
        """
        meta = self.metadata
        needed = sorted({"close", *required_columns(meta.features)})
        missing = [c for c in needed if c not in model_input.columns]
        if missing:
            raise InsufficientInputError(f"input lacks column(s) {missing}")
        frame = model_input.sort_values("date") if "date" in model_input.columns else model_input
        if len(frame) < meta.lookback:
            raise InsufficientInputError(
                f"{meta.ticker}: need at least lookback={meta.lookback} bars, got {len(frame)}"
            )
        tail = frame.iloc[-meta.lookback :]
        bars = {c: tail[c].to_numpy(dtype=np.float64) for c in needed}
        log_ret = float(
            self.forecaster.forecast_paths(bars, (meta.lookback - 1,), 1).log_returns[0, 0]
        )
        last_close = float(bars["close"][-1])
        last_date = tail["date"].iloc[-1] if "date" in tail.columns else None
        return pd.DataFrame(
            {
                "last_bar_date": [
                    str(pd.Timestamp(last_date).date()) if last_date is not None else ""
                ],
                "last_close": [last_close],
                "predicted_log_return": [log_ret],
                "predicted_close": [last_close * float(np.exp(log_ret))],
            }
        )
