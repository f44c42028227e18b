"""The API serves ONNX: creating it and serving a prediction never imports TensorFlow/Keras.

Runs in a subprocess, because the training fixture imported TensorFlow into this process.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.app.conftest import TICKER, Registry, run_app_script
from tests.app.factories import PASSWORD

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SCRIPT = textwrap.dedent(
    f"""
    import sys
    from fastapi.testclient import TestClient
    from app.main import create_app

    with TestClient(create_app(configure_process=False)) as client:
        token = client.post(
            "/auth/token", data={{"username": "ana", "password": {PASSWORD!r}}}
        ).json()["access_token"]
        response = client.get(
            "/predict/{TICKER}?horizon=3", headers={{"Authorization": "Bearer " + token}}
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 3
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    print("LEAKED", leaked)
    sys.exit(1 if leaked else 0)
    """
)


def test_serving_a_prediction_never_imports_tensorflow(
    app_db_url: str, registry: Registry, users: dict[str, str]
) -> None:
    """A fresh process creates the app, loads the champion and predicts without TensorFlow."""
    result = run_app_script(SCRIPT, database_url=app_db_url, registry=registry)
    assert "LEAKED []" in result.stdout
