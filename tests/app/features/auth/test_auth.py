"""Login and bearer tokens: what a client sees with good and bad credentials."""

from __future__ import annotations

import datetime as dt
import time

import jwt
import pytest
from fastapi.testclient import TestClient

from app.core import security
from app.core.exceptions import TokenError
from tests.app.conftest import TICKER
from tests.app.factories import PASSWORD, SECRET_KEY

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PROTECTED = [("GET", f"/predict/{TICKER}"), ("POST", f"/predict/{TICKER}"), ("GET", "/auth/me")]


def test_login_returns_a_bearer_token_for_the_user(client: TestClient, users) -> None:
    """POST /auth/token with the right password returns a token that names the user."""
    response = client.post("/auth/token", data={"username": "ana", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    me = client.get("/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["username"] == "ana" and me.json()["is_admin"] is False
    claims = jwt.decode(body["access_token"], SECRET_KEY, algorithms=["HS256"])
    assert claims["sub"] == "ana" and claims["exp"] - claims["iat"] == 3600


def test_wrong_password_and_unknown_user_get_the_same_401(client: TestClient, users) -> None:
    """A wrong password and an unknown username look identical to the client."""
    wrong = client.post("/auth/token", data={"username": "ana", "password": "wrong password"})
    unknown = client.post("/auth/token", data={"username": "nobody", "password": "whatever1"})
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert wrong.json() == unknown.json() == {"detail": "incorrect username or password"}


def test_unknown_user_login_still_verifies_a_hash(
    client: TestClient, users, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For an unknown user the dummy hash is verified, so timing does not reveal usernames."""
    calls: list[str] = []
    real_verify = security.verify_password

    def spy(password: str, password_hash: str) -> bool:
        calls.append(password_hash)
        return real_verify(password, password_hash)

    monkeypatch.setattr(security, "verify_password", spy)
    response = client.post("/auth/token", data={"username": "nobody", "password": "whatever1"})
    assert response.status_code == 401
    assert calls == [security.dummy_hash()]
    assert calls[0].startswith("$argon2id$")


def test_login_without_form_fields_is_422(client: TestClient) -> None:
    """A login without username/password is refused with 422."""
    assert client.post("/auth/token", data={"username": "ana"}).status_code == 422


def _token(claims: dict[str, object], key: str = SECRET_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


BAD_TOKENS = {
    "garbage": "not-a-jwt",
    "expired": _token({"sub": "ana", "iat": _now() - dt.timedelta(hours=2),
                       "exp": _now() - dt.timedelta(hours=1)}),
    "wrongly-signed": _token({"sub": "ana", "exp": _now() + dt.timedelta(hours=1)},
                             key="another-key-of-at-least-32-bytes-long!!"),
    "alg-none": jwt.encode({"sub": "ana", "exp": _now() + dt.timedelta(hours=1)},
                           None, algorithm="none"),  # type: ignore[arg-type]
    "hs512": _token({"sub": "ana", "exp": _now() + dt.timedelta(hours=1)}, algorithm="HS512"),
    "no-exp": _token({"sub": "ana"}),
    "no-sub": _token({"exp": _now() + dt.timedelta(hours=1)}),
    "unknown-user": _token({"sub": "ghost", "exp": _now() + dt.timedelta(hours=1)}),
}  # fmt: skip


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("kind", [None, *BAD_TOKENS])
def test_bad_or_missing_token_is_401_with_bearer_challenge(
    client: TestClient, users, method: str, path: str, kind: str | None
) -> None:
    """No token, garbage, expired, wrongly signed, alg=none ...: 401 + WWW-Authenticate: Bearer."""
    headers = {} if kind is None else {"Authorization": f"Bearer {BAD_TOKENS[kind]}"}
    response = client.request(method, path, headers=headers, json={"closes": [1.0] * 20})
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    if kind == "expired":
        assert "expired" in response.json()["detail"]


def test_token_of_inactive_user_is_401(settings, users, app_sessions) -> None:
    """Without the user cache (APP_USER_CACHE_SECONDS=0) a deactivated account's token
    stops working at once."""
    from app.main import create_app  # noqa: PLC0415
    from tests.app.factories import create_user, deactivate_user  # noqa: PLC0415

    with app_sessions() as session:
        create_user(session, "leaver")
    uncached = settings.model_copy(update={"user_cache_seconds": 0})
    with TestClient(create_app(uncached, configure_process=False)) as client:
        token = client.post("/auth/token", data={"username": "leaver", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert client.get("/auth/me", headers=headers).status_code == 200
        with app_sessions() as session:
            deactivate_user(session, "leaver")
        response = client.get("/auth/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        login = client.post("/auth/token", data={"username": "leaver", "password": PASSWORD})
        assert login.status_code == 401


def test_non_admin_on_admin_route_is_403(client: TestClient, user_headers) -> None:
    """A regular user may not reload models: 403."""
    response = client.post("/models/reload", headers=user_headers)
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


def test_admin_route_without_token_is_401(client: TestClient) -> None:
    """Without a token the admin route answers 401, not 403."""
    response = client.post("/models/reload")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


# -- verified tokens are remembered until their exp (app.core.security.VerifiedTokens) -------


def test_a_tampered_copy_of_a_remembered_token_is_refused(client: TestClient, users) -> None:
    """Only the exact string verified is remembered: a changed signature or payload is 401."""
    token = security.create_access_token(
        "ana", secret_key=SECRET_KEY, expires_in=dt.timedelta(minutes=7)
    )
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    header, payload, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(
        b'{"sub":"root","exp":' + str(int(time.time()) + 600).encode() + b"}"
    ).decode()
    tampered = [
        f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
        f"{header}.{forged_payload}.{signature}",
    ]
    for bad in tampered:
        response = client.get("/auth/me", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad
        assert response.json()["detail"] == "the token is invalid"


def test_a_token_is_verified_once_then_remembered_until_its_exp() -> None:
    """One HMAC check per token and worker; verified again, and refused as expired (the API's
    401 "the token has expired"), once the clock reaches its exp: no real waiting."""
    now = [time.time()]
    tokens = security.VerifiedTokens(secret_key=SECRET_KEY, maxsize=10, timer=lambda: now[0])
    token = security.create_access_token(
        "ana", secret_key=SECRET_KEY, expires_in=dt.timedelta(minutes=5)
    )
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    calls = 0
    real_decode = jwt.decode

    def counting_decode(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jwt, "decode", counting_decode)
        assert [tokens.subject(token) for _ in range(5)] == ["ana"] * 5
        assert calls == 1 and len(tokens) == 1
        now[0] = expires - 0.1
        assert tokens.subject(token) == "ana" and calls == 1  # still from memory
        now[0] = expires  # the clock reaches exp: the entry is gone, the token refused
        with pytest.raises(TokenError, match="the token has expired"):
            tokens.subject(token)
        assert calls == 2 and len(tokens) == 0
        with pytest.raises(TokenError):
            tokens.subject("not-a-jwt")
        with pytest.raises(TokenError):
            tokens.subject("not-a-jwt")
        assert calls == 4 and len(tokens) == 0  # refused tokens are checked every time


def test_openapi_documents_the_password_flow_on_every_protected_route(client: TestClient) -> None:
    """/docs' "Authorize" button: the protected routes require the one OAuth2 password-flow
    scheme (token URL /auth/token) under its usual name; login and health do not."""
    spec = client.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/auth/token"
    required: list[dict[str, list[str]]] = [{"OAuth2PasswordBearer": []}]
    for path, method in [
        ("/predict/{ticker}", "get"),
        ("/predict/{ticker}", "post"),
        ("/auth/me", "get"),
        ("/models/reload", "post"),
    ]:
        assert spec["paths"][path][method]["security"] == required, (path, method)
    assert "security" not in spec["paths"]["/auth/token"]["post"]
    assert "security" not in spec["paths"]["/health"]["get"]
    horizon = next(
        p for p in spec["paths"]["/predict/{ticker}"]["get"]["parameters"] if p["name"] == "horizon"
    )
    assert horizon["in"] == "query" and horizon["schema"]["default"] == 1
