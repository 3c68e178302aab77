"""Line framing: size limit, strict JSON bodies, signed-line layout, fuzzing."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import PeerGridProtocolError
from peergrid_core.protocol import (
    MAX_BODY_BYTES,
    MAX_LINE_BYTES,
    ErrorCode,
    FrameError,
    Role,
    SessionSecrets,
    SignedSession,
    Status,
    parse_controller_message,
    parse_node_message,
)
from peergrid_core.protocol.frames import (
    decode_body,
    encode_body,
    is_blank,
    mac_hex,
    plain_line,
    signed_line,
    split_signed_line,
    strip_line,
    verify_mac,
)

from .protocol_golden import golden, key, line

KEY = b"k" * 32


def test_encode_is_compact_ascii_in_insertion_order() -> None:
    """Bodies are written without spaces, keys in the order given, non-ASCII escaped."""
    assert encode_body({"t": "x", "b": 1, "a": [None, True], "s": "é"}) == (
        b'{"t":"x","b":1,"a":[null,true],"s":"\\u00e9"}'
    )
    assert plain_line({"t": "ping"}) == b'{"t":"ping"}\n'


def test_encode_refuses_nan_and_oversize() -> None:
    """NaN cannot go on the wire, and nothing longer than a line is ever produced."""
    with pytest.raises(FrameError) as nan:
        encode_body({"t": "status", "mv": float("nan")})
    assert nan.value.code is ErrorCode.BAD_JSON
    with pytest.raises(FrameError) as long:
        encode_body({"t": "x" * MAX_LINE_BYTES})
    assert long.value.code is ErrorCode.LINE_TOO_LONG
    with pytest.raises(FrameError) as long_signed:
        signed_line(KEY, b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert long_signed.value.code is ErrorCode.LINE_TOO_LONG


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[1,2]",
        b'"text"',
        b"42",
        b'{"v":NaN}',
        b'{"v":Infinity}',
        b'{"v":-Infinity}',
        b'{"a":1,"a":2}',
        b'{"a":{"b":1,"b":1}}',
        b'{"a":"\xff"}',
        b'{"a":1} trailing',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_decode_refuses_what_is_not_a_plain_json_object(data: bytes) -> None:
    """Anything but a single UTF-8 JSON object without NaN or duplicates is bad_json."""
    with pytest.raises(FrameError) as err:
        decode_body(data)
    assert err.value.code is ErrorCode.BAD_JSON
    assert err.value.fatal


def test_decode_accepts_whitespace_and_unicode_escapes() -> None:
    """JSON whitespace (a stray CR included) is fine; so is a JSON escape."""
    assert decode_body(b'{ "t" : "ping", "s":"\\u00e9" }\r') == {"t": "ping", "s": "é"}


def test_line_length_limit_is_512_bytes_including_lf() -> None:
    """512 bytes with the LF pass; one more byte, or 512 without LF, do not."""
    exact = b"x" * (MAX_LINE_BYTES - 1) + b"\n"
    assert strip_line(exact) == b"x" * (MAX_LINE_BYTES - 1)
    for bad in (b"x" * MAX_LINE_BYTES + b"\n", b"x" * MAX_LINE_BYTES):
        with pytest.raises(FrameError) as err:
            strip_line(bad)
        assert err.value.code is ErrorCode.LINE_TOO_LONG
    assert strip_line(b"abc") == b"abc"


def test_blank_lines() -> None:
    """Only LF, CR LF (or nothing) count as the ignored empty line."""
    assert all(is_blank(x) for x in (b"\n", b"\r\n", b"", b"\r"))
    assert not is_blank(b" \n")


def test_signed_line_layout_and_split() -> None:
    """MAC, one space, body, LF; the split uses fixed offsets and checks the layout."""
    body = b'{"t":"ping","seq":1}'
    out = signed_line(KEY, body)
    assert out == mac_hex(KEY, body) + b" " + body + b"\n"
    tag, raw = split_signed_line(out)
    assert raw == body
    verify_mac(KEY, tag, raw)
    with pytest.raises(FrameError) as err:
        verify_mac(b"x" * 32, tag, raw)
    assert err.value.code is ErrorCode.BAD_MAC


@pytest.mark.parametrize(
    "bad",
    [
        b"not a frame\n",
        b"0" * 64 + b"\n",
        b"0" * 64 + b" \n",
        b"0" * 64 + b"_{}\n",
        b"A" * 64 + b" {}\n",  # upper-case hex is not the layout
        b"g" * 64 + b" {}\n",
        b'{"t":"ping","seq":1}\n',
    ],
)
def test_split_refuses_other_layouts(bad: bytes) -> None:
    """Any line that is not ``<64 lowercase hex> <body>`` is bad_frame."""
    with pytest.raises(FrameError) as err:
        split_signed_line(bad)
    assert err.value.code is ErrorCode.BAD_FRAME


def test_widest_valid_status_fits_in_a_signed_line() -> None:
    """The largest frame of version 1 stays under the line limit (docs: 493 bytes)."""
    widest = Status.model_validate(
        {
            "id": 2**31 - 1,
            "uid": "u" * 32,
            "mode": "RECEIVE",
            "state": "supplying",
            "mv": 6_000,
            "ma": -5_000,
            "mw": -30_000,
            "soc": 1_000,
            "e_out_mwh": 10**12,
            "e_in_mwh": 10**12,
            "e_session_mwh": 10**12,
            "lease_left_s": 3_600,
            "trip": "controller_lost",
            "rssi": -127,
            "uptime_s": 9_999_999_999,
            "fw": "f" * 16,
            "lim": {"limit_mwh": 100_000, "min_mv": 4_200, "max_ma": 3_200, "max_lease_s": 3_600},
        }
    )
    secrets = SessionSecrets.derive(KEY, line("hello"), "0" * 32)
    session = SignedSession(secrets=secrets, role=Role.NODE)
    session.sent_seq = 2**31 - 2
    signed = session.seal(widest.to_body())
    assert len(signed) == 493
    assert len(signed) <= MAX_LINE_BYTES


def test_every_golden_line_fits() -> None:
    """No golden frame exceeds the limit."""
    fixture = golden()
    lines = [e["line"] for e in [*fixture["conversation"], *fixture["bench"]["conversation"]]]
    assert max(len(x.encode()) for x in lines) <= MAX_LINE_BYTES


# ------------------------------------------------------------------ fuzzing


def _node_session() -> SignedSession:
    secrets = SessionSecrets.derive(key(), line("hello"), golden()["client_nonce"])
    return SignedSession(secrets=secrets, role=Role.NODE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_signed_receiver_only_raises_protocol_errors_on_arbitrary_bytes(data: bytes) -> None:
    """Whatever arrives, the signed receiver either accepts or raises a FrameError."""
    session = _node_session()
    with pytest.raises(PeerGridProtocolError) as err:
        session.open(data)
    assert isinstance(err.value, FrameError)
    assert session.received_seq == 0


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_types = st.sampled_from(
    [
        *("hello", "auth", "auth_ok", "status", "ack", "pong", "event", "config", "err"),
        *("cmd", "get_status", "ping", "get_config", "set_config", "bogus"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.text(max_size=300).map(str.encode)))
def test_unsigned_pipeline_only_raises_protocol_errors(data: bytes) -> None:
    """Line check, JSON and message parsing never raise anything but FrameError."""
    try:
        body = decode_body(strip_line(data))
        parse_node_message(body)
    except FrameError:
        pass


@settings(max_examples=200, deadline=None)
@given(_types, st.dictionaries(st.text(max_size=12), _json, max_size=8))
def test_message_parsers_only_raise_frame_errors(kind: str, fields: dict[str, object]) -> None:
    """Arbitrary objects with a known or unknown ``t`` parse or fail with a FrameError."""
    body = {**fields, "t": kind}
    # Round-trip through JSON so that the body is exactly what a receiver sees.
    received = decode_body(json.dumps(body).encode())
    for parse in (parse_node_message, parse_controller_message):
        code: ErrorCode | None = None
        try:
            parse(received)
        except FrameError as err:
            code = err.code
        assert code in {None, ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE}
