"""Limits on failed logins, per username and per client address (the ``limits`` library).

A password guesser is stopped twice: after ``APP_LOGIN_MAX_FAILURES_PER_USER`` wrong
passwords for one username, and after ``APP_LOGIN_MAX_FAILURES_PER_ADDRESS`` failed logins
from one client address (many usernames), each within ``APP_LOGIN_FAILURE_WINDOW_SECONDS``
(a moving window). Then every login for that username or from that address, the right
password included, gets 429 with ``Retry-After`` until the oldest failure leaves the window.
A successful login clears its username's failures.

The counters live in ``APP_RATE_LIMIT_STORAGE_URI``: ``memory://`` (default) keeps them per
worker; ``redis://host:6379/0`` shares them between the workers and replicas of a deployment.
A storage that cannot be reached refuses logins with 503 (a gate fails closed).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.core.config import AppSettings
from app.core.exceptions import RateLimiterUnavailableError, TooManyLoginAttemptsError
from app.core.monitoring import FAILED_LOGINS

logger = logging.getLogger(__name__)

#: The namespace of the counters in a shared storage.
KEY_PREFIX = "stockcast-login"


class LoginLimiter:
    """Failed-login counters of one app, in the storage named by ``storage_uri``.

    Args:
        storage_uri: a ``limits`` storage URI (``memory://``, ``redis://host:port/db``).
        max_failures_per_user: failed logins allowed per username per window.
        max_failures_per_address: failed logins allowed per client address per window.
        window_seconds: the moving window, seconds.
    """

    def __init__(
        self,
        *,
        storage_uri: str,
        max_failures_per_user: int,
        max_failures_per_address: int,
        window_seconds: int,
    ) -> None:
        self.storage_uri = storage_uri
        self._limiter = MovingWindowRateLimiter(
            storage_from_string(storage_uri, wrap_exceptions=True)
        )
        self._per_user = RateLimitItemPerSecond(max_failures_per_user, window_seconds)
        self._per_address = RateLimitItemPerSecond(max_failures_per_address, window_seconds)

    def _keys(
        self, username: str, address: str
    ) -> tuple[tuple[RateLimitItemPerSecond, str, str], ...]:
        return (
            (self._per_user, "user", username),
            (self._per_address, "address", address),
        )

    def check(self, *, username: str, address: str) -> None:
        """Refuse a login attempt while its username or address has used up its failures.

        Raises:
            TooManyLoginAttemptsError: too many recent failures (429, ``Retry-After``).
            RateLimiterUnavailableError: the counters' storage cannot be reached (503).
        """
        try:
            for item, kind, key in self._keys(username, address):
                if not self._limiter.test(item, KEY_PREFIX, kind, key):
                    reset_at = self._limiter.get_window_stats(item, KEY_PREFIX, kind, key)[0]
                    retry_after = max(1, math.ceil(reset_at - time.time()))
                    FAILED_LOGINS.labels(reason="limited").inc()
                    logger.warning("login refused: too many failures for this %s", kind)
                    raise TooManyLoginAttemptsError(retry_after)
        except StorageError as exc:
            raise RateLimiterUnavailableError(self.storage_uri) from exc

    def failed(self, *, username: str, address: str) -> None:
        """Count a failed login against its username and its address."""
        FAILED_LOGINS.labels(reason="credentials").inc()
        try:
            for item, kind, key in self._keys(username, address):
                self._limiter.hit(item, KEY_PREFIX, kind, key)
        except StorageError as exc:
            raise RateLimiterUnavailableError(self.storage_uri) from exc

    def succeeded(self, *, username: str) -> None:
        """Forget the username's failures (its user just proved the password)."""
        try:
            self._limiter.clear(self._per_user, KEY_PREFIX, "user", username)
        except StorageError as exc:
            raise RateLimiterUnavailableError(self.storage_uri) from exc


def make_login_limiter(settings: AppSettings) -> LoginLimiter:
    """The app's limiter on ``APP_RATE_LIMIT_STORAGE_URI`` (connects on first use)."""
    return LoginLimiter(
        storage_uri=settings.rate_limit_storage_uri,
        max_failures_per_user=settings.login_max_failures_per_user,
        max_failures_per_address=settings.login_max_failures_per_address,
        window_seconds=settings.login_failure_window_seconds,
    )


def client_address(request: Request) -> str:
    """The client's IP address, the per-address limit's key (``unknown`` without one)."""
    return request.client.host if request.client else "unknown"


async def get_login_limiter(request: Request) -> LoginLimiter:
    """The limiter built by the app's lifespan (``async``: no thread-pool hop)."""
    limiter: LoginLimiter = request.app.state.login_limiter
    return limiter


LoginLimiterDep = Annotated[LoginLimiter, Depends(get_login_limiter)]
