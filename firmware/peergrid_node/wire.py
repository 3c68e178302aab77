"""Wire format of PeerGrid protocol version 1, node side (see docs/protocol.md).

Lines are at most 512 bytes including the LF. After authentication every line
is ``<64 hex MAC> <SP> <JSON body> <LF>`` with the MAC (HMAC-SHA256) over the
raw body bytes, so nothing is ever re-serialised: that is what lets this
MicroPython codec (unordered dicts, no ``sort_keys``) interoperate with the
CPython controller.

The JSON reader is this module's own strict parser, identical on MicroPython
and CPython: it rejects NaN and Infinity, duplicate keys, trailing data and
anything but an object at the top, which neither runtime's ``json.loads``
does on its own.
"""

import hashlib
import json

from .crypto import hmac_hex, hmac_sha256, to_hex

PROTO = 1
LABEL = "peergrid/1|"
MAX_LINE = 512
MAC_HEX = 64
MAX_SEQ = 2147483647
MAX_DEPTH = 8

MODES = ("SUPPLY", "RECEIVE", "IDLE")

DEFAULT_LIMIT_MWH = 10000
DEFAULT_MIN_MV = 3300

# Request field ranges, shared by ``cmd`` and ``set_config``.
LEASE_S = (1, 3600)
LIMIT_MWH = (1, 100000)
MIN_MV = (3000, 4200)
MAX_MA = (100, 3200)
MAX_LEASE_S = (1, 3600)
PUSH_S = (1, 60)

CONFIG_KEYS = (
    ("limit_mwh", LIMIT_MWH),
    ("min_mv", MIN_MV),
    ("max_ma", MAX_MA),
    ("max_lease_s", MAX_LEASE_S),
    ("push_s", PUSH_S),
)

_HEX = "0123456789abcdef"


class ProtocolError(Exception):
    """A frame the node refuses: ``code`` from the protocol's err table.

    ``fatal`` errors close the connection; ``field`` names the offending
    field of a ``bad_request``; ``rid`` is the request id when it was read.
    """

    def __init__(self, code, msg, fatal=False, field=None, rid=None):
        super().__init__(code)
        self.code = code
        self.msg = msg
        self.fatal = fatal
        self.field = field
        self.rid = rid


def dumps(body):
    """Compact JSON bytes of ``body`` (ASCII, no spaces)."""
    return json.dumps(body, separators=(",", ":")).encode()


def is_lower_hex(text, length):
    """True when ``text`` is a str of exactly ``length`` lowercase hex digits."""
    if not isinstance(text, str) or len(text) != length:
        return False
    return all(ch in _HEX for ch in text)


def _is_lower_hex_bytes(data):
    return all(48 <= b <= 57 or 97 <= b <= 102 for b in data)


# ---------------------------------------------------------------- handshake


def session_secrets(key, hello_line, cnonce):
    """Derive the handshake values from the key, the hello line and ``cnonce``.

    ``hello_line`` is the hello exactly as sent, without its LF. Returns
    ``(client_proof_hex, node_proof_hex, k_c2n, k_n2c)``.
    """
    transcript = to_hex(hashlib.sha256(hello_line).digest()) + "|" + cnonce
    client_proof = hmac_hex(key, (LABEL + "client|" + transcript).encode())
    node_proof = hmac_hex(key, (LABEL + "node|" + transcript).encode())
    k_c2n = hmac_sha256(key, (LABEL + "c2n|" + transcript).encode())
    k_n2c = hmac_sha256(key, (LABEL + "n2c|" + transcript).encode())
    return client_proof, node_proof, k_c2n, k_n2c


def signed_line(key, body_bytes):
    """``<mac> <body>\\n`` for ``body_bytes`` under ``key``."""
    return hmac_hex(key, body_bytes).encode() + b" " + body_bytes + b"\n"


def split_signed(line):
    """Split a signed line (LF removed) into ``(mac_bytes, body_bytes)``.

    Raises the fatal ``bad_frame`` when the layout is wrong.
    """
    if len(line) < MAC_HEX + 2 or line[MAC_HEX] != 0x20 or not _is_lower_hex_bytes(line[:MAC_HEX]):
        raise ProtocolError("bad_frame", "signed line expected", True)
    return line[:MAC_HEX], line[MAC_HEX + 1 :]


# ---------------------------------------------------------------- strict JSON


class _JsonError(Exception):
    pass


def parse_object(data):
    """Parse ``data`` (bytes) as one JSON object; raises ``bad_json``."""
    try:
        text = data.decode("utf-8")
    except Exception:
        raise ProtocolError("bad_json", "not UTF-8")
    try:
        value, end = _value(text, _skip(text, 0), 0)
        if _skip(text, end) != len(text):
            raise _JsonError("trailing data")
    except _JsonError as err:
        raise ProtocolError("bad_json", str(err))
    except (IndexError, ValueError):
        raise ProtocolError("bad_json", "invalid JSON")
    if not isinstance(value, dict):
        raise ProtocolError("bad_json", "not a JSON object")
    return value


def _skip(text, i):
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    return i


def _value(text, i, depth):
    if i >= len(text):
        raise _JsonError("unexpected end")
    ch = text[i]
    if ch == "{":
        return _object(text, i + 1, depth + 1)
    if ch == "[":
        return _array(text, i + 1, depth + 1)
    if ch == '"':
        return _string(text, i + 1)
    if ch == "t" and text.startswith("true", i):
        return True, i + 4
    if ch == "f" and text.startswith("false", i):
        return False, i + 5
    if ch == "n" and text.startswith("null", i):
        return None, i + 4
    return _number(text, i)


def _object(text, i, depth):
    if depth > MAX_DEPTH:
        raise _JsonError("too deep")
    out = {}
    i = _skip(text, i)
    if i < len(text) and text[i] == "}":
        return out, i + 1
    while True:
        if i >= len(text) or text[i] != '"':
            raise _JsonError("key expected")
        key, i = _string(text, i + 1)
        if key in out:
            raise _JsonError("duplicate key")
        i = _skip(text, i)
        if i >= len(text) or text[i] != ":":
            raise _JsonError("colon expected")
        value, i = _value(text, _skip(text, i + 1), depth)
        out[key] = value
        i = _skip(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip(text, i + 1)
            continue
        if i < len(text) and text[i] == "}":
            return out, i + 1
        raise _JsonError("comma expected")


def _array(text, i, depth):
    if depth > MAX_DEPTH:
        raise _JsonError("too deep")
    out = []
    i = _skip(text, i)
    if i < len(text) and text[i] == "]":
        return out, i + 1
    while True:
        value, i = _value(text, i, depth)
        out.append(value)
        i = _skip(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip(text, i + 1)
            continue
        if i < len(text) and text[i] == "]":
            return out, i + 1
        raise _JsonError("comma expected")


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _hex4(text, i):
    digits = text[i : i + 4]
    if len(digits) != 4:
        raise _JsonError("bad escape")
    for ch in digits:
        if ch not in "0123456789abcdefABCDEF":
            raise _JsonError("bad escape")
    return int(digits, 16)


def _string(text, i):
    parts = []
    n = len(text)
    start = i
    while True:
        if i >= n:
            raise _JsonError("unterminated string")
        ch = text[i]
        if ch == '"':
            parts.append(text[start:i])
            return "".join(parts), i + 1
        if ord(ch) < 0x20:
            raise _JsonError("control character in string")
        if ch != "\\":
            i += 1
            continue
        parts.append(text[start:i])
        esc = text[i + 1] if i + 1 < n else ""
        if esc in _ESCAPES:
            parts.append(_ESCAPES[esc])
            i += 2
        elif esc == "u":
            code = _hex4(text, i + 2)
            i += 6
            if 0xD800 <= code <= 0xDBFF:
                if text[i : i + 2] != "\\u":
                    raise _JsonError("lone surrogate")
                low = _hex4(text, i + 2)
                if not 0xDC00 <= low <= 0xDFFF:
                    raise _JsonError("lone surrogate")
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                i += 6
            elif 0xDC00 <= code <= 0xDFFF:
                raise _JsonError("lone surrogate")
            parts.append(chr(code))
        else:
            raise _JsonError("bad escape")
        start = i


def _digits(text, i):
    n = len(text)
    start = i
    while i < n and "0" <= text[i] <= "9":
        i += 1
    if i == start:
        raise _JsonError("digit expected")
    return i


def _number(text, i):
    start = i
    if text[i] == "-":
        i += 1
    if i < len(text) and text[i] == "0":
        i += 1
    else:
        i = _digits(text, i)
    is_float = False
    if i < len(text) and text[i] == ".":
        i = _digits(text, i + 1)
        is_float = True
    if i < len(text) and text[i] in "eE":
        i += 1
        if i < len(text) and text[i] in "+-":
            i += 1
        i = _digits(text, i)
        is_float = True
    token = text[start:i]
    if is_float:
        return float(token), i
    return int(token), i


# ---------------------------------------------------------------- requests


def _is_int(value):
    # bool is an int subclass on CPython; the protocol never takes it as one.
    return type(value) is int


def read_id(msg):
    """The request id, or None when absent; raises ``bad_request`` when invalid."""
    if "id" not in msg:
        return None
    rid = msg["id"]
    if not _is_int(rid) or rid < 1 or rid > MAX_SEQ:
        raise ProtocolError("bad_request", "id must be an integer 1..2^31-1", False, "id")
    return rid


def int_field(msg, name, bounds, rid, required=False, default=None):
    """An integer field within ``bounds`` (inclusive); ``bad_request`` otherwise."""
    if name not in msg:
        if required:
            raise ProtocolError("bad_request", name + " is required", False, name, rid)
        return default
    value = msg[name]
    if not _is_int(value):
        raise ProtocolError("bad_request", name + " must be an integer", False, name, rid)
    if value < bounds[0] or value > bounds[1]:
        raise ProtocolError(
            "bad_request",
            "%s must be %d..%d" % (name, bounds[0], bounds[1]),
            False,
            name,
            rid,
        )
    return value


def read_cmd(msg, rid):
    """Validate a ``cmd``: ``(mode, lease_s, limit_mwh, min_mv)``.

    For IDLE the numbers are None. Fields are checked in a fixed order (mode,
    lease_s, limit_mwh, min_mv) so the first bad one is the one named.
    """
    mode = msg.get("mode")
    if mode not in MODES or not isinstance(mode, str):
        raise ProtocolError("bad_request", "unknown mode", False, "mode", rid)
    if mode == "IDLE":
        return mode, None, None, None
    lease_s = int_field(msg, "lease_s", LEASE_S, rid, required=True)
    limit_mwh = int_field(msg, "limit_mwh", LIMIT_MWH, rid, default=DEFAULT_LIMIT_MWH)
    min_mv = int_field(msg, "min_mv", MIN_MV, rid, default=DEFAULT_MIN_MV)
    return mode, lease_s, limit_mwh, min_mv


def read_config_update(msg, rid):
    """Validate a ``set_config``: a dict of the protocol keys it carries."""
    update = {}
    for name, bounds in CONFIG_KEYS:
        value = int_field(msg, name, bounds, rid)
        if value is not None:
            update[name] = value
    if not update:
        raise ProtocolError("bad_request", "no configurable key given", False, None, rid)
    return update
