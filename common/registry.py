"""Reading model versions from the MLflow registry: the one way to load a champion.

Every caller passes its own ``MlflowClient``; the artifacts are downloaded against that
client's tracking URI, never MLflow's process-global one. mlflow is imported inside the
functions, so importing this module costs nothing.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from common.exceptions import RegistryReadError
from common.model_contract import (
    CHAMPION_ALIAS,
    METADATA_ARTIFACT,
    ONNX_ARTIFACT,
    ModelMetadata,
)

logger = logging.getLogger(__name__)

#: MLflow error codes meaning "no such alias / model".
_MISSING = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


class LoadedVersion(NamedTuple):
    """A registered model version's identity and serving artifacts."""

    version: str
    metadata: ModelMetadata
    onnx_bytes: bytes


def champion_version(client: Any, name: str) -> str | None:
    """The version holding the alias ``champion`` of ``name``, or None when there is none.

    Raises:
        MlflowException: any registry error other than "not found".
    """
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if exc.error_code in _MISSING:
            return None
        raise


@contextmanager
def _version_artifacts(client: Any, name: str, version: str) -> Iterator[Callable[[str], Path]]:
    """A downloader of the artifacts of version ``version`` of ``name`` into a temporary
    folder, removed on exit: ``fetch(artifact)`` is the local path of one artifact.

    Raises:
        RegistryReadError: the artifact location cannot be resolved (on entry), or an artifact
            cannot be downloaded (from ``fetch``); the message names model and version.
    """
    from mlflow.artifacts import download_artifacts  # noqa: PLC0415

    label = f"models:/{name}/{version}"
    try:
        root = str(client.get_model_version_download_uri(name, version)).rstrip("/")
    except Exception as exc:
        raise RegistryReadError(f"{label}: cannot resolve its artifact location: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="stockcast-model-") as tmp:

        def fetch(artifact: str) -> Path:
            try:
                return Path(
                    download_artifacts(
                        artifact_uri=f"{root}/{artifact}",
                        dst_path=tmp,
                        tracking_uri=client.tracking_uri,
                    )
                )
            except Exception as exc:
                raise RegistryReadError(f"{label}: cannot download {artifact}: {exc}") from exc

        yield fetch


def _read_metadata(fetch: Callable[[str], Path], label: str) -> ModelMetadata:
    try:
        return ModelMetadata.model_validate_json(
            fetch(METADATA_ARTIFACT).read_text(encoding="utf-8")
        )
    except ValueError as exc:
        raise RegistryReadError(f"{label}: invalid {METADATA_ARTIFACT}: {exc}") from exc


def load_metadata(client: Any, name: str, version: str) -> ModelMetadata:
    """Download only ``metadata.json`` of version ``version`` of ``name`` (not the network:
    for what reads the model's contract without forecasting, e.g. drift and staleness).

    Args:
        client: an ``MlflowClient``; its ``tracking_uri`` is used for the download.
        name: registered model name (``stock-lstm-<TICKER>``).
        version: model version (``"3"``).

    Raises:
        RegistryReadError: the location cannot be resolved, the artifact cannot be
            downloaded, or the metadata is invalid (the message names model and version).
    """
    with _version_artifacts(client, name, version) as fetch:
        return _read_metadata(fetch, f"models:/{name}/{version}")


def load_version(client: Any, name: str, version: str) -> LoadedVersion:
    """Download ``metadata.json`` and ``model.onnx`` of version ``version`` of ``name``
    (the metadata read as :func:`load_metadata` reads it, in one download folder).

    Args:
        client: an ``MlflowClient``; its ``tracking_uri`` is used for the download.
        name: registered model name (``stock-lstm-<TICKER>``).
        version: model version (``"3"``).

    Returns:
        A :class:`LoadedVersion`.

    Raises:
        RegistryReadError: the location cannot be resolved, an artifact cannot be
            downloaded, or the metadata is invalid (the message names model and version).
    """
    with _version_artifacts(client, name, version) as fetch:
        metadata = _read_metadata(fetch, f"models:/{name}/{version}")
        onnx_bytes = fetch(ONNX_ARTIFACT).read_bytes()
    return LoadedVersion(version=version, metadata=metadata, onnx_bytes=onnx_bytes)


def load_champion(client: Any, name: str) -> LoadedVersion:
    """The champion of ``name``: its version, metadata and ONNX bytes.

    The alias is resolved first, so the version returned is exactly the one downloaded even
    if the alias moves meanwhile.

    Raises:
        LookupError: ``name`` has no champion.
        RegistryReadError: see :func:`load_version`.
        MlflowException: the registry cannot be queried.
    """
    version = champion_version(client, name)
    if version is None:
        raise LookupError(f"{name} has no version with the alias {CHAMPION_ALIAS!r}")
    return load_version(client, name, version)
