"""The PeerGrid node protocol, version 1: codec, session crypto, messages, client.

``docs/protocol.md`` is the specification. Layers, bottom up:

* :mod:`.frames`: line size limit, strict JSON bodies, signed-line layout;
* :mod:`.auth`: proofs, direction keys, sequence-checked :class:`SignedSession`;
* :mod:`.codes` and :mod:`.messages`: enums and typed frame bodies;
* :mod:`.client`: :class:`NodeClient`, the async controller side.
"""

from __future__ import annotations

from .auth import Role, SessionSecrets, SignedSession, key_from_text, new_nonce, validate_key
from .client import Backoff, ConnectionState, NodeClient
from .codes import AuthScheme, Capability, ErrorCode, Mode, NodeState, TripReason
from .errors import CommandRefusedError, FrameError, NotPeerGridNodeError, UnsupportedProtocolError
from .frames import MAX_BODY_BYTES, MAX_LINE_BYTES, JsonObject, JsonValue
from .messages import (
    DEFAULT_LIMIT_MWH,
    DEFAULT_MIN_MV,
    DEFAULT_PORT,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    AuthOk,
    Command,
    ControllerMessage,
    ErrorFrame,
    Event,
    GetConfig,
    GetStatus,
    Hello,
    Limits,
    Message,
    NodeConfig,
    NodeMessage,
    NodePush,
    Ping,
    Pong,
    SetConfig,
    Status,
    parse_controller_message,
    parse_hello,
    parse_node_message,
)
from .probe import probe_node, validate_node

__all__ = [
    "DEFAULT_LIMIT_MWH",
    "DEFAULT_MIN_MV",
    "DEFAULT_PORT",
    "MAX_BODY_BYTES",
    "MAX_LINE_BYTES",
    "PROTOCOL_VERSION",
    "Ack",
    "Auth",
    "AuthOk",
    "AuthScheme",
    "Backoff",
    "Capability",
    "Command",
    "CommandRefusedError",
    "ConnectionState",
    "ControllerMessage",
    "ErrorCode",
    "ErrorFrame",
    "Event",
    "FrameError",
    "GetConfig",
    "GetStatus",
    "Hello",
    "JsonObject",
    "JsonValue",
    "Limits",
    "Message",
    "Mode",
    "NodeClient",
    "NodeConfig",
    "NodeMessage",
    "NodePush",
    "NodeState",
    "NotPeerGridNodeError",
    "Ping",
    "Pong",
    "Role",
    "SessionSecrets",
    "SetConfig",
    "SignedSession",
    "Status",
    "TripReason",
    "UnsupportedProtocolError",
    "key_from_text",
    "new_nonce",
    "parse_controller_message",
    "parse_hello",
    "parse_node_message",
    "probe_node",
    "validate_key",
    "validate_node",
]
