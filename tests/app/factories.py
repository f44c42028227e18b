"""Small factories for the API tests: users, settings, tokens and hand-built ONNX models."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import AppSettings
from app.features.auth import service
from app.features.auth.crud import get_by_username
from app.features.stock_prediction.predictor import ServedModel, build_served_model
from app.models.prediction_log import PredictionLog
from common.model_contract import ModelMetadata, ScalerParams

SECRET_KEY = "test-signing-key-" + "k" * 40
PASSWORD = "correct horse battery staple"


def make_settings(*, database_url: str, tracking_uri: str, **overrides: object) -> AppSettings:
    """Settings for a test app (no .env file, no registry polling unless asked)."""
    values: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "secret_key": SECRET_KEY,
        "model_poll_seconds": 0,
        # a test's app serves its champion from the first request
        "model_startup_wait_seconds": 120,
        # the session's tests share one app and client address: no lockout between tests
        "login_max_failures_per_user": 1_000,
        "login_max_failures_per_address": 10_000,
        **overrides,
    }
    return AppSettings(_env_file=None, **values)


def create_user(session: Session, username: str, *, admin: bool = False) -> int:
    """A committed user with password :data:`PASSWORD`; returns its id."""
    user = service.create_user(
        session=session, username=username, password=PASSWORD, is_admin=admin
    )
    return user.id


def deactivate_user(session: Session, username: str) -> None:
    """Set ``is_active = false`` on an existing user and commit."""
    user = get_by_username(session, username=username)
    assert user is not None, f"no user {username}"
    user.is_active = False
    session.commit()


def mean_onnx(
    *, ticker: str, lookback: int, features: Sequence[str], target_scale: float = 1.0
) -> tuple[ModelMetadata, bytes]:
    """A real ONNX graph (not trained) and its metadata: output = mean of the scaled input,
    shape ``(1, 1)``; identity scalers, except ``target_scale`` on the output."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    n = len(features)
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, lookback, n])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    node = helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
    reshape = helper.make_node("Reshape", ["m", "shape"], ["y"])
    graph = helper.make_graph([node, reshape], "mean", [inp], [out], initializer=[axes, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    metadata = ModelMetadata(
        ticker=ticker,
        lookback=lookback,
        features=list(features),
        feature_scaler=ScalerParams(mean=[0.0] * n, scale=[1.0] * n),
        target_scaler=ScalerParams(mean=[0.0], scale=[target_scale]),
        last_train_date=dt.date(2023, 6, 30),
        last_bar_date=dt.date(2023, 12, 29),
        metrics={"mae": 1.0, "mape": 2.0, "mase": 0.99},
    )
    return metadata, model.SerializeToString()


def mean_onnx_model(
    *,
    ticker: str,
    lookback: int,
    features: Sequence[str],
    version: str = "1",
    target_scale: float = 1.0,
) -> ServedModel:
    """A served :func:`mean_onnx` model: the predicted log return is the mean of the window's
    features (times ``target_scale``), which makes multi-step behaviour easy to check by hand."""
    metadata, onnx_bytes = mean_onnx(
        ticker=ticker, lookback=lookback, features=features, target_scale=target_scale
    )
    return build_served_model(
        name=f"stock-lstm-{ticker}", version=version, metadata=metadata, onnx_bytes=onnx_bytes
    )


def logged_rows(sessions: Callable[[], Session], prediction_id: str) -> list[PredictionLog]:
    """The prediction_log rows of one response (its ``prediction_id``), by horizon step."""
    with sessions() as session:
        return list(
            session.scalars(
                select(PredictionLog)
                .where(PredictionLog.request_id == uuid.UUID(prediction_id))
                .order_by(PredictionLog.horizon_step)
            )
        )
