"""The OpenAPI 3.1 description of the grid's IoT HTTP API, built from the models.

The schemas are pydantic's JSON Schemas of the very models the server
validates with (:mod:`.payloads`, :mod:`.events`, :mod:`.api`), so the
document cannot drift from the code as long as it is regenerated;
``tests/core/test_openapi.py`` fails when ``docs/openapi.json`` is stale.

Regenerate with::

    python -m peergrid_core.openapi docs/openapi.json

``--check`` compares instead of writing (exit status 1 when stale).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from decimal import Decimal
import json
from pathlib import Path
import re
import sys
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from . import __version__
from .api import (
    MAX_BODY_BYTES,
    SSE_KEEPALIVE_SECONDS,
    ApiError,
    ApiPath,
    GatewayEnergyReport,
    PingAccepted,
    ReportAccepted,
)
from .events import EnergyMintData, EventType, ScheduleData
from .payloads import (
    DepinHeartbeat,
    DepinNode,
    DepinNodeList,
    DepinRegistration,
    DepinStats,
    HeartbeatPing,
    NodeDataPing,
)
from .tokens import KWH_MAX, KWH_MIN

__all__ = ["OPENAPI_VERSION", "build_openapi", "main", "render_openapi"]

OPENAPI_VERSION: Final = "3.1.0"
"""OpenAPI 3.1 uses JSON Schema 2020-12, which is what pydantic emits."""

_REF_TEMPLATE: Final = "#/components/schemas/{model}"

_REQUEST_MODELS: Final[tuple[type[BaseModel], ...]] = (
    HeartbeatPing,
    NodeDataPing,
    GatewayEnergyReport,
    DepinRegistration,
    DepinHeartbeat,
)
_RESPONSE_MODELS: Final[tuple[type[BaseModel], ...]] = (
    PingAccepted,
    ReportAccepted,
    DepinNode,
    DepinNodeList,
    DepinStats,
    ApiError,
)
_EVENT_MODELS: Final[dict[EventType, type[BaseModel]]] = {
    EventType.HEARTBEAT: HeartbeatPing,
    EventType.NODE_DATA: NodeDataPing,
    EventType.SCHEDULE: ScheduleData,
    EventType.ENERGY_MINT: EnergyMintData,
}

_DESCRIPTION: Final = (
    "The IoT API of a PeerGrid Home Assistant instance: edge gateways post their "
    "heartbeats, node telemetry and completed transfers, follow grid events over "
    "server-sent events, and take part in the DePIN registry.\n\n"
    "Every request needs a Home Assistant access token (`Authorization: Bearer ...`). "
    f"Request bodies are JSON objects of at most {MAX_BODY_BYTES} bytes; unknown keys, "
    "NaN, Infinity and repeated keys are refused. A refused request changes nothing."
)


_BOUND_KEYWORDS: Final = {
    "gt": "exclusiveMinimum",
    "ge": "minimum",
    "lt": "exclusiveMaximum",
    "le": "maximum",
}
_NUMBER_OR_STRING: Final = [{"type": "number"}, {"type": "string"}]
_MODULE_QUALIFIED_NAME: Final = re.compile(r"^\w+__([A-Za-z0-9]+)__(\d+)$")


def _number(value: Any) -> Any:
    """Bounds of Decimal types come out as text; JSON Schema wants numbers."""
    if isinstance(value, str):
        number = Decimal(value)
        return int(number) if number == number.to_integral_value() else float(number)
    return value


def _standard_keywords(node: Any) -> Any:
    """Rewrite pydantic's leftovers into JSON Schema 2020-12 keywords.

    pydantic 2.10 writes a bound that sits on a type alias next to its ``$ref``
    under the Python name (``"ge": "0.001"``), and describes the input of an
    exact Decimal as "number or string"; the wire takes JSON numbers only
    (see :mod:`.payload_fields`).
    """
    if isinstance(node, list):
        return [_standard_keywords(item) for item in node]
    if not isinstance(node, dict):
        return node
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _BOUND_KEYWORDS:
            result[_BOUND_KEYWORDS[key]] = _number(value)
        elif key == "anyOf" and value == _NUMBER_OR_STRING:
            result["type"] = "number"
        else:
            result[key] = _standard_keywords(value)
    return result


def _readable_names(schemas: dict[str, Any]) -> dict[str, str]:
    """Map pydantic's module-qualified names for look-alike schemas to short ones."""
    renames: dict[str, str] = {}
    for name in schemas:
        if match := _MODULE_QUALIFIED_NAME.match(name):
            renames[name] = f"{match.group(1)}-{match.group(2)}"
    return renames


def _schema_name(
    model: type[BaseModel], mode: JsonSchemaMode, refs: Mapping[tuple[Any, JsonSchemaMode], Any]
) -> str:
    ref: str = refs[(model, mode)]["$ref"]
    return ref.rsplit("/", 1)[-1]


def _json_content(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": ref}}}


def _error_responses(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "The body is not JSON or does not match the model; `fields` lists every problem.",
        401: "No or an invalid Home Assistant access token (answered by Home Assistant).",
        413: f"The body is larger than {MAX_BODY_BYTES} bytes.",
        415: "The content type is not `application/json`.",
        503: "The ledger cannot record the report now (`ledger_unavailable`); send it again later.",
    }
    responses: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {"description": reasons[status]}
        if status != 401:
            response["content"] = _json_content(_REF_TEMPLATE.format(model="ApiError"))
        responses[str(status)] = response
    return responses


def build_openapi() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the API as JSON-ready data."""
    keys, top = models_json_schema(
        [(model, "validation") for model in _REQUEST_MODELS]
        + [(model, "serialization") for model in _RESPONSE_MODELS]
        + [(model, "serialization") for model in _EVENT_MODELS.values()],
        ref_template=_REF_TEMPLATE,
    )
    schemas = dict(sorted(top.get("$defs", {}).items()))

    def request(model: type[BaseModel]) -> str:
        return _REF_TEMPLATE.format(model=_schema_name(model, "validation", keys))

    def response(model: type[BaseModel]) -> str:
        return _REF_TEMPLATE.format(model=_schema_name(model, "serialization", keys))

    post_errors = _error_responses(400, 401, 413, 415)
    event_list = ", ".join(f"`{kind.value}`" for kind in _EVENT_MODELS)
    paths: dict[str, Any] = {
        ApiPath.IOT_PING.value: {
            "post": {
                "operationId": "postIotPing",
                "summary": "A gateway's heartbeat or node-data ping",
                "description": (
                    "A body with a `status` key is a heartbeat, any other body node data. "
                    "The ping is recorded as the gateway's latest state and published as a "
                    "`heartbeat` or `node_data` event (event stream and Home Assistant bus)."
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": request(HeartbeatPing)},
                                    {"$ref": request(NodeDataPing)},
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Accepted; names the kind of ping.",
                        "content": _json_content(response(PingAccepted)),
                    },
                    **post_errors,
                },
            }
        },
        ApiPath.IOT_EVENTS.value: {
            "get": {
                "operationId": "getIotEvents",
                "summary": "Grid events as server-sent events",
                "description": (
                    f"A `text/event-stream` of {event_list} events: `event: <type>` then "
                    "`data: <compact JSON>` and a blank line. A `: keep-alive` comment is sent "
                    f"after {SSE_KEEPALIVE_SECONDS:g} s without events. The stream ends when "
                    "Home Assistant stops, or when the client reads too slowly to keep up. "
                    "The `x-peergrid-events` extension maps each event type to the schema of "
                    "its data."
                ),
                "parameters": [
                    {
                        "name": "device_id",
                        "in": "query",
                        "required": False,
                        "description": "Only events about this gateway.",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": {
                        "description": "The `device_id` filter is not a valid device id.",
                        "content": _json_content(_REF_TEMPLATE.format(model="ApiError")),
                    },
                    "401": _error_responses(401)["401"],
                },
                "x-peergrid-events": {
                    kind.value: {"$ref": response(model)} for kind, model in _EVENT_MODELS.items()
                },
            }
        },
        ApiPath.IOT_ENERGY_REPORT.value: {
            "post": {
                "operationId": "postEnergyReport",
                "summary": "A completed transfer, minted exactly once",
                "description": (
                    "The report must match a transfer the grid ran between the same two nodes "
                    "that no other report minted, with the energy the grid measured leaving the "
                    "sender (within 5 % or 1 Wh); otherwise it is refused with 400 naming the "
                    "field and changes nothing. The first report with a given `report_id` mints "
                    "the energy tokens and the carbon credit, creates a sell order, and is "
                    "announced as an `energy_mint` event and on the Home Assistant bus "
                    "(`peergrid_energy_mint`, `peergrid_energy_report`); the same id again is "
                    "answered `accepted: false, duplicate: true` and changes nothing."
                ),
                "requestBody": {
                    "required": True,
                    "content": _json_content(request(GatewayEnergyReport)),
                },
                "responses": {
                    "200": {
                        "description": "Minted now, or already minted before.",
                        "content": _json_content(response(ReportAccepted)),
                    },
                    **post_errors,
                    **_error_responses(503),
                },
            }
        },
        ApiPath.DEPIN_REGISTER.value: {
            "post": {
                "operationId": "postDepinRegister",
                "summary": "Join the DePIN registry, or update the registration",
                "description": (
                    "A new gateway earns the registration reward. Registering a known "
                    "device id again updates its hardware, firmware, wallet and location "
                    "and keeps its history."
                ),
                "requestBody": {
                    "required": True,
                    "content": _json_content(request(DepinRegistration)),
                },
                "responses": {
                    "201": {
                        "description": "Registered.",
                        "content": _json_content(response(DepinNode)),
                    },
                    "200": {
                        "description": "Registration updated.",
                        "content": _json_content(response(DepinNode)),
                    },
                    **post_errors,
                },
            }
        },
        ApiPath.DEPIN_HEARTBEAT.value: {
            "post": {
                "operationId": "postDepinHeartbeat",
                "summary": "A registered gateway is alive",
                "description": (
                    "Uptime is counted on the receiver's clock. `routed_kwh` is cumulative; "
                    "its increase is rewarded and a decrease is read as a counter reset. "
                    "An unregistered `device_id` is refused (400 at `device_id`)."
                ),
                "requestBody": {
                    "required": True,
                    "content": _json_content(request(DepinHeartbeat)),
                },
                "responses": {
                    "200": {
                        "description": "Recorded; the node as now listed.",
                        "content": _json_content(response(DepinNode)),
                    },
                    **post_errors,
                },
            }
        },
        ApiPath.DEPIN_NODES.value: {
            "get": {
                "operationId": "getDepinNodes",
                "summary": "Every registered gateway",
                "responses": {
                    "200": {
                        "description": "The registry, ordered by device id.",
                        "content": _json_content(response(DepinNodeList)),
                    },
                    "401": _error_responses(401)["401"],
                },
            }
        },
        ApiPath.DEPIN_STATS.value: {
            "get": {
                "operationId": "getDepinStats",
                "summary": "Registry totals",
                "responses": {
                    "200": {
                        "description": "Counts, rewards and reliability per gateway.",
                        "content": _json_content(response(DepinStats)),
                    },
                    "401": _error_responses(401)["401"],
                },
            }
        },
    }
    document: dict[str, Any] = _standard_keywords(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "PeerGrid IoT API",
                "version": __version__,
                "description": _DESCRIPTION,
            },
            "servers": [{"url": "http://homeassistant.local:8123"}],
            "security": [{"homeAssistantToken": []}],
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "homeAssistantToken": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A Home Assistant long-lived access token.",
                    }
                },
            },
        }
    )
    # Bounds pydantic 2.10 loses when a type alias adds two of them next to a $ref.
    for name in ("ReportKilowattHours-Input", "ReportKilowattHours-Output"):
        document["components"]["schemas"][name]["minimum"] = _number(str(KWH_MIN))
        document["components"]["schemas"][name]["maximum"] = _number(str(KWH_MAX))
    text = json.dumps(document)
    for old, new in _readable_names(document["components"]["schemas"]).items():
        text = text.replace(f'"{old}"', f'"{new}"').replace(f'/{old}"', f'/{new}"')
    renamed: dict[str, Any] = json.loads(text)
    renamed["components"]["schemas"] = dict(sorted(renamed["components"]["schemas"].items()))
    return renamed


def render_openapi() -> str:
    """Return the document as the text stored in ``docs/openapi.json``."""
    return json.dumps(build_openapi(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check``, verify) the OpenAPI document; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m peergrid_core.openapi", description=__doc__.splitlines()[0]
    )
    parser.add_argument("output", type=Path, help="where the document lives (docs/openapi.json)")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if the file is stale"
    )
    args = parser.parse_args(argv)
    output: Path = args.output
    text = render_openapi()
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else None
        if current != text:
            sys.stderr.write(f"{output} is out of date; run python -m peergrid_core.openapi\n")
            return 1
        return 0
    output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
