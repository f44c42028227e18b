"""Authentication use cases: check a password, issue a token, create a user."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy.orm import Session

from app.core import security
from app.core.config import AppSettings
from app.core.exceptions import InvalidCredentialsError, InvalidUserError
from app.features.auth import crud
from app.features.auth.rate_limit import LoginLimiter
from app.models.user import User
from app.schemas.token import Token

#: Usernames: 3-64 letters, digits, ``.``, ``_``, ``-``.
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{3,64}$")
MIN_PASSWORD_LENGTH = 8

_BAD_LOGIN = "incorrect username or password"


def authenticate(*, session: Session, username: str, password: str) -> User:
    """The active user with this username and password.

    An unknown username still costs one Argon2 verification (against a dummy hash), so the
    response time does not reveal which usernames exist.

    A username that no account can have (see :data:`USERNAME_PATTERN`; a NUL byte, which
    Postgres text cannot hold, among others) is refused like an unknown one, without a query.

    Raises:
        InvalidCredentialsError: unknown or impossible user, wrong password or inactive
            account (one message for all).
    """
    possible = USERNAME_PATTERN.fullmatch(username) is not None
    user = crud.get_by_username(session, username=username) if possible else None
    if user is None:
        security.verify_password(password, security.dummy_hash())
        raise InvalidCredentialsError(_BAD_LOGIN)
    if not security.verify_password(password, user.password_hash) or not user.is_active:
        raise InvalidCredentialsError(_BAD_LOGIN)
    return user


def authenticate_limited(
    *, session: Session, limiter: LoginLimiter, username: str, password: str, address: str
) -> User:
    """:func:`authenticate` under the failed-login limits of ``limiter``: every password login
    (``POST /auth/token``, HTTP Basic on ``/docs``) goes through here, so each counts alike.

    Args:
        session: a database session.
        limiter: the app's failed-login counters.
        username: the username given.
        password: the password given.
        address: the client's IP address (the per-address limit's key).

    Raises:
        TooManyLoginAttemptsError: too many recent failures for the username or address (429),
            checked before the password.
        InvalidCredentialsError: as :func:`authenticate`; counted as a failure.
        RateLimiterUnavailableError: the counters' storage cannot be reached (503).
    """
    limiter.check(username=username, address=address)
    try:
        user = authenticate(session=session, username=username, password=password)
    except InvalidCredentialsError:
        limiter.failed(username=username, address=address)
        raise
    limiter.succeeded(username=username)
    return user


def issue_token(*, user: User, settings: AppSettings) -> Token:
    """A bearer token for ``user`` valid ``APP_ACCESS_TOKEN_EXPIRE_MINUTES`` minutes."""
    expires = dt.timedelta(minutes=settings.access_token_expire_minutes)
    token = security.create_access_token(
        user.username, secret_key=settings.signing_key, expires_in=expires
    )
    return Token(access_token=token, expires_in=int(expires.total_seconds()))


def create_user(*, session: Session, username: str, password: str, is_admin: bool) -> User:
    """Create and commit a user with an Argon2id password hash.

    Raises:
        InvalidUserError: malformed username, password shorter than 8 characters, or the
            username is taken.
    """
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidUserError(
            f"invalid username {username!r}: use 3-64 letters, digits, '.', '_' or '-'"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidUserError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if crud.get_by_username(session, username=username) is not None:
        raise InvalidUserError(f"user {username!r} already exists")
    user = crud.create(
        session,
        username=username,
        password_hash=security.hash_password(password),
        is_admin=is_admin,
    )
    session.commit()
    return user
