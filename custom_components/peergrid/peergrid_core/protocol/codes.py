"""The enumerated vocabulary of the PeerGrid node protocol, version 1.

Every value a frame can carry from a closed set (modes, states, trip reasons,
error codes, capabilities) is an enum here, so that the codec, the client and
the Home Assistant integration share one spelling of each.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """What the node's relays do."""

    IDLE = "IDLE"
    """Both relays open."""
    SUPPLY = "SUPPLY"
    """GPIO 26 relay closed: the boost converter sends energy out."""
    RECEIVE = "RECEIVE"
    """GPIO 25 relay closed: the TP4056 charger takes energy in."""


class NodeState(StrEnum):
    """The node's state as reported in ``status``."""

    IDLE = "idle"
    SUPPLYING = "supplying"
    RECEIVING = "receiving"
    TRIPPED = "tripped"
    """A safety rule stopped the last transfer; cleared by the next accepted command."""


class TripReason(StrEnum):
    """Why a safety rule on the node stopped a transfer."""

    LOW_VOLTAGE = "low_voltage"
    ENERGY_LIMIT = "energy_limit"
    LEASE_EXPIRED = "lease_expired"
    INTERLOCK = "interlock"
    OVER_CURRENT = "over_current"
    STUCK_RELAY = "stuck_relay"
    SENSOR_FAULT = "sensor_fault"
    CONTROLLER_LOST = "controller_lost"


class ErrorCode(StrEnum):
    """The ``code`` of an ``err`` frame."""

    LINE_TOO_LONG = "line_too_long"
    BAD_FRAME = "bad_frame"
    BAD_MAC = "bad_mac"
    BAD_SEQ = "bad_seq"
    BAD_JSON = "bad_json"
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    UNSUPPORTED_PROTO = "unsupported_proto"
    IDLE_TIMEOUT = "idle_timeout"
    UNKNOWN_TYPE = "unknown_type"
    BAD_REQUEST = "bad_request"
    BUSY = "busy"
    LOW_VOLTAGE = "low_voltage"
    FAULT = "fault"
    INTERNAL = "internal"

    @property
    def always_fatal(self) -> bool:
        """Whether this error ends the session whatever state it arrives in."""
        return self in _ALWAYS_FATAL


_ALWAYS_FATAL = frozenset(
    {
        ErrorCode.LINE_TOO_LONG,
        ErrorCode.BAD_FRAME,
        ErrorCode.BAD_MAC,
        ErrorCode.BAD_SEQ,
        ErrorCode.BAD_JSON,
        ErrorCode.AUTH_REQUIRED,
        ErrorCode.AUTH_FAILED,
        ErrorCode.UNSUPPORTED_PROTO,
        ErrorCode.IDLE_TIMEOUT,
    }
)


class AuthScheme(StrEnum):
    """How a session is protected, as announced in ``hello``."""

    HMAC_SHA256 = "hmac-sha256"
    NONE = "none"
    """Bench mode: unsigned frames, only on a node without a key."""


class Capability(StrEnum):
    """Optional features a node announces in ``hello``."""

    SUPPLY = "supply"
    RECEIVE = "receive"
    CONFIG = "config"
