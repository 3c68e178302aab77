"""probe_node and validate_node against a simulated node and impostors over loopback TCP.

The node is the real firmware in the simulator (``peergrid_core.sim``); the
impostors are small servers that send what other devices on a LAN send.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
import contextlib
import json
import socket
import struct

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import (
    PeerGridAuthenticationError,
    PeerGridConnectionError,
    PeerGridProtocolError,
    PeerGridTimeoutError,
    PeerGridValidationError,
)
from peergrid_core.protocol import (
    PROTOCOL_VERSION,
    AuthScheme,
    Capability,
    Hello,
    NotPeerGridNodeError,
    UnsupportedProtocolError,
    parse_hello,
    probe_node,
    validate_node,
)
from peergrid_core.sim import NodeSpec, SimulatedGrid

# Nodes listen on 127.0.0.1; the Home Assistant test plugin blocks sockets
# unless a test asks for them.
pytestmark = pytest.mark.usefixtures("socket_enabled")

KEY = "probe-test-key-0123456789"
NONCE = "0123456789abcdef0123456789abcdef"

type Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _hello_line(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "t": "hello",
        "proto": 1,
        "uid": "pg-probe1",
        "fw": "0.1.0",
        "caps": ["supply", "receive", "config"],
        "auth": "hmac-sha256",
        "nonce": NONCE,
        "reset": "power_on",
        "push_s": 5,
        "idle_s": 30,
    }
    body.update(overrides)
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


@pytest.fixture
async def grid() -> AsyncIterator[SimulatedGrid]:
    """One keyed node and one bench-mode node (no key)."""
    sim = SimulatedGrid(
        [NodeSpec(uid="NODE_P", key=KEY), NodeSpec(uid="BENCH", key="", bench_mode=True)],
        seed=3,
    )
    async with sim:
        yield sim


@contextlib.asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 running ``handler`` per connection; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def _sends(data: bytes, *, then_wait: bool = False) -> Handler:
    """A handler that writes ``data``, then closes (or keeps the line open)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if then_wait:
            await reader.read()  # until the prober hangs up

    return handler


def _closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ----------------------------------------------------------------- probe_node


async def test_probe_reads_the_simulated_nodes_hello(grid: SimulatedGrid) -> None:
    """The hello names the node, its protocol and that it wants a key."""
    node = grid.nodes["NODE_P"]
    hello = await probe_node(node.host, node.port)
    assert hello.uid == "NODE_P"
    assert hello.proto == PROTOCOL_VERSION
    assert hello.auth is AuthScheme.HMAC_SHA256
    assert Capability.SUPPLY in hello.capabilities


async def test_probe_leaves_the_node_usable(grid: SimulatedGrid) -> None:
    """Probing many times in a row neither fills the node's sessions nor breaks auth."""
    node = grid.nodes["NODE_P"]
    for _ in range(5):
        assert (await probe_node(node.host, node.port)).uid == "NODE_P"
    assert (await validate_node(node.host, node.port, KEY)).uid == "NODE_P"


async def test_probe_reads_a_bench_mode_hello(grid: SimulatedGrid) -> None:
    """A node without a key says so in its hello; the probe reports it as is."""
    node = grid.nodes["BENCH"]
    hello = await probe_node(node.host, node.port)
    assert hello.uid == "BENCH"
    assert hello.auth is AuthScheme.NONE


async def test_probe_of_a_closed_port_is_a_connection_error() -> None:
    """Nothing listening: a connection error, and not a timeout."""
    with pytest.raises(PeerGridConnectionError) as err:
        await probe_node("127.0.0.1", _closed_port())
    assert not isinstance(err.value, PeerGridTimeoutError)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh-banner"),
        pytest.param(b"HTTP/1.1 400 Bad Request\r\n\r\n", id="http"),
        pytest.param(b'{"t":"status","uid":"x"}\n', id="other-json-frame"),
        pytest.param(b"[1,2,3]\n", id="json-array"),
        pytest.param(b"\xff\xfe\x00garbage\n", id="binary"),
        pytest.param(b"no newline then hang up", id="partial-line"),
        pytest.param(_hello_line(proto=True), id="boolean-proto"),
        pytest.param(_hello_line(proto="1"), id="text-proto"),
        pytest.param(_hello_line(uid="bad uid!"), id="invalid-uid"),
        pytest.param(_hello_line(nonce="short"), id="invalid-nonce"),
    ],
)
async def test_probe_of_a_device_that_is_no_node(data: bytes) -> None:
    """Anything but a valid hello as the first line is 'not a PeerGrid node'."""
    async with _server(_sends(data)) as port:
        with pytest.raises(NotPeerGridNodeError):
            await probe_node("127.0.0.1", port)


async def test_probe_of_an_endless_line_is_no_node() -> None:
    """A device streaming more than a line's worth without LF is refused without buffering it."""
    async with _server(_sends(b"x" * 4096, then_wait=True)) as port:
        with pytest.raises(NotPeerGridNodeError, match="longer than 512"):
            await probe_node("127.0.0.1", port)


async def test_probe_of_a_hello_of_another_version() -> None:
    """A version-2 node is a PeerGrid node this core cannot speak to, named as such."""
    line = _hello_line(proto=2, nonce=None, fw=None, session={"v": 2})
    async with _server(_sends(line)) as port:
        with pytest.raises(UnsupportedProtocolError) as err:
            await probe_node("127.0.0.1", port)
    assert err.value.proto == 2
    assert err.value.uid == "pg-probe1"
    assert "protocol 2" in str(err.value)
    assert isinstance(err.value, PeerGridProtocolError)


async def test_probe_skips_blank_lines_before_the_hello() -> None:
    """Empty lines are ignored by every receiver (section 1)."""
    async with _server(_sends(b"\n\r\n" + _hello_line())) as port:
        hello = await probe_node("127.0.0.1", port)
    assert hello.uid == "pg-probe1"


async def test_probe_accepts_a_hello_ending_in_crlf() -> None:
    """A CR before the LF of an unsigned line is tolerated."""
    async with _server(_sends(_hello_line().replace(b"\n", b"\r\n"))) as port:
        assert (await probe_node("127.0.0.1", port)).uid == "pg-probe1"


async def test_probe_of_a_node_that_hangs_up_at_once() -> None:
    """A node at its session limit closes right after accept: a connection error, not 'no node'."""
    async with _server(_sends(b"")) as port:
        with pytest.raises(PeerGridConnectionError, match="before its hello") as err:
            await probe_node("127.0.0.1", port)
    assert not isinstance(err.value, PeerGridProtocolError)


async def test_probe_of_a_connection_reset() -> None:
    """A reset while waiting for the hello is a connection error."""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        # SO_LINGER with a zero timeout turns close() into a TCP reset.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with _server(reset) as port:
        with pytest.raises(PeerGridConnectionError):
            await probe_node("127.0.0.1", port)


async def test_probe_of_a_silent_device_times_out() -> None:
    """A device that accepts and never speaks: a timeout (a connection error too)."""
    async with _server(_sends(b"", then_wait=True)) as port:
        with pytest.raises(PeerGridTimeoutError, match="no hello"):
            await probe_node("127.0.0.1", port, timeout=0.2)


@pytest.mark.parametrize("port", [0, -1, 65_536])
async def test_probe_refuses_a_port_out_of_range(port: int) -> None:
    """The port is checked before any connection, and named."""
    with pytest.raises(PeerGridValidationError) as err:
        await probe_node("127.0.0.1", port)
    assert err.value.field == "port"


# ----------------------------------------------------------------- validate_node


async def test_validate_authenticates_with_the_right_key(grid: SimulatedGrid) -> None:
    """The right key: both proofs pass and the authenticated hello comes back."""
    node = grid.nodes["NODE_P"]
    hello = await validate_node(node.host, node.port, KEY)
    assert hello.uid == "NODE_P"
    assert hello.auth is AuthScheme.HMAC_SHA256


async def test_validate_refuses_a_wrong_key(grid: SimulatedGrid) -> None:
    """A well-formed but wrong key: the node refuses it."""
    node = grid.nodes["NODE_P"]
    with pytest.raises(PeerGridAuthenticationError):
        await validate_node(node.host, node.port, "wrong-key-0123456789abcdef")


async def test_validate_refuses_a_bench_mode_node(grid: SimulatedGrid) -> None:
    """A node without a key cannot be trusted with one: an authentication error."""
    node = grid.nodes["BENCH"]
    with pytest.raises(PeerGridAuthenticationError, match="bench mode"):
        await validate_node(node.host, node.port, KEY)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("fifteen-bytes!!", id="15-bytes"),
        pytest.param("k" * 65, id="65-bytes"),
        pytest.param("é" * 33, id="66-utf8-bytes"),
    ],
)
async def test_validate_refuses_a_key_of_the_wrong_length_before_connecting(key: str) -> None:
    """Key shape is checked first: the closed port is never even tried."""
    with pytest.raises(PeerGridValidationError) as err:
        await validate_node("127.0.0.1", _closed_port(), key)
    assert err.value.field == "key"


async def test_validate_accepts_a_multibyte_key_by_its_bytes() -> None:
    """Eight two-byte characters are 16 bytes: a valid key, so the connection is tried."""
    with pytest.raises(PeerGridConnectionError):
        await validate_node("127.0.0.1", _closed_port(), "é" * 8)


async def test_validate_of_a_closed_port() -> None:
    """Nothing listening: a connection error."""
    with pytest.raises(PeerGridConnectionError):
        await validate_node("127.0.0.1", _closed_port(), KEY)


async def test_validate_of_a_node_of_another_version() -> None:
    """The probe names the unsupported version instead of a generic protocol error."""
    async with _server(_sends(_hello_line(proto=2))) as port:
        with pytest.raises(UnsupportedProtocolError):
            await validate_node("127.0.0.1", port, KEY)


async def test_validate_of_a_device_that_is_no_node() -> None:
    """Garbage is 'not a PeerGrid node', before any key is offered."""
    async with _server(_sends(b"220 mail.example ESMTP\r\n")) as port:
        with pytest.raises(NotPeerGridNodeError):
            await validate_node("127.0.0.1", port, KEY)


# ----------------------------------------------------------------- parse_hello


def test_parse_hello_round_trips_a_valid_hello() -> None:
    """A hello with every field is parsed into the typed model."""
    hello = parse_hello(_hello_line())
    assert hello == Hello(
        proto=1,
        uid="pg-probe1",
        fw="0.1.0",
        caps=("supply", "receive", "config"),
        auth=AuthScheme.HMAC_SHA256,
        nonce=NONCE,
        reset="power_on",
        push_s=5,
        idle_s=30,
    )


def test_parse_hello_ignores_unknown_fields() -> None:
    """Version 1 grows by adding fields; a newer node's hello still parses."""
    assert parse_hello(_hello_line(region="eu", caps=["supply", "teleport"])).uid == "pg-probe1"


def test_parse_hello_of_another_version_with_an_unreadable_uid() -> None:
    """A uid that is not a valid uid is not repeated in the error."""
    with pytest.raises(UnsupportedProtocolError) as err:
        parse_hello(_hello_line(proto=3, uid="x" * 40))
    assert err.value.uid is None
    assert "the node speaks protocol 3" in str(err.value)


def test_parse_hello_refuses_a_line_over_the_limit() -> None:
    """The 512-byte line limit holds for the hello too."""
    with pytest.raises(NotPeerGridNodeError):
        parse_hello(_hello_line(fw="0.1.0", pad="p" * 600))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_parse_hello_of_arbitrary_bytes_raises_only_protocol_errors(data: bytes) -> None:
    """Whatever a device sends, the parser answers with a hello or a protocol error."""
    with contextlib.suppress(NotPeerGridNodeError, UnsupportedProtocolError):
        assert isinstance(parse_hello(data), Hello)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["t", "proto", "uid", "fw", "caps", "auth", "nonce", "push_s"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-3, 3),
            st.sampled_from(["hello", "hmac-sha256", "none", "pg-1", NONCE]),
            st.lists(st.sampled_from(["supply", "receive"]), max_size=3),
        ),
    )
)
def test_parse_hello_of_arbitrary_hello_like_objects(body: dict[str, object]) -> None:
    """Near-miss hellos end in a hello or a protocol error; a version other than 1 is named."""
    line = json.dumps(body).encode() + b"\n"
    proto = body.get("proto")
    if body.get("t") == "hello" and type(proto) is int and proto != PROTOCOL_VERSION:
        with pytest.raises(UnsupportedProtocolError) as err:
            parse_hello(line)
        assert err.value.proto == proto
    else:
        with contextlib.suppress(NotPeerGridNodeError):
            assert parse_hello(line).proto == PROTOCOL_VERSION
