"""The compose stack's own commands and environment, run on this machine without Docker.

``docker-compose config`` renders the stack from an env file; the services' commands and
environment are taken from that rendering and run as host processes, with only the network
names replaced (``postgres:5432`` -> the test Postgres, ``mlflow:5000`` -> a free port,
container paths -> temporary folders). The order is compose's: the Postgres init step,
``migrate``, the MLflow server, a one-shot ingest and training, then the API.

This shows that the pieces fit: that the MLflow server command stores artifacts itself
(``--serve-artifacts``) and accepts the stack's Host headers, that training registers over
HTTP, and that the API finds, downloads and serves that champion.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.conftest import DEPLOY_DIR, ENV_EXAMPLE, render_compose
from tests.processes import free_port, stop_process

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TICKER = "PETR4.SA"
PASSWORD = "correct horse battery staple"


@dataclass
class HostStack:
    """Rendered services and how to reach what runs on the host."""

    services: dict[str, Any]
    pg_hostport: str
    mlflow_port: int
    artifacts_dir: Path
    workdir: Path

    def env(self, service: str, **extra: str) -> dict[str, str]:
        """The service's rendered environment, its network names pointed at the host."""
        rendered = {k: str(v) for k, v in (self.services[service].get("environment") or {}).items()}
        for key, value in rendered.items():
            rendered[key] = value.replace("@postgres:5432", f"@{self.pg_hostport}").replace(
                "http://mlflow:5000", f"http://127.0.0.1:{self.mlflow_port}"
            )
        return {**os.environ, **rendered, **extra}

    def mlflow_command(self) -> list[str]:
        service = self.services["mlflow"]
        command = [*service["entrypoint"], *service["command"]]
        replacements = {
            "--host=0.0.0.0": "--host=127.0.0.1",
            "--port=5000": f"--port={self.mlflow_port}",
            "--artifacts-destination=/app/mlartifacts": (
                f"--artifacts-destination={self.artifacts_dir}"
            ),
        }
        out = [
            replacements.get(arg, arg.replace("@postgres:5432", f"@{self.pg_hostport}"))
            for arg in command
        ]
        out[0] = str(Path(sys.executable).parent / out[0])  # the mlflow of this virtualenv
        return out


def wait_for(
    url: str, *, proc: subprocess.Popen[Any], timeout: float, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"process for {url} exited with status {proc.returncode}")
        try:
            if httpx.get(url, timeout=5, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer 200 within {timeout} s")


def run(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def stack(
    pg_server: Any, compose_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostStack]:
    folder = tmp_path_factory.mktemp("hoststack")
    suffix = uuid.uuid4().hex[:8]
    app_db, mlflow_db = f"stockcast_stack_{suffix}", f"stockcast_stack_mlflow_{suffix}"
    mlflow_port = free_port()
    url = pg_server.url
    env_file = folder / ".env"
    env_file.write_text(
        ENV_EXAMPLE.read_text()
        .replace("POSTGRES_PASSWORD=change-me", f"POSTGRES_PASSWORD={url.password or 'unused'}")
        .replace("APP_SECRET_KEY=change-me", "APP_SECRET_KEY=stack-test-signing-key-" + "x" * 40)
        .replace("GRAFANA_ADMIN_PASSWORD=change-me", "GRAFANA_ADMIN_PASSWORD=unused-here")
        + f"POSTGRES_USER={url.username or 'postgres'}\nAPP_DB_NAME={app_db}\n"
        f"MLFLOW_DB_NAME={mlflow_db}\nMLFLOW_PORT={mlflow_port}\nMLFLOW_WORKERS=1\n"
        "LOG_LEVEL=INFO\n"
    )
    services = render_compose(compose_bin, env_file)["services"]
    workdir = folder / "app"
    workdir.mkdir()
    host_stack = HostStack(
        services=services,
        pg_hostport=f"{url.host or '127.0.0.1'}:{url.port or 5432}",
        mlflow_port=mlflow_port,
        artifacts_dir=folder / "mlartifacts",
        workdir=workdir,
    )
    # 1. postgres: the init step, with the container's environment.
    init_env = {**os.environ, **{k: str(v) for k, v in services["postgres"]["environment"].items()}}
    init_env.update({"PGHOST": url.host or "127.0.0.1", "PGPORT": str(url.port or 5432)})
    if url.password:
        init_env["PGPASSWORD"] = url.password
    init = run(["bash", str(DEPLOY_DIR / "postgres" / "init" / "10-create-databases.sh")],
               env=init_env, cwd=folder)  # fmt: skip
    assert init.returncode == 0, init.stderr
    mlflow_proc: subprocess.Popen[Any] | None = None
    log = (folder / "mlflow.log").open("w")
    try:
        # 2. migrate: its entrypoint and command.
        migrate = services["migrate"]
        alembic = Path(sys.executable).parent / migrate["entrypoint"][0]
        result = run(
            [str(alembic), *migrate["command"]], env=host_stack.env("migrate"), cwd=REPO_ROOT
        )
        assert result.returncode == 0, result.stderr
        # 3. mlflow: the server command as rendered.
        mlflow_proc = subprocess.Popen(
            host_stack.mlflow_command(), env={**os.environ, "TZ": "UTC"}, cwd=folder,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(f"http://127.0.0.1:{mlflow_port}/health", proc=mlflow_proc, timeout=120)
        yield host_stack
    finally:
        if mlflow_proc is not None:
            stop_process(mlflow_proc)
        log.close()
        pg_server.drop(app_db)
        pg_server.drop(mlflow_db)


def test_mlflow_server_accepts_the_stack_host_names_only(stack: HostStack) -> None:
    """DNS-rebinding protection on, yet the API and trainer reach it as ``mlflow:5000``."""
    url = f"http://127.0.0.1:{stack.mlflow_port}/api/2.0/mlflow/experiments/search?max_results=1"
    for host in ("mlflow:5000", "mlflow", f"localhost:{stack.mlflow_port}"):
        assert httpx.get(url, headers={"Host": host}, timeout=10).status_code == 200, host
    assert httpx.get(url, headers={"Host": "evil.example"}, timeout=10).status_code == 403


def test_ingest_train_and_serve_through_the_stacks_mlflow_server(
    stack: HostStack, prices_dir: Path
) -> None:
    """One-shot ingest and training as ``docker compose run`` does them; the API serves it."""
    ingest = run(
        [sys.executable, "-m", "data_pipeline", "ingest", "--source", "snapshot",
         "--snapshot-dir", str(prices_dir), "--tickers", TICKER, "--no-findings"],
        env=stack.env("data-pipeline"), cwd=stack.workdir,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    tiny = stack.workdir / "tiny.yaml"
    tiny.write_text(
        "lookback: 20\nunits: 8\nepochs: 2\nhistory_bars: 800\nfolds: 2\nfold_bars: 30\n"
    )
    train = run(
        [sys.executable, "-m", "ml_lifecycle", "schedule", "--once"],
        env=stack.env(
            "ml-lifecycle", ML_TICKERS=f'["{TICKER}"]', ML_CONFIG_PATH=str(tiny),
            ML_REPORTS_DIR=str(stack.workdir / "reports"),
        ),
        cwd=stack.workdir,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    # --serve-artifacts: the trainer uploaded through the server into its artifact store.
    stored = {p.name for p in stack.artifacts_dir.rglob("*") if p.is_file()}
    assert {"model.onnx", "metadata.json"} <= stored, sorted(stored)[:20]

    api_port, metrics_port = free_port(), free_port()
    api_env = stack.env(
        "api", APP_HOST="127.0.0.1", APP_PORT=str(api_port), APP_METRICS_PORT=str(metrics_port)
    )
    user = subprocess.run(
        [sys.executable, "-m", "app", "create-user", "ana"], input=PASSWORD + "\n",
        env=api_env, cwd=stack.workdir, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert user.returncode == 0, user.stderr
    log = (stack.workdir / "api.log").open("w")
    api = subprocess.Popen(
        # The image's ENTRYPOINT (python -m app) with the service's command (serve).
        [sys.executable, "-m", "app", *stack.services["api"]["command"]],
        env=api_env, cwd=stack.workdir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{api_port}"
        wait_for(f"{base}/ready", proc=api, timeout=120)
        token = httpx.post(
            f"{base}/auth/token", data={"username": "ana", "password": PASSWORD}, timeout=10
        ).json()["access_token"]
        response = httpx.get(
            f"{base}/predict/{TICKER}", params={"horizon": 3},
            headers={"Authorization": f"Bearer {token}"}, timeout=30,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        # the compose service's metrics port: none on the API's port
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 404
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert f'stockcast_model_version_loaded{{ticker="{TICKER}"}} 1.0' in metrics
    finally:
        stop_process(api)
        log.close()
