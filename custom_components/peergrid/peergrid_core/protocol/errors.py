"""Errors of the node protocol, inside the core's one exception tree.

:class:`FrameError` is what the codec raises for a line it must refuse; it
carries the ``err`` code the receiver answers with, so a node implementation
can turn it into its reply without a lookup table. :class:`CommandRefusedError`
is what the client raises when the node answered a request with ``err``.
"""

from __future__ import annotations

from ..errors import PeerGridError, PeerGridProtocolError
from .codes import ErrorCode


class FrameError(PeerGridProtocolError):
    """A line or body broke the protocol; ``code`` is the ``err`` code to answer with."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        request_id: int | None = None,
    ) -> None:
        """Keep the code, the offending field and the request id to echo."""
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id

    @property
    def fatal(self) -> bool:
        """Whether the session must end (always true before authentication)."""
        return self.code.always_fatal


class CommandRefusedError(PeerGridError):
    """The node answered a request with ``err`` and changed nothing.

    ``code`` is the node's error code as an enum when this client knows it
    (``busy``, ``low_voltage``, ``fault``, ``bad_request`` ...), else the raw
    text; ``field`` names the offending field of a ``bad_request``.
    """

    def __init__(self, code: ErrorCode | str, message: str, *, field: str | None = None) -> None:
        """Keep the node's code, message and field."""
        detail = f" ({field})" if field else ""
        super().__init__(f"node refused the request: {code}{detail}: {message}")
        self.code = code
        self.message = message
        self.field = field


class NotPeerGridNodeError(PeerGridProtocolError):
    """The device answered, but its first line is not a PeerGrid hello."""


class UnsupportedProtocolError(PeerGridProtocolError):
    """A PeerGrid node that speaks a protocol version this core does not.

    ``proto`` is the version the node announced, ``supported`` the one this
    core speaks, and ``uid`` the node's identity when its hello carried a
    readable one (a later version may spell it differently).
    """

    def __init__(self, proto: int, supported: int, uid: str | None = None) -> None:
        """Keep both versions and the node's uid beside the message."""
        who = f"node {uid}" if uid else "the node"
        super().__init__(f"{who} speaks protocol {proto}, this controller speaks {supported}")
        self.proto = proto
        self.supported = supported
        self.uid = uid
