"""``CurrentUser`` and ``AdminUser``: the bearer-token dependencies of protected routes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from app.core import security
from app.core.cache import ExpiringCache
from app.core.config import AppSettings
from app.core.database import get_session_factory
from app.core.exceptions import ForbiddenError, InvalidCredentialsError, TokenError
from app.features.auth import crud


async def get_app_settings(request: Request) -> AppSettings:
    """The settings of the running app (``async``: no I/O, so no thread-pool hop)."""
    settings: AppSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[AppSettings, Depends(get_app_settings)]

#: Users kept at most in a worker's user cache.
USER_CACHE_MAXSIZE = 10_000
#: Verified tokens kept at most per worker (each until its ``exp``).
VERIFIED_TOKENS_MAXSIZE = 10_000


@dataclass(frozen=True)
class AuthenticatedUser:
    """The ``app_user`` row of a token's user, detached from any session (cacheable)."""

    id: int
    username: str
    is_active: bool
    is_admin: bool
    created_at: dt.datetime


#: Users by username; only found users are kept (an unknown name is read again).
UserCache = ExpiringCache[str, AuthenticatedUser | None]


def make_user_cache(
    settings: AppSettings, *, timer: Callable[[], float] = time.monotonic
) -> UserCache:
    """The per-worker cache of user rows by username, ``APP_USER_CACHE_SECONDS`` long."""
    return ExpiringCache(
        ttl_seconds=settings.user_cache_seconds, maxsize=USER_CACHE_MAXSIZE, timer=timer
    )


def make_verified_tokens(settings: AppSettings) -> security.VerifiedTokens:
    """The per-worker memory of verified tokens (each kept until its ``exp``)."""
    return security.VerifiedTokens(secret_key=settings.signing_key, maxsize=VERIFIED_TOKENS_MAXSIZE)


async def authenticate_bearer(request: Request, token: str | None) -> AuthenticatedUser:
    """The active user named by a valid bearer token.

    The token (signature, algorithm, claims) is verified once per worker and remembered
    until its ``exp`` (:class:`app.core.security.VerifiedTokens`: the answer cannot change
    before then); the user's row is read from the database at most once per
    ``APP_USER_CACHE_SECONDS`` per worker, so a deactivated user keeps access at most that
    long (0 = read on every request). A cached user costs no thread-pool hop; a miss reads
    the row in the thread pool.

    Args:
        request: the request (the worker's caches are in ``request.app.state``).
        token: the bearer token of the ``Authorization`` header, ``None`` without one.

    Raises:
        InvalidCredentialsError: no token, or a malformed, expired, wrongly signed or
            ``alg=none`` token, or a user that no longer exists or is inactive (401).
        sqlalchemy.exc.OperationalError: the database is unavailable on a cache miss (503).
    """
    if not token:
        raise InvalidCredentialsError(
            "not authenticated: send 'Authorization: Bearer <token>' "
            "(get one from POST /auth/token)"
        )
    # the worker's caches, built by the lifespan; read here, where they are used
    verified: security.VerifiedTokens = request.app.state.verified_tokens
    user_cache: UserCache = request.app.state.user_cache
    try:
        username = verified.subject(token)
    except TokenError as exc:
        raise InvalidCredentialsError(str(exc)) from exc

    session_factory = get_session_factory(request)

    def load() -> AuthenticatedUser | None:
        with session_factory() as session:
            row = crud.get_by_username(session, username=username)
            if row is None:
                return None
            return AuthenticatedUser(
                id=row.id,
                username=row.username,
                is_active=row.is_active,
                is_admin=row.is_admin,
                created_at=row.created_at,
            )

    user = await user_cache.get_or_load(username, load, keep=lambda found: found is not None)
    if user is None or not user.is_active:
        raise InvalidCredentialsError("the token's user does not exist or is inactive")
    return user


class BearerUser(OAuth2PasswordBearer):
    """The API's OAuth2 bearer scheme, resolving the token's user in one dependency.

    A subclass of FastAPI's scheme, so OpenAPI still documents the password flow and the
    ``/docs`` "Authorize" button works; its ``__call__`` reads the ``Authorization`` header
    and returns the user (:func:`authenticate_bearer`): one dependency, where the scheme and
    a function of its token would be two.
    """

    # FastAPI's scheme returns the token; this one returns the user it names
    async def __call__(self, request: Request) -> AuthenticatedUser:  # type: ignore[override]
        """The active user of the request's bearer token (401 otherwise)."""
        return await authenticate_bearer(request, await super().__call__(request))


#: The dependency of protected routes (``CurrentUser``): the request's authenticated user. Its
#: scheme keeps the name OpenAPI clients knew it by (FastAPI would name it after the class).
get_current_user = BearerUser(
    tokenUrl="/auth/token", auto_error=False, scheme_name="OAuth2PasswordBearer"
)

CurrentUser = Annotated[AuthenticatedUser, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> AuthenticatedUser:
    """The current user, if an admin.

    Raises:
        ForbiddenError: the user is not an admin (403).
    """
    if not user.is_admin:
        raise ForbiddenError("this route is for admins only")
    return user


AdminUser = Annotated[AuthenticatedUser, Depends(get_admin_user)]
