"""Failed-login limits (issue 18, failure 6): a password guesser gets 429, the right password
included, until the window passes; in memory and in the Redis a deployment shares.

The window passes on a moved clock: the limiter (and ``limits``' storages, which stamp each
failure with ``time.time()`` of their module) read :class:`MovableClock` in these tests.
"""

from __future__ import annotations

import time
import types
import uuid
from typing import Any

import limits.storage.memory
import limits.storage.redis
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.core.config import AppSettings
from app.features.auth import rate_limit
from app.main import create_app
from tests.app.factories import PASSWORD, create_user

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REDIS_URI = "redis://127.0.0.1:6379/0"


class MovableClock:
    """The wall clock plus an offset that a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> MovableClock:
    """The clock of the limiter and of its storages, for this test."""
    movable = MovableClock()
    fake_time = types.SimpleNamespace(time=movable.time)
    for module in (rate_limit, limits.storage.memory, limits.storage.redis):
        monkeypatch.setattr(module, "time", fake_time)
    return movable


def failed_logins(reason: str) -> float:
    return REGISTRY.get_sample_value("stockcast_failed_logins_total", {"reason": reason}) or 0.0


@pytest.fixture
def username(app_sessions: Any) -> str:
    """A user of this test alone (the counters outlive an app in Redis)."""
    name = f"guess-{uuid.uuid4().hex[:8]}"
    with app_sessions() as session:
        create_user(session, name)
    return name


def limited_client(settings: AppSettings, **overrides: Any) -> TestClient:
    values = {
        "login_max_failures_per_user": 5,
        "login_max_failures_per_address": 1_000,
        "login_failure_window_seconds": 60,
        **overrides,
    }
    return TestClient(create_app(settings.model_copy(update=values), configure_process=False))


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URI, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory://", REDIS_URI])
def storage_uri(request: pytest.FixtureRequest) -> str:
    uri: str = request.param
    if uri.startswith("redis") and not redis_available():
        pytest.fail("Redis is not reachable at 127.0.0.1:6379 (the tests need it)")
    return uri


def login(client: TestClient, username: str, password: str) -> Any:
    return client.post("/auth/token", data={"username": username, "password": password})


def test_a_burst_of_wrong_passwords_locks_the_username_until_the_window_passes(
    settings: AppSettings, username: str, storage_uri: str, clock: MovableClock
) -> None:
    """20 wrong passwords: 401s, then 429 with Retry-After; the right password is refused
    too until the window has passed, then it works again."""
    before = failed_logins("credentials")
    with limited_client(settings, rate_limit_storage_uri=storage_uri) as client:
        statuses = [login(client, username, "wrong password").status_code for _ in range(20)]
        assert statuses == [401] * 5 + [429] * 15
        refused = login(client, username, PASSWORD)
        assert refused.status_code == 429
        retry_after = int(refused.headers["Retry-After"])
        assert 50 <= retry_after <= 60
        assert "too many failed logins" in refused.json()["detail"]
        clock.offset += retry_after - 2
        assert login(client, username, PASSWORD).status_code == 429
        clock.offset += 3
        assert login(client, username, PASSWORD).status_code == 200
    assert failed_logins("credentials") - before == 5


def test_many_usernames_from_one_address_are_limited(
    settings: AppSettings, app_sessions: Any
) -> None:
    """Guessing across usernames from one address is stopped by the per-address limit."""
    with limited_client(settings, login_max_failures_per_address=10) as client:
        statuses = [login(client, f"nobody-{i}", "wrong password").status_code for i in range(12)]
        assert statuses == [401] * 10 + [429] * 2
        assert login(client, "ana", PASSWORD).status_code == 429


def test_a_successful_login_clears_the_username_failures(
    settings: AppSettings, username: str
) -> None:
    """A user who mistyped a few times and then logged in starts afresh."""
    with limited_client(settings) as client:
        for _ in range(4):
            assert login(client, username, "typo").status_code == 401
        assert login(client, username, PASSWORD).status_code == 200
        for _ in range(4):
            assert login(client, username, "typo").status_code == 401
        assert login(client, username, PASSWORD).status_code == 200


def test_an_unreachable_limiter_storage_refuses_logins_with_503(
    settings: AppSettings, username: str
) -> None:
    """With its Redis down the limiter fails closed: 503 and Retry-After, never a free pass."""
    with limited_client(settings, rate_limit_storage_uri="redis://127.0.0.1:9/0") as client:
        response = login(client, username, PASSWORD)
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "9" not in response.json()["detail"]


def test_failed_logins_are_counted_in_metrics(client: TestClient, users: dict[str, str]) -> None:
    """GET /metrics shows refused logins by reason."""
    login(client, users["user"], "wrong password")
    body = client.get("/metrics").text
    assert 'stockcast_failed_logins_total{reason="credentials"}' in body
