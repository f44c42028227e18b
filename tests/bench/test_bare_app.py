"""The ceiling: the bare FastAPI app, served by the benchmark as the API is served."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from bench.bare_app import app
from bench.environment import BenchEnvironment
from bench.server import CeilingServer
from tests.processes import free_port


def test_the_bare_app_answers_a_small_constant_dict() -> None:
    """One route, GET /, answering {"status": "ok"}; nothing else (no docs, no OpenAPI)."""
    with TestClient(app) as client:
        response = client.get("/")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert client.get("/docs").status_code == 404
        assert client.get("/openapi.json").status_code == 404


def test_the_ceiling_server_runs_two_workers_and_stops_them(tmp_path: Path) -> None:
    """Started by the benchmark, the bare app runs in its own process with two worker
    processes, answers without a ``server`` header (as the API), and stopping it ends the
    workers too."""
    bench = dataclasses.replace(BenchEnvironment(workers=2), var_dir=tmp_path)
    port = free_port()

    with CeilingServer(bench, port=port) as ceiling:
        workers = ceiling.worker_pids()
        assert len(workers) == 2
        response = httpx.get(f"http://127.0.0.1:{port}/")
        assert response.json() == {"status": "ok"}
        assert "server" not in response.headers
        proc = ceiling.proc
        assert proc is not None

    assert proc.poll() is not None
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
