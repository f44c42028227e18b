"""Fixtures of the stack test: a Docker engine, the built images, databases of its own.

Run by ``make stack-test`` only (``tests/conftest.py`` leaves this folder out of a plain
``pytest``): it needs a Docker engine and the images that ``make images`` builds. On this
kind of machine the engine has host networking only, so every container runs with
``--network host`` and listens on 127.0.0.1. Every container started here is named
``stockcast-stack-<run>-<role>`` and labelled with the run, and removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

#: One id per test run: in container, database and compose project names.
RUN_ID = uuid.uuid4().hex[:8]
LABEL = f"stockcast.stack-test={RUN_ID}"
IMAGE_NAMES = ("stockcast-api", "stockcast-data-pipeline", "stockcast-ml-lifecycle")


def check(message: str) -> None:
    """One line of the stack test's report (``make stack-test`` shows it)."""
    print(f"  check: {message}", flush=True)


@dataclass
class Docker:
    """The ``docker`` CLI, with this run's names, label and host networking on every run."""

    tag: str
    started: list[str] = field(default_factory=list)

    def image(self, name: str) -> str:
        return f"{name}:{self.tag}"

    def cli(
        self, *args: str, timeout: float = 120, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout,
            input=input_text, check=False,
        )  # fmt: skip

    def _run_args(
        self, role: str, image: str, args: Sequence[str], *, env: dict[str, str],
        entrypoint: str | None, options: Sequence[str],
    ) -> list[str]:  # fmt: skip
        name = f"stockcast-stack-{RUN_ID}-{role}"
        self.started.append(name)
        command = ["--name", name, "--label", LABEL, "--network", "host", *options]
        for key, value in env.items():
            command += ["-e", f"{key}={value}"]
        if entrypoint is not None:
            command += ["--entrypoint", entrypoint]
        return [*command, self.image(image), *args]

    def run(
        self, role: str, image: str, *args: str, env: dict[str, str] | None = None,
        entrypoint: str | None = None, options: Sequence[str] = (), timeout: float = 600,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """``docker run --rm`` in the foreground; the container is removed even on timeout."""
        interactive = ["-i"] if input_text is not None else []
        command = self._run_args(
            role, image, args, env=env or {}, entrypoint=entrypoint,
            options=["--rm", *interactive, *options],
        )  # fmt: skip
        try:
            return self.cli("run", *command, timeout=timeout, input_text=input_text)
        finally:
            self.cli("rm", "-f", command[1])

    def start(
        self, role: str, image: str, *args: str, env: dict[str, str] | None = None,
        entrypoint: str | None = None, options: Sequence[str] = (),
    ) -> str:  # fmt: skip
        """``docker run -d``; returns the container name (removed by :meth:`remove_all`)."""
        command = self._run_args(
            role, image, args, env=env or {}, entrypoint=entrypoint, options=["-d", *options]
        )
        result = self.cli("run", *command)
        assert result.returncode == 0, result.stderr
        return command[1]

    def inspect(self, target: str) -> dict[str, Any]:
        result = self.cli("inspect", target)
        assert result.returncode == 0, result.stderr
        (found,) = json.loads(result.stdout)
        return dict(found)

    def logs(self, name: str, tail: int = 60) -> str:
        result = self.cli("logs", "--tail", str(tail), name)
        return result.stdout + result.stderr

    def remove_all(self) -> None:
        """Remove every container of this run (by label, so none started here is missed)."""
        listed = self.cli("ps", "-aq", "--filter", f"label={LABEL}")
        ids = listed.stdout.split()
        if ids:
            self.cli("rm", "-f", "-v", *ids)


def wait_for_http(
    url: str, *, timeout: float, accept: Sequence[int] = (200,), what: str = ""
) -> httpx.Response:
    """Poll ``url`` until it answers with a status in ``accept``; fail with ``what`` after."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code in accept:
                return response
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"{url} did not answer {list(accept)} within {timeout:.0f} s ({last})\n{what}")


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    """The engine (it must answer: this test never skips) and this run's containers."""
    if (
        shutil.which("docker") is None
        or subprocess.run(
            ["docker", "info"], capture_output=True, timeout=60, check=False
        ).returncode
    ):
        pytest.fail(
            "no Docker engine answers; on a machine without one: "
            "../shared/tools/docker-engine start (see .ci/run)",
            pytrace=False,
        )
    client = Docker(tag=os.environ.get("STOCKCAST_IMAGE_TAG", "latest"))
    try:
        yield client
    finally:
        client.remove_all()


def image_size_mb(docker: Docker, reference: str) -> float:
    return float(docker.inspect(reference)["Size"]) / 1e6


@pytest.fixture(scope="session")
def images(docker: Docker) -> dict[str, dict[str, Any]]:
    """The three images ``make images`` built (``docker inspect`` of each), sizes printed."""
    found: dict[str, dict[str, Any]] = {}
    missing = [n for n in IMAGE_NAMES if docker.cli("image", "inspect", docker.image(n)).returncode]
    if missing:
        pytest.fail(f"images not built: {', '.join(missing)} (run `make images`)", pytrace=False)
    for name in IMAGE_NAMES:
        found[name] = docker.inspect(docker.image(name))
    return found


@pytest.fixture(scope="session")
def stack_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stack")
    folder.chmod(0o755)  # bind-mounted files are read by the images' user
    return folder
