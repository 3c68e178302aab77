"""The OpenAPI document: up to date, well formed, and true to the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peergrid_core.api import ApiPath
from peergrid_core.openapi import OPENAPI_VERSION, build_openapi, main, render_openapi

DOCUMENT = Path(__file__).parents[2] / "docs" / "openapi.json"
PYTHON_ONLY_KEYWORDS = {"gt", "ge", "lt", "le", "max_digits", "decimal_places", "strict"}


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, node) pair of a JSON document."""
    found = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            found += walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += walk(value, f"{path}/{index}")
    return found


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as built from the models."""
    return build_openapi()


def test_committed_document_is_up_to_date() -> None:
    """docs/openapi.json is what the models produce (regenerate with the module)."""
    assert DOCUMENT.read_text(encoding="utf-8") == render_openapi(), (
        "docs/openapi.json is stale: run python -m peergrid_core.openapi docs/openapi.json"
    )


def test_every_endpoint_is_described(document: dict[str, Any]) -> None:
    """Each API path appears with its method, and POSTs list every error answer."""
    assert document["openapi"] == OPENAPI_VERSION
    assert set(document["paths"]) == {path.value for path in ApiPath}
    for path, item in document["paths"].items():
        (method,) = item
        operation = item[method]
        assert operation["operationId"]
        assert "401" in operation["responses"], path
        if method == "post":
            assert {"200", "400", "413", "415"} <= set(operation["responses"]), path
            assert operation["requestBody"]["required"] is True


def test_references_resolve(document: dict[str, Any]) -> None:
    """Every $ref points at a component schema, and every component is used."""
    schemas = document["components"]["schemas"]
    refs = {
        node["$ref"].removeprefix("#/components/schemas/")
        for _, node in walk(document)
        if isinstance(node, dict) and "$ref" in node
    }
    assert refs <= set(schemas)
    assert set(schemas) <= refs


def test_only_json_schema_keywords(document: dict[str, Any]) -> None:
    """No pydantic-only constraint names are left over; bounds are numbers."""
    for path, node in walk(document["components"]):
        if isinstance(node, dict) and "properties" not in path.rsplit("/", 1)[-1]:
            assert not PYTHON_ONLY_KEYWORDS & set(node), path
            for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if bound in node:
                    assert isinstance(node[bound], int | float), path


def test_schemas_follow_the_models(document: dict[str, Any]) -> None:
    """Spot checks: strict objects, the required report id, the energy bounds."""
    schemas = document["components"]["schemas"]
    report = schemas["GatewayEnergyReport"]
    assert report["additionalProperties"] is False
    assert "report_id" in report["required"]
    assert schemas["ReportKilowattHours-Input"]["minimum"] == 0.001
    assert schemas["ReportKilowattHours-Input"]["maximum"] == 10
    assert schemas["MeasuredKilowattHours-Input"] == {"type": "number", "minimum": 0}
    assert report["properties"]["duration_seconds"]["exclusiveMinimum"] == 0
    assert schemas["ApiError"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorCode"}
    assert set(schemas["ErrorCode"]["enum"]) == {
        "invalid_payload",
        "payload_too_large",
        "unsupported_media_type",
        "ledger_unavailable",
    }
    report_answers = document["paths"][ApiPath.IOT_ENERGY_REPORT.value]["post"]["responses"]
    assert "503" in report_answers
    events = document["paths"][ApiPath.IOT_EVENTS.value]["get"]["x-peergrid-events"]
    assert set(events) == {"heartbeat", "node_data", "schedule", "energy_mint"}


def test_main_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The generator writes the document and --check spots a stale or missing one."""
    target = tmp_path / "openapi.json"
    assert main([str(target), "--check"]) == 1
    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_openapi()
    assert main([str(target), "--check"]) == 0
    target.write_text("{}", encoding="utf-8")
    assert main([str(target), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
