"""NodeClient against the real node firmware, run under CPython by the simulator.

``SimulatedGrid`` runs ``peergrid_node.node.Node`` (firmware/) on 127.0.0.1
with simulated hardware and physics; this is the same code that runs on the
ESP32. These tests check the two independent implementations of
docs/protocol.md against each other over real TCP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from peergrid_core.errors import PeerGridAuthenticationError, PeerGridConnectionError
from peergrid_core.protocol import (
    ErrorCode,
    Event,
    Mode,
    NodeClient,
    NodePush,
    NodeState,
    Role,
    SessionSecrets,
    SignedSession,
    Status,
    TripReason,
    new_nonce,
)
from peergrid_core.protocol.frames import decode_body, plain_line, strip_line
from peergrid_core.sim.grid import NodeSpec, SimulatedGrid

pytestmark = pytest.mark.usefixtures("socket_enabled")

KEY = "firmware-e2e-key-0001"


@pytest.fixture
async def grid() -> AsyncIterator[SimulatedGrid]:
    spec = NodeSpec(uid="NODE_A", key=KEY, soc_percent=70)
    bench = NodeSpec(uid="NODE_B", key="", bench_mode=True, soc_percent=40)
    async with SimulatedGrid([spec, bench], speedup=1, seed=3) as running:
        yield running


def _client(grid: SimulatedGrid, key: bytes = KEY.encode()) -> NodeClient:
    host, port = grid.node("NODE_A").address
    return NodeClient(host, port, key, keepalive_interval=0)


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():  # noqa: ASYNC110 - the condition spans client and grid
            await asyncio.sleep(0.01)


async def test_authenticated_session_supply_receive_idle(grid: SimulatedGrid) -> None:
    """Connect, authenticate, move the relays through every mode, read status."""
    pushes: list[NodePush] = []
    async with _client(grid) as client:
        assert client.node is not None
        assert (client.node.uid, client.node.proto) == ("NODE_A", 1)
        client.listen(pushes.append)
        await _until(lambda: client.status is not None)

        supply = await client.command(Mode.SUPPLY, lease_s=30, limit_mwh=20_000, min_mv=3_000)
        assert (supply.mode, supply.lease_s, supply.renewed) == (Mode.SUPPLY, 30, False)
        assert (supply.limit_mwh, supply.min_mv) == (10_000, 3_300)  # the node's own are stricter
        assert grid.node("NODE_A").mode == "SUPPLY"
        assert (await client.command(Mode.SUPPLY, lease_s=15)).renewed

        receive = await client.command(Mode.RECEIVE, lease_s=20, limit_mwh=500)
        assert (receive.mode, receive.limit_mwh) == (Mode.RECEIVE, 500)
        assert grid.node("NODE_A").mode == "RECEIVE"
        status = await client.get_status()
        assert status.state is NodeState.RECEIVING
        assert status.mv is not None
        assert 3_000 < status.mv < 4_300

        assert (await client.idle()).mode is Mode.IDLE
        assert grid.node("NODE_A").mode == "IDLE"
        assert (await client.ping()).lease_left_s == 0
        config = await client.get_config()
        assert config.limit_mwh == 10_000
        await _until(lambda: any(isinstance(p, Status) and p.mode is Mode.IDLE for p in pushes))
    # Every state change was pushed on change, not only when asked.
    modes = [p.mode for p in pushes if isinstance(p, Status)]
    assert {Mode.SUPPLY, Mode.RECEIVE, Mode.IDLE} <= set(modes)


async def test_lease_expiry_is_pushed_as_an_event(grid: SimulatedGrid) -> None:
    """A lease that is not renewed stops the transfer with a lease_expired event."""
    pushes: list[NodePush] = []
    async with _client(grid) as client:
        client.listen(pushes.append)
        await client.command(Mode.SUPPLY, lease_s=1)
        await _until(lambda: any(isinstance(p, Event) for p in pushes))
        event = next(p for p in pushes if isinstance(p, Event))
        assert (event.reason, event.mode) == (TripReason.LEASE_EXPIRED, Mode.SUPPLY)
        await _until(lambda: client.status is not None and client.status.state is NodeState.TRIPPED)
        assert grid.node("NODE_A").mode == "IDLE"


async def test_closing_the_controller_session_stops_the_transfer(grid: SimulatedGrid) -> None:
    """The node goes IDLE when its controller's connection closes."""
    async with _client(grid) as client:
        await client.command(Mode.SUPPLY, lease_s=60)
        assert grid.node("NODE_A").mode == "SUPPLY"
    await _until(lambda: grid.node("NODE_A").mode == "IDLE")
    async with _client(grid) as client:
        status = await client.get_status()
        assert status.last_trip is TripReason.CONTROLLER_LOST


async def test_wrong_key_is_refused(grid: SimulatedGrid) -> None:
    """The firmware refuses a controller that does not hold its key."""
    client = _client(grid, key=b"not-the-firmware-key")
    with pytest.raises(PeerGridAuthenticationError):
        await client.connect()
    await client.close()


async def _raw_session(
    grid: SimulatedGrid,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, SignedSession]:
    """Authenticate by hand with the core primitives, to then misbehave on purpose."""
    host, port = grid.node("NODE_A").address
    reader, writer = await asyncio.open_connection(host, port)
    hello_line = await reader.readuntil(b"\n")
    cnonce = new_nonce()
    secrets = SessionSecrets.derive(KEY.encode(), hello_line, cnonce)
    writer.write(
        plain_line({"t": "auth", "proto": 1, "cnonce": cnonce, "mac": secrets.client_proof})
    )
    auth_ok = decode_body(strip_line(await reader.readuntil(b"\n")))
    assert auth_ok == {"t": "auth_ok", "mac": secrets.node_proof}
    session = SignedSession(secrets=secrets, role=Role.CONTROLLER)
    first = session.open(await reader.readuntil(b"\n"))
    assert first["t"] == "status"
    return reader, writer, session


async def _expect_fatal(
    reader: asyncio.StreamReader, session: SignedSession, code: ErrorCode
) -> None:
    async with asyncio.timeout(10):
        while True:
            body = session.open(await reader.readuntil(b"\n"))
            if body["t"] == "err":
                break
        assert (body["code"], body.get("close")) == (code, True)
        assert await reader.read() == b""  # the node closed the connection


async def test_bad_mac_is_refused_and_closes_the_session(grid: SimulatedGrid) -> None:
    """A command with a forged MAC never moves a relay; the node answers bad_mac and closes."""
    reader, writer, session = await _raw_session(grid)
    try:
        line = session.seal({"t": "cmd", "id": 1, "mode": "SUPPLY", "lease_s": 30})
        forged = (b"0" if line[:1] != b"0" else b"1") + line[1:]
        writer.write(forged)
        await _expect_fatal(reader, session, ErrorCode.BAD_MAC)
        assert grid.node("NODE_A").mode == "IDLE"
    finally:
        writer.close()
        await writer.wait_closed()


async def test_replayed_command_is_refused(grid: SimulatedGrid) -> None:
    """The same signed command twice: the second is bad_seq and is not acted on."""
    reader, writer, session = await _raw_session(grid)
    try:
        idle = session.seal({"t": "cmd", "id": 1, "mode": "IDLE"})
        writer.write(idle)
        writer.write(idle)
        await _expect_fatal(reader, session, ErrorCode.BAD_SEQ)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_bench_mode_node_takes_plain_text_and_keyless_clients(grid: SimulatedGrid) -> None:
    """Without a key and with bench mode, plain text and unsigned JSON both work."""
    host, port = grid.node("NODE_B").address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        hello = decode_body(strip_line(await reader.readuntil(b"\n")))
        assert hello["auth"] == "none"
        writer.write(b"RECEIVE\n")
        async with asyncio.timeout(10):
            while (body := decode_body(strip_line(await reader.readuntil(b"\n"))))["t"] != "ack":
                pass
        assert body["mode"] == "RECEIVE"
        assert grid.node("NODE_B").mode == "RECEIVE"
    finally:
        writer.close()
        await writer.wait_closed()
    await _until(lambda: grid.node("NODE_B").mode == "IDLE")
    async with NodeClient(host, port, None, keepalive_interval=0) as client:
        ack = await client.command(Mode.SUPPLY, lease_s=5)
        assert (ack.mode, ack.seq) == (Mode.SUPPLY, None)
        assert (await client.idle()).mode is Mode.IDLE


async def test_stopped_node_is_a_connection_error(grid: SimulatedGrid) -> None:
    """A node that is off cannot be reached."""
    await grid.stop_node("NODE_A")
    with pytest.raises(PeerGridConnectionError):
        await _client(grid).connect()
