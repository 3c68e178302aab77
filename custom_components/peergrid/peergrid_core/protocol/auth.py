"""Authentication and per-session integrity of the node protocol.

The pre-shared key never travels. Both sides prove they hold it with an
HMAC over the SHA-256 of the node's exact hello line and the controller's
nonce, and derive one key per direction from the same transcript. After that
every line is signed with its direction's key and numbered, so a forged,
altered, replayed, reordered, dropped or reflected line is refused
(docs/protocol.md sections 3 and 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
import hashlib
import hmac
import os
from typing import Self

from ..errors import PeerGridProtocolError, PeerGridValidationError
from .codes import ErrorCode
from .errors import FrameError
from .frames import JsonObject, decode_body, encode_body, signed_line, split_signed_line, verify_mac

LABEL = "peergrid/1"
"""Version label inside every HMAC input, so nothing verifies across versions."""

MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 64
NONCE_BYTES = 16
MAX_SEQ = 2**31 - 1


def validate_key(key: bytes) -> bytes:
    """Return ``key`` if it is a usable pre-shared key (16 to 64 bytes).

    Raises :class:`PeerGridValidationError` naming ``key`` otherwise.
    """
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise PeerGridValidationError(
            "key", f"must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, got {len(key)}"
        )
    return key


def key_from_text(text: str) -> bytes:
    """The key bytes for a key typed as text (its UTF-8 encoding), validated."""
    return validate_key(text.encode("utf-8"))


def new_nonce() -> str:
    """A fresh 16-byte random nonce as 32 lowercase hex characters."""
    return os.urandom(NONCE_BYTES).hex()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode("ascii"), "sha256")


@dataclass(frozen=True, kw_only=True, repr=False)
class SessionSecrets:
    """Everything derived from the key and one handshake.

    ``repr`` is disabled so that keys never end up in a log line.
    """

    hello_sha256: str
    client_proof: str
    node_proof: str
    k_c2n: bytes
    k_n2c: bytes

    @classmethod
    def derive(cls, key: bytes, hello_line: bytes, cnonce: str) -> Self:
        """Derive proofs and direction keys.

        ``hello_line`` is the node's hello exactly as it crossed the wire,
        with or without its LF; ``cnonce`` the controller's 32-hex nonce.
        """
        validate_key(key)
        if hello_line.endswith(b"\n"):
            hello_line = hello_line[:-1]
        digest = hashlib.sha256(hello_line).hexdigest()
        transcript = f"{digest}|{cnonce}"
        return cls(
            hello_sha256=digest,
            client_proof=_hmac(key, f"{LABEL}|client|{transcript}").hex(),
            node_proof=_hmac(key, f"{LABEL}|node|{transcript}").hex(),
            k_c2n=_hmac(key, f"{LABEL}|c2n|{transcript}"),
            k_n2c=_hmac(key, f"{LABEL}|n2c|{transcript}"),
        )

    def __repr__(self) -> str:
        """Name the transcript, never the secrets."""
        return f"SessionSecrets(hello_sha256={self.hello_sha256!r})"


def proofs_match(expected: str, received: str) -> bool:
    """Compare two hex proofs in constant time."""
    return hmac.compare_digest(expected.encode("ascii"), received.encode("ascii", "replace"))


class Role(StrEnum):
    """Which end of the session this side is; it picks the send and receive keys."""

    CONTROLLER = "controller"
    NODE = "node"


@dataclass(kw_only=True)
class SignedSession:
    """Signs outgoing and verifies incoming lines of one authenticated session.

    Not thread-safe; one instance per connection. ``seal`` numbers frames in
    the order it is called, so call it and write the line without awaiting in
    between.
    """

    secrets: SessionSecrets
    role: Role
    sent_seq: int = field(default=0, init=False)
    """Sequence number of the last line sealed."""
    received_seq: int = field(default=0, init=False)
    """Sequence number of the last line accepted."""

    @property
    def _send_key(self) -> bytes:
        return self.secrets.k_c2n if self.role is Role.CONTROLLER else self.secrets.k_n2c

    @property
    def _receive_key(self) -> bytes:
        return self.secrets.k_n2c if self.role is Role.CONTROLLER else self.secrets.k_c2n

    def seal(self, body: JsonObject) -> bytes:
        """Number ``body`` (``seq`` right after ``t``) and return its signed line.

        Raises :class:`PeerGridProtocolError` when the sequence space is used
        up (the session must then be closed and a new one opened).
        """
        if self.sent_seq >= MAX_SEQ:
            raise PeerGridProtocolError("sequence numbers exhausted; reconnect to re-key")
        numbered: JsonObject = {"t": body["t"], "seq": self.sent_seq + 1}
        numbered.update((k, v) for k, v in body.items() if k not in ("t", "seq"))
        line = signed_line(self._send_key, encode_body(numbered))
        self.sent_seq += 1
        return line

    def open(self, line: bytes) -> JsonObject:
        """Verify a received signed line and return its body.

        Checks, in this order and before acting on anything: layout
        (``bad_frame``), MAC (``bad_mac``), JSON (``bad_json``) and sequence
        (``bad_seq``). All of these are fatal for the session. The expected
        sequence number advances only when every check passed.
        """
        tag, raw = split_signed_line(line)
        verify_mac(self._receive_key, tag, raw)
        body = decode_body(raw)
        seq = body.get("seq")
        expected = self.received_seq + 1
        if type(seq) is not int:
            raise FrameError(ErrorCode.BAD_SEQ, "sequence number missing")
        if seq != expected:
            raise FrameError(ErrorCode.BAD_SEQ, f"sequence {seq}, expected {expected}")
        self.received_seq = seq
        return body
