"""The firmware's own codec and HMAC, checked against CPython and the golden frames."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_node import wire
from peergrid_node.crypto import consteq, from_hex, hmac_hex, hmac_sha256, to_hex
from peergrid_node.wire import ProtocolError

from .conftest import GOLDEN

CONVERSATION = GOLDEN["conversation"]


@settings(max_examples=200)
@given(key=st.binary(max_size=200), msg=st.binary(max_size=300))
def test_hmac_matches_cpython(key: bytes, msg: bytes) -> None:
    """Including keys longer than the 64-byte block."""
    assert hmac_sha256(key, msg) == hmac.digest(key, msg, "sha256")


def test_rfc4231_vector() -> None:
    """RFC 4231 test case 2."""
    assert hmac_hex(b"Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_consteq_and_hex() -> None:
    """Equal only for equal bytes; hex helpers round-trip and reject junk."""
    assert consteq(b"abc", b"abc")
    assert not consteq(b"abc", b"abd")
    assert not consteq(b"abc", b"ab")
    assert from_hex(to_hex(b"\x00\xff")) == b"\x00\xff"
    for junk in ("abc", "zz", 12):
        with pytest.raises(ValueError, match="hex"):
            from_hex(junk)


def test_golden_session_secrets() -> None:
    """Proofs and direction keys from the golden key, hello and client nonce."""
    hello = CONVERSATION[0]["line"].encode().rstrip(b"\n")
    derived = GOLDEN["derived"]
    assert hashlib.sha256(hello).hexdigest() == derived["hello_sha256"]
    client, node, k_c2n, k_n2c = wire.session_secrets(
        GOLDEN["key"]["text"].encode(), hello, GOLDEN["client_nonce"]
    )
    assert client == derived["client_proof"]
    assert node == derived["node_proof"]
    assert k_c2n.hex() == derived["k_c2n"]
    assert k_n2c.hex() == derived["k_n2c"]


@pytest.mark.parametrize("entry", [e for e in CONVERSATION if "mac" in e], ids=lambda e: e["name"])
def test_golden_signed_lines(entry: dict[str, Any]) -> None:
    """The firmware signs and splits every golden line exactly."""
    key = bytes.fromhex(GOLDEN["derived"]["k_c2n" if entry["dir"] == "c2n" else "k_n2c"])
    line = entry["line"].encode()
    body = line[65:-1]
    assert wire.signed_line(key, body) == line
    assert wire.split_signed(line[:-1]) == (entry["mac"].encode(), body)
    assert wire.parse_object(body) == entry["body"]
    # The firmware's encoder produces the same bytes for the same dict order.
    assert wire.dumps(entry["body"]) == body


@pytest.mark.parametrize(
    "text",
    [
        '{"a":NaN}',
        '{"a":Infinity}',
        '{"a":-Infinity}',
        '{"a":1,"a":2}',
        '{"a":1} x',
        "[1,2]",
        '"s"',
        "{",
        '{"a":01}',
        '{"a":1.}',
        '{"a":"\\ud800"}',
        '{"a":"\\x"}',
        '{"a":"tab\there"}',
        '{"a":tru}',
        "{'a':1}",
        '{"a":[1,]}',
        '{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":1}}}}}}}}}',
        "",
    ],
)
def test_parser_rejects(text: str) -> None:
    """NaN, duplicates, trailing data, non-objects, bad escapes, too deep."""
    with pytest.raises(ProtocolError) as info:
        wire.parse_object(text.encode())
    assert info.value.code == "bad_json"


def test_parser_rejects_invalid_utf8() -> None:
    """Non-UTF-8 bytes are bad_json."""
    with pytest.raises(ProtocolError):
        wire.parse_object(b'{"a":"\xff"}')


def test_parser_accepts_escapes_and_numbers() -> None:
    """Unicode escapes with surrogate pairs, exponents, nesting."""
    parsed = wire.parse_object(b'{"s":"a\\u00e9\\ud83d\\ude00\\n","n":-1.5e2,"l":[true,null,{}]}')
    assert parsed == {"s": "a\u00e9\U0001f600\n", "n": -150.0, "l": [True, None, {}]}


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6), st.booleans())
def test_parser_agrees_with_cpython_json(obj: dict[str, Any], ascii_only: bool) -> None:
    """Any JSON object CPython writes parses to the same value (depth permitting)."""
    text = json.dumps(obj, ensure_ascii=ascii_only)
    error: ProtocolError | None = None
    try:
        parsed = wire.parse_object(text.encode())
    except ProtocolError as err:
        error = err
    if error is not None:
        assert error.msg == "too deep"
    else:
        assert parsed == json.loads(text)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_parser_never_crashes(data: bytes) -> None:
    """Arbitrary bytes: a dict or bad_json, nothing else."""
    code = "ok"
    try:
        assert isinstance(wire.parse_object(data), dict)
    except ProtocolError as err:
        code = err.code
    assert code in ("ok", "bad_json")


@settings(max_examples=300)
@given(st.binary(max_size=140))
def test_signed_split_never_crashes(data: bytes) -> None:
    """Arbitrary lines: split or bad_frame."""
    refused: tuple[str, bool] | None = None
    try:
        mac, body = wire.split_signed(data)
    except ProtocolError as err:
        refused = (err.code, err.fatal)
    else:
        assert len(mac) == 64
        assert data == mac + b" " + body
    assert refused in (None, ("bad_frame", True))


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        ({"mode": "FLY"}, "mode"),
        ({"mode": "supply", "lease_s": 30}, "mode"),
        ({"mode": ["SUPPLY"], "lease_s": 30}, "mode"),
        ({"mode": "SUPPLY"}, "lease_s"),
        ({"mode": "SUPPLY", "lease_s": 0}, "lease_s"),
        ({"mode": "SUPPLY", "lease_s": 3601}, "lease_s"),
        ({"mode": "SUPPLY", "lease_s": 1.0}, "lease_s"),
        ({"mode": "SUPPLY", "lease_s": True}, "lease_s"),
        ({"mode": "RECEIVE", "lease_s": 5, "limit_mwh": 0}, "limit_mwh"),
        ({"mode": "RECEIVE", "lease_s": 5, "min_mv": 2999}, "min_mv"),
    ],
)
def test_read_cmd_names_the_field(msg: dict[str, Any], field: str) -> None:
    """The first bad field is the one named."""
    with pytest.raises(ProtocolError) as info:
        wire.read_cmd(msg, 7)
    assert (info.value.code, info.value.field, info.value.rid) == ("bad_request", field, 7)


def test_read_cmd_defaults() -> None:
    """limit_mwh and min_mv default to 10 Wh and 3.3 V; IDLE needs nothing."""
    assert wire.read_cmd({"mode": "SUPPLY", "lease_s": 9}, None) == ("SUPPLY", 9, 10000, 3300)
    assert wire.read_cmd({"mode": "IDLE", "lease_s": "x"}, None) == ("IDLE", None, None, None)


def test_read_id_and_config_update() -> None:
    """Ids are 1..2^31-1; set_config needs at least one known key."""
    assert wire.read_id({}) is None
    assert wire.read_id({"id": 5}) == 5
    for bad in (0, -1, 2**31, True, "1"):
        with pytest.raises(ProtocolError):
            wire.read_id({"id": bad})
    assert wire.read_config_update({"push_s": 9, "other": 1}, 1) == {"push_s": 9}
    with pytest.raises(ProtocolError):
        wire.read_config_update({"other": 1}, 1)
