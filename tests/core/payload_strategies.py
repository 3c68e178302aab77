"""Hypothesis strategies and helpers shared by the payload and event tests."""

from __future__ import annotations

from collections.abc import Callable
import copy
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from peergrid_core.payload_fields import IDENTIFIER_PATTERN
from peergrid_core.payloads import (
    ConnectedNode,
    DepinHeartbeat,
    DepinRegistration,
    EnergyReport,
    GeoLocation,
    HeartbeatPing,
    NodeDataPing,
    NodeDetail,
    NodeState,
)

SPEC_PAYLOADS = Path(__file__).parents[1] / "fixtures" / "spec_payloads"

# Checksum-valid StrKeys (a Stellar documentation account and a contract).
ACCOUNT_ADDRESS = "GBRPYHIL2CI3FNQ4BXLFMNDLFJUNPU2HY3ZMFSHONUCEOASW7QC7OX2H"
CONTRACT_ADDRESS = "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC"

DELETE = object()
"""Marker for :func:`mutated`: remove the key instead of replacing it."""


def load_spec(name: str) -> dict[str, Any]:
    """Return a specification example payload as decoded JSON."""
    data: dict[str, Any] = json.loads((SPEC_PAYLOADS / f"{name}.json").read_text())
    return data


def mutated(obj: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    """Return a deep copy of ``obj`` with the item at ``path`` set (or deleted)."""
    result = copy.deepcopy(obj)
    target: Any = result
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


def error_locs(err: Exception) -> list[tuple[str | int, ...]]:
    """The ``loc`` of every line of a pydantic ValidationError."""
    return [tuple(line["loc"]) for line in err.errors()]  # type: ignore[attr-defined]


# ---------------------------------------------------------------- scalars

identifiers = st.from_regex(IDENTIFIER_PATTERN, fullmatch=True)
volts = st.floats(min_value=0.0, max_value=6.0, allow_nan=False)
percents = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
states = st.sampled_from(NodeState)
report_ids = st.one_of(
    st.uuids().map(str).filter(lambda text: text != "00000000-0000-0000-0000-000000000000"),
    st.binary(min_size=32, max_size=32).map(bytes.hex).filter(lambda text: set(text) != {"0"}),
)
host_ips = st.ip_addresses().filter(
    lambda address: not (address.is_unspecified or address.is_multicast)
)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)
timestamps = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone),
    # hypothesis takes naive bounds; the zone is attached by the builder above.
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2099, 12, 31)),  # noqa: DTZ001
    offsets,
)
measured_kwh = st.decimals(
    min_value=Decimal("0.001"), max_value=Decimal(10), places=6, allow_nan=False
)

# ---------------------------------------------------------------- payloads

heartbeats = st.builds(HeartbeatPing, device_id=identifiers, status=st.just("heartbeat"))


@st.composite
def node_data_pings(draw: Callable[..., Any]) -> NodeDataPing:
    """A consistent node-data ping: detail and summary describe the same nodes."""
    uids: list[str] = draw(st.lists(identifiers, max_size=6, unique=True))
    connected = tuple(ConnectedNode(uid=uid, voltage=draw(volts)) for uid in uids)
    details = [
        NodeDetail(
            uid=uid,
            ip=draw(host_ips),
            voltage=draw(volts),
            soc=draw(percents),
            state=draw(states),
        )
        for uid in uids
    ]
    order = draw(st.permutations(range(len(details))))
    return NodeDataPing(
        device_id=draw(identifiers),
        voltage=draw(volts),
        battery_level=draw(percents),
        state=draw(states),
        source=draw(identifiers),
        timestamp=draw(timestamps),
        connected_nodes_count=len(uids),
        connected_nodes=connected,
        nodes_detail=tuple(details[index] for index in order),
    )


@st.composite
def energy_reports(draw: Callable[..., Any]) -> EnergyReport:
    """A valid energy report with distinct sender and receiver."""
    sender, receiver = draw(st.lists(identifiers, min_size=2, max_size=2, unique=True))
    return EnergyReport(
        device_id=draw(identifiers),
        sender_uid=sender,
        receiver_uid=receiver,
        kwh_transferred=draw(measured_kwh),
        duration_seconds=draw(st.floats(min_value=0.001, max_value=86_400.0)),
        avg_voltage=draw(volts),
        avg_current=draw(st.floats(min_value=0.0, max_value=5.0)),
        report_id=draw(st.none() | report_ids),
    )


locations = st.builds(
    GeoLocation,
    latitude=st.floats(min_value=-90.0, max_value=90.0),
    longitude=st.floats(min_value=-180.0, max_value=180.0),
)

registrations = st.builds(
    DepinRegistration,
    device_id=identifiers,
    hardware_model=st.sampled_from(["Raspberry Pi 4B", "Raspberry Pi 5 (8 GB)", "rpi4"]),
    firmware_version=st.from_regex(r"\d{1,3}\.\d{1,3}\.\d{1,3}(-rc\.[0-9])?", fullmatch=True),
    wallet_address=st.sampled_from([ACCOUNT_ADDRESS, CONTRACT_ADDRESS]),
    location=st.none() | locations,
)

depin_heartbeats = st.builds(
    DepinHeartbeat,
    device_id=identifiers,
    uptime_seconds=st.floats(min_value=0.0, max_value=1e8),
    timestamp=timestamps,
    routed_kwh=st.none()
    | st.decimals(min_value=0, max_value=Decimal(10**6), places=6, allow_nan=False),
)

# ---------------------------------------------------------------- arbitrary JSON

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included: a JSON parser may produce them
    st.text(max_size=80),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=25,
)


def all_paths(obj: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every key path inside nested dicts and lists (for targeted corruption)."""
    paths: list[tuple[str | int, ...]] = []
    items: list[tuple[str | int, Any]]
    if isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, list):
        items = list(enumerate(obj))
    else:
        return paths
    for key, value in items:
        paths.append((*prefix, key))
        paths.extend(all_paths(value, (*prefix, key)))
    return paths
