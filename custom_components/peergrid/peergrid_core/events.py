"""Real-time grid events, as broadcast to frontends over Server-Sent Events.

Every event is an envelope ``{type, data}``: :class:`HeartbeatEvent`,
:class:`NodeDataEvent`, :class:`ScheduleEvent` or :class:`EnergyMintEvent`,
told apart by ``type`` (:data:`GridEvent` is the discriminated union,
:func:`parse_event` validates one). :meth:`GridEventBase.to_sse` writes the
text form of ``GET /iot/events``::

    event: energy_mint
    data: {"device_id":"rpi-4b-prod-01",...}

This module also holds the scheduler's vocabulary, :class:`SchedulerAction`,
and its one translation to node commands (:data:`NODE_COMMAND_FOR_ACTION`,
:func:`node_command_for`), since a schedule event is where both meet.

Amounts in events are exact Decimals written as JSON numbers (see
:mod:`.payload_fields`); the same payload policy as :mod:`.payloads` applies:
unknown keys rejected, instances frozen, errors located at the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    JsonValue,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails

from .errors import PeerGridProtocolError, PeerGridValidationError
from .payload_fields import (
    CarbonKilograms,
    DeviceId,
    LedgerTokens,
    NodeUid,
    PayloadModel,
    QualityFactor,
    ReportId,
    TokenPrice,
    UtcTimestamp,
    WireCount,
    WirePercent,
    field_error,
    raise_field_errors,
    receiver_differs,
)
from .payloads import (
    MAX_NODES_PER_GATEWAY,
    EnergyReport,
    HeartbeatPing,
    NodeDataPing,
    NodeState,
    ReportKilowattHours,
    omit_absent,
)
from .tokens import carbon_credit_kg, tokens_minted

__all__ = [
    "NODE_COMMAND_FOR_ACTION",
    "EnergyMintData",
    "EnergyMintEvent",
    "EventType",
    "GridEvent",
    "GridEventBase",
    "GridSummary",
    "HeartbeatEvent",
    "NodeDataEvent",
    "ScheduleCommand",
    "ScheduleData",
    "ScheduleEvent",
    "SchedulerAction",
    "node_command_for",
    "parse_event",
    "parse_event_json",
    "parse_sse",
]


class EventType(StrEnum):
    """The SSE ``event:`` name of each grid event."""

    HEARTBEAT = "heartbeat"
    """A gateway sent a heartbeat ping."""

    NODE_DATA = "node_data"
    """A gateway sent full telemetry."""

    SCHEDULE = "schedule"
    """The scheduler ran and issued commands."""

    ENERGY_MINT = "energy_mint"
    """A reported transfer was minted into tokens."""


# ---------------------------------------------------------------- scheduler vocabulary


class SchedulerAction(StrEnum):
    """What the scheduler asks of a node, in the backend's abstract terms."""

    DISCHARGE = "discharge"
    """Give energy to the grid."""

    CHARGE = "charge"
    """Take energy from the grid."""

    IDLE = "idle"
    """Do nothing (also what "no command" means)."""


NODE_COMMAND_FOR_ACTION: Final[Mapping[SchedulerAction, NodeState]] = MappingProxyType(
    {
        SchedulerAction.DISCHARGE: NodeState.SUPPLY,
        SchedulerAction.CHARGE: NodeState.RECEIVE,
        SchedulerAction.IDLE: NodeState.IDLE,
    }
)
"""The gateway's translation of scheduler actions to ESP32 relay commands:
discharge opens the SUPPLY path (GPIO 26, boost converter, energy out),
charge the RECEIVE path (GPIO 25, TP4056 charger, energy in), idle neither."""


def node_command_for(action: SchedulerAction | None) -> NodeState:
    """Return the node command for a scheduler ``action``; no action means IDLE.

    Falling back to IDLE keeps the safe default: a node without an explicit
    instruction opens both relays.
    """
    if action is None:
        return NodeState.IDLE
    return NODE_COMMAND_FOR_ACTION[action]


def _action_token(value: object) -> object:
    """Read ``null`` as idle and match action words case-insensitively."""
    if value is None:
        return SchedulerAction.IDLE
    if isinstance(value, str) and len(value) <= 16:
        return value.lower()
    return value


type SchedulerActionValue = Annotated[SchedulerAction, BeforeValidator(_action_token)]
"""A :class:`SchedulerAction` from the wire: any case, ``null`` meaning idle."""


class ScheduleCommand(PayloadModel):
    """One node's instruction in a schedule.

    ``limit_mwh`` and ``min_mv`` are PeerGrid extensions (left out of the JSON
    when absent): the energy budget and the SUPPLY cut-off voltage the gateway
    passes on in the node's command, in the node protocol's units. Home
    Assistant sets them for a transfer, so that the node stops itself at the
    transfer's energy target even when Home Assistant is slow or gone; without
    them the node applies its own defaults.
    """

    uid: NodeUid
    action: SchedulerActionValue
    limit_mwh: Annotated[int, Strict(), Field(ge=1, le=100_000)] | None = None
    """Energy budget for a discharge or charge, mWh (ignored for idle)."""

    min_mv: Annotated[int, Strict(), Field(ge=3_000, le=4_200)] | None = None
    """SUPPLY cut-off voltage for a discharge, mV (ignored otherwise)."""

    # A lambda: pydantic would take the JSON Schema of the output from an
    # annotated return type instead of from the fields.
    _omit_absent_limits = model_serializer(mode="wrap")(
        lambda self, handler: omit_absent(handler(self), "limit_mwh", "min_mv")
    )

    @property
    def node_command(self) -> NodeState:
        """The relay command the gateway sends the node for this action."""
        return node_command_for(self.action)


class GridSummary(PayloadModel):
    """State of charge across the nodes the scheduler saw.

    ``soc_spread`` is the highest minus the lowest node SoC, in percentage
    points. With no nodes there is no average or spread (both null); with one
    node the spread is zero.
    """

    node_count: Annotated[WireCount, Field(le=MAX_NODES_PER_GATEWAY)]
    avg_soc: WirePercent | None
    """Mean state of charge, percent."""

    soc_spread: WirePercent | None
    """Max minus min state of charge, percentage points."""

    @model_validator(mode="after")
    def _check_statistics(self) -> Self:
        errors: list[InitErrorDetails] = []
        for name in ("avg_soc", "soc_spread"):
            value = getattr(self, name)
            if (value is None) != (self.node_count == 0):
                errors.append(
                    field_error(
                        (name,),
                        "summary_mismatch",
                        "{name} must be null exactly when node_count is 0",
                        value,
                        name=name,
                    )
                )
        if self.node_count == 1 and self.soc_spread:
            errors.append(
                field_error(
                    ("soc_spread",),
                    "summary_mismatch",
                    "a single node has no SoC spread",
                    self.soc_spread,
                )
            )
        raise_field_errors(type(self), errors)
        return self


class ScheduleData(PayloadModel):
    """Payload of a ``schedule`` event: the commands of one scheduler run.

    Nodes without a command stay idle. Each node appears at most once, and
    there are no more commands than nodes in the summary.

    ``issued_at`` is a PeerGrid extension (left out of the JSON when absent):
    when the scheduler issued the schedule. A gateway that starts receives
    the schedule standing at that moment, issued before it started; its
    restart released every node, so it does not start again what that
    schedule asked for (a transfer the controller has seen end).
    """

    device_id: DeviceId
    commands: Annotated[tuple[ScheduleCommand, ...], Field(max_length=MAX_NODES_PER_GATEWAY)]
    grid_summary: GridSummary
    issued_at: UtcTimestamp | None = None

    # A lambda: pydantic would take the JSON Schema of the output from an
    # annotated return type instead of from the fields.
    _omit_absent_issue_time = model_serializer(mode="wrap")(
        lambda self, handler: omit_absent(handler(self), "issued_at")
    )

    @model_validator(mode="after")
    def _check_commands(self) -> Self:
        errors: list[InitErrorDetails] = []
        seen: set[str] = set()
        for index, command in enumerate(self.commands):
            if command.uid in seen:
                errors.append(
                    field_error(
                        ("commands", index, "uid"),
                        "duplicate_uid",
                        "node {uid} has more than one command",
                        command.uid,
                        uid=command.uid,
                    )
                )
            seen.add(command.uid)
        if len(self.commands) > self.grid_summary.node_count:
            errors.append(
                field_error(
                    ("commands",),
                    "count_mismatch",
                    "{commands} commands for {nodes} nodes",
                    len(self.commands),
                    commands=len(self.commands),
                    nodes=self.grid_summary.node_count,
                )
            )
        raise_field_errors(type(self), errors)
        return self

    def node_commands(self) -> dict[str, NodeState]:
        """Return each commanded node's relay command, keyed by uid."""
        return {command.uid: command.node_command for command in self.commands}


class EnergyMintData(PayloadModel):
    """Payload of an ``energy_mint`` event: a transfer became tokens.

    The amounts must be exactly what :mod:`.tokens` computes, so an event can
    never disagree with the ledger: ``tokens_minted`` is
    ``kwh_transferred * 1000 * quality_factor`` rounded down to a stroop, and
    ``co2_saved_kg`` is ``kwh_transferred * 0.82`` rounded down to a
    milligram. ``sell_price`` is the price per token of the sell order created
    for the minted tokens, in the market's quote asset, or null when no order
    was placed. ``report_id`` is always present: the ledger assigns one when
    the gateway did not.
    """

    device_id: DeviceId
    report_id: ReportId
    sender_uid: NodeUid
    receiver_uid: NodeUid
    kwh_transferred: ReportKilowattHours
    quality_factor: QualityFactor
    tokens_minted: LedgerTokens
    co2_saved_kg: CarbonKilograms
    sell_price: TokenPrice | None = None

    _receiver_differs = field_validator("receiver_uid")(receiver_differs)

    @model_validator(mode="after")
    def _check_amounts(self) -> Self:
        errors: list[InitErrorDetails] = []
        expected_tokens = tokens_minted(self.kwh_transferred, self.quality_factor)
        if self.tokens_minted != expected_tokens:
            errors.append(
                field_error(
                    ("tokens_minted",),
                    "amount_mismatch",
                    "tokens_minted must be {expected} for this energy and quality factor",
                    str(self.tokens_minted),
                    expected=str(expected_tokens),
                )
            )
        expected_co2 = carbon_credit_kg(self.kwh_transferred)
        if self.co2_saved_kg != expected_co2:
            errors.append(
                field_error(
                    ("co2_saved_kg",),
                    "amount_mismatch",
                    "co2_saved_kg must be {expected} for this energy",
                    str(self.co2_saved_kg),
                    expected=str(expected_co2),
                )
            )
        raise_field_errors(type(self), errors)
        return self

    @classmethod
    def from_report(
        cls,
        report: EnergyReport,
        *,
        quality_factor: Decimal,
        report_id: str | None = None,
        sell_price: Decimal | None = None,
    ) -> EnergyMintData:
        """Build the event payload for an accepted ``report``.

        ``report_id`` defaults to the report's own; one of the two must be
        set. Amounts are computed with :mod:`.tokens`.
        """
        key = report_id if report_id is not None else report.report_id
        if key is None:
            raise PeerGridValidationError("report_id", "an energy mint needs a report id")
        return cls(
            device_id=report.device_id,
            report_id=key,
            sender_uid=report.sender_uid,
            receiver_uid=report.receiver_uid,
            kwh_transferred=report.kwh_transferred,
            quality_factor=quality_factor,
            tokens_minted=tokens_minted(report.kwh_transferred, quality_factor),
            co2_saved_kg=carbon_credit_kg(report.kwh_transferred),
            sell_price=sell_price,
        )


# ---------------------------------------------------------------- envelopes


class GridEventBase(PayloadModel):
    """What every event envelope has: a ``type`` and its ``data``."""

    type: EventType
    data: BaseModel

    def to_sse(self) -> str:
        """Return the event as one Server-Sent Events message.

        ``event: <type>``, one ``data:`` line of compact JSON, and the blank
        line that ends the message. JSON escapes every newline inside strings,
        so the data always fits on one line.
        """
        return f"event: {self.type.value}\ndata: {self.data.model_dump_json()}\n\n"


class HeartbeatEvent(GridEventBase):
    """A gateway's heartbeat, ``{device_id, status}``."""

    type: Literal[EventType.HEARTBEAT] = EventType.HEARTBEAT
    data: HeartbeatPing


class NodeDataEvent(GridEventBase):
    """A gateway's full telemetry, the node-data ping as received."""

    type: Literal[EventType.NODE_DATA] = EventType.NODE_DATA
    data: NodeDataPing


class ScheduleEvent(GridEventBase):
    """A scheduler run, ``{device_id, commands, grid_summary}``."""

    type: Literal[EventType.SCHEDULE] = EventType.SCHEDULE
    data: ScheduleData


class EnergyMintEvent(GridEventBase):
    """Tokens and carbon credit minted for a transfer."""

    type: Literal[EventType.ENERGY_MINT] = EventType.ENERGY_MINT
    data: EnergyMintData


type GridEvent = Annotated[
    HeartbeatEvent | NodeDataEvent | ScheduleEvent | EnergyMintEvent, Field(discriminator="type")
]
"""Any grid event; ``type`` selects the model, so errors name only that model's fields."""

_EVENT: Final[TypeAdapter[HeartbeatEvent | NodeDataEvent | ScheduleEvent | EnergyMintEvent]] = (
    TypeAdapter(GridEvent)
)
_JSON: Final[TypeAdapter[JsonValue]] = TypeAdapter(JsonValue)


def parse_event(obj: object) -> HeartbeatEvent | NodeDataEvent | ScheduleEvent | EnergyMintEvent:
    """Validate a decoded ``{type, data}`` envelope; raises ValidationError."""
    return _EVENT.validate_python(obj)


def parse_event_json(
    data: str | bytes | bytearray,
) -> HeartbeatEvent | NodeDataEvent | ScheduleEvent | EnergyMintEvent:
    """Validate a JSON ``{type, data}`` envelope; raises ValidationError."""
    return _EVENT.validate_json(data)


def parse_sse(message: str) -> HeartbeatEvent | NodeDataEvent | ScheduleEvent | EnergyMintEvent:
    """Read one Server-Sent Events message back into its event.

    Follows the SSE field rules a client needs here: lines starting with
    ``:`` are comments, one space after the colon is dropped, several
    ``data:`` lines are joined with newlines, other fields (``id``,
    ``retry``) are ignored.

    Raises :class:`PeerGridProtocolError` when the message has no event name,
    no data or data that is not JSON, and :class:`pydantic.ValidationError`
    when the event itself is invalid.
    """
    event_name: str | None = None
    data_lines: list[str] = []
    for line in message.splitlines():
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event_name = value
        elif name == "data":
            data_lines.append(value)
    if event_name is None:
        raise PeerGridProtocolError("SSE message has no event field")
    if not data_lines:
        raise PeerGridProtocolError("SSE message has no data field")
    try:
        data = _JSON.validate_json("\n".join(data_lines))
    except ValidationError as err:
        raise PeerGridProtocolError(f"SSE data of {event_name!r} is not JSON") from err
    return parse_event({"type": event_name, "data": data})
