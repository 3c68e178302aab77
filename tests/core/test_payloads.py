"""IoT ping, energy report and DePIN payload models."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from ipaddress import IPv4Address
import json
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel, ValidationError
import pytest

from peergrid_core.payload_fields import clock_context, new_report_id
from peergrid_core.payloads import (
    MAX_NODES_PER_GATEWAY,
    DepinHeartbeat,
    DepinNode,
    DepinNodeList,
    DepinRegistration,
    DepinStats,
    EnergyReport,
    HeartbeatPing,
    NodeDataPing,
    NodeState,
    parse_ping,
    parse_ping_json,
)

from .payload_strategies import (
    ACCOUNT_ADDRESS,
    CONTRACT_ADDRESS,
    DELETE,
    SPEC_PAYLOADS,
    all_paths,
    depin_heartbeats,
    energy_reports,
    error_locs,
    heartbeats,
    json_values,
    load_spec,
    mutated,
    node_data_pings,
    registrations,
)

SPEC_TIME = datetime(2026, 2, 23, 9, 56, 48, tzinfo=UTC)
UUID_ID = "0190a2b4-7c3d-7e8f-9a0b-1c2d3e4f5a6b"
DIGEST_ID = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _rejects(
    validate: Any, obj: object, loc: tuple[str | int, ...], kind: str | None = None
) -> None:
    """Assert ``validate(obj)`` fails with an error at ``loc`` (of type ``kind``)."""
    with pytest.raises(ValidationError) as caught:
        validate(obj)
    lines = caught.value.errors()
    assert loc in error_locs(caught.value), lines
    if kind is not None:
        assert kind in [line["type"] for line in lines if tuple(line["loc"]) == loc], lines


# ---------------------------------------------------------------- specification examples


def test_spec_heartbeat_parses_as_written() -> None:
    """The heartbeat example becomes a HeartbeatPing."""
    ping = parse_ping(load_spec("ping_heartbeat"))
    assert ping == HeartbeatPing(device_id="rpi-4b-prod-01", status="heartbeat")


def test_spec_node_data_parses_as_written() -> None:
    """The node-data example parses with its numbers, states and addresses."""
    ping = parse_ping(load_spec("ping_node_data"))
    assert isinstance(ping, NodeDataPing)
    assert ping.device_id == "rpi-4b-prod-01"
    assert ping.voltage == 3.921
    assert ping.battery_level == 72.4
    assert ping.state is NodeState.IDLE
    assert ping.source == "rpi_energy_grid"
    assert ping.timestamp == SPEC_TIME
    assert ping.timestamp.tzinfo is UTC
    assert [node.uid for node in ping.connected_nodes] == ["NODE_A", "NODE_B"]
    node_b = ping.node("NODE_B")
    assert node_b is not None
    assert node_b.ip == IPv4Address("192.168.1.102")
    assert (node_b.voltage, node_b.soc, node_b.state) == (3.61, 28.1, NodeState.IDLE)
    assert ping.node("NODE_Z") is None


def test_spec_energy_report_parses_as_written() -> None:
    """The energy report example parses; its kWh is the exact decimal 0.5."""
    report = EnergyReport.model_validate(load_spec("energy_report"))
    assert report.kwh_transferred == Decimal("0.5")
    assert isinstance(report.kwh_transferred, Decimal)
    assert (report.sender_uid, report.receiver_uid) == ("NODE_A", "NODE_B")
    assert report.duration_seconds == 1800
    assert (report.avg_voltage, report.avg_current) == (3.92, 0.27)
    assert report.report_id is None


@pytest.mark.parametrize("path", sorted(SPEC_PAYLOADS.glob("ping_*.json")), ids=lambda p: p.stem)
def test_spec_pings_parse_from_raw_bytes_and_dump_back(path: Any) -> None:
    """The raw request bodies parse, and dumping yields the same JSON values."""
    raw = path.read_bytes()
    ping = parse_ping_json(raw)
    assert ping.model_dump(mode="json") == json.loads(raw)


def test_spec_energy_report_dumps_back_to_the_example() -> None:
    """Without a report id the dump is the example (numbers compare equal)."""
    raw = (SPEC_PAYLOADS / "energy_report.json").read_bytes()
    report = EnergyReport.model_validate_json(raw)
    assert json.loads(report.model_dump_json(exclude_none=True)) == json.loads(raw)


# ---------------------------------------------------------------- bad node-data input

NODE_DATA_REJECTIONS: list[tuple[str, tuple[str | int, ...], object, str | None]] = [
    # wrong type
    ("voltage as text", ("voltage",), "3.921", "float_type"),
    ("battery as bool", ("battery_level",), True, "float_type"),
    ("count as text", ("connected_nodes_count",), "2", "int_type"),
    ("count as float", ("connected_nodes_count",), 2.0, "int_type"),
    ("nodes not a list", ("connected_nodes",), {"uid": "NODE_A"}, None),
    ("device id as number", ("device_id",), 7, "string_type"),
    ("ip as integer", ("nodes_detail", 0, "ip"), 3232235877, None),
    # missing
    ("no timestamp", ("timestamp",), DELETE, "missing"),
    ("no device id", ("device_id",), DELETE, "missing"),
    ("no detail ip", ("nodes_detail", 0, "ip"), DELETE, "missing"),
    ("no node voltage", ("connected_nodes", 1, "voltage"), DELETE, "missing"),
    # NaN and infinities
    ("NaN voltage", ("voltage",), float("nan"), "finite_number"),
    ("infinite node voltage", ("connected_nodes", 1, "voltage"), float("inf"), None),
    ("NaN soc", ("nodes_detail", 1, "soc"), float("nan"), "finite_number"),
    # negative
    ("negative voltage", ("voltage",), -3.9, "greater_than_equal"),
    ("negative battery", ("battery_level",), -0.1, "greater_than_equal"),
    ("negative count", ("connected_nodes_count",), -1, "greater_than_equal"),
    ("negative soc", ("nodes_detail", 0, "soc"), -5, "greater_than_equal"),
    # absurd
    ("voltage 1000", ("voltage",), 1000, "less_than_equal"),
    ("battery 250 %", ("battery_level",), 250, "less_than_equal"),
    ("node voltage 12 V", ("nodes_detail", 1, "voltage"), 12.0, "less_than_equal"),
    ("count 65", ("connected_nodes_count",), MAX_NODES_PER_GATEWAY + 1, "less_than_equal"),
    # extra fields
    ("extra top-level key", ("firmware",), "1.0", "extra_forbidden"),
    ("extra node key", ("connected_nodes", 0, "rssi"), -60, "extra_forbidden"),
    ("extra detail key", ("nodes_detail", 1, "mac"), "aa:bb", "extra_forbidden"),
    # bad timestamps
    ("naive timestamp", ("timestamp",), "2026-02-23T09:56:48", None),
    ("unix seconds", ("timestamp",), 1771840608, None),
    ("space separator", ("timestamp",), "2026-02-23 09:56:48Z", None),
    ("date only", ("timestamp",), "2026-02-23", None),
    ("month 13", ("timestamp",), "2026-13-23T09:56:48Z", None),
    ("clock never set", ("timestamp",), "1970-01-01T00:00:07Z", None),
    ("far future", ("timestamp",), "2190-01-01T00:00:00Z", None),
    ("not a time", ("timestamp",), "yesterday", None),
    ("year one with offset", ("timestamp",), "0001-01-01T00:30:00+01:00", None),
    # identifiers, states and addresses
    ("empty device id", ("device_id",), "", "string_pattern_mismatch"),
    ("device id with space", ("device_id",), "rpi 4b", "string_pattern_mismatch"),
    ("device id too long", ("device_id",), "r" * 65, "string_pattern_mismatch"),
    ("uid with slash", ("connected_nodes", 0, "uid"), "NODE/A", "string_pattern_mismatch"),
    ("unknown state", ("state",), "CHARGING", "enum"),
    ("scheduler word as state", ("nodes_detail", 0, "state"), "discharge", "enum"),
    ("malformed ip", ("nodes_detail", 0, "ip"), "192.168.1.301", "value_error"),
    ("unspecified ip", ("nodes_detail", 0, "ip"), "0.0.0.0", "value_error"),  # noqa: S104
    ("multicast ip", ("nodes_detail", 1, "ip"), "224.0.0.251", "value_error"),
    ("hostname for ip", ("nodes_detail", 1, "ip"), "node-b.local", "value_error"),
    ("overlong ip", ("nodes_detail", 1, "ip"), "1" * 46, "value_error"),
]


@pytest.mark.parametrize(
    ("path", "value", "kind"),
    [case[1:] for case in NODE_DATA_REJECTIONS],
    ids=[case[0] for case in NODE_DATA_REJECTIONS],
)
def test_bad_node_data_is_rejected_at_the_field(
    path: tuple[str | int, ...], value: object, kind: str | None
) -> None:
    """Each class of bad input is refused, and the error's loc names the field."""
    _rejects(parse_ping, mutated(load_spec("ping_node_data"), path, value), path, kind)


def test_count_mismatch_is_reported_at_the_count() -> None:
    """A count that disagrees with its list is located at connected_nodes_count."""
    payload = mutated(load_spec("ping_node_data"), ("connected_nodes_count",), 3)
    with pytest.raises(ValidationError) as caught:
        parse_ping(payload)
    (line,) = caught.value.errors()
    assert line["loc"] == ("connected_nodes_count",)
    assert line["type"] == "count_mismatch"
    assert line["msg"] == "connected_nodes_count is 3 but connected_nodes lists 2 nodes"


def test_duplicate_and_inconsistent_uids_are_located() -> None:
    """Repeats, unknown and missing detail entries each name their place."""
    spec = load_spec("ping_node_data")
    repeated = mutated(spec, ("connected_nodes", 1, "uid"), "NODE_A")
    _rejects(parse_ping, repeated, ("connected_nodes", 1, "uid"), "duplicate_uid")
    _rejects(parse_ping, repeated, ("nodes_detail", 1, "uid"), "unknown_node")
    detail_repeat = mutated(spec, ("nodes_detail", 1, "uid"), "NODE_A")
    _rejects(parse_ping, detail_repeat, ("nodes_detail", 1, "uid"), "duplicate_uid")
    stranger = mutated(spec, ("nodes_detail", 0, "uid"), "NODE_C")
    _rejects(parse_ping, stranger, ("nodes_detail", 0, "uid"), "unknown_node")
    _rejects(parse_ping, stranger, ("nodes_detail",), "missing_node")


def test_uid_identity_is_case_sensitive() -> None:
    """``node_a`` does not stand for ``NODE_A``: the detail must use the same uid."""
    payload = mutated(load_spec("ping_node_data"), ("nodes_detail", 0, "uid"), "node_a")
    _rejects(parse_ping, payload, ("nodes_detail", 0, "uid"), "unknown_node")


def test_detail_order_is_free_and_voltages_may_differ() -> None:
    """nodes_detail may list the nodes in another order, with fresher voltages."""
    spec = load_spec("ping_node_data")
    spec["nodes_detail"].reverse()
    spec["nodes_detail"][0]["voltage"] = 3.605
    ping = parse_ping(spec)
    assert isinstance(ping, NodeDataPing)
    assert [node.uid for node in ping.nodes_detail] == ["NODE_B", "NODE_A"]


def test_a_gateway_without_nodes_is_valid() -> None:
    """Zero nodes: empty lists and a zero count."""
    spec = load_spec("ping_node_data")
    spec.update(connected_nodes_count=0, connected_nodes=[], nodes_detail=[])
    assert isinstance(parse_ping(spec), NodeDataPing)


@pytest.mark.parametrize("state", ["idle", "Supply", "receive"])
def test_node_state_is_read_case_insensitively(state: str) -> None:
    """Lower- and mixed-case states are accepted and written upper-case."""
    ping = parse_ping(mutated(load_spec("ping_node_data"), ("nodes_detail", 0, "state"), state))
    assert isinstance(ping, NodeDataPing)
    assert ping.nodes_detail[0].state == state.upper()
    assert ping.model_dump(mode="json")["nodes_detail"][0]["state"] == state.upper()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-02-23T10:56:48+01:00", SPEC_TIME),
        ("2026-02-23T09:56:48.250Z", SPEC_TIME + timedelta(milliseconds=250)),
        ("2026-02-23T04:26:48-05:30", SPEC_TIME),
    ],
)
def test_timestamps_with_offsets_are_normalised_to_utc(text: str, expected: datetime) -> None:
    """Any explicit offset is accepted and held as UTC, written with Z."""
    ping = parse_ping(mutated(load_spec("ping_node_data"), ("timestamp",), text))
    assert isinstance(ping, NodeDataPing)
    assert ping.timestamp == expected
    assert ping.timestamp.tzinfo is UTC
    assert ping.model_dump(mode="json")["timestamp"].endswith("Z")


def test_receiver_clock_bounds_future_timestamps() -> None:
    """With the receiver's clock, a stamp more than five minutes ahead is refused."""
    spec = load_spec("ping_node_data")
    assert parse_ping(spec, now=SPEC_TIME - timedelta(minutes=4))
    _rejects(
        lambda obj: parse_ping(obj, now=SPEC_TIME - timedelta(minutes=6)), spec, ("timestamp",)
    )
    # Old telemetry (an offline backlog) is still accepted.
    assert parse_ping(spec, now=SPEC_TIME + timedelta(days=30))
    with pytest.raises(ValueError, match="timezone-aware"):
        clock_context(datetime(2026, 2, 23))  # noqa: DTZ001 - the naive clock is the point


def test_ipv6_and_loopback_node_addresses_are_accepted() -> None:
    """Simulated nodes live on 127.0.0.1; IPv6 LAN addresses are fine too."""
    spec = mutated(load_spec("ping_node_data"), ("nodes_detail", 0, "ip"), "127.0.0.1")
    spec = mutated(spec, ("nodes_detail", 1, "ip"), "fd00::b")
    ping = parse_ping(spec)
    assert isinstance(ping, NodeDataPing)
    assert [node.model_dump(mode="json")["ip"] for node in ping.nodes_detail] == [
        "127.0.0.1",
        "fd00::b",
    ]


# ---------------------------------------------------------------- heartbeat and dispatch


@pytest.mark.parametrize(
    ("payload", "loc", "kind"),
    [
        ({"device_id": "rpi-4b-prod-01", "status": "alive"}, ("status",), "literal_error"),
        ({"status": "heartbeat"}, ("device_id",), "missing"),
        ({"device_id": "rpi-4b-prod-01", "status": "heartbeat", "x": 1}, ("x",), "extra_forbidden"),
        ({"device_id": "rpi-4b-prod-01", "status": None}, ("status",), "literal_error"),
    ],
)
def test_bad_heartbeats_are_rejected(
    payload: dict[str, Any], loc: tuple[str, ...], kind: str
) -> None:
    """A body with ``status`` is judged as a heartbeat, field by field."""
    _rejects(parse_ping, payload, loc, kind)


def test_telemetry_with_a_status_key_is_judged_as_a_heartbeat() -> None:
    """The status key selects the heartbeat model; the telemetry keys are then extra."""
    payload = load_spec("ping_node_data") | {"status": "heartbeat"}
    _rejects(parse_ping, payload, ("voltage",), "extra_forbidden")


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2", b"\xff\xfe", b"null", b"42"])
def test_unparseable_bodies_raise_validation_errors(body: bytes) -> None:
    """Broken JSON and non-objects raise ValidationError, nothing else."""
    with pytest.raises(ValidationError):
        parse_ping_json(body)


def test_models_are_frozen() -> None:
    """A validated payload cannot be changed afterwards."""
    ping = parse_ping(load_spec("ping_heartbeat"))
    with pytest.raises(ValidationError, match="frozen"):
        ping.device_id = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- energy report

ENERGY_REJECTIONS: list[tuple[str, tuple[str, ...], object, str | None]] = [
    ("kwh as text", ("kwh_transferred",), "0.5", None),
    ("kwh as bool", ("kwh_transferred",), True, None),
    ("kwh NaN", ("kwh_transferred",), float("nan"), None),
    ("kwh infinite", ("kwh_transferred",), float("inf"), None),
    ("kwh negative", ("kwh_transferred",), -0.5, "greater_than_equal"),
    ("kwh below one Wh", ("kwh_transferred",), 0.0004, "greater_than_equal"),
    ("kwh above ten", ("kwh_transferred",), 10.0001, "less_than_equal"),
    ("kwh absurd", ("kwh_transferred",), 1e300, None),
    ("no kwh", ("kwh_transferred",), DELETE, "missing"),
    ("zero duration", ("duration_seconds",), 0, "greater_than"),
    ("negative duration", ("duration_seconds",), -1800, None),
    ("duration as text", ("duration_seconds",), "1800", "float_type"),
    ("absurd voltage", ("avg_voltage",), 1000, "less_than_equal"),
    ("negative current", ("avg_current",), -0.27, "greater_than_equal"),
    ("NaN current", ("avg_current",), float("nan"), "finite_number"),
    ("same node", ("receiver_uid",), "NODE_A", "same_node"),
    ("no sender", ("sender_uid",), DELETE, "missing"),
    ("extra key", ("timestamp",), "2026-02-23T09:56:48Z", "extra_forbidden"),
    ("counter report id", ("report_id",), "report-1", "value_error"),
    ("nil uuid", ("report_id",), "00000000-0000-0000-0000-000000000000", "value_error"),
    ("zero digest", ("report_id",), "0" * 64, "value_error"),
    ("braced uuid", ("report_id",), "{" + UUID_ID + "}", "value_error"),
    ("short digest", ("report_id",), DIGEST_ID[:63], "value_error"),
    ("overlong id", ("report_id",), DIGEST_ID + "0", "value_error"),
    ("report id as number", ("report_id",), 12345678901234567890, None),
]


@pytest.mark.parametrize(
    ("path", "value", "kind"),
    [case[1:] for case in ENERGY_REJECTIONS],
    ids=[case[0] for case in ENERGY_REJECTIONS],
)
def test_bad_energy_reports_are_rejected_at_the_field(
    path: tuple[str, ...], value: object, kind: str | None
) -> None:
    """kWh outside 0.001..10, NaN, wrong types, same node, bad ids: all located."""
    payload = mutated(load_spec("energy_report"), path, value)
    _rejects(EnergyReport.model_validate, payload, path, kind)


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (0.1, Decimal("0.1")),
        (0.30000000000000004, Decimal("0.3")),
        (1, Decimal(1)),
        (0.0012344, Decimal("0.001234")),
        (0.0012345, Decimal("0.001234")),  # half-even at the milliwatt-hour
        (10, Decimal(10)),
    ],
)
def test_kwh_is_read_exactly_to_the_milliwatt_hour(wire: float, expected: Decimal) -> None:
    """A float is read through its text; noise below 1 mWh is rounded away."""
    payload = mutated(load_spec("energy_report"), ("kwh_transferred",), wire)
    assert EnergyReport.model_validate(payload).kwh_transferred == expected
    from_json = EnergyReport.model_validate_json(json.dumps(payload))
    assert from_json.kwh_transferred == expected


@pytest.mark.parametrize("report_id", [UUID_ID, UUID_ID.upper(), DIGEST_ID, DIGEST_ID.upper()])
def test_report_ids_are_canonical_lower_case(report_id: str) -> None:
    """UUIDs and SHA-256 digests are accepted in any case and stored lower-case."""
    payload = mutated(load_spec("energy_report"), ("report_id",), report_id)
    assert EnergyReport.model_validate(payload).report_id == report_id.lower()


def test_new_report_ids_are_valid_and_distinct() -> None:
    """The helper produces ids the model accepts, never twice the same."""
    ids = {new_report_id() for _ in range(50)}
    assert len(ids) == 50
    for report_id in ids:
        payload = mutated(load_spec("energy_report"), ("report_id",), report_id)
        assert EnergyReport.model_validate(payload).report_id == report_id


# ---------------------------------------------------------------- DePIN

REGISTRATION: dict[str, Any] = {
    "device_id": "rpi-4b-prod-01",
    "hardware_model": "Raspberry Pi 4B",
    "firmware_version": "0.3.0",
    "wallet_address": ACCOUNT_ADDRESS,
    "location": {"latitude": 18.52, "longitude": 73.86},
}
DEPIN_HEARTBEAT: dict[str, Any] = {
    "device_id": "rpi-4b-prod-01",
    "uptime_seconds": 86_400,
    "timestamp": "2026-02-24T09:56:48Z",
    "routed_kwh": 1.25,
}
DEPIN_NODE: dict[str, Any] = REGISTRATION | {
    "registered_at": "2026-02-01T00:00:00Z",
    "last_heartbeat_at": "2026-02-24T09:56:48Z",
    "online": True,
    "reliability_pct": 97.5,
    "rewards_earned": 330,
    "routed_kwh": 1.25,
}


def test_depin_payloads_parse() -> None:
    """Registration, heartbeat, node list and stats accept sensible bodies."""
    registration = DepinRegistration.model_validate(REGISTRATION)
    assert registration.location is not None
    assert registration.location.latitude == 18.52
    heartbeat = DepinHeartbeat.model_validate(DEPIN_HEARTBEAT)
    assert heartbeat.routed_kwh == Decimal("1.25")
    assert DepinHeartbeat.model_validate(DEPIN_HEARTBEAT | {"routed_kwh": None}).routed_kwh is None
    listing = DepinNodeList.model_validate({"nodes": [DEPIN_NODE]})
    assert listing.nodes[0].rewards_earned == Decimal(330)
    stats = DepinStats.model_validate(
        {
            "registered_count": 2,
            "online_count": 1,
            "total_rewards": 430.5,
            "reliability_pct": {"rpi-4b-prod-01": 97.5, "rpi-4b-prod-02": 12},
        }
    )
    assert stats.total_rewards == Decimal("430.5")
    assert DepinRegistration.model_validate(REGISTRATION | {"wallet_address": CONTRACT_ADDRESS})
    assert DepinRegistration.model_validate(REGISTRATION | {"location": None}).location is None


def _typo(address: str) -> str:
    """The address with one character changed (still well-shaped base32)."""
    swapped = "B" if address[10] != "B" else "C"
    return address[:10] + swapped + address[11:]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("wallet_address",), _typo(ACCOUNT_ADDRESS)),
        (("wallet_address",), ACCOUNT_ADDRESS.lower()),
        (("wallet_address",), ACCOUNT_ADDRESS[:-1]),
        (("wallet_address",), "S" + ACCOUNT_ADDRESS[1:]),  # a secret seed's prefix
        (("wallet_address",), "GZ" + ACCOUNT_ADDRESS[2:]),  # not an account version byte
        (("wallet_address",), "0x52908400098527886E0F7030069857D2E4169EE7"),
        (("wallet_address",), None),
        (("firmware_version",), "v1"),
        (("firmware_version",), "1.2"),
        (("hardware_model",), ""),
        (("hardware_model",), " Raspberry Pi"),
        (("hardware_model",), "Pi\n4B"),
        (("hardware_model",), "x" * 65),
        (("location", "latitude"), 91.0),
        (("location", "longitude"), -180.5),
        (("location", "latitude"), float("nan")),
        (("location", "longitude"), "73.86"),
        (("device_id",), DELETE),
        (("serial",), "123"),
    ],
)
def test_bad_registrations_are_rejected_at_the_field(path: tuple[str, ...], value: object) -> None:
    """Mistyped wallets fail their checksum; every rejection names the field."""
    _rejects(DepinRegistration.model_validate, mutated(REGISTRATION, path, value), path)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("uptime_seconds",), -1),
        (("uptime_seconds",), float("inf")),
        (("uptime_seconds",), 1e12),
        (("timestamp",), "2026-02-24T09:56:48"),
        (("timestamp",), 1771840608),
        (("routed_kwh",), -0.5),
        (("routed_kwh",), "1.25"),
        (("routed_kwh",), float("nan")),
        (("device_id",), "rpi:01"),
    ],
)
def test_bad_depin_heartbeats_are_rejected_at_the_field(
    path: tuple[str, ...], value: object
) -> None:
    """Heartbeats with impossible uptimes, clocks or counters are refused."""
    _rejects(DepinHeartbeat.model_validate, mutated(DEPIN_HEARTBEAT, path, value), path)


def test_depin_node_rules() -> None:
    """Online needs a heartbeat, which cannot predate registration."""
    _rejects(
        DepinNode.model_validate,
        DEPIN_NODE | {"last_heartbeat_at": None},
        ("online",),
        "online_without_heartbeat",
    )
    assert DepinNode.model_validate(DEPIN_NODE | {"last_heartbeat_at": None, "online": False})
    _rejects(
        DepinNode.model_validate,
        DEPIN_NODE | {"last_heartbeat_at": "2026-01-31T23:59:59Z"},
        ("last_heartbeat_at",),
        "before_registration",
    )
    _rejects(DepinNode.model_validate, DEPIN_NODE | {"online": "yes"}, ("online",), "bool_type")
    _rejects(DepinNode.model_validate, DEPIN_NODE | {"reliability_pct": 101}, ("reliability_pct",))
    _rejects(
        DepinNode.model_validate,
        DEPIN_NODE | {"rewards_earned": 0.00000001},
        ("rewards_earned",),
        "decimal_max_places",
    )
    _rejects(
        DepinNodeList.model_validate,
        {"nodes": [DEPIN_NODE, DEPIN_NODE]},
        ("nodes",),
        "duplicate_device",
    )


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"online_count": 3}, ("online_count",)),
        ({"registered_count": 3}, ("reliability_pct",)),
        ({"reliability_pct": {"rpi-4b-prod-01": 97.5, "rpi-4b-prod-02": 101}}, None),
        ({"total_rewards": -1}, ("total_rewards",)),
        ({"total_rewards": "430.5"}, ("total_rewards",)),
        ({"registered_count": True}, ("registered_count",)),
    ],
)
def test_bad_depin_stats_are_rejected_at_the_field(
    change: dict[str, Any], loc: tuple[str, ...] | None
) -> None:
    """Counts must agree; rewards are non-negative numbers."""
    stats = {
        "registered_count": 2,
        "online_count": 1,
        "total_rewards": 430.5,
        "reliability_pct": {"rpi-4b-prod-01": 97.5, "rpi-4b-prod-02": 12},
    }
    expected = loc if loc is not None else ("reliability_pct", "rpi-4b-prod-02")
    _rejects(DepinStats.model_validate, stats | change, expected)


def test_models_publish_a_json_schema() -> None:
    """Every payload model renders a JSON schema (for docs and API clients)."""
    models: list[type[BaseModel]] = [
        HeartbeatPing,
        NodeDataPing,
        EnergyReport,
        DepinRegistration,
        DepinHeartbeat,
        DepinNodeList,
        DepinStats,
    ]
    for model in models:
        schema = model.model_json_schema()
        assert schema["additionalProperties"] is False


# ---------------------------------------------------------------- properties


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(ping=st.one_of(heartbeats, node_data_pings()))
def test_ping_round_trip_is_identity(ping: HeartbeatPing | NodeDataPing) -> None:
    """model -> JSON -> model gives the same model, for both ping kinds."""
    assert parse_ping_json(ping.model_dump_json()) == ping
    assert parse_ping(json.loads(ping.model_dump_json())) == ping


@settings(max_examples=60)
@given(report=energy_reports())
def test_energy_report_round_trip_is_identity(report: EnergyReport) -> None:
    """Exact kWh survives being written as a JSON number and read back."""
    again = EnergyReport.model_validate_json(report.model_dump_json())
    assert again == report
    assert again.kwh_transferred == report.kwh_transferred


@settings(max_examples=40)
@given(registration=registrations, heartbeat=depin_heartbeats)
def test_depin_round_trip_is_identity(
    registration: DepinRegistration, heartbeat: DepinHeartbeat
) -> None:
    """Registration and heartbeat bodies survive JSON unchanged."""
    assert DepinRegistration.model_validate_json(registration.model_dump_json()) == registration
    assert DepinHeartbeat.model_validate_json(heartbeat.model_dump_json()) == heartbeat


PARSERS: list[Any] = [
    parse_ping,
    EnergyReport.model_validate,
    DepinRegistration.model_validate,
    DepinHeartbeat.model_validate,
    DepinNodeList.model_validate,
    DepinStats.model_validate,
]


@settings(max_examples=150)
@given(obj=json_values)
def test_arbitrary_json_only_ever_raises_validation_error(obj: object) -> None:
    """No input crashes a parser: it validates or raises ValidationError."""
    for parse in PARSERS:
        with contextlib.suppress(ValidationError):
            parse(obj)


SPEC_DOCUMENTS: list[tuple[Any, dict[str, Any]]] = [
    (parse_ping, load_spec("ping_node_data")),
    (parse_ping, load_spec("ping_heartbeat")),
    (EnergyReport.model_validate, load_spec("energy_report")),
    (DepinRegistration.model_validate, REGISTRATION),
    (DepinNodeList.model_validate, {"nodes": [DEPIN_NODE]}),
]


@settings(max_examples=150)
@given(data=st.data(), replacement=json_values)
def test_corrupting_any_field_only_ever_raises_validation_error(
    data: st.DataObject, replacement: object
) -> None:
    """Replacing any value of a valid document yields a model or a ValidationError."""
    parse, document = data.draw(st.sampled_from(SPEC_DOCUMENTS))
    path = data.draw(st.sampled_from(all_paths(document)))
    with contextlib.suppress(ValidationError):
        parse(mutated(document, path, replacement))
