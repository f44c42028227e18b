"""``GET /health``, ``GET /ready``, ``GET /models`` and ``POST /models/reload`` (admins)."""

from __future__ import annotations

import logging
from typing import Literal

import anyio
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError

from app.core.database import ping
from app.core.exceptions import RegistryUnavailableError
from app.features.auth.dependencies import AdminUser
from app.features.stock_prediction.dependencies import PredictionServiceDep
from app.features.stock_prediction.predictor import ReloadReport
from app.features.stock_prediction.schemas import ReloadResult, ServedModelRead
from app.features.stock_prediction.service import model_metrics

logger = logging.getLogger(__name__)

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Readiness: the database answers, the first load of the champions has ended and at
    least one model is served."""

    ready: bool
    database: Literal["ok", "unavailable"]
    registry: Literal["ok", "loading", "unreachable"] = Field(
        description="ok: listed, and its champions loaded, at least once; loading: the first "
        "attempt is under way; "
        "unreachable: never reached (registry_error says why)"
    )
    registry_error: str | None = None
    models_loaded: int
    missing: list[Literal["database", "registry", "models"]] = Field(
        description="what keeps the worker from being ready"
    )


@router.get("/health")
async def health() -> Health:
    """Liveness probe: 200 while the process runs."""
    return Health()


@router.get("/ready", responses={503: {"model": Readiness, "description": "Not ready"}})
def ready(response: Response, service: PredictionServiceDep) -> Readiness:
    """Readiness probe: 200 when the database is reachable and the champions the registry
    listed are loaded (at least one), else 503: a worker still loading its models is not sent
    requests it would answer 503."""
    database: Literal["ok", "unavailable"] = "ok"
    try:
        with service.session_factory() as session:
            ping(session)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("readiness: database unavailable: %s", str(exc.orig).strip()[:200])
        database = "unavailable"
    predictor = service.predictor
    loaded = len(predictor)
    registry: Literal["ok", "loading", "unreachable"] = (
        "ok"
        if predictor.registry_reached
        else "unreachable"
        if predictor.registry_error
        else "loading"
    )
    missing: list[Literal["database", "registry", "models"]] = []
    if database != "ok":
        missing.append("database")
    if registry != "ok":
        missing.append("registry")
    if loaded == 0:
        missing.append("models")
    status = Readiness(
        ready=not missing,
        database=database,
        registry=registry,
        registry_error=predictor.registry_error,
        models_loaded=loaded,
        missing=missing,
    )
    if not status.ready:
        response.status_code = 503
    return status


@router.get("/models")
def list_models(service: PredictionServiceDep) -> list[ServedModelRead]:
    """The served champion of each ticker: version, combination weight, interval levels and
    walk-forward metrics."""
    return [
        ServedModelRead(
            ticker=m.ticker,
            name=m.name,
            version=m.version,
            lookback=m.lookback,
            features=list(m.metadata.features),
            accepts_closes=m.close_only,
            last_train_date=m.metadata.last_train_date,
            last_bar_date=m.metadata.last_bar_date,
            loaded_at=m.loaded_at,
            combination_weight=m.metadata.combination.weight,
            interval_levels=list(m.served_levels),
            metrics=model_metrics(m),
        )
        for m in service.predictor.served()
    ]


@router.post(
    "/models/reload",
    responses={
        401: {"description": "Not authenticated"},
        403: {"description": "Not an admin"},
        503: {"description": "The registry did not answer within APP_RELOAD_TIMEOUT_SECONDS"},
    },
)
async def reload_models(_admin: AdminUser, service: PredictionServiceDep) -> ReloadResult:
    """Load new champion versions from the registry now (admins only).

    A model that fails to load is reported under ``failed`` and its old version keeps serving.
    Without the registry's answer within ``APP_RELOAD_TIMEOUT_SECONDS`` the answer is 503
    (the reload goes on in the background and its models are served when it ends).
    """
    predictor = service.predictor
    timeout = service.settings.reload_timeout_seconds

    def reload() -> ReloadReport:
        report = predictor.reload()
        service.health.compute_after_load(report.models)
        return report

    try:
        with anyio.fail_after(timeout):
            report = await anyio.to_thread.run_sync(reload, abandon_on_cancel=True)
    except TimeoutError:
        raise RegistryUnavailableError(
            f"the model registry did not answer within {timeout:g} s "
            "(APP_RELOAD_TIMEOUT_SECONDS); the reload goes on in the background, see GET /models"
        ) from None
    return ReloadResult(
        loaded=report.loaded,
        unchanged=report.unchanged,
        failed=report.failed,
        served=len(predictor),
    )
