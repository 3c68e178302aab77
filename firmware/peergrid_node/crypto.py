"""HMAC-SHA256 (RFC 2104) and a constant-time compare.

MicroPython for the ESP32 has ``hashlib.sha256`` but no ``hmac`` module, and
its hash objects cannot be copied, so HMAC is built here from two plain
hashes. The result is identical to CPython's ``hmac.new(key, msg, sha256)``.
"""

import binascii
import hashlib

_BLOCK = 64


def _pads(key):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    inner = bytearray(_BLOCK)
    outer = bytearray(_BLOCK)
    for i in range(_BLOCK):
        b = key[i] if i < len(key) else 0
        inner[i] = b ^ 0x36
        outer[i] = b ^ 0x5C
    return bytes(inner), bytes(outer)


def hmac_sha256(key, msg):
    """HMAC-SHA256 of ``msg`` under ``key`` (both bytes), as 32 raw bytes."""
    inner_pad, outer_pad = _pads(key)
    inner = hashlib.sha256(inner_pad)
    inner.update(msg)
    outer = hashlib.sha256(outer_pad)
    outer.update(inner.digest())
    return outer.digest()


def hmac_hex(key, msg):
    """HMAC-SHA256 as 64 lowercase hex characters (str)."""
    return binascii.hexlify(hmac_sha256(key, msg)).decode()


def consteq(a, b):
    """Compare two byte strings in time independent of where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def to_hex(data):
    """Lowercase hex text of ``data``."""
    return binascii.hexlify(data).decode()


def from_hex(text):
    """Bytes from hex ``text``; raises ``ValueError`` on anything else."""
    if not isinstance(text, str) or len(text) % 2:
        raise ValueError("hex")
    try:
        return binascii.unhexlify(text)
    except Exception:
        raise ValueError("hex")
