"""Payloads an edge gateway sends to the grid backend, and the DePIN registry's.

Three families, all pydantic v2 models:

* **IoT ping** (``POST /iot/ping``): a :class:`HeartbeatPing` when the gateway
  boots or reconnects, a :class:`NodeDataPing` with full telemetry every cycle.
  :func:`parse_ping` tells them apart.
* **Energy report** (``POST /iot/energy/report``): :class:`EnergyReport`, one
  completed battery-to-battery transfer, the input to token minting.
* **DePIN registry** (``/api/v1/depin/...``): :class:`DepinRegistration` and
  :class:`DepinHeartbeat` in, :class:`DepinNodeList` and :class:`DepinStats`
  out.

Policy shared by every model here:

* **Unknown fields are rejected**, not ignored (``extra="forbid"``). Gateway
  and backend ship from one repository, so an unknown key is either a typo
  (``batery_level``) or version skew; silently dropping it would hide exactly
  the bug that matters. The error's ``loc`` names the unexpected key.
* **Models are frozen**: a validated payload cannot be altered afterwards, so
  what was checked is what gets used. Lists are tuples for the same reason.
* **Bad input raises** :class:`pydantic.ValidationError` whose ``loc`` names
  the offending field, including for cross-field rules (a count that does not
  match its list is reported at the count).

Field types and their wire rules (numbers stay numbers, timestamps carry an
offset, identifiers follow a pattern) are in :mod:`.payload_fields`.

**PeerGrid extensions.** A node's detail may carry ``telemetry``
(:class:`NodeTelemetry`), which the specification does not define: the node's
own energy counters and readings, so that Home Assistant can meter a transfer
through a gateway and show the same sensors as for a directly connected node.
It is optional on input, and left out of the output when absent, so a
specification payload reads and writes exactly as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    JsonValue,
    Strict,
    TypeAdapter,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .payload_fields import (
    DeviceId,
    FirmwareVersion,
    HardwareModel,
    LedgerTokens,
    MeasuredKilowattHours,
    NodeIp,
    NodeUid,
    PayloadModel,
    ReportId,
    SourceName,
    StellarAddress,
    UtcTimestamp,
    WireAbsAmps,
    WireCount,
    WirePercent,
    WireSeconds,
    WireVolts,
    clock_context,
    field_error,
    raise_field_errors,
    receiver_differs,
)
from .protocol.codes import TripReason
from .tokens import KWH_MAX, KWH_MIN
from .units import MilliAmps, MilliWattHours, MilliWatts

__all__ = [
    "HEARTBEAT_STATUS",
    "MAX_NODES_PER_GATEWAY",
    "MAX_REGISTRY_NODES",
    "ConnectedNode",
    "DepinHeartbeat",
    "DepinNode",
    "DepinNodeList",
    "DepinRegistration",
    "DepinStats",
    "EnergyReport",
    "GeoLocation",
    "HeartbeatPing",
    "NodeDataPing",
    "NodeDetail",
    "NodeState",
    "NodeTelemetry",
    "PingPayload",
    "ReportKilowattHours",
    "omit_absent",
    "parse_ping",
    "parse_ping_json",
]

MAX_NODES_PER_GATEWAY: Final = 64
"""Most battery nodes one gateway may report. A Pi drives a handful of ESP32
nodes over TCP; 64 leaves ample room while bounding the payload."""

MAX_REGISTRY_NODES: Final = 10_000
"""Most gateways one DePIN registry response may list."""

HEARTBEAT_STATUS: Final = "heartbeat"
"""The ``status`` value that marks a ping as a heartbeat."""


class NodeState(StrEnum):
    """Relay state of a battery node, as it reports it and as it is commanded.

    The ESP32 firmware uses the same three tokens for the command it receives
    and for the state it reports. There is no fault state: a node that trips a
    safety limit opens both relays and reports ``IDLE`` (the reason travels in
    the node protocol's ``event`` frame, not in telemetry).

    Input is matched case-insensitively (``idle`` is read as ``IDLE``) because
    the token is unambiguous in any case; output is always upper case. Other
    words are rejected, including scheduler actions such as ``discharge``:
    those belong to the layer above, and mixing the two is a bug to surface.
    """

    IDLE = "IDLE"
    """Both relays open: the safe default."""

    SUPPLY = "SUPPLY"
    """Boost converter connected (GPIO 26): energy flows out of the cell."""

    RECEIVE = "RECEIVE"
    """TP4056 charger connected (GPIO 25): energy flows into the cell."""


def _upper_token(value: object) -> object:
    """Upper-case a short string so enum matching ignores case."""
    if isinstance(value, str) and len(value) <= 16:
        return value.upper()
    return value


type NodeStateValue = Annotated[NodeState, BeforeValidator(_upper_token)]
"""A :class:`NodeState` read case-insensitively from the wire."""

type ReportKilowattHours = Annotated[MeasuredKilowattHours, Field(ge=KWH_MIN, le=KWH_MAX)]
"""Energy of one reported transfer: 0.001 to 10 kWh, exact to one milliwatt-hour."""


def omit_absent(data: Any, *names: str) -> Any:
    """Drop the keys ``names`` from serialised ``data`` where they are ``None``.

    The serialiser of a model with optional PeerGrid extensions: an extension
    that is not there stays out of the JSON instead of appearing as ``null``,
    so the specification's payloads serialise exactly as they arrived.
    """
    if isinstance(data, dict):
        for name in names:
            if name in data and data[name] is None:
                del data[name]
    return data


def _duplicate_uid_errors(field: str, uids: Iterable[str]) -> list[InitErrorDetails]:
    """Errors for every repeated uid in a node list, at the repeated entry."""
    seen: set[str] = set()
    errors: list[InitErrorDetails] = []
    for index, uid in enumerate(uids):
        if uid in seen:
            errors.append(
                field_error(
                    (field, index, "uid"),
                    "duplicate_uid",
                    "node uid {uid} appears more than once",
                    uid,
                    uid=uid,
                )
            )
        seen.add(uid)
    return errors


# ---------------------------------------------------------------- IoT ping


class HeartbeatPing(PayloadModel):
    """Sent by a gateway when it boots or reconnects: "I am here"."""

    device_id: DeviceId
    """The gateway's identity."""

    status: Literal["heartbeat"]
    """Always ``heartbeat``; its presence is what marks the ping kind."""


class ConnectedNode(PayloadModel):
    """A node the gateway currently reaches, with its latest cell voltage."""

    uid: NodeUid
    voltage: WireVolts
    """Cell voltage, volts."""


class NodeTelemetry(PayloadModel):
    """A PeerGrid extension of a node's detail: what the node's own status says.

    Not part of the specification. The values are copied from the node's
    latest ``status`` frame in the node protocol's integer units (see
    ``docs/protocol.md``), so nothing is lost to rounding: Home Assistant
    meters a transfer through a gateway from these counters exactly as it
    meters a direct one from the node's status.
    """

    e_out_mwh: Annotated[MilliWattHours, Strict()]
    """Energy the node has supplied since it booted (monotonic), mWh."""

    e_in_mwh: Annotated[MilliWattHours, Strict()]
    """Energy the node has taken in since it booted (monotonic), mWh."""

    uptime_s: Annotated[int, Strict(), Field(ge=0, le=9_999_999_999)]
    """Seconds since the node booted; a smaller value than before means it rebooted
    (and its counters restarted from zero)."""

    ma: Annotated[MilliAmps, Strict()] | None = None
    """Cell current, mA, positive out of the cell; ``None`` while the sensor does not read."""

    mw: Annotated[MilliWatts, Strict()] | None = None
    """Cell power, mW, positive out of the cell; ``None`` while the sensor does not read."""

    trip: TripReason | None = None
    """Set while the node is tripped: the safety rule that stopped its last transfer.

    A tripped node reports ``IDLE`` as its ``state`` (the specification has no
    fault state); this says why. Cleared by the node's next accepted command."""

    limit_mwh: Annotated[int, Strict(), Field(ge=1, le=100_000)] | None = None
    """The energy budget the node applies to the mode its gateway holds it in (the
    stricter of the command's and its own), mWh; ``None`` while it is held in none."""


class NodeDetail(PayloadModel):
    """Full telemetry of one connected node."""

    uid: NodeUid
    ip: NodeIp
    """The node's address on the gateway's network."""

    voltage: WireVolts
    """Cell voltage, volts."""

    soc: WirePercent
    """State of charge, percent."""

    state: NodeStateValue
    """Relay state the node reports."""

    telemetry: NodeTelemetry | None = None
    """PeerGrid extension: the node's own counters and readings (absent: not sent)."""

    # A lambda: pydantic would take the JSON Schema of the output from an
    # annotated return type instead of from the fields.
    _omit_absent_telemetry = model_serializer(mode="wrap")(
        lambda self, handler: omit_absent(handler(self), "telemetry")
    )


class NodeDataPing(PayloadModel):
    """Telemetry a gateway sends every cycle.

    ``voltage``, ``battery_level`` and ``state`` are the gateway's primary
    reading: the node it mirrors at the top level (node A in the
    specification's example). ``connected_nodes`` is the voltage summary the
    stability score sums; ``nodes_detail`` carries the same nodes in full.

    Cross-field rules, each reported at the field named:

    * ``connected_nodes_count`` equals the length of ``connected_nodes``;
    * uids are unique within ``connected_nodes`` and within ``nodes_detail``;
    * ``nodes_detail`` describes exactly the nodes of ``connected_nodes``
      (order free). Voltages may differ between the two lists, since a gateway
      may re-read a node between building them.
    """

    device_id: DeviceId
    voltage: WireVolts
    """Primary cell voltage, volts."""

    battery_level: WirePercent
    """Primary state of charge, percent."""

    state: NodeStateValue
    """Primary relay state."""

    source: SourceName
    """The gateway software that produced the payload (``rpi_energy_grid``)."""

    timestamp: UtcTimestamp
    """When the gateway took the readings."""

    connected_nodes_count: Annotated[WireCount, Field(le=MAX_NODES_PER_GATEWAY)]
    connected_nodes: Annotated[tuple[ConnectedNode, ...], Field(max_length=MAX_NODES_PER_GATEWAY)]
    nodes_detail: Annotated[tuple[NodeDetail, ...], Field(max_length=MAX_NODES_PER_GATEWAY)]

    @model_validator(mode="after")
    def _check_node_lists(self) -> Self:
        errors: list[InitErrorDetails] = []
        if self.connected_nodes_count != len(self.connected_nodes):
            errors.append(
                field_error(
                    ("connected_nodes_count",),
                    "count_mismatch",
                    "connected_nodes_count is {count} but connected_nodes lists {listed} nodes",
                    self.connected_nodes_count,
                    count=self.connected_nodes_count,
                    listed=len(self.connected_nodes),
                )
            )
        connected = [node.uid for node in self.connected_nodes]
        detailed = [node.uid for node in self.nodes_detail]
        errors += _duplicate_uid_errors("connected_nodes", connected)
        errors += _duplicate_uid_errors("nodes_detail", detailed)
        known = set(connected)
        for index, node in enumerate(self.nodes_detail):
            if node.uid not in known:
                errors.append(
                    field_error(
                        ("nodes_detail", index, "uid"),
                        "unknown_node",
                        "node {uid} is detailed but not in connected_nodes",
                        node.uid,
                        uid=node.uid,
                    )
                )
        missing = sorted(known - set(detailed))
        if missing:
            errors.append(
                field_error(
                    ("nodes_detail",),
                    "missing_node",
                    "nodes_detail lacks connected node(s) {missing}",
                    missing,
                    missing=", ".join(missing),
                )
            )
        raise_field_errors(type(self), errors)
        return self

    def node(self, uid: str) -> NodeDetail | None:
        """Return the detail of node ``uid``, or None if it is not connected."""
        return next((node for node in self.nodes_detail if node.uid == uid), None)


type PingPayload = HeartbeatPing | NodeDataPing
"""Anything a gateway may POST to ``/iot/ping``."""

_JSON: Final[TypeAdapter[JsonValue]] = TypeAdapter(JsonValue)


def parse_ping(obj: object, *, now: datetime | None = None) -> PingPayload:
    """Validate a decoded ``/iot/ping`` body and return the matching model.

    A body carrying a ``status`` key is a heartbeat; any other body is node
    data. Dispatching on the key (rather than trying both models) keeps the
    error locations those of the one model the sender meant.

    With ``now`` (timezone-aware), a node-data timestamp more than a few
    minutes ahead of the receiver's clock is rejected as well.

    Raises :class:`pydantic.ValidationError` for anything else.
    """
    context = clock_context(now) if now is not None else None
    if isinstance(obj, Mapping) and "status" in obj:
        return HeartbeatPing.model_validate(obj, context=context)
    return NodeDataPing.model_validate(obj, context=context)


def parse_ping_json(data: str | bytes | bytearray, *, now: datetime | None = None) -> PingPayload:
    """Like :func:`parse_ping` for the raw request body.

    Malformed JSON is reported as a :class:`pydantic.ValidationError` too
    (type ``json_invalid``), so a caller handles one exception type.
    """
    return parse_ping(_JSON.validate_json(data), now=now)


# ---------------------------------------------------------------- energy report


class EnergyReport(PayloadModel):
    """A completed physical transfer, reported for minting.

    ``kwh_transferred`` arrives as a JSON number and is held as an exact
    Decimal rounded to one milliwatt-hour; it must lie in 0.001..10 kWh, the
    range the grid mints for. ``avg_current`` is a magnitude (direction is
    given by sender and receiver).

    No energy balance against ``avg_voltage * avg_current * duration_seconds``
    is enforced here: the specification's own example reports 0.5 kWh for
    3.92 V x 0.27 A x 1800 s (about 0.53 Wh), and judging measurement quality
    is the quality factor's job, not the payload's.

    ``report_id`` is optional for compatibility with the specification's
    gateway; a gateway that sets it gets exactly-once minting across retries
    (see :data:`.payload_fields.ReportId`).
    """

    device_id: DeviceId
    sender_uid: NodeUid
    """The node that supplied the energy (it must have been told to discharge)."""

    receiver_uid: NodeUid
    """The node that received it; never the sender."""

    kwh_transferred: ReportKilowattHours
    duration_seconds: Annotated[WireSeconds, Field(gt=0)]
    """Length of the transfer, seconds."""

    avg_voltage: WireVolts
    """Average sender cell voltage during the transfer, volts."""

    avg_current: WireAbsAmps
    """Average transfer current, amperes."""

    report_id: ReportId | None = None

    _receiver_differs = field_validator("receiver_uid")(receiver_differs)


# ---------------------------------------------------------------- DePIN registry


class GeoLocation(PayloadModel):
    """Where a gateway stands, in WGS 84 degrees.

    Registration makes this public, so gateways should send it coarsened (two
    decimals is about a kilometre); the registry stores what it is given.
    """

    latitude: Annotated[float, Strict(), Field(ge=-90.0, le=90.0, allow_inf_nan=False)]
    longitude: Annotated[float, Strict(), Field(ge=-180.0, le=180.0, allow_inf_nan=False)]


class DepinRegistration(PayloadModel):
    """Body of ``POST /api/v1/depin/register``: a gateway joins the registry.

    ``wallet_address`` is the Stellar account (or contract) rewards are minted
    to; its checksum is verified, so a typo cannot send rewards nowhere.
    """

    device_id: DeviceId
    hardware_model: HardwareModel
    """E.g. ``Raspberry Pi 4B``."""

    firmware_version: FirmwareVersion
    """The gateway software's semantic version."""

    wallet_address: StellarAddress
    location: GeoLocation | None = None


class DepinHeartbeat(PayloadModel):
    """Body of ``POST /api/v1/depin/heartbeat``, sent periodically by a gateway.

    ``routed_kwh`` is the gateway's cumulative energy routed since it
    registered, not the energy since the previous heartbeat: a lost heartbeat
    then loses no reward, and a retried one cannot earn twice. The registry
    rewards the increase and treats a decrease as a counter reset.
    """

    device_id: DeviceId
    uptime_seconds: WireSeconds
    """Seconds since the gateway software started."""

    timestamp: UtcTimestamp
    """When the gateway sent the heartbeat."""

    routed_kwh: MeasuredKilowattHours | None = None


class DepinNode(PayloadModel):
    """One registered gateway as listed by ``GET /api/v1/depin/nodes``.

    ``reliability_pct`` is ``total uptime / time since registration * 100``.
    A node is ``online`` only if it has sent a heartbeat; the last heartbeat
    never predates the registration.
    """

    device_id: DeviceId
    hardware_model: HardwareModel
    firmware_version: FirmwareVersion
    wallet_address: StellarAddress
    location: GeoLocation | None = None
    registered_at: UtcTimestamp
    last_heartbeat_at: UtcTimestamp | None = None
    online: Annotated[bool, Strict()]
    reliability_pct: WirePercent
    rewards_earned: LedgerTokens
    """Registry rewards credited so far, tokens."""

    routed_kwh: MeasuredKilowattHours
    """Cumulative energy routed, kWh."""

    @model_validator(mode="after")
    def _check_heartbeat(self) -> Self:
        errors: list[InitErrorDetails] = []
        if self.last_heartbeat_at is not None and self.last_heartbeat_at < self.registered_at:
            errors.append(
                field_error(
                    ("last_heartbeat_at",),
                    "before_registration",
                    "last_heartbeat_at predates registered_at",
                    self.last_heartbeat_at.isoformat(),
                )
            )
        if self.online and self.last_heartbeat_at is None:
            errors.append(
                field_error(
                    ("online",),
                    "online_without_heartbeat",
                    "a node that never sent a heartbeat cannot be online",
                    self.online,
                )
            )
        raise_field_errors(type(self), errors)
        return self


class DepinNodeList(PayloadModel):
    """Response of ``GET /api/v1/depin/nodes``; device ids are unique."""

    nodes: Annotated[tuple[DepinNode, ...], Field(max_length=MAX_REGISTRY_NODES)]

    @field_validator("nodes")
    @classmethod
    def _unique_devices(cls, nodes: tuple[DepinNode, ...]) -> tuple[DepinNode, ...]:
        counts = Counter(node.device_id for node in nodes)
        repeated = sorted(device_id for device_id, seen in counts.items() if seen > 1)
        if repeated:
            raise PydanticCustomError(
                "duplicate_device",
                "device id(s) listed more than once: {repeated}",
                {"repeated": ", ".join(repeated)},
            )
        return nodes


class DepinStats(PayloadModel):
    """Response of ``GET /api/v1/depin/stats``.

    ``reliability_pct`` maps every registered gateway to its reliability, so
    it has exactly ``registered_count`` entries; ``online_count`` never
    exceeds ``registered_count``.
    """

    registered_count: Annotated[WireCount, Field(le=MAX_REGISTRY_NODES)]
    online_count: Annotated[WireCount, Field(le=MAX_REGISTRY_NODES)]
    total_rewards: LedgerTokens
    """Rewards credited across the registry, tokens."""

    reliability_pct: Annotated[dict[DeviceId, WirePercent], Field(max_length=MAX_REGISTRY_NODES)]

    @model_validator(mode="after")
    def _check_counts(self) -> Self:
        errors: list[InitErrorDetails] = []
        if self.online_count > self.registered_count:
            errors.append(
                field_error(
                    ("online_count",),
                    "count_mismatch",
                    "online_count exceeds registered_count",
                    self.online_count,
                )
            )
        if len(self.reliability_pct) != self.registered_count:
            errors.append(
                field_error(
                    ("reliability_pct",),
                    "count_mismatch",
                    "reliability_pct must have one entry per registered node",
                    len(self.reliability_pct),
                )
            )
        raise_field_errors(type(self), errors)
        return self
