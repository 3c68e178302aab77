"""Grid events: scheduler vocabulary, event payloads, envelopes and SSE text."""

from __future__ import annotations

from collections.abc import Callable
import contextlib
from decimal import Decimal
import json
from typing import Any

from hypothesis import given, settings, strategies as st
from pydantic import ValidationError
import pytest

from peergrid_core.errors import PeerGridProtocolError, PeerGridValidationError
from peergrid_core.events import (
    NODE_COMMAND_FOR_ACTION,
    EnergyMintData,
    EnergyMintEvent,
    EventType,
    GridSummary,
    HeartbeatEvent,
    NodeDataEvent,
    ScheduleCommand,
    ScheduleData,
    ScheduleEvent,
    SchedulerAction,
    node_command_for,
    parse_event,
    parse_event_json,
    parse_sse,
)
from peergrid_core.payloads import EnergyReport, HeartbeatPing, NodeDataPing, NodeState, parse_ping

from .payload_strategies import (
    DELETE,
    energy_reports,
    error_locs,
    heartbeats,
    identifiers,
    json_values,
    load_spec,
    mutated,
    node_data_pings,
    percents,
    report_ids,
)

REPORT_ID = "0190a2b4-7c3d-7e8f-9a0b-1c2d3e4f5a6b"

SCHEDULE: dict[str, Any] = {
    "device_id": "rpi-4b-prod-01",
    "commands": [
        {"uid": "NODE_A", "action": "discharge"},
        {"uid": "NODE_B", "action": "charge"},
    ],
    "grid_summary": {"node_count": 2, "avg_soc": 50.25, "soc_spread": 44.3},
}

# The specification's report (0.5 kWh) at quality factor 0.9: 450 tokens, 0.41 kg CO2.
MINT: dict[str, Any] = {
    "device_id": "rpi-4b-prod-01",
    "report_id": REPORT_ID,
    "sender_uid": "NODE_A",
    "receiver_uid": "NODE_B",
    "kwh_transferred": 0.5,
    "quality_factor": 0.9,
    "tokens_minted": 450,
    "co2_saved_kg": 0.41,
    "sell_price": 0.0125,
}


def _rejects(validate: Callable[[Any], object], obj: object, loc: tuple[str | int, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        validate(obj)
    assert loc in error_locs(caught.value), caught.value.errors()


# ---------------------------------------------------------------- scheduler vocabulary


@pytest.mark.parametrize(
    ("action", "command"),
    [
        (SchedulerAction.DISCHARGE, NodeState.SUPPLY),
        (SchedulerAction.CHARGE, NodeState.RECEIVE),
        (SchedulerAction.IDLE, NodeState.IDLE),
        (None, NodeState.IDLE),
    ],
)
def test_actions_translate_to_node_commands(
    action: SchedulerAction | None, command: NodeState
) -> None:
    """discharge -> SUPPLY, charge -> RECEIVE, idle or nothing -> IDLE."""
    assert node_command_for(action) is command


def test_translation_table_is_complete_and_read_only() -> None:
    """Every action has exactly one command, and the table cannot be edited."""
    assert set(NODE_COMMAND_FOR_ACTION) == set(SchedulerAction)
    assert len(set(NODE_COMMAND_FOR_ACTION.values())) == len(SchedulerAction)
    with pytest.raises(TypeError):
        NODE_COMMAND_FOR_ACTION[SchedulerAction.IDLE] = NodeState.SUPPLY  # type: ignore[index]


@pytest.mark.parametrize(
    ("wire", "action"),
    [
        ("discharge", SchedulerAction.DISCHARGE),
        ("CHARGE", SchedulerAction.CHARGE),
        ("Idle", SchedulerAction.IDLE),
        (None, SchedulerAction.IDLE),
    ],
)
def test_command_actions_are_read_leniently(wire: str | None, action: SchedulerAction) -> None:
    """Any case is accepted and null means idle; output is the lower-case word."""
    command = ScheduleCommand.model_validate({"uid": "NODE_A", "action": wire})
    assert command.action is action
    assert command.node_command is node_command_for(action)
    assert command.model_dump(mode="json")["action"] == action.value


def test_schedule_parses_and_maps_commands() -> None:
    """A schedule's commands map to node commands, keyed by uid."""
    schedule = ScheduleData.model_validate(SCHEDULE)
    assert schedule.node_commands() == {"NODE_A": NodeState.SUPPLY, "NODE_B": NodeState.RECEIVE}
    assert schedule.grid_summary.avg_soc == 50.25


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        # a node command is not a scheduler action
        (("commands", 0, "action"), "SUPPLY", None),
        (("commands", 0, "action"), "sell", None),
        (("commands", 0, "action"), 1, None),
        (("commands", 1, "uid"), "NODE_A", None),  # two commands for one node
        (("commands", 0, "uid"), "node a", None),
        (("commands", 0, "priority"), 1, None),
        # fewer nodes than commands
        (("grid_summary",), {"node_count": 1, "avg_soc": 50, "soc_spread": 0}, ("commands",)),
        (("grid_summary", "avg_soc"), 120.0, None),
        (("grid_summary", "avg_soc"), None, None),
        (("grid_summary", "soc_spread"), -2.0, None),
        (("grid_summary", "soc_spread"), float("nan"), None),
        (("grid_summary", "node_count"), "2", None),
        (("device_id",), "", None),
    ],
)
def test_bad_schedules_are_rejected_at_the_field(
    path: tuple[str | int, ...], value: object, loc: tuple[str, ...] | None
) -> None:
    """Each rule of a schedule is reported at the field that breaks it."""
    _rejects(ScheduleData.model_validate, mutated(SCHEDULE, path, value), loc or path)


def test_grid_summary_statistics_follow_the_node_count() -> None:
    """No nodes: no statistics. One node: no spread."""
    assert GridSummary.model_validate({"node_count": 0, "avg_soc": None, "soc_spread": None})
    _rejects(
        GridSummary.model_validate,
        {"node_count": 0, "avg_soc": 10.0, "soc_spread": None},
        ("avg_soc",),
    )
    assert GridSummary.model_validate({"node_count": 1, "avg_soc": 40.0, "soc_spread": 0})
    _rejects(
        GridSummary.model_validate,
        {"node_count": 1, "avg_soc": 40.0, "soc_spread": 5.0},
        ("soc_spread",),
    )


# ---------------------------------------------------------------- energy mint


def test_mint_matches_the_token_formula() -> None:
    """The example mint parses; amounts are exact decimals."""
    mint = EnergyMintData.model_validate(MINT)
    assert mint.tokens_minted == Decimal(450)
    assert mint.co2_saved_kg == Decimal("0.41")
    assert mint.sell_price == Decimal("0.0125")


def test_mint_from_report_computes_the_amounts() -> None:
    """from_report applies the token and carbon formulas to the report."""
    report = EnergyReport.model_validate(load_spec("energy_report") | {"report_id": REPORT_ID})
    mint = EnergyMintData.from_report(report, quality_factor=Decimal("0.9"))
    assert mint == EnergyMintData.model_validate(MINT | {"sell_price": None})
    other = EnergyMintData.from_report(
        report,
        quality_factor=Decimal("0.8123"),
        report_id="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        sell_price=Decimal("0.01"),
    )
    assert other.tokens_minted == Decimal("406.15")
    assert other.report_id.startswith("9f86")


def test_mint_needs_a_report_id() -> None:
    """A report without an id, and no id given, cannot become a mint event."""
    report = EnergyReport.model_validate(load_spec("energy_report"))
    with pytest.raises(PeerGridValidationError) as caught:
        EnergyMintData.from_report(report, quality_factor=Decimal(1))
    assert caught.value.field == "report_id"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("tokens_minted",), 500),  # quality factor ignored
        (("tokens_minted",), 0.45),  # kWh * quality, the 1000 forgotten
        (("tokens_minted",), 450.00000001),
        (("tokens_minted",), "450"),
        (("co2_saved_kg",), 0.5),
        (("co2_saved_kg",), -0.41),
        (("quality_factor",), 1.5),
        (("quality_factor",), 0.12345),
        (("quality_factor",), float("nan")),
        (("kwh_transferred",), 11),
        (("receiver_uid",), "NODE_A"),
        (("report_id",), DELETE),
        (("report_id",), "mint-1"),
        (("sell_price",), -0.01),
        (("sell_price",), 0.00000001),
        (("minted_at",), "2026-02-23T09:56:48Z"),
    ],
)
def test_bad_mints_are_rejected_at_the_field(path: tuple[str, ...], value: object) -> None:
    """Amounts that disagree with the formulas, bad ids and extra keys are refused."""
    _rejects(EnergyMintData.model_validate, mutated(MINT, path, value), path)


# ---------------------------------------------------------------- envelopes and SSE


def test_heartbeat_event_sse_text() -> None:
    """The SSE form is ``event:``, one ``data:`` line of compact JSON, a blank line."""
    event = HeartbeatEvent(data=HeartbeatPing(device_id="rpi-4b-prod-01", status="heartbeat"))
    assert event.to_sse() == (
        'event: heartbeat\ndata: {"device_id":"rpi-4b-prod-01","status":"heartbeat"}\n\n'
    )


def test_node_data_event_carries_the_full_ping() -> None:
    """node_data's payload is the ping exactly as the spec writes it."""
    ping = parse_ping(load_spec("ping_node_data"))
    assert isinstance(ping, NodeDataPing)
    text = NodeDataEvent(data=ping).to_sse()
    name_line, data_line, blank, end = text.split("\n")
    assert (name_line, blank, end) == ("event: node_data", "", "")
    assert json.loads(data_line.removeprefix("data: ")) == load_spec("ping_node_data")


def test_mint_event_sse_numbers_are_json_numbers() -> None:
    """Exact amounts are written as numbers a frontend can use directly."""
    event = EnergyMintEvent(data=EnergyMintData.model_validate(MINT))
    data = json.loads(event.to_sse().split("\n")[1].removeprefix("data: "))
    assert data["tokens_minted"] == 450
    assert data["co2_saved_kg"] == 0.41
    assert data["kwh_transferred"] == 0.5


@pytest.mark.parametrize(
    ("event_type", "data", "model"),
    [
        ("heartbeat", load_spec("ping_heartbeat"), HeartbeatEvent),
        ("node_data", load_spec("ping_node_data"), NodeDataEvent),
        ("schedule", SCHEDULE, ScheduleEvent),
        ("energy_mint", MINT, EnergyMintEvent),
    ],
)
def test_envelopes_are_discriminated_by_type(
    event_type: str, data: dict[str, Any], model: type
) -> None:
    """``type`` selects the payload model; the text form reads back identical."""
    event = parse_event({"type": event_type, "data": data})
    assert isinstance(event, model)
    assert event.type == EventType(event_type)
    assert parse_sse(event.to_sse()) == event
    assert parse_event_json(event.model_dump_json()) == event


@pytest.mark.parametrize(
    ("envelope", "loc"),
    [
        (
            {"type": "heartbeat", "data": {"device_id": "x", "status": "up"}},
            ("heartbeat", "data", "status"),
        ),
        (
            {"type": "schedule", "data": load_spec("ping_heartbeat")},
            ("schedule", "data", "commands"),
        ),
        ({"type": "energy_mint", "data": MINT, "id": 4}, ("energy_mint", "id")),
        ({"type": "energy_mint"}, ("energy_mint", "data")),
    ],
)
def test_bad_envelopes_name_the_field(envelope: dict[str, Any], loc: tuple[str, ...]) -> None:
    """Errors inside an envelope are located under its type tag."""
    _rejects(parse_event, envelope, loc)


@pytest.mark.parametrize(
    ("envelope", "kind"),
    [
        ({"type": "reboot", "data": {}}, "union_tag_invalid"),
        ({"data": {}}, "union_tag_not_found"),
        ([], "model_attributes_type"),
        ("heartbeat", "model_attributes_type"),
    ],
)
def test_unknown_or_missing_type_is_rejected(envelope: object, kind: str) -> None:
    """An envelope whose type is not a grid event is refused; the message names ``type``."""
    with pytest.raises(ValidationError) as caught:
        parse_event(envelope)
    (line,) = caught.value.errors()
    assert line["type"] == kind
    if isinstance(envelope, dict):
        assert "'type'" in line["msg"]


def test_parse_sse_follows_the_field_rules() -> None:
    """Comments, ids and multi-line data are handled as SSE clients do."""
    text = (
        ": keep-alive\n"
        "id: 7\n"
        "event: heartbeat\n"
        'data: {"device_id": "rpi-4b-prod-01",\n'
        'data: "status": "heartbeat"}\n'
        "\n"
    )
    event = parse_sse(text)
    assert isinstance(event, HeartbeatEvent)
    assert event.data.device_id == "rpi-4b-prod-01"
    assert isinstance(
        parse_sse('event:heartbeat\ndata:{"device_id":"a","status":"heartbeat"}'), HeartbeatEvent
    )


@pytest.mark.parametrize(
    "text",
    [
        'data: {"device_id": "a", "status": "heartbeat"}\n\n',
        "event: heartbeat\n\n",
        "event: heartbeat\ndata: {not json\n\n",
        "",
    ],
)
def test_malformed_sse_is_a_protocol_error(text: str) -> None:
    """Framing problems are protocol errors; content problems are validation errors."""
    with pytest.raises(PeerGridProtocolError):
        parse_sse(text)


def test_sse_with_invalid_content_is_a_validation_error() -> None:
    """Well-framed SSE with a bad payload raises ValidationError at the field."""
    with pytest.raises(ValidationError) as caught:
        parse_sse('event: heartbeat\ndata: {"device_id": "", "status": "heartbeat"}\n\n')
    assert ("heartbeat", "data", "device_id") in error_locs(caught.value)


# ---------------------------------------------------------------- properties


@st.composite
def schedules(draw: Callable[..., Any]) -> ScheduleData:
    """A valid schedule: unique uids, a summary covering every commanded node."""
    uids = draw(st.lists(identifiers, max_size=6, unique=True))
    extra_nodes = draw(st.integers(min_value=0, max_value=4))
    node_count = len(uids) + extra_nodes
    commands = tuple(
        ScheduleCommand(uid=uid, action=draw(st.sampled_from(SchedulerAction))) for uid in uids
    )
    if node_count == 0:
        summary = GridSummary(node_count=0, avg_soc=None, soc_spread=None)
    else:
        spread = 0.0 if node_count == 1 else draw(percents)
        summary = GridSummary(node_count=node_count, avg_soc=draw(percents), soc_spread=spread)
    return ScheduleData(device_id=draw(identifiers), commands=commands, grid_summary=summary)


@st.composite
def mints(draw: Callable[..., Any]) -> EnergyMintData:
    """A mint event for a random report and quality factor."""
    report = draw(energy_reports())
    factor = draw(st.decimals(min_value=0, max_value=1, places=4, allow_nan=False))
    price = draw(st.none() | st.decimals(min_value=0, max_value=1000, places=7, allow_nan=False))
    return EnergyMintData.from_report(
        report, quality_factor=factor, report_id=draw(report_ids), sell_price=price
    )


events = st.one_of(
    heartbeats.map(lambda data: HeartbeatEvent(data=data)),
    node_data_pings().map(lambda data: NodeDataEvent(data=data)),
    schedules().map(lambda data: ScheduleEvent(data=data)),
    mints().map(lambda data: EnergyMintEvent(data=data)),
)


@settings(max_examples=80)
@given(event=events)
def test_event_round_trips_are_identity(event: Any) -> None:
    """Envelope -> JSON -> envelope and envelope -> SSE -> envelope are identities."""
    assert parse_event_json(event.model_dump_json()) == event
    assert parse_event(json.loads(event.model_dump_json())) == event
    text = event.to_sse()
    assert text.count("\n") == 3
    assert text.endswith("\n\n")
    assert parse_sse(text) == event


@settings(max_examples=150)
@given(event_type=st.sampled_from([*EventType, "other"]), data=json_values, whole=json_values)
def test_arbitrary_envelopes_only_ever_raise_validation_error(
    event_type: str, data: object, whole: object
) -> None:
    """Random envelopes and payloads validate or raise ValidationError, never crash."""
    for candidate in ({"type": event_type, "data": data}, whole):
        with contextlib.suppress(ValidationError):
            parse_event(candidate)
    for model in (ScheduleData, EnergyMintData, GridSummary):
        with contextlib.suppress(ValidationError):
            model.model_validate(data)
