"""NodeClient against a protocol-1 node over real loopback TCP.

The node is ``FakeNode`` (tests/core/protocol_fake_node.py): the real
protocol, built on the core codec in the node role, without hardware.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import random

import pytest

from peergrid_core.errors import (
    PeerGridAuthenticationError,
    PeerGridConnectionError,
    PeerGridError,
    PeerGridProtocolError,
    PeerGridTimeoutError,
    PeerGridValidationError,
)
from peergrid_core.protocol import (
    Backoff,
    CommandRefusedError,
    ConnectionState,
    ErrorCode,
    Event,
    Mode,
    NodeClient,
    NodePush,
    NodeState,
    Status,
    TripReason,
    UnsupportedProtocolError,
)
from peergrid_core.protocol.frames import plain_line

from .protocol_fake_node import FakeNode
from .protocol_golden import golden

pytestmark = pytest.mark.usefixtures("socket_enabled")

KEY = b"a-sixteen-plus-byte-key"


@pytest.fixture
async def node() -> AsyncIterator[FakeNode]:
    fake = FakeNode(key=KEY)
    await fake.start()
    yield fake
    await fake.stop()


def _client(node: FakeNode, key: bytes | None = KEY, **kwargs: object) -> NodeClient:
    kwargs.setdefault("keepalive_interval", 0)
    return NodeClient("127.0.0.1", node.port, key, **kwargs)  # type: ignore[arg-type]


def _mode(node: FakeNode) -> Mode:
    return node.mode


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll a condition on another task's progress, for at most 5 s."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - conditions span several objects
            await asyncio.sleep(0.005)


async def test_connect_authenticates_and_receives_the_initial_status(node: FakeNode) -> None:
    """connect() returns the hello; the first signed frame is a status push."""
    async with _client(node) as client:
        hello = await client.connect()
        assert hello.uid == "pg-fake01"
        assert client.connected
        assert client.node == hello
        assert client.state is ConnectionState.CONNECTED
        await _until(lambda: client.status is not None)
        assert client.status is not None
        assert client.status.state is NodeState.IDLE
        assert client.last_seen is not None
        assert await client.connect() is hello  # already connected
    assert not client.connected


async def test_supply_receive_idle_and_renewal(node: FakeNode) -> None:
    """Commands come back acknowledged with the node's stricter values."""
    async with _client(node) as client:
        ack = await client.command(Mode.SUPPLY, lease_s=300, limit_mwh=50_000, min_mv=3_000)
        assert (ack.mode, ack.lease_s, ack.limit_mwh, ack.min_mv, ack.renewed) == (
            Mode.SUPPLY,
            120,
            10_000,
            3_300,
            False,
        )
        assert _mode(node) is Mode.SUPPLY
        again = await client.command(Mode.SUPPLY, lease_s=30)
        assert again.renewed
        assert again.lease_s == 30
        receive = await client.command(Mode.RECEIVE, lease_s=10)
        assert (receive.mode, receive.renewed) == (Mode.RECEIVE, False)
        idle = await client.idle()
        assert idle.mode is Mode.IDLE
        assert idle.lease_s is None
        assert _mode(node) is Mode.IDLE
    # What went on the wire: lease always, limits only when given.
    commands = [b for b in node.received if b["t"] == "cmd"]
    assert commands[1] == {"t": "cmd", "seq": 2, "id": 2, "mode": "SUPPLY", "lease_s": 30}
    assert commands[3] == {"t": "cmd", "seq": 4, "id": 4, "mode": "IDLE"}


async def test_status_ping_and_config(node: FakeNode) -> None:
    """get_status, ping, get_config and set_config return typed answers."""
    async with _client(node) as client:
        status = await client.get_status()
        assert status.request_id is not None
        assert status.limits.max_lease_s == 120
        assert (await client.ping()).lease_left_s == 0
        config = await client.get_config()
        assert (config.min_mv, config.push_s) == (3_300, 5)
        updated = await client.set_config(min_mv=3_500, push_s=2)
        assert (updated.min_mv, updated.push_s, updated.limit_mwh) == (3_500, 2, 10_000)
        assert node.min_mv == 3_500


async def test_invalid_arguments_name_the_field_and_send_nothing(node: FakeNode) -> None:
    """Out-of-range values are refused locally with the field name."""
    async with _client(node) as client:
        await _until(lambda: client.status is not None)
        cases = [
            (client.command(Mode.SUPPLY), "lease_s"),
            (client.command(Mode.SUPPLY, lease_s=0), "lease_s"),
            (client.command(Mode.RECEIVE, lease_s=10, limit_mwh=0), "limit_mwh"),
            (client.command(Mode.SUPPLY, lease_s=10, min_mv=5_000), "min_mv"),
            (client.set_config(max_ma=10), "max_ma"),
            (client.set_config(), "set_config"),
        ]
        for call, field in cases:
            with pytest.raises(PeerGridValidationError) as err:
                await call
            assert err.value.field == field
        assert node.received == []


async def test_pushes_reach_listeners_until_unsubscribed(node: FakeNode) -> None:
    """Status pushes and trip events are delivered; unsubscribe stops delivery."""
    pushes: list[NodePush] = []
    async with _client(node) as client:
        unsubscribe = client.listen(pushes.append)
        await client.command(Mode.SUPPLY, lease_s=30)
        await node.trip_now(TripReason.LOW_VOLTAGE)
        await _until(lambda: any(isinstance(p, Event) for p in pushes) and len(pushes) >= 4)
        event = next(p for p in pushes if isinstance(p, Event))
        assert (event.reason, event.mode) == (TripReason.LOW_VOLTAGE, Mode.SUPPLY)
        last = pushes[-1]
        assert isinstance(last, Status)
        assert (last.state, last.last_trip) == (NodeState.TRIPPED, TripReason.LOW_VOLTAGE)
        unsubscribe()
        unsubscribe()  # idempotent
        count = len(pushes)
        await node.push_status()
        await client.ping()  # the push is read before the pong
        assert len(pushes) == count


async def test_a_failing_listener_does_not_break_the_others(node: FakeNode) -> None:
    """One listener raising is logged; the next still gets the push."""
    seen: list[NodePush] = []

    def broken(_: NodePush) -> None:
        raise RuntimeError("listener bug")

    async with _client(node) as client:
        client.listen(broken)
        client.listen(seen.append)
        await node.push_status()
        await _until(lambda: len(seen) >= 1)


async def test_node_refusals_raise_command_refused(node: FakeNode) -> None:
    """busy and low_voltage come back as CommandRefusedError; the session goes on."""
    first = _client(node)
    second = _client(node)
    async with first, second:
        await first.command(Mode.SUPPLY, lease_s=30)
        with pytest.raises(CommandRefusedError) as busy:
            await second.command(Mode.RECEIVE, lease_s=30)
        assert busy.value.code is ErrorCode.BUSY
        # IDLE is accepted from any session.
        assert (await second.idle()).mode is Mode.IDLE
        node.mv = 3_200
        with pytest.raises(CommandRefusedError) as low:
            await first.command(Mode.SUPPLY, lease_s=30)
        assert low.value.code is ErrorCode.LOW_VOLTAGE
        assert (await first.ping()).lease_left_s == 0


async def test_wrong_key_is_an_authentication_error(node: FakeNode) -> None:
    """The node refuses the proof; the client reports authentication, not connection."""
    client = _client(node, key=b"another-key-of-16-bytes")
    with pytest.raises(PeerGridAuthenticationError):
        await client.connect()
    assert client.state is ConnectionState.DISCONNECTED
    await client.close()


async def test_impostor_node_is_refused() -> None:
    """A node that cannot prove the key is dropped before any command."""
    impostor = FakeNode(key=KEY, corrupt_node_proof=True)
    await impostor.start()
    try:
        with pytest.raises(PeerGridAuthenticationError):
            await _client(impostor).connect()
    finally:
        await impostor.stop()


async def test_key_expectations_must_agree() -> None:
    """A keyed client refuses a bench node; a keyless client cannot use a keyed node."""
    bench = FakeNode(key=None, bench_mode=True)
    keyed = FakeNode(key=KEY)
    await bench.start()
    await keyed.start()
    try:
        with pytest.raises(PeerGridAuthenticationError):
            await _client(bench).connect()
        with pytest.raises(PeerGridAuthenticationError):
            await _client(keyed, key=None).connect()
        async with _client(bench, key=None) as client:
            ack = await client.command(Mode.SUPPLY, lease_s=5)
            assert ack.seq is None
            assert bench.received[0] == {"t": "cmd", "id": 1, "mode": "SUPPLY", "lease_s": 5}
    finally:
        await bench.stop()
        await keyed.stop()


async def test_other_protocol_version_is_refused() -> None:
    """A node speaking another protocol version is refused with both versions named."""
    future = FakeNode(key=KEY, proto=2)
    await future.start()
    try:
        with pytest.raises(UnsupportedProtocolError) as err:
            await _client(future).connect()
        assert isinstance(err.value, PeerGridProtocolError)
        assert (err.value.proto, err.value.supported) == (2, 1)
    finally:
        await future.stop()


async def test_unreachable_node_is_a_connection_error(node: FakeNode) -> None:
    """Nothing listening is a connection error, and the state goes back to disconnected."""
    port = node.port
    await node.stop()
    states: list[ConnectionState] = []
    client = NodeClient("127.0.0.1", port, KEY)
    client.listen_connection(states.append)
    with pytest.raises(PeerGridConnectionError):
        await client.connect()
    assert states == [ConnectionState.CONNECTING, ConnectionState.DISCONNECTED]
    with pytest.raises(PeerGridConnectionError):
        await client.get_status()


async def test_silent_node_times_out_requests_and_the_link(node: FakeNode) -> None:
    """No answer is a timeout error; no frame at all ends the connection."""
    node.answer_requests = False
    async with _client(node, request_timeout=0.2, idle_timeout=0.6) as client:
        with pytest.raises(PeerGridTimeoutError):
            await client.get_status()
        await _until(lambda: not client.connected)
        assert client.state is ConnectionState.DISCONNECTED


async def test_keepalive_keeps_the_link_and_detects_silence(node: FakeNode) -> None:
    """Pings are sent while idle; unanswered pings end the connection."""
    async with _client(node, keepalive_interval=0.05, request_timeout=0.2) as client:
        await _until(lambda: sum(b["t"] == "ping" for b in node.received) >= 2)
        node.answer_requests = False
        await _until(lambda: not client.connected)


async def test_forged_node_frame_closes_the_session(node: FakeNode) -> None:
    """A frame failing its MAC is never delivered; the client drops the connection."""
    pushes: list[NodePush] = []
    async with _client(node) as client:
        await _until(lambda: client.status is not None)
        client.listen(pushes.append)
        forged = golden()["client_rejections"][0]["line"].encode()
        await node.send_raw(forged)
        await _until(lambda: not client.connected)
        with pytest.raises(PeerGridConnectionError):
            await client.ping()
    assert pushes == []


async def test_fatal_err_from_node_fails_the_pending_request(node: FakeNode) -> None:
    """An err with close ends the session and the waiting request."""
    async with _client(node) as client:
        await _until(lambda: client.status is not None)
        node.answer_requests = False
        request = asyncio.ensure_future(client.get_status())
        await _until(lambda: len(node.received) == 1)
        session = node.sessions[0]
        session.send({"t": "err", "code": "idle_timeout", "msg": "bye", "close": True})
        with pytest.raises(PeerGridProtocolError):
            await request
        await _until(lambda: not client.connected)


async def test_oversized_line_from_node_ends_the_session(node: FakeNode) -> None:
    """A node line above 512 bytes is a fatal framing error for the client."""
    async with _client(node) as client:
        await _until(lambda: client.status is not None)
        await node.send_raw(b"x" * 600 + b"\n")
        await _until(lambda: not client.connected)


async def test_unusable_but_authentic_frames_are_dropped(node: FakeNode) -> None:
    """A valid-MAC push this client cannot parse is skipped; the session continues."""
    async with _client(node) as client:
        await _until(lambda: client.status is not None)
        session = node.sessions[0]
        session.send({"t": "status", "mv": "high"})
        session.send({"t": "hologram"})
        session.send({"t": "err", "code": "internal", "msg": "sensor hiccup"})
        session.send({"t": "pong", "lease_left_s": 0})  # unsolicited, no id
        session.send({"t": "ack", "id": 999, "mode": "IDLE"})  # nobody waits for 999
        assert (await client.ping()).lease_left_s == 0
        assert client.connected


async def test_a_malformed_reply_fails_its_request(node: FakeNode) -> None:
    """An authentic reply that does not validate fails the request with a protocol error."""
    async with _client(node, request_timeout=1) as client:
        await _until(lambda: client.status is not None)
        node.answer_requests = False
        request = asyncio.ensure_future(client.get_status())
        await _until(lambda: len(node.received) == 1)
        node.sessions[0].send({"t": "status", "id": 1, "mode": "WARP"})
        with pytest.raises(PeerGridProtocolError):
            await request
        node.answer_requests = True
        wrong = asyncio.ensure_future(client.ping())
        await _until(lambda: len(node.received) == 2)
        assert isinstance(await wrong, object)


async def test_reply_of_the_wrong_type_is_a_protocol_error(node: FakeNode) -> None:
    """A pong where a status was due is refused."""
    async with _client(node) as client:
        await _until(lambda: client.status is not None)
        node.answer_requests = False
        request = asyncio.ensure_future(client.get_status())
        await _until(lambda: len(node.received) == 1)
        node.sessions[0].send({"t": "pong", "id": 1})
        with pytest.raises(PeerGridProtocolError):
            await request


async def test_run_reconnects_with_backoff_and_reports_states(node: FakeNode) -> None:
    """run() reconnects after drops, waiting the jittered backoff; close() ends it."""
    delays: list[float] = []
    states: list[ConnectionState] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        await asyncio.sleep(0)

    client = _client(
        node,
        sleep=fake_sleep,
        rng=random.Random(7),
        backoff=Backoff(initial=1, factor=2, maximum=4, reset_after=3600),
    )
    client.listen_connection(states.append)
    runner = asyncio.create_task(client.run())
    try:
        await _until(lambda: node.connections == 1 and client.connected)
        port = node.port
        await node.stop()  # drop, and refuse reconnects for a while
        await _until(lambda: len(delays) >= 4)
        await node.start(port)
        await _until(lambda: node.connections == 2 and client.connected)
        assert (await client.command(Mode.RECEIVE, lease_s=10)).mode is Mode.RECEIVE
    finally:
        await client.close()
        async with asyncio.timeout(5):
            await runner
    assert states[:3] == [
        ConnectionState.CONNECTING,
        ConnectionState.CONNECTED,
        ConnectionState.DISCONNECTED,
    ]
    assert states[-1] is ConnectionState.DISCONNECTED
    # Delays grow 1, 2, 4, 4 ... each within [cap/2, cap].
    for attempt, delay in enumerate(delays[:4]):
        cap = min(4, 2**attempt)
        assert cap / 2 <= delay <= cap


async def test_run_stops_on_authentication_failure(node: FakeNode) -> None:
    """A wrong key is not retried: run() raises it."""
    client = _client(node, key=b"the-wrong-key-16b")
    with pytest.raises(PeerGridAuthenticationError):
        await client.run()
    await client.close()


async def test_close_interrupts_a_backoff_wait(node: FakeNode) -> None:
    """close() ends run() even while it waits to reconnect."""
    port = node.port
    await node.stop()
    waiting = asyncio.Event()

    async def endless_sleep(_: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    client = NodeClient("127.0.0.1", port, KEY, sleep=endless_sleep)
    runner = asyncio.create_task(client.run())
    await waiting.wait()
    await client.close()
    async with asyncio.timeout(5):
        await runner
    with pytest.raises(PeerGridError):
        await client.connect()


def test_backoff_parameters_are_validated() -> None:
    """Backoff refuses parameters that would spin or never grow, naming the field."""
    for kwargs, field in (
        ({"initial": 0}, "initial"),
        ({"factor": 0.5}, "factor"),
        ({"initial": 10, "maximum": 5}, "maximum"),
    ):
        with pytest.raises(PeerGridValidationError) as err:
            Backoff(**kwargs)
        assert err.value.field == field
    assert Backoff().delay(10_000, random.Random(1)) <= 60


@pytest.mark.parametrize(
    "case",
    [c for c in golden()["malformed"] if c["state"] in {"pre_auth", "bench"}],
    ids=lambda c: f"{c['state']}-{c['code']}",
)
async def test_pre_auth_and_bench_lines_from_the_golden_list(case: dict[str, object]) -> None:
    """The reference node answers the golden malformed lines with the listed code."""
    fake = FakeNode(
        key=None if case["state"] == "bench" else KEY,
        bench_mode=case["state"] == "bench",
        nonce_factory=lambda: golden()["node_nonce"],
    )
    if case["state"] == "pre_auth":
        fake.uid = "pg-a1b2c3"
    await fake.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        await reader.readuntil(b"\n")  # hello
        writer.write(str(case["line"]).encode())
        reply = await reader.readuntil(b"\n")
        writer.close()
        await writer.wait_closed()
    finally:
        await fake.stop()
    assert reply.startswith(b'{"t":"err"')
    assert f'"code":"{case["code"]}"'.encode() in reply
    assert (b'"close":true' in reply) is case["fatal"]
    if case["field"]:
        assert f'"field":"{case["field"]}"'.encode() in reply


def test_plain_line_helper_is_what_bench_clients_send() -> None:
    """Bench JSON lines are plain compact JSON."""
    assert plain_line({"t": "ping", "id": 1}) == b'{"t":"ping","id":1}\n'


async def _raw_node(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> asyncio.Server:
    """A TCP peer on 127.0.0.1 that runs ``script`` for each connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)  # type: ignore[misc]
        finally:
            writer.close()
            await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_handshake_timeout_when_the_node_says_nothing() -> None:
    """A peer that accepts but never sends hello times out the connect."""
    release = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()

    server = await _raw_node(mute)
    port = server.sockets[0].getsockname()[1]
    try:
        client = NodeClient("127.0.0.1", port, KEY, connect_timeout=0.2)
        with pytest.raises(PeerGridTimeoutError):
            await client.connect()
    finally:
        release.set()
        server.close()
        await server.wait_closed()


async def test_blank_lines_are_ignored_and_auth_errors_are_typed() -> None:
    """Blank lines before hello are skipped; an err other than auth_failed is a protocol error."""
    hello = golden()["conversation"][0]["line"].encode()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\n\r\n" + hello)
        await reader.readuntil(b"\n")
        writer.write(b'{"t":"err","code":"unsupported_proto","msg":"v1 only","close":true}\n')
        await writer.drain()

    server = await _raw_node(refuse)
    port = server.sockets[0].getsockname()[1]
    try:
        client = NodeClient("127.0.0.1", port, KEY)
        with pytest.raises(PeerGridProtocolError) as err:
            await client.connect()
        assert not isinstance(err.value, PeerGridAuthenticationError)
        assert "unsupported_proto" in str(err.value)
    finally:
        server.close()
        await server.wait_closed()


async def test_close_during_the_handshake_wins(node: FakeNode) -> None:
    """close() while connect() is in flight leaves nothing connected or running."""
    client = _client(node)
    connecting = asyncio.ensure_future(client.connect())
    await asyncio.sleep(0)
    await client.close()
    with pytest.raises(PeerGridConnectionError):
        await connecting
    assert not client.connected


async def test_a_failing_state_listener_is_contained(node: FakeNode) -> None:
    """A state listener that raises does not stop the connection."""

    def broken(_: ConnectionState) -> None:
        raise RuntimeError("listener bug")

    client = _client(node)
    unsubscribe = client.listen_connection(broken)
    async with client:
        assert client.connected
    unsubscribe()
