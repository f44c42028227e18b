"""The Kubernetes manifests (deploy/k8s), checked offline.

Every resource is validated against the Kubernetes API's JSON schemas in strict mode (unknown
fields are errors) by ``kubernetes-validate`` (dev extra), for the oldest and the newest
Kubernetes release we support. The rest checks that the pieces fit each other and the images:
ports, probes, Secrets referenced and never inlined, the Indexed training Job's shards, the
restricted pod security level that the namespace enforces, and the Postgres connection budget.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from common.tickers import shard_tickers
from ml_lifecycle.cli import build_parser
from tests.conftest import REPO_ROOT

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="dev extra")

K8S_DIR = REPO_ROOT / "deploy" / "k8s"
#: Oldest supported release (CronJob timeZone, Job backoffLimitPerIndex are GA there) and newest.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.utils.latest_version() + ".0")
#: Variables that hold credentials: only ever from a Secret.
SECRET_VARIABLES = {
    "DATABASE_URL", "APP_SECRET_KEY", "MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}  # fmt: skip
#: Postgres connections the API may open at its largest (docs/deploy.md, "Scaling out").
API_CONNECTION_BUDGET = 120


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return data


def resources() -> list[dict[str, Any]]:
    """Every resource of the files the kustomization lists, in order."""
    found: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        found.extend(d for d in yaml.safe_load_all((K8S_DIR / name).read_text()) if d)
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result: dict[str, Any] = spec["template"]["spec"]
    return result


def workloads() -> Iterator[dict[str, Any]]:
    yield from (r for r in resources() if r["kind"] in {"Deployment", "Job", "CronJob"})


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            yield workload["metadata"]["name"], container


def config() -> dict[str, str]:
    data: dict[str, str] = resource("ConfigMap", "stockcast-config")["data"]
    return data


def test_the_kustomization_lists_every_manifest_file() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_validates_against_the_kubernetes_schemas(version: str) -> None:
    kinds = set()
    for item in resources():
        kubernetes_validate.validate(item, version, strict=True)
        kinds.add(item["kind"])
    assert kinds >= {
        "Namespace", "ConfigMap", "Job", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "CronJob",
    }  # fmt: skip


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The check can fail: a typo that Kubernetes would silently drop is an error here."""
    api = resource("Deployment", "stockcast-api")
    container = pod_spec(api)["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.utils.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(api, KUBERNETES_VERSIONS[-1], strict=True)


def test_images_are_the_three_project_images_renamed_in_one_place() -> None:
    renamed = {image["name"] for image in kustomization()["images"]}
    assert renamed == {"stockcast-api", "stockcast-data-pipeline", "stockcast-ml-lifecycle"}
    assert {c["image"] for _, c in containers()} == renamed


def test_api_has_liveness_on_health_readiness_on_ready_and_a_startup_allowance() -> None:
    api = resource("Deployment", "stockcast-api")
    (container,) = pod_spec(api)["containers"]
    port = int(config()["APP_PORT"])
    metrics_port = int(config()["APP_METRICS_PORT"])
    assert container["ports"] == [
        {"name": "http", "containerPort": port},
        {"name": "metrics", "containerPort": metrics_port},
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    # the API may wait minutes for the registry before it listens: liveness starts after that
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port  # not the API's port
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_and_autoscaler_point_at_the_api_pods() -> None:
    api = resource("Deployment", "stockcast-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    service = resource("Service", "stockcast-api")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = resource("HorizontalPodAutoscaler", "stockcast-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "stockcast-api",
    }  # fmt: skip
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = resource("PodDisruptionBudget", "stockcast-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_api_at_its_largest_stays_within_the_postgres_connection_budget() -> None:
    """replicas x workers x (pool + overflow): the sum docs/deploy.md explains."""
    settings = config()
    per_replica = int(settings["APP_WORKERS"]) * (
        int(settings["APP_DB_POOL_SIZE"]) + int(settings["APP_DB_MAX_OVERFLOW"])
    )
    largest = resource("HorizontalPodAutoscaler", "stockcast-api")["spec"]["maxReplicas"]
    assert largest * per_replica <= API_CONNECTION_BUDGET
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    assert f"{largest} × {per_replica} = {largest * per_replica}" in docs


def test_every_container_has_resources_and_runs_restricted_as_the_image_user() -> None:
    """What the namespace's ``restricted`` pod security level demands, as the images' user."""
    image_user = re.findall(r"^USER (\d+):(\d+)$", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert image_user == [("10001", "10001")]
    namespace = resource("Namespace", "stockcast")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in workloads():
        spec = pod_spec(workload)
        assert spec["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, workload["metadata"]["name"]  # fmt: skip
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }  # fmt: skip
            assert container["resources"]["requests"]["memory"]
            assert container["resources"]["limits"]["memory"]


def test_secrets_are_referenced_never_inlined() -> None:
    assert not [r for r in resources() if r["kind"] == "Secret"]
    for key, value in config().items():
        assert key not in SECRET_VARIABLES
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), key  # no user:password@ in URLs
    referenced = set()
    for workload, container in containers():
        for variable in container.get("env", []):
            if variable["name"] in SECRET_VARIABLES:
                assert "value" not in variable, f"{workload}: {variable['name']} inlined"
                ref = variable["valueFrom"]["secretKeyRef"]
                assert ref["key"] == variable["name"]
                referenced.add(ref["name"])
        assert "--backend-store-uri" not in " ".join(container.get("args", []))
    assert referenced == {"stockcast-db", "stockcast-api", "stockcast-mlflow"}
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for name in referenced:
        assert f"create secret generic {name}" in docs  # how to create each one


def test_batch_jobs_run_the_images_once_and_migrations_run_alembic() -> None:
    migrate = resource("Job", "stockcast-migrate")
    (container,) = pod_spec(migrate)["containers"]
    assert [*container["command"], *container["args"]] == ["alembic", "upgrade", "head"]
    ingest = resource("CronJob", "stockcast-ingest")
    (container,) = pod_spec(ingest)["containers"]
    assert container["args"] == ["schedule", "--once"]
    assert ingest["spec"]["concurrencyPolicy"] == "Forbid"
    train = resource("CronJob", "stockcast-train")
    assert train["spec"]["concurrencyPolicy"] == "Forbid"


def test_training_is_an_indexed_job_whose_pods_train_every_ticker_exactly_once() -> None:
    """Kubernetes expands ``$(JOB_COMPLETION_INDEX)`` in the args from the env entry; each
    index's command line, parsed by the real CLI, picks a disjoint share of ML_TICKERS."""
    job = resource("CronJob", "stockcast-train")["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    count = job["completions"]
    assert job["parallelism"] == count
    (container,) = job["template"]["spec"]["containers"]
    (index_variable,) = [v for v in container["env"] if v["name"] == "JOB_COMPLETION_INDEX"]
    assert index_variable["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    tickers = yaml.safe_load(config()["ML_TICKERS"])
    trained: list[str] = []
    for index in range(count):
        argv = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in container["args"]]
        args = build_parser().parse_args(argv)
        assert args.command == "train" and args.shard == (index, count)
        assert args.stale_only  # the schedule retrains stale or drifting champions only
        trained.extend(shard_tickers(tickers, index=index, count=count))
    assert sorted(trained) == sorted(tickers)


def test_mlflow_server_accepts_the_host_name_clients_use_and_keeps_artifacts_in_s3() -> None:
    server = resource("Deployment", "stockcast-mlflow")
    (container,) = pod_spec(server)["containers"]
    tracking = re.fullmatch(r"http://([\w.-]+):(\d+)", config()["MLFLOW_TRACKING_URI"])
    assert tracking is not None
    host, port = tracking.groups()
    service = resource("Service", host)
    assert service["spec"]["ports"][0]["port"] == int(port)
    (allowed,) = [a for a in container["args"] if a.startswith("--allowed-hosts=")]
    assert f"{host}:{port}" in allowed.removeprefix("--allowed-hosts=").split(",")
    assert "--serve-artifacts" in container["args"]
    assert config()["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert config()["MLFLOW_S3_ENDPOINT_URL"].startswith("http")
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
