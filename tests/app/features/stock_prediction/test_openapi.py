"""The OpenAPI contract of ``/predict`` stays what clients were given: the operations (security,
parameters, bodies, examples, responses), the security scheme, and every schema they refer to,
compared with ``openapi_predict.json``.

A deliberate change of the contract updates that file:
``.venv/bin/python -m tests.app.features.stock_prediction.test_openapi > \
tests/app/features/stock_prediction/openapi_predict.json``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from app.main import create_app

CONTRACT = Path(__file__).with_name("openapi_predict.json")
PATH = "/predict/{ticker}"
SCHEMA_REF = "#/components/schemas/"


def _refs(node: Any) -> set[str]:
    """The component schema names ``node`` refers to, directly."""
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix(SCHEMA_REF)} if "$ref" in node else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node)) if node else set()
    return set()


def predict_contract(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of an OpenAPI document a client of ``/predict`` relies on: its operations,
    the security schemes, and the component schemas they reach (transitively)."""
    operations = spec["paths"][PATH]
    schemas = spec["components"]["schemas"]
    wanted: set[str] = set()
    todo = _refs(operations)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo |= _refs(schemas[name])
    return {
        "paths": {PATH: operations},
        "securitySchemes": spec["components"]["securitySchemes"],
        "schemas": {name: schemas[name] for name in sorted(wanted)},
    }


def test_the_predict_contract_is_unchanged() -> None:
    """Same operations, security scheme (OAuth2PasswordBearer), parameters, examples and
    schemas as the recorded contract."""
    recorded = json.loads(CONTRACT.read_text(encoding="utf-8"))
    assert predict_contract(create_app().openapi()) == recorded


if __name__ == "__main__":
    sys.stdout.write(json.dumps(predict_contract(create_app().openapi()), indent=1, sort_keys=True))
    sys.stdout.write("\n")
