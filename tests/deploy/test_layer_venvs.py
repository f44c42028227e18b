"""Each image's dependency set, proven without Docker: a fresh virtualenv per layer.

The build context of the images (the ``.dockerignore`` allow-list) is copied to a temporary
folder and installed exactly as the Dockerfiles do (``pip install "./[<extra>]"``) into a new
virtualenv; then that layer's entry point is started from it. The API's virtualenv must not
be able to import TensorFlow; the pipeline's neither TensorFlow nor MLflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO_ROOT
from tests.processes import free_port, stop_process

pytestmark = pytest.mark.slow

#: Seconds allowed for one ``pip install`` (a cold cache downloads TensorFlow for ``ml``).
INSTALL_TIMEOUT = 1500
#: The bearer token the production API asks of a scrape of /metrics on its port.
METRICS_TOKEN = "venv-test-metrics-token-" + "t" * 24


def build_context(destination: Path) -> Path:
    """Copy what ``.dockerignore`` lets into an image build to ``destination``."""
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip().startswith("!")
    ]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
    destination.mkdir(parents=True)
    for pattern in patterns:
        source = REPO_ROOT / pattern[1:].rstrip("/")
        if source.is_dir():
            shutil.copytree(source, destination / source.name, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, destination / source.name)
    return destination


def pip_install(python: Path, *args: str, cwd: Path) -> None:
    began = time.monotonic()
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    print(f"pip install {' '.join(args)}: {time.monotonic() - began:.0f} s")


def make_venv(folder: Path, extra: str) -> Path:
    """A new virtualenv with the project and ``extra``, installed as the Dockerfiles do it.

    The two steps of the images' build stage: the dependencies from ``pyproject.toml`` alone
    (empty package folders) at the versions of ``requirements.lock``, then the whole build
    context with ``--no-deps``.

    Returns:
        The virtualenv's python.
    """
    deps = folder / "deps"
    deps.mkdir()
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy2(REPO_ROOT / name, deps / name)
    for package in ("common", "data_pipeline", "ml_lifecycle", "app"):
        (deps / package).mkdir()
    context = build_context(folder / "context")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip_install(python, "-c", "requirements.lock", f"./[{extra}]", cwd=deps)
    pip_install(python, "--no-deps", ".", cwd=context)
    return python


def can_import(python: Path, module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", probe], timeout=60, check=False).returncode == 0


def run(
    python: Path, *args: str, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def layer_env(venv_python: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a container: the virtualenv first on PATH, no repository on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = f"{venv_python.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"DATABASE_URL": database_url, "TZ": "UTC", **extra})
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory (like the images' /app): no .env, no repository files."""
    folder = tmp_path / "app"
    folder.mkdir()
    return folder


def migrate_with(python: Path, workdir: Path, env: dict[str, str]) -> None:
    """The compose ``migrate`` step from this virtualenv: ``alembic upgrade head``."""
    context = workdir.parent / "context"
    result = run(python.parent / "alembic", "-c", str(context / "alembic.ini"), "upgrade", "head",
                 cwd=workdir, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_pipeline_layer_installs_without_tensorflow_or_mlflow_and_ingests(
    tmp_path: Path, workdir: Path, prices_dir: Path
) -> None:
    python = make_venv(tmp_path, "pipeline")
    assert not can_import(python, "tensorflow")
    assert not can_import(python, "mlflow")
    url = f"sqlite:///{workdir / 'stockcast.db'}"
    env = layer_env(python, url)
    migrate_with(python, workdir, env)
    helped = run(python, "-m", "data_pipeline", "--help", cwd=workdir, env=env)
    assert helped.returncode == 0, helped.stderr
    assert "ingest" in helped.stdout and "schedule" in helped.stdout
    ingest = run(
        python, "-m", "data_pipeline", "ingest", "--source", "snapshot",
        "--snapshot-dir", str(prices_dir), "--tickers", "PETR4.SA", "AAPL", "--no-findings",
        cwd=workdir, env=env,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execute(text("select ticker, count(*) from price_bar group by ticker"))
            rows = {str(ticker): int(count) for ticker, count in result}
    finally:
        engine.dispose()
    assert set(rows) == {"PETR4.SA", "AAPL"}
    assert min(rows.values()) > 1000


def test_ml_layer_installs_and_its_entry_point_and_mlflow_server_start(
    tmp_path: Path, workdir: Path
) -> None:
    python = make_venv(tmp_path, "ml")
    assert can_import(python, "tensorflow")
    env = layer_env(python, f"sqlite:///{workdir / 'stockcast.db'}")
    helped = run(python, "-m", "ml_lifecycle", "--help", cwd=workdir, env=env)
    assert helped.returncode == 0, helped.stderr
    assert "train" in helped.stdout and "schedule" in helped.stdout
    server = run(python.parent / "mlflow", "server", "--help", cwd=workdir, env=env)
    assert server.returncode == 0, server.stderr
    assert "--serve-artifacts" in server.stdout
    assert "--allowed-hosts" in server.stdout


@pytest.fixture
def api_python(tmp_path: Path) -> Path:
    return make_venv(tmp_path, "api")


@pytest.fixture
def api_server(api_python: Path, workdir: Path) -> Iterator[str]:
    """``python -m app serve`` from the API's virtualenv, on a free port; its base URL."""
    env = layer_env(
        api_python,
        f"sqlite:///{workdir / 'stockcast.db'}",
        MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
        APP_ENVIRONMENT="production",
        APP_SECRET_KEY="venv-test-signing-key-" + "v" * 40,
        APP_MODEL_POLL_SECONDS="0",
        APP_METRICS_TOKEN=METRICS_TOKEN,
    )
    migrate_with(api_python, workdir, env)
    port = free_port()
    log = (workdir / "api.log").open("w")
    proc = subprocess.Popen(
        [str(api_python), "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


def test_api_layer_has_no_tensorflow_and_serves_health(
    api_python: Path, api_server: str, workdir: Path
) -> None:
    tf = subprocess.run(
        [str(api_python), "-c", "import tensorflow"], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert tf.returncode != 0
    assert "No module named 'tensorflow'" in tf.stderr
    assert not can_import(api_python, "keras")
    deadline = time.monotonic() + 120
    response = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{api_server}/health", timeout=5)
            break
        except httpx.HTTPError:
            time.sleep(0.5)
    assert response is not None, (workdir / "api.log").read_text()[-3000:]
    assert response.status_code == 200, response.text
    metrics = httpx.get(
        f"{api_server}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5
    )
    assert metrics.status_code == 200
    assert "http_requests_total" in metrics.text
    # the image serves /docs without a CDN: Swagger UI's files are in its site-packages; the
    # page itself asks for a password (production: APP_DOCS=authenticated by default)
    bundle = httpx.get(f"{api_server}/docs/assets/swagger-ui-bundle.js", timeout=5)
    assert bundle.status_code == 200
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in bundle.content
    assert httpx.get(f"{api_server}/docs", timeout=5).status_code == 401
