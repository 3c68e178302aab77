"""Typed messages of the PeerGrid node protocol, version 1 (``docs/protocol.md``).

Every frame body is a JSON object whose ``t`` names its type. This module maps
each type to a frozen pydantic model, with the protocol's integer units and
ranges as constraints, and enums for every enumerated value. Integers are
strict: a JSON ``true`` or ``1.0`` is not accepted where the protocol wants an
integer, because a node running MicroPython would not accept it either.

Field names follow the wire except where an alias reads better in Python
(``id`` is ``request_id``, ``lim`` is ``limits``, ``trip`` is ``last_trip``).
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..units import MilliAmps, MilliVolts, MilliWattHours, MilliWatts, PerMille
from .codes import AuthScheme, Capability, ErrorCode, Mode, NodeState, TripReason
from .errors import FrameError, NotPeerGridNodeError, UnsupportedProtocolError
from .frames import JsonObject, decode_body, strip_line

PROTOCOL_VERSION = 1
"""The protocol version this module speaks."""

DEFAULT_PORT = 7420
"""TCP port a node listens on unless configured otherwise."""

DEFAULT_LIMIT_MWH = 10_000
"""Energy budget of a transfer when a command names none (10 Wh)."""

DEFAULT_MIN_MV = 3_300
"""SUPPLY cut-off voltage when a command names none."""


# Strict integer ranges of the protocol (section 5 of docs/protocol.md).
type WireInt = Annotated[int, Strict()]
type RequestId = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]
type SequenceNumber = Annotated[int, Strict(), Field(ge=1, le=2**31 - 1)]
type LeaseSeconds = Annotated[int, Strict(), Field(ge=1, le=3_600)]
type LimitMilliWattHours = Annotated[int, Strict(), Field(ge=1, le=100_000)]
type CutoffMilliVolts = Annotated[int, Strict(), Field(ge=3_000, le=4_200)]
type CurrentLimitMilliAmps = Annotated[int, Strict(), Field(ge=100, le=3_200)]
type PushSeconds = Annotated[int, Strict(), Field(ge=1, le=60)]
type LeaseLeftSeconds = Annotated[int, Strict(), Field(ge=0, le=3_600)]
type UptimeSeconds = Annotated[int, Strict(), Field(ge=0, le=9_999_999_999)]
type Hex32 = Annotated[str, Strict(), Field(pattern=r"^[0-9a-f]{32}$")]
type Hex64 = Annotated[str, Strict(), Field(pattern=r"^[0-9a-f]{64}$")]
type ShortText = Annotated[str, Strict(), Field(max_length=80)]


class Message(BaseModel):
    """Base of every frame body: frozen, unknown fields ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    type_name: ClassVar[str]
    """The wire value of ``t`` for this message."""

    def to_body(self) -> JsonObject:
        """Return the body as a JSON object, ``t`` first, without ``seq``.

        Only fields that were set are written, so an optional field that the
        sender left out stays out (the receiver then applies its default),
        while a field explicitly set to ``None`` is written as ``null``.
        """
        fields = self.model_dump(
            mode="json", by_alias=True, exclude_unset=True, exclude={"t", "seq"}
        )
        return {"t": self.type_name, **fields}


# ----------------------------------------------------------------- node -> controller


class Hello(Message):
    """The node's first line: who it is and how the session is protected."""

    type_name = "hello"
    t: Literal["hello"] = "hello"
    proto: WireInt
    uid: Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    fw: Annotated[str, Strict(), Field(min_length=1, max_length=16)]
    caps: tuple[str, ...] = ()
    auth: AuthScheme
    nonce: Hex32
    reset: str = "unknown"
    push_s: PushSeconds = 5
    idle_s: Annotated[int, Strict(), Field(ge=1, le=3_600)] = 30

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The announced capabilities this client understands."""
        known = {c.value for c in Capability}
        return frozenset(Capability(c) for c in self.caps if c in known)


class AuthOk(Message):
    """The node's proof that it holds the key."""

    type_name = "auth_ok"
    t: Literal["auth_ok"] = "auth_ok"
    mac: Hex64


class Limits(BaseModel):
    """A node's configured safety limits, as carried in ``status``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    limit_mwh: LimitMilliWattHours
    min_mv: CutoffMilliVolts
    max_ma: CurrentLimitMilliAmps
    max_lease_s: LeaseSeconds


class Status(Message):
    """Telemetry: pushed periodically and on change, or answering ``get_status``."""

    type_name = "status"
    t: Literal["status"] = "status"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")
    uid: Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    mode: Mode
    state: NodeState
    mv: Annotated[MilliVolts, Strict()] | None
    ma: Annotated[MilliAmps, Strict()] | None
    mw: Annotated[MilliWatts, Strict()] | None
    soc: Annotated[PerMille, Strict()] | None
    e_out_mwh: Annotated[MilliWattHours, Strict()]
    e_in_mwh: Annotated[MilliWattHours, Strict()]
    e_session_mwh: Annotated[MilliWattHours, Strict()] = 0
    lease_left_s: LeaseLeftSeconds = 0
    last_trip: TripReason | None = Field(default=None, alias="trip")
    rssi: Annotated[int, Strict(), Field(ge=-127, le=0)] | None = None
    uptime_s: UptimeSeconds
    fw: Annotated[str, Strict(), Field(max_length=16)]
    limits: Limits = Field(alias="lim")


class Ack(Message):
    """The node carried out a command; the values are those it applies."""

    type_name = "ack"
    t: Literal["ack"] = "ack"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")
    mode: Mode
    lease_s: LeaseSeconds | None = None
    limit_mwh: LimitMilliWattHours | None = None
    min_mv: CutoffMilliVolts | None = None
    renewed: Annotated[bool, Strict()] = False


class Pong(Message):
    """Answer to ``ping``."""

    type_name = "pong"
    t: Literal["pong"] = "pong"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")
    lease_left_s: LeaseLeftSeconds = 0


class Event(Message):
    """A safety rule stopped a transfer."""

    type_name = "event"
    t: Literal["event"] = "event"
    seq: SequenceNumber | None = None
    ev: Annotated[str, Strict()] = "trip"
    reason: TripReason
    mode: Mode
    mv: Annotated[MilliVolts, Strict()] | None = None
    e_session_mwh: Annotated[MilliWattHours, Strict()] = 0


class NodeConfig(Message):
    """The node's configured limits and push period (answer to the config requests)."""

    type_name = "config"
    t: Literal["config"] = "config"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")
    limit_mwh: LimitMilliWattHours
    min_mv: CutoffMilliVolts
    max_ma: CurrentLimitMilliAmps
    max_lease_s: LeaseSeconds
    push_s: PushSeconds


class ErrorFrame(Message):
    """A request was refused, or the session is about to close (``close``)."""

    type_name = "err"
    t: Literal["err"] = "err"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")
    code: Annotated[str, Strict()]
    field: Annotated[str, Strict(), Field(max_length=32)] | None = None
    msg: Annotated[str, Strict()] = ""
    close: Annotated[bool, Strict()] = False

    @property
    def error_code(self) -> ErrorCode | None:
        """The code as an enum, or ``None`` for a code from a newer protocol."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


# ----------------------------------------------------------------- controller -> node


class Auth(Message):
    """The controller's proof that it holds the key, with its nonce."""

    type_name = "auth"
    t: Literal["auth"] = "auth"
    proto: WireInt
    cnonce: Hex32
    mac: Hex64


class Command(Message):
    """Switch the relays: SUPPLY, RECEIVE or IDLE, under a lease and limits."""

    type_name = "cmd"
    t: Literal["cmd"] = "cmd"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")
    mode: Mode
    lease_s: LeaseSeconds | None = None
    limit_mwh: LimitMilliWattHours | None = None
    min_mv: CutoffMilliVolts | None = None

    @model_validator(mode="after")
    def _lease_for_transfers(self) -> Command:
        """A transfer must say how long it may last; IDLE needs no lease."""
        if self.mode is not Mode.IDLE and self.lease_s is None:
            raise PydanticCustomError(
                "lease_required",
                "lease_s is required for SUPPLY and RECEIVE",
                {"field": "lease_s"},
            )
        return self


class GetStatus(Message):
    """Ask for a ``status`` now."""

    type_name = "get_status"
    t: Literal["get_status"] = "get_status"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")


class Ping(Message):
    """Authenticated keepalive."""

    type_name = "ping"
    t: Literal["ping"] = "ping"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")


class GetConfig(Message):
    """Ask for the node's configured limits."""

    type_name = "get_config"
    t: Literal["get_config"] = "get_config"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")


class SetConfig(Message):
    """Change some of the node's configured limits (all validated first)."""

    type_name = "set_config"
    t: Literal["set_config"] = "set_config"
    seq: SequenceNumber | None = None
    request_id: RequestId | None = Field(default=None, alias="id")
    limit_mwh: LimitMilliWattHours | None = None
    min_mv: CutoffMilliVolts | None = None
    max_ma: CurrentLimitMilliAmps | None = None
    max_lease_s: LeaseSeconds | None = None
    push_s: PushSeconds | None = None


type NodeMessage = Hello | AuthOk | Status | Ack | Pong | Event | NodeConfig | ErrorFrame
"""Anything a node sends."""

type ControllerMessage = Auth | Command | GetStatus | Ping | GetConfig | SetConfig | ErrorFrame
"""Anything a controller sends."""

type NodePush = Status | Event
"""What a node sends on its own, delivered to ``NodeClient.listen`` callbacks."""

_NODE_TYPES: dict[str, type[NodeMessage]] = {
    m.type_name: m for m in (Hello, AuthOk, Status, Ack, Pong, Event, NodeConfig, ErrorFrame)
}
_CONTROLLER_TYPES: dict[str, type[ControllerMessage]] = {
    m.type_name: m for m in (Auth, Command, GetStatus, Ping, GetConfig, SetConfig, ErrorFrame)
}


def _request_id_of(body: JsonObject) -> int | None:
    """The request id of a body if it is a usable one (for echoing in ``err``)."""
    value = body.get("id")
    if type(value) is int and 1 <= value <= 2**31 - 1:
        return value
    return None


def _validate[M: Message](model: type[M], body: JsonObject) -> M:
    """Validate ``body`` as ``model``; a failure is ``bad_request`` naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        if first["loc"]:
            field: str | None = str(first["loc"][0])
        else:  # a cross-field rule names its field in the error context
            field = str(first.get("ctx", {}).get("field")) if first.get("ctx") else None
        raise FrameError(
            ErrorCode.BAD_REQUEST,
            f"invalid {field or model.type_name}: {first['msg']}",
            field=field,
            request_id=_request_id_of(body),
        ) from err


def _parse[M: Message](registry: dict[str, type[M]], body: JsonObject) -> M:
    kind = body.get("t")
    if not isinstance(kind, str) or kind not in registry:
        raise FrameError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown message type {kind!r}"[:80],
            request_id=_request_id_of(body),
        )
    return _validate(registry[kind], body)


def parse_node_message(body: JsonObject) -> NodeMessage:
    """Turn a body received from a node into its typed message.

    Raises :class:`FrameError` with ``unknown_type`` or ``bad_request``.
    """
    return _parse(_NODE_TYPES, body)


def parse_controller_message(body: JsonObject) -> ControllerMessage:
    """Turn a body received from a controller into its typed message.

    Raises :class:`FrameError` with ``unknown_type`` or ``bad_request``.
    """
    return _parse(_CONTROLLER_TYPES, body)


_READABLE_UID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def parse_hello(line: bytes) -> Hello:
    """Parse a node's first line (with or without its LF) into a :class:`Hello`.

    The version is checked before the rest of the hello is validated, so a
    node of another protocol version is reported as such even when its hello
    has other fields than version 1's.

    Raises :class:`UnsupportedProtocolError` for a hello of another version
    and :class:`NotPeerGridNodeError` for anything that is not a valid hello.
    """
    try:
        body = decode_body(strip_line(line))
    except FrameError as err:
        raise NotPeerGridNodeError(f"first line is not a PeerGrid frame ({err.code})") from err
    if body.get("t") != Hello.type_name:
        raise NotPeerGridNodeError("first line is not a PeerGrid hello")
    proto = body.get("proto")
    # bool is an int subclass; the wire's integers never are booleans.
    if type(proto) is not int:
        raise NotPeerGridNodeError("hello without an integer protocol version")
    if proto != PROTOCOL_VERSION:
        uid = body.get("uid")
        # Only a well-formed uid is worth repeating; the rest came off the network.
        readable = uid if isinstance(uid, str) and _READABLE_UID.fullmatch(uid) else None
        raise UnsupportedProtocolError(proto, PROTOCOL_VERSION, readable)
    try:
        return Hello.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "hello"
        raise NotPeerGridNodeError(f"invalid hello: {where}: {first['msg']}") from err
