"""The one exception tree of the PeerGrid core.

Every failure the core reports derives from :class:`PeerGridError`, so callers
(the integration, the edge gateway) can catch the family they care about.
"""

from __future__ import annotations


class PeerGridError(Exception):
    """Root of every error raised by the PeerGrid core."""


class PeerGridConnectionError(PeerGridError):
    """A node, gateway or backend could not be reached or the link dropped."""


class PeerGridTimeoutError(PeerGridConnectionError):
    """A peer did not answer within the allowed time."""


class PeerGridAuthenticationError(PeerGridError):
    """A peer could not prove it holds the shared key, or refused ours."""


class PeerGridProtocolError(PeerGridError):
    """A frame or payload broke the wire protocol (framing, MAC, sequence)."""


class PeerGridValidationError(PeerGridError):
    """A value is outside what the grid's rules accept.

    ``field`` names the offending input so that callers can point at it (an
    HTTP 400 body, a translated service error, a protocol ``err`` frame).
    """

    def __init__(self, field: str, message: str) -> None:
        """Keep the field name beside the human-readable message."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
