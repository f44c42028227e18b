"""Settings of the API (environment prefix ``APP_``).

``DATABASE_URL`` and ``MLFLOW_TRACKING_URI`` are shared with the other layers and read without
prefix. The secret key that signs access tokens is required outside development; a placeholder
(``change-me``, ``secret`` ...) or a key shorter than 32 bytes is refused in every environment,
so the app does not start with a guessable key.
"""

from __future__ import annotations

import logging
import secrets
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from app.core.exceptions import InsecureSecretKeyError
from common.drift import DRIFT_WINDOW_BARS, PSI_DRIFT, PSI_MODERATE, STALE_AFTER_BARS
from common.settings import DEFAULT_MLFLOW_TRACKING_URI, LayerSettings

logger = logging.getLogger(__name__)

#: Minimum length of the token-signing key, bytes (HS256 wants at least its 256-bit output).
MIN_SECRET_KEY_BYTES = 32
#: Values copied from examples and tutorials that must never sign real tokens.
PLACEHOLDER_SECRETS = frozenset(
    {"change-me", "changeme", "change_me", "changethis", "secret", "secret-key", "your-secret-key"}
)
#: The environment variable that switches prometheus_client to multiprocess mode; here, not in
#: app.core.monitoring, so ``serve`` can set it before anything imports prometheus_client.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Default ``APP_MAX_BODY_BYTES``: 1 MiB, four times the largest legal body (10,000 closes).
DEFAULT_MAX_BODY_BYTES = 1_048_576
#: The largest ``APP_MAX_HORIZON`` accepted, trading days (about a year).
HORIZON_LIMIT = 365
#: ``APP_DOCS``: who may read the API docs (``/docs``, ``/openapi.json``).
DocsAccess = Literal["public", "authenticated", "off"]


class AppSettings(LayerSettings):
    """API settings; see ``.env.example`` (section "API") for every variable."""

    model_config = SettingsConfigDict(env_prefix="APP_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = Field(
        default="development",
        description="production requires APP_SECRET_KEY; development generates one per process",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="HS256 key signing access tokens, >= 32 bytes "
        '(python -c "import secrets; print(secrets.token_urlsafe(48))")',
    )
    access_token_expire_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)
    max_horizon: int = Field(
        default=30, ge=1, le=HORIZON_LIMIT, description="largest horizon, trading days"
    )
    model_poll_seconds: float = Field(
        default=60.0, ge=0, description="registry polling interval for new champions; 0 = off"
    )
    model_startup_wait_seconds: float = Field(
        default=0.0,
        ge=0,
        description="seconds startup waits for the first model load before serving; 0 = "
        "serve at once (the models load in the background; /ready says 503 until they have)",
    )
    registry_timeout_seconds: float = Field(
        default=10.0, gt=0, description="timeout of one MLflow HTTP request, seconds"
    )
    registry_max_retries: int = Field(
        default=2, ge=0, le=10, description="retries of a failed MLflow HTTP request"
    )
    reload_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="POST /models/reload answers 503 after this many seconds without the "
        "registry's answer (the reload goes on in the background)",
    )
    mlflow_tracking_uri: str = Field(
        default=DEFAULT_MLFLOW_TRACKING_URI, validation_alias="MLFLOW_TRACKING_URI"
    )
    db_pool_size: int = Field(
        default=20,
        ge=1,
        le=200,
        description="database connections kept open per worker; below the concurrent requests "
        "of a worker, connections are opened and closed per request (slow on Postgres)",
    )
    db_max_overflow: int = Field(
        default=10, ge=0, le=200, description="extra connections per worker under bursts"
    )
    user_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="per-worker cache of the token's user row, seconds; a deactivated user "
        "keeps access at most this long (the token itself is verified on every request); 0 = off",
    )
    bars_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="how long each worker serves the lookback bars of GET /predict (and the "
        "forecasts made from them) before re-reading all of them in one query, seconds; new "
        "bars are served at most this long after the ingest commits; 0 = read every request",
    )
    accuracy_window: int = Field(
        default=60,
        ge=1,
        le=10_000,
        description="realized target dates per model version in the realized-accuracy gauges",
    )
    accuracy_refresh_seconds: float = Field(
        default=300.0,
        ge=0,
        description="how often each worker recomputes the realized-accuracy gauges from the "
        "prediction_outcome view, seconds; 0 = off",
    )
    drift_window_bars: int = Field(
        default=DRIFT_WINDOW_BARS,
        ge=2,
        le=10_000,
        description="recent bars compared with a model's inputs for drift (PSI, KS); a year "
        "keeps the PSI's sampling noise, about 9 / bars, under 0.1",
    )
    psi_moderate: float = Field(
        default=PSI_MODERATE,
        gt=0,
        description="PSI from which drift status is 'moderate' (0.1: Siddiqi 2006, Yurdakul 2018)",
    )
    psi_drift: float = Field(
        default=PSI_DRIFT,
        gt=0,
        description="PSI from which drift status is 'drift' (0.25: Siddiqi 2006, Yurdakul 2018)",
    )
    stale_after_bars: int = Field(
        default=STALE_AFTER_BARS,
        ge=0,
        description="a model more bars than this behind the store is reported stale",
    )
    health_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        description="per-worker cache of each served model's drift and staleness, seconds; "
        "0 = computed on every prediction",
    )
    interval_levels: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(80.0, 95.0),
        description="coverage levels (percent, strictly between 0 and 100, comma-separated: "
        "80,95) of the prediction intervals of every forecast step; empty = no intervals",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=4096,
        description="largest request body accepted, bytes; larger ones get 413 unread",
    )
    rate_limit_storage_uri: str = Field(
        default="memory://",
        description="storage of the failed-login counters: memory:// (per worker) or "
        "redis://host:6379/0 (shared by every worker and replica)",
    )
    login_max_failures_per_user: int = Field(
        default=5, ge=1, description="failed logins per username per window, then 429"
    )
    login_max_failures_per_address: int = Field(
        default=50, ge=1, description="failed logins per client address per window, then 429"
    )
    login_failure_window_seconds: int = Field(
        default=300, ge=1, description="the moving window of the failed-login limits, seconds"
    )
    docs: DocsAccess = Field(
        default=None,
        validate_default=True,
        description="who may read /docs and /openapi.json: public, authenticated (HTTP Basic "
        "with an API user's password, failed attempts counted like failed logins) or off "
        "(404); default public in development, authenticated in production",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    access_log: bool | None = Field(
        default=None,
        description="uvicorn's line per request on stderr; unset = on in development, off in "
        "production (a log line per request costs more CPU than the rest of GET /health; "
        "http_requests_total counts every request)",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="bearer token GET /metrics on the API's port requires (Prometheus: "
        "authorization.credentials_file); unset = /metrics open, refused in production "
        "unless APP_METRICS_PORT is set",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="serve /metrics (every worker's) on this port of APP_HOST, from the "
        "server's supervising process, and not on the API's port; for a port only "
        "Prometheus reaches",
    )

    @property
    def access_log_enabled(self) -> bool:
        """Whether the server logs a line per request (``APP_ACCESS_LOG``, else development)."""
        if self.access_log is None:
            return self.environment == "development"
        return self.access_log

    @field_validator("docs", mode="before")
    @classmethod
    def _default_docs(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == "":
            return "public" if info.data.get("environment") == "development" else "authenticated"
        return value

    @field_validator("interval_levels", mode="before")
    @classmethod
    def _parse_levels(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        levels = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            try:
                levels.append(float(part))
            except ValueError:
                raise ValueError(
                    f"APP_INTERVAL_LEVELS: {part!r} is not a number; give coverage levels in "
                    "percent, comma-separated, e.g. 80,95"
                ) from None
        return tuple(levels)

    @field_validator("interval_levels")
    @classmethod
    def _check_levels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for level in value:
            if not 0.0 < level < 100.0:
                raise ValueError(
                    f"APP_INTERVAL_LEVELS: {level:g} is not a coverage level; each must be a "
                    "percent strictly between 0 and 100, e.g. 80,95"
                )
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _check_secret_key(self) -> AppSettings:
        if self.secret_key is None:
            if self.environment != "development":
                raise InsecureSecretKeyError(
                    "APP_SECRET_KEY is required when APP_ENVIRONMENT is not development"
                )
            if self.workers > 1:
                raise InsecureSecretKeyError(
                    "APP_SECRET_KEY is required with APP_WORKERS > 1 "
                    "(each worker would sign tokens with its own random key)"
                )
            logger.warning(
                "APP_SECRET_KEY is not set: using a random key for this process "
                "(tokens stop working on restart; set it outside development)"
            )
            self.secret_key = SecretStr(secrets.token_urlsafe(48))
            return self
        value = self.secret_key.get_secret_value()
        if value.strip().lower() in PLACEHOLDER_SECRETS:
            raise InsecureSecretKeyError(
                "APP_SECRET_KEY is a placeholder value; generate one with "
                '`python -c "import secrets; print(secrets.token_urlsafe(48))"`'
            )
        if len(value.encode()) < MIN_SECRET_KEY_BYTES:
            raise InsecureSecretKeyError(
                f"APP_SECRET_KEY is {len(value.encode())} bytes; at least "
                f"{MIN_SECRET_KEY_BYTES} bytes are required"
            )
        return self

    @model_validator(mode="after")
    def _check_metrics_exposure(self) -> AppSettings:
        if (
            self.environment == "production"
            and self.metrics_port is None
            and self.metrics_token is None
        ):
            raise ValueError(
                "production serves /metrics only on its own port or behind a token: set "
                "APP_METRICS_PORT (a port only Prometheus reaches) or APP_METRICS_TOKEN"
            )
        if self.metrics_token is not None:
            token = self.metrics_token.get_secret_value()
            if token.strip().lower() in PLACEHOLDER_SECRETS or len(token) < 16:
                raise ValueError(
                    "APP_METRICS_TOKEN is a placeholder or shorter than 16 characters; generate "
                    'one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
                )
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(f"APP_METRICS_PORT ({self.metrics_port}) must differ from APP_PORT")
        return self

    @model_validator(mode="after")
    def _check_psi_thresholds(self) -> AppSettings:
        if self.psi_moderate >= self.psi_drift:
            raise ValueError(
                f"APP_PSI_MODERATE ({self.psi_moderate}) must be below APP_PSI_DRIFT "
                f"({self.psi_drift})"
            )
        return self

    @property
    def signing_key(self) -> str:
        """The token-signing key (always set once validated)."""
        assert self.secret_key is not None  # set by the validator
        return self.secret_key.get_secret_value()


@lru_cache
def get_settings() -> AppSettings:
    """The process-wide settings, read once from the environment."""
    return AppSettings()
