"""Typed messages: golden bodies, strict validation, malformed lines, spec consistency."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
import re

from pydantic import ValidationError
import pytest

from peergrid_core.protocol import (
    Ack,
    Capability,
    Command,
    ErrorCode,
    ErrorFrame,
    FrameError,
    Hello,
    Mode,
    NodeState,
    Role,
    SessionSecrets,
    SignedSession,
    Status,
    TripReason,
    parse_controller_message,
    parse_node_message,
)
from peergrid_core.protocol.frames import decode_body, encode_body, strip_line

from .protocol_golden import GOLDEN_PATH, golden, key, line

SPEC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")


def _node_after_conversation() -> SignedSession:
    secrets = SessionSecrets.derive(key(), line("hello"), golden()["client_nonce"])
    node = SignedSession(secrets=secrets, role=Role.NODE)
    node.received_seq = golden()["next_seq"]["c2n"] - 1
    return node


@pytest.mark.parametrize("step", golden()["conversation"], ids=lambda s: s["name"])
def test_golden_bodies_parse_and_serialise_back_exactly(step: dict[str, object]) -> None:
    """Every golden body becomes a typed message that writes the same bytes again."""
    raw = str(step["line"]).encode()
    body_bytes = raw.split(b" ", 1)[1] if "mac" in step else raw
    body = decode_body(strip_line(body_bytes))
    parse = parse_node_message if step["dir"] == "n2c" else parse_controller_message
    if step["name"] == "cmd_bad_mode":  # the one deliberately bad command
        with pytest.raises(FrameError) as err:
            parse(body)
        assert (err.value.code, err.value.field, err.value.request_id, err.value.fatal) == (
            ErrorCode.BAD_REQUEST,
            "mode",
            6,
            False,
        )
        return
    message = parse(body)
    written = message.to_body()
    if "seq" in body:
        written = {"t": written["t"], "seq": body["seq"]} | written
    assert encode_body(written) == strip_line(body_bytes)


@pytest.mark.parametrize(
    "case",
    [c for c in golden()["malformed"] if c["state"] == "session"],
    ids=lambda c: f"{c['code']}-{c['field']}-{c['line'][:24]}",
)
def test_malformed_session_lines_give_the_listed_error(case: dict[str, object]) -> None:
    """Each malformed line is refused with the golden code, field and fatality."""
    node = _node_after_conversation()
    with pytest.raises(FrameError) as err:
        parse_controller_message(node.open(str(case["line"]).encode()))
    assert err.value.code == case["code"]
    assert err.value.field == case["field"]
    assert err.value.fatal is case["fatal"]
    if case["code"] == ErrorCode.BAD_REQUEST:
        assert err.value.request_id == 9


def test_commands_are_strict_about_types_and_ranges() -> None:
    """Booleans, floats, strings and lower-case modes never pass as protocol values."""
    assert Command.model_validate({"mode": "IDLE"}).lease_s is None
    for bad in (
        {"mode": "SUPPLY", "lease_s": True},
        {"mode": "SUPPLY", "lease_s": 1.0},
        {"mode": "SUPPLY", "lease_s": "30"},
        {"mode": "SUPPLY", "lease_s": 3601},
        {"mode": "supply", "lease_s": 30},
        {"mode": "RECEIVE"},
        {"mode": "SUPPLY", "lease_s": 30, "min_mv": 2999},
        {"mode": "SUPPLY", "lease_s": 30, "limit_mwh": 0},
    ):
        with pytest.raises(ValidationError):
            Command.model_validate(bad)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    """A newer node may add fields; this client still reads the frame."""
    body = decode_body(strip_line(line("ack_supply")).split(b" ", 1)[1])
    ack = parse_node_message(body | {"future": [1, 2], "t": "ack"})
    assert isinstance(ack, Ack)
    assert ack.mode is Mode.SUPPLY


def test_status_reads_units_enums_and_nulls() -> None:
    """Status fields keep integer units, enums and nulls of a failed sensor."""
    body = decode_body(strip_line(line("status_tripped")).split(b" ", 1)[1])
    status = parse_node_message(body)
    assert isinstance(status, Status)
    assert status.state is NodeState.TRIPPED
    assert status.last_trip is TripReason.LOW_VOLTAGE
    assert status.limits.min_mv == 3_300
    failed = Status.model_validate(body | {"mv": None, "ma": None, "mw": None, "soc": None})
    assert failed.mv is None
    with pytest.raises(ValidationError):
        Status.model_validate(body | {"soc": 1001})


def test_hello_capabilities_ignore_unknown_entries() -> None:
    """Capabilities from a newer node that this client does not know are dropped."""
    body = decode_body(strip_line(line("hello")))
    hello = Hello.model_validate(body | {"caps": ["supply", "teleport"]})
    assert hello.capabilities == frozenset({Capability.SUPPLY})


def test_error_frame_code_from_a_newer_protocol() -> None:
    """An unknown error code stays readable as text."""
    frame = ErrorFrame.model_validate({"code": "quantum_flux", "msg": "?"})
    assert frame.error_code is None
    assert ErrorFrame.model_validate({"code": "busy"}).error_code is ErrorCode.BUSY


def test_fatal_codes_match_the_specification() -> None:
    """The err table of docs/protocol.md and ErrorCode agree on every code and its fatality."""
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (yes|no)[^|]*\|", SPEC, flags=re.MULTILINE))
    assert set(rows) == {code.value for code in ErrorCode}
    for code in ErrorCode:
        assert code.always_fatal is (rows[code.value] == "yes"), code


def test_trip_reasons_match_the_specification() -> None:
    """Every trip reason has a rule in section 6, and no other reason is listed there."""
    section = SPEC.split("## 6. Trip reasons")[1].split("## 7.")[0]
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
    assert listed == {reason.value for reason in TripReason}


def test_unknown_type_keeps_the_request_id() -> None:
    """The err for an unknown type can echo the request id."""
    with pytest.raises(FrameError) as err:
        parse_controller_message({"t": "reboot", "id": 12})
    assert (err.value.code, err.value.request_id) == (ErrorCode.UNKNOWN_TYPE, 12)
    with pytest.raises(FrameError) as no_type:
        parse_node_message({"id": True})
    assert (no_type.value.code, no_type.value.request_id) == (ErrorCode.UNKNOWN_TYPE, None)


def test_golden_file_is_exactly_what_the_generator_writes() -> None:
    """Nobody edited the fixture by hand: regenerating it gives the same content."""
    spec = importlib.util.spec_from_file_location(
        "generate_golden", GOLDEN_PATH.with_name("generate_golden.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(json.dumps(module.build())) == golden()


@pytest.mark.parametrize(
    "step",
    [s for s in golden()["bench"]["conversation"] if s["dir"] == "n2c"],
    ids=lambda s: s["name"],
)
def test_bench_node_lines_are_unsigned_messages(step: dict[str, str]) -> None:
    """Bench-mode frames are plain JSON without seq and parse as the same messages."""
    message = parse_node_message(decode_body(strip_line(step["line"].encode())))
    assert getattr(message, "seq", None) is None
    assert encode_body(message.to_body()) + b"\n" == step["line"].encode()
