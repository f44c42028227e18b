"""``POST /auth/token`` (OAuth2 password flow) and ``GET /auth/me``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response

from app.core.database import SessionDep
from app.features.auth import service
from app.features.auth.dependencies import CurrentUser, SettingsDep
from app.features.auth.rate_limit import LoginLimiterDep, client_address
from app.schemas.error import ErrorResponse, ValidationErrorResponse
from app.schemas.token import Token
from app.schemas.user import UserRead

router = APIRouter(prefix="/auth", tags=["auth"])

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Incorrect username or password"}
}
_LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "A form body that cannot be parsed"},
    **_UNAUTHORIZED,
    413: {"description": "A body over APP_MAX_BODY_BYTES"},
    422: {"model": ValidationErrorResponse, "description": "Missing or malformed form fields"},
    429: {
        "model": ErrorResponse,
        "description": "Too many failed logins for the username or address; see Retry-After",
    },
    503: {"description": "The database or the rate limiter's storage is unavailable"},
}


#: RFC 6749 section 5.1: a response holding a token must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.post("/token", responses=_LOGIN_RESPONSES)
def login(  # noqa: PLR0917 - FastAPI passes the dependencies by keyword
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    limiter: LoginLimiterDep,
    username: Annotated[str, Form(examples=["demo"], max_length=64)],
    password: Annotated[str, Form(examples=["the demo password"], max_length=1024)],
) -> Token:
    """Exchange a username and password (form fields) for a bearer token.

    Failed logins are limited per username and per client address (429 with
    ``Retry-After``; see :mod:`app.features.auth.rate_limit`).
    """
    response.headers.update(NO_STORE)
    user = service.authenticate_limited(
        session=session,
        limiter=limiter,
        username=username,
        password=password,
        address=client_address(request),
    )
    return service.issue_token(user=user, settings=settings)


@router.get("/me", responses=_UNAUTHORIZED)
def read_me(user: CurrentUser) -> UserRead:
    """The user the bearer token belongs to."""
    return UserRead.model_validate(user)
