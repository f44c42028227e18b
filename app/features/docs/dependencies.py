"""Who may read the docs (``APP_DOCS``): everyone, API users (HTTP Basic), or nobody (404).

HTTP Basic, because a browser asks for it by itself: ``/docs`` answers 401 with a ``Basic``
challenge, the browser prompts for a name and password, then sends them with the page and its
``/openapi.json`` fetch (same origin, same protection space). They are checked like a login
(:func:`app.features.auth.service.authenticate_limited`: the same Argon2 hashes, a failure
counted by the same failed-login limits). A bearer token cannot serve here, since a browser
never sends one when it opens a page.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

from fastapi import Request

from app.core.database import get_session_factory
from app.core.exceptions import DocsCredentialsError, DocsNotFoundError, InvalidCredentialsError
from app.features.auth import service
from app.features.auth.dependencies import SettingsDep
from app.features.auth.rate_limit import LoginLimiterDep, client_address

_ASK = "the API docs need an API user's username and password (HTTP Basic)"


class BasicCredentials(NamedTuple):
    """A username and password from an ``Authorization: Basic`` header."""

    username: str
    password: str


def basic_credentials(authorization: str | None) -> BasicCredentials | None:
    """The credentials of an ``Authorization`` header, or None without a ``Basic`` one.

    Decoded as UTF-8, which the challenge asks browsers for (RFC 7617 section 2.1; FastAPI's
    ``HTTPBasic`` decodes ASCII only, refusing non-ASCII passwords).

    Raises:
        DocsCredentialsError: a ``Basic`` header that is not base64 of UTF-8 ``user:password``.
    """
    scheme, _, param = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise DocsCredentialsError(_ASK) from None
    username, separator, password = decoded.partition(":")
    if not separator:
        raise DocsCredentialsError(_ASK)
    return BasicCredentials(username, password)


async def require_docs_enabled(settings: SettingsDep) -> None:
    """Let the request through unless ``APP_DOCS=off``.

    Raises:
        DocsNotFoundError: the docs are off (404).
    """
    if settings.docs == "off":
        raise DocsNotFoundError


def require_docs_access(request: Request, settings: SettingsDep, limiter: LoginLimiterDep) -> None:
    """Let the request through as ``APP_DOCS`` says: ``public`` always, ``authenticated`` with
    an active API user's HTTP Basic credentials, ``off`` never.

    Sync: the password check (Argon2, and the user's row) runs in the thread pool.

    Raises:
        DocsNotFoundError: the docs are off (404).
        DocsCredentialsError: no, malformed or wrong credentials (401 with a ``Basic``
            challenge); a wrong password counts as a failed login.
        TooManyLoginAttemptsError: too many failed logins for the username or address (429).
        RateLimiterUnavailableError: the failed-login counters cannot be reached (503).
    """
    if settings.docs == "off":
        raise DocsNotFoundError
    if settings.docs == "public":
        return
    credentials = basic_credentials(request.headers.get("Authorization"))
    if credentials is None:
        raise DocsCredentialsError(_ASK)
    with get_session_factory(request)() as session:
        try:
            service.authenticate_limited(
                session=session,
                limiter=limiter,
                username=credentials.username,
                password=credentials.password,
                address=client_address(request),
            )
        except InvalidCredentialsError as exc:
            raise DocsCredentialsError(exc.detail) from None
