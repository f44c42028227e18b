"""The three Dockerfiles: hadolint clean, non-root, one layer's dependencies, API health check."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.conftest import DOCKERFILES

#: Which extra each image installs, and what its entry point is.
IMAGES = {
    "Dockerfile": ("api", ["python", "-m", "app"], ["serve"]),
    "Dockerfile.data_pipeline": ("pipeline", ["python", "-m", "data_pipeline"], ["schedule"]),
    "Dockerfile.ml_lifecycle": ("ml", ["python", "-m", "ml_lifecycle"], ["schedule"]),
}


def hadolint(binary: Path, dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def final_stage(dockerfile: str) -> str:
    """The instructions of the last ``FROM`` stage."""
    text = (REPO_ROOT / dockerfile).read_text()
    return text[text.rindex("\nFROM ") :]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(hadolint_bin: Path, dockerfile: str) -> None:
    result = hadolint(hadolint_bin, REPO_ROOT / dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_reports_a_bad_dockerfile(hadolint_bin: Path, tmp_path: Path) -> None:
    """The check can fail: an unpinned base and an unpinned pip install are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = hadolint(hadolint_bin, bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3013" in result.stdout  # unpinned pip package


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_runs_as_a_non_root_user_from_a_slim_multi_stage_build(dockerfile: str) -> None:
    text = (REPO_ROOT / dockerfile).read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    assert text.count("\nFROM ${PYTHON_IMAGE} AS ") == 2  # build + runtime
    stage = final_stage(dockerfile)
    users = re.findall(r"^USER (\S+)$", stage, flags=re.MULTILINE)
    assert users == ["10001:10001"]
    assert "COPY --from=build /opt/venv /opt/venv" in stage
    assert "pip install" not in stage  # nothing is built in the runtime image


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_installs_only_its_layers_extra(dockerfile: str) -> None:
    extra, entrypoint, cmd = IMAGES[dockerfile]
    text = (REPO_ROOT / dockerfile).read_text()
    assert re.findall(r'pip install --no-cache-dir -c requirements.lock "\./\[(\w+)\]"', text) == [
        extra
    ]
    stage = final_stage(dockerfile)
    assert f"ENTRYPOINT {entrypoint!r}".replace("'", '"') in stage
    assert f"CMD {cmd!r}".replace("'", '"') in stage


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_installs_the_locked_versions_and_needs_no_registry_frontend(dockerfile: str) -> None:
    """Every image installs from requirements.lock (as ``make install`` does), checks the
    result with ``pip check``, and has no ``# syntax=`` line (which makes BuildKit fetch a
    frontend image from a registry, so offline builds fail)."""
    text = (REPO_ROOT / dockerfile).read_text()
    assert "COPY pyproject.toml requirements.lock ./" in text
    assert "pip check" in text
    assert "# syntax=" not in text
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "pip install --quiet -c $(LOCK) -e" in makefile
    assert "LOCK := requirements.lock" in makefile


def test_api_image_has_a_healthcheck_and_refuses_tensorflow_at_build() -> None:
    stage = final_stage("Dockerfile")
    (healthcheck,) = re.findall(r"^HEALTHCHECK .*\n\s+CMD (.*)$", stage, flags=re.MULTILINE)
    # the probe follows APP_PORT (a fixed 8000 left the container unhealthy on another port)
    assert "os.environ['APP_PORT']" in healthcheck
    assert ":8000" not in healthcheck
    assert "APP_PORT=8000" in stage  # the default it follows
    assert "EXPOSE 8000" in stage
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "find_spec('tensorflow') is not None" in text  # the build fails if TF sneaks in
    pipeline = (REPO_ROOT / "Dockerfile.data_pipeline").read_text()
    assert "('tensorflow', 'mlflow')" in pipeline
