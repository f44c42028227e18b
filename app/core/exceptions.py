"""The API's errors: the domain errors, each mapped once to its HTTP status by
:func:`register_handlers`, and the errors of its settings, tokens and user accounts.

Services and dependencies raise these; routers never build error responses themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from common.db import first_line
from common.exceptions import DatabaseUnavailableError

logger = logging.getLogger(__name__)

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
#: RFC 7617: the browser asks for a username and password, and sends them as UTF-8.
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="stockcast API docs", charset="UTF-8"'}
#: Validation errors listed at most in one 422 (a 10,000-value body can have 10,000).
MAX_VALIDATION_ERRORS = 20
#: Characters kept of a message or of a location part that came from the client.
MAX_ERROR_TEXT = 120
RETRY_LATER = {"Retry-After": "5"}


class AppError(Exception):
    """Base of the API's domain errors: an HTTP status and a message for the client."""

    status_code = 500
    headers: dict[str, str] | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidCredentialsError(AppError):
    """Missing, malformed, expired or wrongly signed token, or a wrong username/password."""

    status_code = 401
    headers = BEARER_CHALLENGE


class DocsCredentialsError(AppError):
    """``APP_DOCS=authenticated`` and the request to ``/docs`` or ``/openapi.json`` has no, or
    wrong, HTTP Basic credentials (the browser asks for them on this challenge)."""

    status_code = 401
    headers = BASIC_CHALLENGE


class DocsNotFoundError(AppError):
    """``APP_DOCS=off`` (``/docs`` and ``/openapi.json`` do not exist), or an unknown docs asset."""

    status_code = 404

    def __init__(self) -> None:
        super().__init__("not found")


class ForbiddenError(AppError):
    """An authenticated user without the right (admin) for the route."""

    status_code = 403


class ModelNotFoundError(AppError):
    """No champion model is served for the ticker."""

    status_code = 404

    def __init__(self, ticker: str) -> None:
        super().__init__(
            f"no model is served for {ticker}: register a champion "
            f"(python -m ml_lifecycle train --tickers {ticker}) and reload; see GET /models"
        )
        self.ticker = ticker


class RegistryUnavailableError(AppError):
    """The model registry has never answered this worker (or a reload timed out): no model
    can be known to be missing, so the request is refused for now."""

    status_code = 503
    headers = RETRY_LATER


class BarsNotFoundError(AppError):
    """The price store has no (or too few) bars for the ticker."""

    status_code = 404

    def __init__(self, ticker: str, *, found: int, needed: int) -> None:
        what = "no price bars are stored" if found == 0 else f"only {found} price bars are stored"
        super().__init__(
            f"{what} for {ticker}; the model needs the last {needed} "
            f"(ingest them: python -m data_pipeline ingest --tickers {ticker})"
        )
        self.ticker = ticker


class TooManyLoginAttemptsError(AppError):
    """Too many failed logins for the username or from the client address, recently."""

    status_code = 429

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_seconds} seconds")
        self.headers = {"Retry-After": str(retry_after_seconds)}


class RateLimiterUnavailableError(AppError):
    """The failed-login counters' storage (Redis) cannot be reached: logins are refused."""

    status_code = 503
    headers = RETRY_LATER

    def __init__(self, storage_uri: str) -> None:
        super().__init__("logins are unavailable (the rate limiter's storage is down); retry soon")
        scheme = storage_uri.split(":", 1)[0]
        logger.error("the rate limiter's %s storage is unavailable", scheme)


class InvalidRequestError(AppError):
    """Input that is well-formed JSON but unusable (wrong window length, horizon out of range)."""

    status_code = 422


class ForecastOverflowError(InvalidRequestError):
    """A forecast whose closes leave float64's range (the input compounds beyond any price)."""

    def __init__(self, ticker: str, horizon: int) -> None:
        super().__init__(
            f"the forecast of {ticker} over {horizon} trading days from this window overflows "
            "(a predicted close is not a finite number); send realistic closes or a shorter "
            "horizon"
        )
        self.ticker = ticker


class InsecureSecretKeyError(ValueError):
    """The configured secret key is missing (outside development), a placeholder, or too short."""


class TokenError(ValueError):
    """A token that is malformed, wrongly signed, expired or lacks a claim (a 401 once
    :mod:`app.features.auth.dependencies` turns it into :class:`InvalidCredentialsError`)."""


class InvalidUserError(ValueError):
    """A username or password that does not meet the rules, or a username already taken."""


def _app_error_response(exc: AppError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _clip(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_ERROR_TEXT:
        return value[:MAX_ERROR_TEXT] + "..."
    return value


def validation_error_detail(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """The client's view of pydantic's errors: ``loc``, ``msg`` and ``type`` of the first
    :data:`MAX_VALIDATION_ERRORS`, clipped; never the ``input`` (a 422 must not echo a large
    or sensitive body) nor ``ctx`` (it can hold the raised exception)."""
    return [
        {
            "loc": [_clip(part) for part in error["loc"]],
            "msg": _clip(error["msg"]),
            "type": error["type"],
        }
        for error in errors[:MAX_VALIDATION_ERRORS]
    ]


def register_handlers(app: FastAPI) -> None:
    """Map every domain error (and database connection errors) to its HTTP response once."""

    async def on_app_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        return _app_error_response(exc)

    async def on_database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
        logger.error("database unavailable: %s", first_line(exc))
        return JSONResponse(
            {"detail": "the database is unavailable; retry in a few seconds"},
            status_code=503,
            headers=RETRY_LATER,
        )

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return JSONResponse({"detail": validation_error_detail(exc.errors())}, status_code=422)

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    for db_error in (OperationalError, InterfaceError, DatabaseUnavailableError):
        app.add_exception_handler(db_error, on_database_unavailable)
