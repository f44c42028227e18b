"""The API's edge as a client sees it: body limit, headers, NUL bytes, unexpected errors, spec.

Each case reproduces a failure of issue 18 (the number in the test's docstring).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from app.core.config import AppSettings
from app.main import create_app
from tests.app.conftest import LOOKBACK, TICKER
from tests.app.factories import PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_a_body_over_the_limit_is_413_unread(
    client: TestClient, user_headers: dict[str, str], settings: AppSettings
) -> None:
    """Failure 4: an 11 MB body got an 11 MB 422 after seconds of work; now a short 413."""
    body = b'{"closes": [' + b"1.0," * 3_000_000 + b"1.0]}"
    response = client.post(
        f"/predict/{TICKER}",
        content=body,
        headers={**user_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert str(settings.max_body_bytes) in response.json()["detail"]
    assert len(response.content) < 200


def test_a_chunked_body_over_the_limit_is_413(
    client: TestClient, user_headers: dict[str, str], settings: AppSettings
) -> None:
    """Without Content-Length (chunked) the limit holds all the same."""

    def chunks() -> Iterator[bytes]:
        yield b'{"closes": ['
        for _ in range(settings.max_body_bytes // 4_000 + 1):
            yield b"1.0," * 1_000
        yield b"1.0]}"

    response = client.post(
        f"/predict/{TICKER}",
        content=chunks(),
        headers={**user_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413


def test_a_chunked_body_under_the_limit_is_served(
    client: TestClient, user_headers: dict[str, str]
) -> None:
    """A legal chunked body reaches the route whole."""

    def chunks() -> Iterator[bytes]:
        yield b'{"closes": ['
        yield ", ".join(str(30.0 + i) for i in range(LOOKBACK)).encode()
        yield b"]}"

    response = client.post(
        f"/predict/{TICKER}",
        content=chunks(),
        headers={**user_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "form",
    [
        {"username": "ana\x00", "password": PASSWORD},
        {"username": "\x00", "password": "x"},
        {"username": "ana", "password": "pass\x00word"},
    ],
    ids=["nul-in-username", "nul-username", "nul-in-password"],
)
def test_a_nul_byte_in_credentials_is_401(
    client: TestClient, users: dict[str, str], form: dict[str, str]
) -> None:
    """Failure 3: a NUL in the username was a 500 with a traceback; now the usual 401."""
    response = client.post("/auth/token", data=form)
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": "incorrect username or password"}
    # the connection still serves the next request
    assert client.post("/auth/token", data={"username": "ana", "password": PASSWORD}).is_success


def test_every_response_carries_the_security_headers(
    client: TestClient, user_headers: dict[str, str]
) -> None:
    """Failure 7: no nosniff header; now on successes and errors alike."""
    for response in (
        client.get("/health"),
        client.get("/auth/me", headers=user_headers),
        client.get("/auth/me"),
        client.get("/no-such-route"),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_token_response_is_not_cacheable(client: TestClient, users: dict[str, str]) -> None:
    """Failure 7: RFC 6749 section 5.1 wants no-store on a response holding a token."""
    response = client.post("/auth/token", data={"username": "ana", "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


def test_an_unexpected_error_is_a_plain_500_without_internals(settings: AppSettings) -> None:
    """An error no handler knows: JSON 500 with no traceback, and the next request works."""
    app = create_app(settings, configure_process=False)
    router = APIRouter()

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: SELECT * FROM app_user")

    app.include_router(router)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom")
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error"}
        assert "secret" not in response.text
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert test_client.get("/health").status_code == 200


def test_openapi_documents_400_and_metrics_as_text(client: TestClient) -> None:
    """Failure 8: the 400 of unparseable bodies was undocumented; /metrics said JSON."""
    spec: dict[str, Any] = client.get("/openapi.json").json()
    for path in ("/predict/{ticker}", "/auth/token"):
        assert "400" in spec["paths"][path]["post"]["responses"], path
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    response = client.post(
        "/auth/token",
        content=b"\xff\xfe",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert response.status_code == 400
