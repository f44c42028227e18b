"""Where the benchmark keeps its state: its own Postgres database and MLflow store.

Nothing here touches the demo (``var/stockcast.db``, ``var/mlflow.db``) or the tests'
databases: the benchmark uses the database ``stockcast_bench`` on the local Postgres and the
MLflow store ``var/bench/mlflow.db``.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchEnvironment:
    """Paths, URLs and the environment of every command the benchmark runs.

    Attributes:
        postgres_url: the server's admin URL (database ``postgres``).
        database: name of the benchmark's own database (dropped and re-created each run).
        var_dir: folder of the MLflow store, logs and results.
        port: TCP port of the API under test (loopback).
        workers: API worker processes.
    """

    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    database: str = "stockcast_bench"
    var_dir: Path = REPO_ROOT / "var" / "bench"
    port: int = 8765
    workers: int = 2
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    #: production serves /metrics on the API's port only with this bearer token
    metrics_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: Source tree the server runs from (another checkout gives before/after numbers).
    app_root: Path = REPO_ROOT

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of the benchmark database."""
        base, _, _ = self.postgres_url.rpartition("/")
        return f"{base}/{self.database}"

    @property
    def tracking_uri(self) -> str:
        """The benchmark's MLflow store (SQLite, artifacts beside it)."""
        return f"sqlite:///{self.var_dir / 'mlflow.db'}"

    @property
    def base_url(self) -> str:
        """URL of the API under test."""
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a subprocess: this process's, pointed at the bench stores."""
        values = dict(os.environ)
        values.update(
            DATABASE_URL=self.database_url,
            MLFLOW_TRACKING_URI=self.tracking_uri,
            APP_ENVIRONMENT="production",
            APP_SECRET_KEY=self.secret_key,
            APP_METRICS_TOKEN=self.metrics_token,
            APP_WORKERS=str(self.workers),
            APP_MODEL_POLL_SECONDS="0",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        values.pop("PROMETHEUS_MULTIPROC_DIR", None)
        values.update(extra)
        return values

    @staticmethod
    def python() -> str:
        """The interpreter running the benchmark (the project's virtualenv)."""
        return sys.executable
