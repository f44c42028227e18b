"""Who may read ``GET /metrics`` (issue 18): a bearer token (``APP_METRICS_TOKEN``), a port of
its own (``APP_METRICS_PORT``), and the production default that refuses neither being set."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core.config import AppSettings
from app.core.monitoring import serve_metrics_port
from app.main import create_app
from tests.app.conftest import TICKER
from tests.app.core.test_monitoring import _sample
from tests.app.factories import make_settings
from tests.processes import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOKEN = "metrics-token-" + "m" * 32


@pytest.fixture(scope="module")
def token_client(settings: AppSettings) -> Iterator[TestClient]:
    """The app with ``APP_METRICS_TOKEN`` set."""
    guarded = make_settings(
        database_url=settings.database_url,
        tracking_uri=settings.mlflow_tracking_uri,
        metrics_token=TOKEN,
    )
    with TestClient(create_app(guarded, configure_process=False)) as test_client:
        yield test_client


def test_without_the_token_metrics_are_401_with_a_bearer_challenge(
    token_client: TestClient,
) -> None:
    """No header, another scheme or a wrong token: 401, ``WWW-Authenticate: Bearer``, and
    not one metric in the answer."""
    for headers in (
        {},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer "},
    ):
        response = token_client.get("/metrics", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert "APP_METRICS_TOKEN" in response.json()["detail"]
        assert "http_requests" not in response.text


def test_with_the_token_metrics_are_200_text_plain(token_client: TestClient) -> None:
    """The right token gets the Prometheus text format, HTTP metrics included."""
    assert token_client.get("/health").status_code == 200
    response = token_client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'http_requests_total{handler="/health",method="GET",status="200"}' in response.text


def test_other_routes_need_no_metrics_token(token_client: TestClient) -> None:
    """The token guards /metrics only: /health answers without it."""
    assert token_client.get("/health").status_code == 200


def test_with_a_metrics_port_the_api_port_has_no_metrics(settings: AppSettings) -> None:
    """``APP_METRICS_PORT`` moves the metrics off the API's port: 404 there; the metrics
    port answers 200 text/plain with the same counters."""
    port = free_port()
    moved = make_settings(
        database_url=settings.database_url,
        tracking_uri=settings.mlflow_tracking_uri,
        metrics_port=port,
    )
    with TestClient(create_app(moved, configure_process=False)) as test_client:
        assert test_client.get("/health").status_code == 200
        assert test_client.get("/metrics").status_code == 404
        server, thread = serve_metrics_port("127.0.0.1", port)
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        finally:
            server.shutdown()
            thread.join(timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'http_requests_total{handler="/health",method="GET",status="200"}' in response.text


def _settings(**values: object) -> AppSettings:
    return AppSettings(_env_file=None, secret_key="k" * 40, **values)  # type: ignore[arg-type]


def test_production_refuses_open_metrics() -> None:
    """Production with neither a metrics token nor a metrics port does not start: the
    error names both settings."""
    with pytest.raises(ValidationError, match=r"APP_METRICS_PORT.*APP_METRICS_TOKEN"):
        _settings(environment="production")
    assert _settings(environment="production", metrics_token=TOKEN).metrics_token is not None
    assert _settings(environment="production", metrics_port=9100).metrics_port == 9100
    assert _settings(environment="development").metrics_token is None  # open, as before


def test_a_weak_metrics_token_or_a_clashing_port_is_refused() -> None:
    """A placeholder or short token, or the API's own port as metrics port: a clear error."""
    with pytest.raises(ValidationError, match="APP_METRICS_TOKEN"):
        _settings(metrics_token="change-me")
    with pytest.raises(ValidationError, match="APP_METRICS_TOKEN"):
        _settings(metrics_token="short")
    with pytest.raises(ValidationError, match="must differ from APP_PORT"):
        _settings(metrics_port=8000)


def test_the_access_log_is_off_in_production_unless_asked() -> None:
    """``APP_ACCESS_LOG`` unset: a line per request in development, none in production;
    set, it wins in either."""
    assert _settings().access_log_enabled is True
    assert _settings(environment="production", metrics_port=9100).access_log_enabled is False
    assert _settings(
        environment="production", metrics_port=9100, access_log=True
    ).access_log_enabled
    assert _settings(access_log=False).access_log_enabled is False


def _requests_counted(client: TestClient, **labels: str) -> float:
    text = client.get("/metrics").text
    return _sample(text, "http_requests", **labels)


def test_http_requests_are_labelled_by_route_template_or_none(
    client: TestClient, user_headers: dict[str, str]
) -> None:
    """Every request counts once under its route template: a 405 under the route whose path
    matched, a 413 refused before routing under the route it was sent to, an unknown path
    under ``none``; scrapes of /metrics are not counted."""
    cases = [
        ("GET", f"/predict/{TICKER}?horizon=1", {}, "/predict/{ticker}", "200"),
        ("DELETE", "/health", {}, "/health", "405"),
        ("POST", f"/predict/{TICKER}", {"Content-Length": "99999999"}, "/predict/{ticker}", "413"),
        ("GET", "/no/such/path", {}, "none", "404"),
    ]
    for method, path, headers, handler, status in cases:
        before = _requests_counted(client, handler=handler, method=method, status=status)
        response = client.request(method, path, headers={**user_headers, **headers})
        assert response.status_code == int(status), (path, response.text)
        after = _requests_counted(client, handler=handler, method=method, status=status)
        assert after == before + 1, (method, path)
    assert _requests_counted(client, handler="/metrics") == 0
