"""/docs and /openapi.json (issue 18): the Swagger UI page needs no CDN, and APP_DOCS decides
who may read them (public, authenticated with HTTP Basic, off)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from app.core.config import AppSettings
from app.features.auth import service
from app.main import create_app
from tests.app.factories import PASSWORD, create_user, deactivate_user

pytestmark = pytest.mark.postgres

#: Every URL the page loads: src/href attributes and Swagger UI's ``url:`` of the spec.
PAGE_URLS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']""")


def basic(username: str, password: str) -> dict[str, str]:
    """An ``Authorization: Basic`` header, as a browser sends it (UTF-8, RFC 7617)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def failed_logins() -> float:
    labels = {"reason": "credentials"}
    return REGISTRY.get_sample_value("stockcast_failed_logins_total", labels) or 0.0


def docs_client(settings: AppSettings, **overrides: Any) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides), configure_process=False))


@pytest.fixture
def username(app_sessions: Callable[[], Session]) -> str:
    """A user of this test alone (its failed-login counters are its own)."""
    name = f"reader-{uuid.uuid4().hex[:8]}"
    with app_sessions() as session:
        create_user(session, name)
    return name


def test_docs_page_loads_only_local_assets(client: TestClient) -> None:
    """Offline, the page still works: every script, style, icon and the spec it loads are
    URLs of this server, and each answers 200 with a type a browser accepts under nosniff."""
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = {a or b for a, b in PAGE_URLS.findall(page.text)}
    assert urls >= {
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/openapi.json",
    }, urls
    assert "//" not in page.text.replace("://", ""), "a protocol-relative (CDN) URL"
    assert not re.search(r"https?://", page.text), "an absolute URL in the page"
    expected = {
        ".js": "text/javascript",
        ".css": "text/css",
        ".png": "image/png",
        ".json": "application/json",
    }
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        kind = next(t for suffix, t in expected.items() if url.endswith(suffix))
        assert response.headers["content-type"].split(";")[0] == kind, url
        assert response.headers["x-content-type-options"] == "nosniff"
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert len(bundle.content) > 100_000 and b"SwaggerUIBundle" in bundle.content
    assert client.get("/openapi.json").json()["info"]["title"] == "stockcast API"


def test_unknown_asset_and_redoc_are_404(client: TestClient) -> None:
    """Only the Swagger UI files are served from the package folder; no ReDoc page."""
    for url in ("/docs/assets/redoc.standalone.js", "/docs/assets/..%2Fcore.py", "/redoc"):
        assert client.get(url).status_code == 404, url


def test_docs_off_answers_404(settings: AppSettings) -> None:
    """APP_DOCS=off: the page, the spec and the assets do not exist; the API itself works."""
    with docs_client(settings, docs="off") as client:
        for url in ("/docs", "/openapi.json", "/docs/assets/swagger-ui-bundle.js"):
            response = client.get(url)
            assert response.status_code == 404, url
            assert response.json() == {"detail": "not found"}
        assert client.get("/health").status_code == 200


def test_authenticated_docs_ask_the_browser_for_a_password(
    settings: AppSettings, username: str
) -> None:
    """APP_DOCS=authenticated: without credentials 401 with a Basic challenge (the browser
    prompts); an API user's name and password open the page and the spec; a bearer token
    (which a browser never sends to a page) does not."""
    with docs_client(settings, docs="authenticated") as client:
        for url in ("/docs", "/openapi.json"):
            response = client.get(url)
            assert response.status_code == 401, url
            assert response.headers["www-authenticate"].startswith('Basic realm="stockcast')
            assert "HTTP Basic" in response.json()["detail"]
        assert client.get("/docs", headers=basic(username, PASSWORD)).status_code == 200
        spec = client.get("/openapi.json", headers=basic(username, PASSWORD))
        assert spec.status_code == 200 and "/predict/{ticker}" in spec.json()["paths"]
        bearer = client.post("/auth/token", data={"username": username, "password": PASSWORD})
        headers = {"Authorization": f"Bearer {bearer.json()['access_token']}"}
        assert client.get("/docs", headers=headers).status_code == 401
        # the assets are the public Swagger UI release: no password needed
        assert client.get("/docs/assets/swagger-ui.css").status_code == 200


def test_wrong_docs_password_counts_as_a_failed_login(settings: AppSettings, username: str) -> None:
    """A wrong password on /docs is a failed login: counted in the metric, and after the
    per-username limit both /docs and POST /auth/token answer 429, the right password too."""
    before = failed_logins()
    with docs_client(settings, docs="authenticated", login_max_failures_per_user=3) as client:
        wrong = basic(username, "wrong password")
        statuses = [client.get("/docs", headers=wrong).status_code for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        refused = client.get("/openapi.json", headers=basic(username, PASSWORD))
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        login = client.post("/auth/token", data={"username": username, "password": PASSWORD})
        assert login.status_code == 429
    assert failed_logins() - before == 3


def test_docs_credentials_edge_cases(
    settings: AppSettings, app_sessions: Callable[[], Session], username: str
) -> None:
    """A UTF-8 password works (the challenge asks for UTF-8); a malformed Basic header, an
    unknown user and an inactive user get the same 401 challenge, never a 500."""
    accented = f"acento-{uuid.uuid4().hex[:6]}"
    with app_sessions() as session:
        service.create_user(
            session=session, username=accented, password="senha-ação-çõ", is_admin=False
        )
        deactivate_user(session, username)
    with docs_client(settings, docs="authenticated") as client:
        assert client.get("/docs", headers=basic(accented, "senha-ação-çõ")).status_code == 200
        for headers in (
            {"Authorization": "Basic !!!not-base64"},
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()},
            basic("nobody-here", PASSWORD),
            basic(username, PASSWORD),
        ):
            response = client.get("/docs", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Basic")
