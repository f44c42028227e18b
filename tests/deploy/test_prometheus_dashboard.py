"""The monitoring path end to end: the real API -> the real Prometheus -> every dashboard query.

A tiny LSTM is trained on real PETR4.SA bars into a temporary MLflow store; ``python -m app
serve`` runs in a subprocess on a free port; Debian's ``prometheus`` runs with the project's
``deploy/prometheus/prometheus.yml`` (scrape target rewritten to that port, 1 s scrapes) and
rules; traffic is sent (login, predictions, a 404); then every PromQL expression of the
Grafana dashboard is evaluated through Prometheus' HTTP API, with Grafana's variables
replaced by concrete values.

The store first holds the bars up to :data:`SPLIT_DATE` only; once predictions are made, the
rest of the CSV is ingested, so the forecasts meet their outcomes and the "Realized accuracy"
row has data (the API refreshes its gauges every second here).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text

from common.db import create_db_engine, make_session_factory
from tests.conftest import REPO_ROOT, migrate
from tests.deploy.conftest import DEPLOY_DIR
from tests.processes import free_port, stop_process

TICKER = "PETR4.SA"
PASSWORD = "correct horse battery staple"
DASHBOARD = DEPLOY_DIR / "grafana" / "dashboards" / "stockcast.json"
#: Grafana's interval variables, replaced as Grafana would for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
#: Last bar stored when the API starts; the following bars arrive after the predictions.
SPLIT_DATE = "2023-12-01"


@dataclass(frozen=True)
class RunningApi:
    base_url: str
    port: int
    metrics_port: int
    model_version: str
    database_url: str
    env: dict[str, str]
    folder: Path


def wait_until(
    check: Any, *, timeout: float, what: str, proc: subprocess.Popen[Any] | None = None
) -> Any:
    """Poll ``check()`` until it returns a truthy value; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with status {proc.returncode}")
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def ingest_snapshot(snapshot_dir: Path, *, env: dict[str, str], cwd: Path) -> None:
    """``python -m data_pipeline ingest`` of :data:`TICKER` from ``snapshot_dir``."""
    ingest = subprocess.run(
        [sys.executable, "-m", "data_pipeline", "ingest", "--source", "snapshot",
         "--snapshot-dir", str(snapshot_dir), "--tickers", TICKER, "--no-findings"],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False,
    )  # fmt: skip
    assert ingest.returncode == 0, ingest.stderr


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, prices_dir: Path) -> Iterator[RunningApi]:
    """``python -m app serve`` on a free port: SQLite store with real bars, a trained champion."""
    from ml_lifecycle.config import load_config  # noqa: PLC0415
    from ml_lifecycle.tracking import Tracking  # noqa: PLC0415
    from ml_lifecycle.train import train_and_register  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("stack")
    database_url = f"sqlite:///{folder / 'stockcast.db'}"
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    migrate(database_url)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "APP_ENVIRONMENT": "production",
        "APP_SECRET_KEY": "deploy-test-signing-key-" + "s" * 40,
        # as in docker-compose.yml: the metrics on a port of their own
        "APP_METRICS_PORT": str(free_port()),
        "APP_MODEL_POLL_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
        "APP_ACCURACY_REFRESH_SECONDS": "1",
    }
    early = folder / "prices-to-split"
    early.mkdir()
    lines = (prices_dir / f"{TICKER}.csv").read_text().splitlines(keepends=True)
    (early / f"{TICKER}.csv").write_text(
        "".join([lines[0], *(line for line in lines[1:] if line[:10] <= SPLIT_DATE)])
    )
    ingest_snapshot(early, env=env, cwd=folder)
    engine = create_db_engine(database_url)
    try:
        summary = train_and_register(
            session_factory=make_session_factory(engine),
            ticker=TICKER,
            config=load_config(
                lookback=20, units=8, epochs=2, history_bars=800, folds=2, fold_bars=30
            ),
            tracking=Tracking(tracking_uri),
            reports_dir=folder / "reports",
        )
    finally:
        engine.dispose()
    assert summary.ok, summary
    user = subprocess.run(
        [sys.executable, "-m", "app", "create-user", "ana"],
        input=PASSWORD + "\n", capture_output=True, text=True, env=env, cwd=folder,
        timeout=120, check=False,
    )  # fmt: skip
    assert user.returncode == 0, user.stderr
    port = free_port()
    log = (folder / "api.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{base_url}/ready", timeout=5).status_code == 200,
            timeout=120, what="the API to be ready", proc=proc,
        )  # fmt: skip
        yield RunningApi(
            base_url=base_url, port=port, metrics_port=int(env["APP_METRICS_PORT"]),
            model_version=str(summary.version),
            database_url=database_url, env=env, folder=folder,
        )  # fmt: skip
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="module")
def prometheus(
    prometheus_bin: Path, api: RunningApi, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Debian's Prometheus with the project's config, scraping the test API every second."""
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((DEPLOY_DIR / "prometheus" / "prometheus.yml").read_text())
    port = free_port()
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_job = jobs["stockcast-api"]
    api_job["scrape_interval"] = "1s"
    api_job["scrape_timeout"] = "1s"
    api_job["static_configs"][0]["targets"] = [f"127.0.0.1:{api.metrics_port}"]
    jobs["prometheus"]["static_configs"][0]["targets"] = [f"127.0.0.1:{port}"]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    for rule_file in config["rule_files"]:
        shutil.copy(DEPLOY_DIR / "prometheus" / rule_file, folder / rule_file)
    log = (folder / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [str(prometheus_bin), f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/-/ready", timeout=5).status_code == 200,
            timeout=60, what="Prometheus to be ready", proc=proc,
        )  # fmt: skip
        wait_until(
            lambda: query(url, 'up{job="stockcast-api"} == 1'),
            timeout=60, what="the first successful scrape of the API", proc=proc,
        )  # fmt: skip
        yield url
    finally:
        stop_process(proc)
        log.close()


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """Evaluate ``expr`` now through ``/api/v1/query``; fails the test on a parse error."""
    response = httpx.post(f"{prometheus_url}/api/v1/query", data={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression with Grafana's variables replaced) for every target."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):  # a row has none
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unhandled Grafana variable in {panel['title']}: {expr}"
            out.append((panel["title"], expr))
    return out


def send_traffic(api: RunningApi) -> None:
    """What users do: log in, ask for predictions, mistype a ticker; spread over a few scrapes."""
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        for _ in range(5):
            token = client.post("/auth/token", data={"username": "ana", "password": PASSWORD})
            assert token.status_code == 200, token.text
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            for horizon in (1, 3, 5):
                response = client.get(
                    f"/predict/{TICKER}", params={"horizon": horizon}, headers=headers
                )
                assert response.status_code == 200, response.text
            assert client.get("/predict/NOPE.SA", headers=headers).status_code == 404
            assert client.get("/health").status_code == 200
            time.sleep(1.0)


def logs_intervals(api: RunningApi) -> bool:
    """Whether the served model logs prediction-interval bounds (coverage needs them)."""
    engine = create_db_engine(api.database_url)
    try:
        with engine.connect() as conn:
            return bool(
                conn.scalar(text("SELECT COUNT(*) FROM prediction_log WHERE upper_95 IS NOT NULL"))
            )
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def realized(api: RunningApi, prices_dir: Path) -> None:
    """Predictions made on the split store, then the following bars ingested: the API's
    gauges (refreshed every second) report realized outcomes."""
    send_traffic(api)
    ingest_snapshot(prices_dir, env=api.env, cwd=api.folder)

    def outcomes_counted() -> bool:
        text_ = httpx.get(f"http://127.0.0.1:{api.metrics_port}/metrics", timeout=10).text
        return any(
            line.startswith(f'stockcast_realized_outcomes{{ticker="{TICKER}"}}')
            and float(line.split()[-1]) > 0
            for line in text_.splitlines()
        )

    wait_until(outcomes_counted, timeout=30, what="the realized-accuracy gauges to count outcomes")


@pytest.mark.slow
def test_every_dashboard_query_parses_and_returns_data(
    api: RunningApi, prometheus: str, realized: None
) -> None:
    send_traffic(api)
    # The last requests must be scraped (1 s interval) before the queries are evaluated.
    wait_until(
        lambda: query(prometheus, f'sum(stockcast_predictions_total{{ticker="{TICKER}"}}) >= 15'),
        timeout=30, what="the predictions to be scraped",
    )  # fmt: skip
    time.sleep(2.0)
    wait_until(
        lambda: query(prometheus, f'stockcast_realized_outcomes{{ticker="{TICKER}"}} > 0'),
        timeout=30, what="the realized outcomes to be scraped",
    )  # fmt: skip
    queries = dashboard_queries()
    assert len(queries) >= 21
    # coverage needs logged interval bounds, which a model without calibration does not have
    with_intervals = logs_intervals(api)
    empty = []
    for title, expr in queries:
        if "coverage" in expr and not with_intervals:
            continue
        result = query(prometheus, expr)
        values = [float(series["value"][1]) for series in result]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {expr} -> {result}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


@pytest.mark.slow
def test_dashboard_shows_route_templates_tickers_and_the_served_model_version(
    api: RunningApi, prometheus: str
) -> None:
    """What the panels display: routes by template (not raw paths), the ticker, its version."""
    send_traffic(api)
    by_route = query(prometheus, "sum by (handler) (rate(http_requests_total[1m]))")
    handlers = {series["metric"]["handler"] for series in by_route}
    assert {"/auth/token", "/predict/{ticker}", "/health"} <= handlers
    assert not any(TICKER in handler for handler in handlers)
    versions = query(prometheus, "max by (ticker) (stockcast_model_version_loaded)")
    assert [(s["metric"]["ticker"], s["value"][1]) for s in versions] == [
        (TICKER, api.model_version)
    ]
    per_minute = query(prometheus, "sum by (ticker) (rate(stockcast_predictions_total[1m])) * 60")
    assert [s["metric"]["ticker"] for s in per_minute] == [TICKER]
    assert float(per_minute[0]["value"][1]) > 0
    ratio = query(
        prometheus,
        '(sum(rate(http_requests_total{status=~"5.."}[1m])) or vector(0))'
        " / sum(rate(http_requests_total[1m]))",
    )
    assert float(ratio[0]["value"][1]) == 0.0  # 404s are not server errors


@pytest.mark.slow
def test_alert_rules_load_and_no_alert_fires_on_a_healthy_api(prometheus: str) -> None:
    body = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == {
        "StockcastApiDown", "StockcastApiHigh5xxRatio", "StockcastApiSlowP95",
        "StockcastNoModelServed", "StockcastChampionWorseThanNaive",
        "StockcastIntervalsUndercover",
    }  # fmt: skip

    def every_rule_evaluated() -> bool:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return all(rule.get("health") == "ok" for group in groups for rule in group["rules"])

    wait_until(every_rule_evaluated, timeout=20, what="every rule to be evaluated")
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert [a["labels"]["alertname"] for a in alerts if a["state"] != "inactive"] == []


def test_promtool_accepts_the_projects_config_and_rules(promtool_bin: Path) -> None:
    result = subprocess.run(
        [str(promtool_bin), "check", "config", str(DEPLOY_DIR / "prometheus" / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout + result.stderr
