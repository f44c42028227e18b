"""The app's route table: every path operation served from one flat table, in the order of
the routers, and routing answers as before (404, 405, the metrics' route label)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.main import create_app, serve_routes


def test_every_path_operation_is_in_the_apps_own_table_in_the_routers_order() -> None:
    app = create_app()
    assert all(isinstance(route, APIRoute) for route in app.routes)
    table = [(r.path, sorted(r.methods or ())) for r in app.routes if isinstance(r, APIRoute)]
    assert table[:6] == [
        ("/auth/token", ["POST"]),
        ("/auth/me", ["GET"]),
        ("/predict/{ticker}", ["GET"]),
        ("/predict/{ticker}", ["POST"]),
        ("/health", ["GET"]),
        ("/ready", ["GET"]),
    ]


def test_routing_answers_404_405_and_labels_the_route_template() -> None:
    client = TestClient(create_app())  # no lifespan: /health needs none
    labels = {"method": "POST", "handler": "/health", "status": "405"}
    before = REGISTRY.get_sample_value("http_requests_total", labels) or 0.0
    assert client.get("/health").json() == {"status": "ok"}
    refused = client.post("/health")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    assert REGISTRY.get_sample_value("http_requests_total", labels) == before + 1
    assert client.get("/no-such-route").status_code == 404


def test_a_router_that_includes_another_is_refused() -> None:
    outer, inner = APIRouter(prefix="/outer"), APIRouter()

    @inner.get("/x")
    async def x() -> dict[str, str]:
        return {}

    outer.include_router(inner)
    with pytest.raises(TypeError, match="not a path operation"):
        serve_routes(FastAPI(), outer)
