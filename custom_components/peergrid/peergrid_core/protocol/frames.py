"""Line framing of the node protocol: size limit, JSON bodies, signed lines.

A line is at most :data:`MAX_LINE_BYTES` bytes including its LF. Before
authentication (and in bench mode) a line is a bare JSON object; after it,
a line is ``<64 hex MAC> <SP> <JSON body>``, and the MAC covers the body's
bytes exactly as sent, so no side ever re-serialises to verify. The functions
here are pure and raise :class:`~.errors.FrameError` with the ``err`` code a
receiver answers with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, NoReturn

from .codes import ErrorCode
from .errors import FrameError

MAX_LINE_BYTES = 512
"""Longest line, LF included (docs/protocol.md section 1 explains the choice)."""

MAC_HEX_LEN = 64
"""Length of the hex HMAC-SHA256 that starts a signed line."""

MAX_BODY_BYTES = MAX_LINE_BYTES - MAC_HEX_LEN - 2
"""Longest body of a signed line: the line minus MAC, space and LF."""

type JsonValue = bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None
type JsonObject = dict[str, JsonValue]

_HEX_DIGITS = frozenset(b"0123456789abcdef")


def _reject_constant(name: str) -> NoReturn:
    # CPython accepts NaN and Infinity by default; MicroPython does not, and
    # no physical quantity of the protocol is ever one of them.
    raise ValueError(f"{name} is not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers may keep different duplicates; refusing them leaves no doubt
    # about what a signed body says.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def encode_body(body: JsonObject) -> bytes:
    """Serialise a body compactly, in insertion order, ASCII only.

    Raises :class:`FrameError` (``line_too_long``) when even an unsigned
    line would not fit, and ``bad_json`` for a value JSON cannot carry.
    """
    try:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
            "ascii"
        )
    except (TypeError, ValueError) as err:
        raise FrameError(ErrorCode.BAD_JSON, f"cannot encode body: {err}") from err
    if len(data) + 1 > MAX_LINE_BYTES:
        raise FrameError(ErrorCode.LINE_TOO_LONG, f"body of {len(data)} bytes is too long")
    return data


def decode_body(data: bytes) -> JsonObject:
    """Parse one body: a UTF-8 JSON object without NaN or duplicate keys.

    Raises :class:`FrameError` with ``bad_json`` for anything else.
    """
    try:
        text = data.decode("utf-8")
        value = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise FrameError(ErrorCode.BAD_JSON, "body is not valid JSON") from err
    if not isinstance(value, dict):
        raise FrameError(ErrorCode.BAD_JSON, "body is not a JSON object")
    return value


def strip_line(line: bytes) -> bytes:
    """Check a received line's length and remove its LF (and a CR before it).

    Raises :class:`FrameError` with ``line_too_long``.
    """
    if len(line) > MAX_LINE_BYTES or (len(line) == MAX_LINE_BYTES and not line.endswith(b"\n")):
        raise FrameError(ErrorCode.LINE_TOO_LONG, f"line longer than {MAX_LINE_BYTES} bytes")
    if line.endswith(b"\n"):
        line = line[:-1]
    return line


def is_blank(line: bytes) -> bool:
    """Whether a received line is an (ignored) empty line."""
    return line in (b"\n", b"\r\n", b"", b"\r")


def plain_line(body: JsonObject) -> bytes:
    """An unsigned line: the body and its LF."""
    return encode_body(body) + b"\n"


def mac_hex(key: bytes, data: bytes) -> bytes:
    """Lowercase hex HMAC-SHA256 of ``data`` as ASCII bytes."""
    return hmac.new(key, data, hashlib.sha256).hexdigest().encode("ascii")


def signed_line(key: bytes, body: bytes) -> bytes:
    """A signed line: MAC of the exact body bytes, a space, the body, LF."""
    if len(body) > MAX_BODY_BYTES:
        raise FrameError(ErrorCode.LINE_TOO_LONG, f"body of {len(body)} bytes is too long")
    return mac_hex(key, body) + b" " + body + b"\n"


def split_signed_line(line: bytes) -> tuple[bytes, bytes]:
    """Split a received signed line into (MAC hex, body bytes) at fixed offsets.

    ``line`` may still end in LF. Nothing is parsed: the caller verifies the
    MAC over the body before looking inside it. Raises :class:`FrameError`
    with ``line_too_long`` or ``bad_frame``.
    """
    content = strip_line(line)
    tag, sep, body = content[:MAC_HEX_LEN], content[MAC_HEX_LEN : MAC_HEX_LEN + 1], content[65:]
    if sep != b" " or not body or not _HEX_DIGITS.issuperset(tag):
        raise FrameError(ErrorCode.BAD_FRAME, "signed line expected")
    return tag, body


def verify_mac(key: bytes, tag: bytes, body: bytes) -> None:
    """Check a MAC in constant time; raise :class:`FrameError` ``bad_mac`` if wrong."""
    if not hmac.compare_digest(mac_hex(key, body), tag):
        raise FrameError(ErrorCode.BAD_MAC, "mac mismatch")
