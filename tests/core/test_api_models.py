"""The HTTP API's request rules and answer models (pure core)."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from hypothesis import given, settings, strategies as st
from pydantic import ValidationError
import pytest

from peergrid_core.api import (
    MAX_BODY_BYTES,
    ApiError,
    ApiPath,
    ErrorCode,
    FieldProblem,
    GatewayEnergyReport,
    PingAccepted,
    ReportAccepted,
    decode_json_body,
    field_problems,
)
from peergrid_core.errors import PeerGridValidationError
from peergrid_core.events import EventType
from peergrid_core.payloads import NodeDataPing

REPORT: dict[str, Any] = {
    "device_id": "rpi-4b-prod-01",
    "sender_uid": "NODE_A",
    "receiver_uid": "NODE_B",
    "kwh_transferred": 0.5,
    "duration_seconds": 1800,
    "avg_voltage": 3.92,
    "avg_current": 0.27,
    "report_id": "6f1c2a8e-3b7d-4c55-9a0e-2d4b8c7f1e93",
}


def test_paths_live_under_the_prefix() -> None:
    """Every endpoint is in Home Assistant's API namespace, under /api/peergrid/."""
    assert all(path.value.startswith("/api/peergrid/") for path in ApiPath)
    assert ApiPath.IOT_PING.value == "/api/peergrid/iot/ping"
    assert MAX_BODY_BYTES == 65536


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1, "b": [1.5, -2, null, true]}', {"a": 1, "b": [1.5, -2, None, True]}),
        ('"x"', "x"),
        ("1e308", 1e308),
        ('{"a": {"a": 1}}', {"a": {"a": 1}}),
    ],
)
def test_decode_accepts_json(text: str, value: object) -> None:
    """Plain JSON decodes as usual, the same key in different objects included."""
    assert decode_json_body(text.encode()) == value


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b'{"voltage": NaN}', "", "NaN is not a JSON number"),
        (b'{"voltage": Infinity}', "", "Infinity is not a JSON number"),
        (b'{"voltage": -Infinity}', "", "-Infinity is not a JSON number"),
        (b'{"voltage": 1e999}', "", "out of range"),
        (b'{"voltage": -1e999}', "", "out of range"),
        (b'{"a": 1, "a": 2}', "a", "appears more than once"),
        (b'{"n": {"b": 1, "b": 1}}', "b", "appears more than once"),
        (b"{", "", "not JSON"),
        (b"", "", "not JSON"),
        (b"\xff\xfe", "", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "", "nested too deeply"),
        (b"1" * 5000, "", "not usable JSON"),
    ],
)
def test_decode_refuses(body: bytes, field: str, message: str) -> None:
    """Non-JSON tokens, overflowing numbers, repeated keys and garbage name the field."""
    with pytest.raises(PeerGridValidationError) as caught:
        decode_json_body(body)
    assert caught.value.field == field
    assert message in caught.value.message


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=256))
def test_decode_never_crashes(body: bytes) -> None:
    """Arbitrary bytes decode or raise PeerGridValidationError, nothing else."""
    with contextlib.suppress(PeerGridValidationError):
        decode_json_body(body)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_decode_round_trips(value: object) -> None:
    """Whatever json.dumps writes (finite numbers) decodes to the same value."""
    decoded = decode_json_body(json.dumps(value).encode())
    assert decoded == value
    if isinstance(value, float):
        assert math.isfinite(decoded)  # type: ignore[arg-type]


def test_field_problems_join_the_location() -> None:
    """Each pydantic error becomes a field path joined with dots."""
    with pytest.raises(ValidationError) as caught:
        NodeDataPing.model_validate(
            {
                "device_id": "rpi",
                "voltage": 3.9,
                "battery_level": 50,
                "state": "IDLE",
                "source": "rpi_energy_grid",
                "timestamp": "2026-02-23T09:56:48Z",
                "connected_nodes_count": 1,
                "connected_nodes": [{"uid": "A", "voltage": "3.9"}],
                "nodes_detail": [
                    {"uid": "A", "ip": "10.0.0.2", "voltage": 3.9, "soc": 50, "state": "IDLE"}
                ],
                "extra": 1,
            }
        )
    problems = field_problems(caught.value)
    assert [problem.field for problem in problems] == ["connected_nodes.0.voltage", "extra"]
    assert all(problem.message for problem in problems)


def test_gateway_report_requires_an_id() -> None:
    """The API's report needs report_id; the general model does not."""
    assert GatewayEnergyReport.model_validate(REPORT).report_id == REPORT["report_id"]
    without = {key: value for key, value in REPORT.items() if key != "report_id"}
    with pytest.raises(ValidationError) as caught:
        GatewayEnergyReport.model_validate(without)
    assert [problem.field for problem in field_problems(caught.value)] == ["report_id"]


def test_answer_models_serialise_as_documented() -> None:
    """The answers' JSON is what docs/api.md shows."""
    assert PingAccepted(accepted=EventType.HEARTBEAT).model_dump(mode="json") == {
        "accepted": "heartbeat"
    }
    assert ReportAccepted(
        accepted=False, duplicate=True, report_id=REPORT["report_id"].upper()
    ).model_dump(mode="json") == {
        "accepted": False,
        "duplicate": True,
        "report_id": REPORT["report_id"],
    }
    error = ApiError(
        error=ErrorCode.INVALID_PAYLOAD,
        message="invalid payload: voltage",
        fields=(FieldProblem(field="voltage", message="Input should be a valid number"),),
    )
    assert json.loads(error.model_dump_json()) == {
        "error": "invalid_payload",
        "message": "invalid payload: voltage",
        "fields": [{"field": "voltage", "message": "Input should be a valid number"}],
    }
    with pytest.raises(ValidationError):
        PingAccepted(accepted="schedule")  # type: ignore[arg-type]
