"""``CurrentUser`` and ``AdminUser``: the bearer-token dependencies of protected routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from app.core import security
from app.core.config import AppSettings
from app.core.database import SessionDep
from app.core.exceptions import ForbiddenError, InvalidCredentialsError
from app.features.auth import crud
from app.models.user import User

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


async def get_app_settings(request: Request) -> AppSettings:
    """The settings of the running app (``async``: no I/O, so no thread-pool hop)."""
    settings: AppSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[AppSettings, Depends(get_app_settings)]


def get_current_user(
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> User:
    """The active user named by a valid bearer token.

    Raises:
        InvalidCredentialsError: no token, or a malformed, expired, wrongly signed or
            ``alg=none`` token, or a user that no longer exists or is inactive (401).
    """
    if not token:
        raise InvalidCredentialsError(
            "not authenticated: send 'Authorization: Bearer <token>' "
            "(get one from POST /auth/token)"
        )
    try:
        username = security.decode_access_token(token, secret_key=settings.signing_key)
    except security.TokenError as exc:
        raise InvalidCredentialsError(str(exc)) from exc
    user = crud.get_by_username(session, username=username)
    if user is None or not user.is_active:
        raise InvalidCredentialsError("the token's user does not exist or is inactive")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin_user(user: CurrentUser) -> User:
    """The current user, if an admin.

    Raises:
        ForbiddenError: the user is not an admin (403).
    """
    if not user.is_admin:
        raise ForbiddenError("this route is for admins only")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]
