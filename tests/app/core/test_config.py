"""The app refuses to start with an unsafe secret key."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core.config import AppSettings, get_settings
from app.main import create_app


def _settings(**values: Any) -> AppSettings:
    return AppSettings(_env_file=None, **values)


@pytest.mark.parametrize("key", ["change-me", "CHANGEME", "secret", " changethis "])
def test_placeholder_secret_key_is_refused(key: str) -> None:
    """A placeholder key is refused in any environment, with a hint to generate one."""
    for environment in ("development", "production"):
        with pytest.raises(ValidationError, match="placeholder"):
            _settings(secret_key=key, environment=environment)


def test_short_secret_key_is_refused() -> None:
    """A key shorter than 32 bytes is refused, saying how long it is."""
    with pytest.raises(ValidationError, match="31 bytes; at least 32"):
        _settings(secret_key="k" * 31, environment="production")


def test_production_requires_a_secret_key() -> None:
    """Outside development the key is required."""
    with pytest.raises(ValidationError, match="APP_SECRET_KEY is required"):
        _settings(environment="production")


def test_development_without_key_generates_one_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    """In development a random per-process key is generated (different each time) with a warning."""
    with caplog.at_level(logging.WARNING, logger="app.core.config"):
        first, second = _settings(), _settings()
    assert len(first.signing_key.encode()) >= 32
    assert first.signing_key != second.signing_key
    assert "APP_SECRET_KEY is not set" in caplog.text


def test_app_refuses_to_start_with_a_placeholder_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """APP_SECRET_KEY=change-me in the environment: the server does not start."""
    monkeypatch.setenv("APP_SECRET_KEY", "change-me")
    get_settings.cache_clear()
    try:
        app = create_app(configure_process=False)
        with pytest.raises(ValidationError, match="placeholder"), TestClient(app):
            pass
    finally:
        get_settings.cache_clear()


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """APP_* and the shared DATABASE_URL / MLFLOW_TRACKING_URI configure the app."""
    monkeypatch.setenv("APP_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("APP_MAX_HORIZON", "10")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    settings = _settings()
    assert settings.max_horizon == 10
    assert settings.database_url == "sqlite:///x.db"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"


def test_several_workers_need_a_shared_secret_key() -> None:
    """With APP_WORKERS > 1 a per-process random key would break tokens: refused."""
    with pytest.raises(ValidationError, match="APP_WORKERS > 1"):
        _settings(workers=2)


def test_psi_thresholds_must_be_ordered() -> None:
    """APP_PSI_MODERATE at or above APP_PSI_DRIFT would make 'moderate' unreachable: refused."""
    with pytest.raises(ValidationError, match="APP_PSI_MODERATE"):
        _settings(secret_key="k" * 40, psi_moderate=0.3, psi_drift=0.25)


def test_docs_default_public_in_development_authenticated_in_production() -> None:
    """APP_DOCS unset: anyone may read the docs in development; in production only API
    users; an explicit value wins in both, and an unknown one is refused, naming the choices."""
    key = "k" * 32
    assert _settings().docs == "public"
    assert (
        _settings(environment="production", secret_key=key, metrics_port=9100).docs
        == "authenticated"
    )
    assert (
        _settings(environment="production", secret_key=key, metrics_port=9100, docs="public").docs
        == "public"
    )
    assert _settings(docs="off").docs == "off"
    with pytest.raises(ValidationError, match="'public', 'authenticated' or 'off'"):
        _settings(docs="private")


def test_docs_is_read_from_app_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    """APP_DOCS in the environment sets it; an empty value means the default."""
    monkeypatch.setenv("APP_DOCS", "off")
    assert _settings().docs == "off"
    monkeypatch.setenv("APP_DOCS", "")
    assert _settings().docs == "public"
