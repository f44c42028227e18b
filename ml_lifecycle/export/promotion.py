"""The promotion gate: champion or challenger.

A new version becomes ``champion`` when the registered model has none yet, or when its test
MASE is lower than the current champion's, re-evaluated on the *same* test window with the
*same* in-sample scale; otherwise it gets the alias ``challenger``. Operators can force it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.forecasting import Forecaster
from common.model_contract import CHAMPION_ALIAS
from common.registry import load_champion
from ml_lifecycle.evaluation.metrics import mase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate: promote or not, why, and the champion it was compared with."""

    promote: bool
    reason: str
    champion_version: str | None = None
    champion_mase: float | None = None


def current_champion(client: Any, name: str) -> Any | None:
    """The ``ModelVersion`` holding the alias ``champion``, or ``None`` when there is none."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise


def champion_test_mase(
    client: Any,
    name: str,
    *,
    bars: dict[str, npt.NDArray[Any]],
    start: int,
    stop: int,
    in_sample: npt.ArrayLike,
) -> float:
    """Test MASE of the current champion on target bars ``[start, stop)`` of ``bars``.

    Loads the champion with :func:`common.registry.load_champion` and forecasts through
    its ONNX artifact, with its own lookback, features, scalers and combination.

    Raises:
        RegistryReadError / MlflowException: the champion's artifacts cannot be loaded.
        ValueError: the champion's lookback does not fit before ``start``.
    """
    loaded = load_champion(client, name)
    forecaster = Forecaster.from_onnx(loaded.metadata, loaded.onnx_bytes)
    predicted = forecaster.forecast_paths(bars, np.arange(start - 1, stop - 1), 1).closes[:, 0]
    actual = np.asarray(bars["close"], dtype=np.float64)[start:stop]
    return mase(actual, predicted, in_sample=in_sample)


def decide(
    client: Any,
    name: str,
    *,
    new_mase: float,
    bars: dict[str, npt.NDArray[Any]],
    start: int,
    stop: int,
    in_sample: npt.ArrayLike,
    force: bool = False,
) -> GateDecision:
    """Apply the promotion gate to a new version whose test MASE is ``new_mase``.

    Args:
        client: an ``MlflowClient``.
        name: registered model name.
        new_mase: the new version's test MASE.
        bars: the OHLCV arrays the new version was tested on.
        start: first test target index; stop: one past the last.
        in_sample: training closes (MASE's scale, shared by both models).
        force: promote whatever the comparison says (``--force-promote``).

    Returns:
        A :class:`GateDecision` with a reason a person can read.
    """
    champion = current_champion(client, name)
    if champion is None:
        return GateDecision(True, "no champion yet")
    version = str(champion.version)
    try:
        old = champion_test_mase(
            client, name, bars=bars, start=start, stop=stop, in_sample=in_sample
        )
    except Exception as exc:
        logger.warning("champion v%s of %s could not be re-evaluated: %s", version, name, exc)
        reason = f"champion v{version} could not be re-evaluated ({exc}); replacing it"
        return GateDecision(True, reason, champion_version=version)
    comparison = (
        f"test MASE {new_mase:.4f} vs champion v{version}'s {old:.4f} on the same test window"
    )
    if new_mase < old:
        return GateDecision(True, f"better: {comparison}", version, old)
    if force:
        return GateDecision(
            True, f"forced by operator (--force-promote); not better: {comparison}", version, old
        )
    return GateDecision(False, f"not better: {comparison}", version, old)
