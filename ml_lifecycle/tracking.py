"""Pointing MLflow at the tracking server / registry, and checking that it answers.

Called inside the use cases, never at import. The embedded default is a SQLite file
(``sqlite:///var/mlflow.db``) whose experiment keeps its artifacts in a folder beside it
(``var/mlartifacts``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ml_lifecycle.exceptions import MLflowUnavailableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracking:
    """Where a use case logs runs and registers versions (built from the settings by the CLI).

    Attributes:
        uri: MLflow tracking and registry URI.
        experiment_name: the experiment of the runs.
        artifact_root: artifact folder of a new experiment on an embedded store (None: the
            default beside the SQLite file).
    """

    uri: str
    experiment_name: str = "stockcast-lstm"
    artifact_root: Path | None = None

    def experiment_id(self) -> str:
        """Point MLflow's fluent API at :attr:`uri` and return the experiment's id."""
        use_tracking(self.uri)
        return ensure_experiment(
            self.experiment_name, tracking_uri=self.uri, artifact_root=self.artifact_root
        )

    def client(self) -> Any:
        """An ``MlflowClient`` on :attr:`uri` (tracking and registry)."""
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


@contextlib.contextmanager
def ticker_run(
    tracking: Tracking,
    *,
    ticker: str,
    kind: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, Path]]:
    """An MLflow run of one ticker's use case (``train``, ``backtest``), with a scratch folder.

    The run is named ``<ticker>-<kind>-<UTC timestamp>`` in :attr:`Tracking.experiment_name`,
    tagged ``ticker`` and ``kind`` (plus ``tags``) and given ``params``; the folder is removed
    on exit, and the run ends ``FINISHED``, or ``FAILED`` if the block raised.

    Yields:
        ``(run_id, scratch folder)``.

    Raises:
        MlflowException / OSError: the tracking store failed.
    """
    import mlflow  # noqa: PLC0415 - slow import

    experiment_id = tracking.experiment_id()
    run_name = f"{ticker}-{kind}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run,
        tempfile.TemporaryDirectory(prefix=f"stockcast-{kind}-") as scratch,
    ):
        mlflow.set_tags({"ticker": ticker, "kind": kind, **(tags or {})})
        mlflow.log_params(dict(params))
        yield run.info.run_id, Path(scratch)


def _sqlite_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:"):
        return None
    database = make_url(tracking_uri).database
    return Path(database) if database and database != ":memory:" else None


def default_artifact_location(tracking_uri: str, artifact_root: Path | None = None) -> str | None:
    """Artifact URI for a new experiment on an embedded store, ``None`` for a server.

    For ``sqlite:///<dir>/mlflow.db`` it is ``<dir>/mlartifacts`` (or ``artifact_root``), as a
    ``file://`` URI; a server (``http://...``) decides by itself.
    """
    db = _sqlite_path(tracking_uri)
    if artifact_root is not None and (db is not None or "://" not in tracking_uri):
        return artifact_root.resolve().as_uri()
    if db is None:
        return None
    return (db.parent / "mlartifacts").resolve().as_uri()


@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def use_tracking(tracking_uri: str) -> None:
    """Point MLflow's tracking and registry at ``tracking_uri`` (creating a SQLite folder)."""
    import mlflow  # noqa: PLC0415 - slow import

    db = _sqlite_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def check_tracking(tracking_uri: str) -> None:
    """Fail fast unless the tracking store answers a trivial query.

    Raises:
        MLflowUnavailableError: with one line saying which URI and why (no retries, 5 s timeout).
    """
    from mlflow.tracking import MlflowClient  # noqa: PLC0415

    use_tracking(tracking_uri)
    try:
        with _fail_fast():
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        raise MLflowUnavailableError(
            f"MLflow tracking store unavailable at {tracking_uri}: {first[:300]}"
        ) from exc


def ensure_experiment(name: str, *, tracking_uri: str, artifact_root: Path | None = None) -> str:
    """Id of experiment ``name``, creating it (with its artifact location) if missing."""
    import mlflow  # noqa: PLC0415

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = default_artifact_location(tracking_uri, artifact_root)
    logger.info("creating MLflow experiment %r (artifacts: %s)", name, location or "server default")
    return str(mlflow.create_experiment(name, artifact_location=location))
