"""A started worker leaves its startup objects out of the garbage collector's full passes.

Before this, every full collection of a worker traversed the ~300,000 objects of the
libraries, the app and the models: 180-260 ms with the event loop stopped, every few seconds
under load, which set the p99 latency (decision 13). The test counts
objects rather than timing a collection: a full pass costs in proportion to the objects it
traverses (``gc.get_objects()``), and the frozen ones are never traversed again.

Runs in a subprocess: the app freezes the heap of the process it runs in, and this test
process runs many apps.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.app.conftest import TICKER, Registry, run_app_script
from tests.app.factories import PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SCRIPT = textwrap.dedent(
    f"""
    import gc, json
    from fastapi.testclient import TestClient
    from app.main import create_app

    with TestClient(create_app()) as client:
        token = client.post(
            "/auth/token", data={{"username": "ana", "password": {PASSWORD!r}}}
        ).json()["access_token"]
        for _ in range(50):
            response = client.get(
                "/predict/{TICKER}?horizon=3", headers={{"Authorization": "Bearer " + token}}
            )
            assert response.status_code == 200, response.text
        gc.collect()
        counts = {{"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}}
        print("GC", json.dumps(counts))
    """
)


def test_a_full_collection_no_longer_traverses_the_startup_objects(
    app_db_url: str, registry: Registry, users: dict[str, str]
) -> None:
    """After startup and 50 predictions, a full pass sees a small fraction of the heap."""
    result = run_app_script(SCRIPT, database_url=app_db_url, registry=registry, LOG_LEVEL="WARNING")
    line = next(row for row in result.stdout.splitlines() if row.startswith("GC "))
    counts = json.loads(line.removeprefix("GC "))
    # the libraries, the app and the champion: far more than 100,000 objects
    assert counts["frozen"] > 100_000, counts
    # what a full collection still traverses: what the requests left alive, a few percent
    assert counts["tracked"] < counts["frozen"] / 10, counts
