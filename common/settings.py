"""Settings shared by every layer.

Each deployable layer (data pipeline, ML lifecycle, API) subclasses :class:`LayerSettings`
with its own ``env_prefix`` and exposes a cached ``get_settings()``. The variables every
layer shares (``DATABASE_URL``, ``MLFLOW_TRACKING_URI``) are read without a prefix, because
all layers point at the same Postgres and the same registry.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where the embedded defaults keep their files (SQLite database, MLflow store, caches).
DEFAULT_VAR_DIR = Path("var")
DEFAULT_DATABASE_URL = f"sqlite:///{DEFAULT_VAR_DIR / 'stockcast.db'}"
DEFAULT_MLFLOW_TRACKING_URI = f"sqlite:///{DEFAULT_VAR_DIR / 'mlflow.db'}"


class LayerSettings(BaseSettings):
    """Base class: reads the environment and an optional ``.env`` file."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        validation_alias="DATABASE_URL",
        description="SQLAlchemy URL of the shared database: sqlite:///... or "
        "postgresql+psycopg://user:pass@host:5432/db",
    )
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
