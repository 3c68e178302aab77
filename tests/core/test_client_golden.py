"""NodeClient against a scripted peer that replays the golden conversation byte for byte.

The peer is a real TCP server on 127.0.0.1. It writes the golden node lines
and checks that every line the client writes is exactly the golden controller
line, so the client's handshake, sequence numbering, request ids, key order
and MACs are all pinned to ``tests/fixtures/protocol/golden_frames.json``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peergrid_core.protocol import (
    Ack,
    CommandRefusedError,
    ErrorCode,
    Event,
    Message,
    Mode,
    NodeClient,
    NodePush,
    NodeState,
    Status,
    TripReason,
)
from peergrid_core.protocol.messages import RequestId

from .protocol_golden import golden, key

# Real sockets, on 127.0.0.1 only (the Home Assistant test plugin still
# refuses any other address).
pytestmark = pytest.mark.usefixtures("socket_enabled")


class _RawCommand(Message):
    """A ``cmd`` the typed client refuses to build (unknown mode), for the node's reply."""

    type_name = "cmd"
    request_id: RequestId | None = None
    mode: str
    lease_s: int


class GoldenPeer:
    """Replays the golden conversation as the node and records the client's lines."""

    def __init__(self, conversation: list[dict[str, Any]]) -> None:
        self.conversation = conversation
        self.position = 0
        self.mismatches: list[tuple[str, bytes, bytes]] = []
        self.advance = asyncio.Event()
        self.done = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for position, step in enumerate(self.conversation):
                self.position = position
                expected = step["line"].encode()
                if step["dir"] == "n2c":
                    if step.get("hold"):
                        # Pushes that the test releases at a chosen moment.
                        await self.advance.wait()
                        self.advance.clear()
                    writer.write(expected)
                    await writer.drain()
                else:
                    got = await reader.readuntil(b"\n")
                    if got != expected:
                        self.mismatches.append((step["name"], got, expected))
                        return
            self.done.set()
            await reader.read()  # until the client closes
        finally:
            writer.close()
            await writer.wait_closed()


async def test_client_speaks_the_golden_conversation_byte_for_byte() -> None:
    """Every client line equals the golden one; every golden node line is understood."""
    fixture = golden()
    steps = [dict(step) for step in fixture["conversation"]]
    for step in steps:
        # The trip is pushed between two requests; hold it until the test is ready.
        if step["name"] == "event_trip":
            step["hold"] = True
    peer = GoldenPeer(steps)
    await peer.start()
    pushes: list[NodePush] = []
    client = NodeClient(
        "127.0.0.1",
        peer.port,
        key(),
        keepalive_interval=0,
        nonce_factory=lambda: fixture["client_nonce"],
    )
    try:
        hello = await client.connect()
        assert hello.uid == "pg-a1b2c3"
        assert hello.nonce == fixture["node_nonce"]
        unsubscribe = client.listen(pushes.append)

        ack = await client.command(Mode.SUPPLY, lease_s=30, limit_mwh=10_000, min_mv=3_300)
        assert ack == Ack(
            request_id=1, seq=2, mode=Mode.SUPPLY, lease_s=30, limit_mwh=10_000, min_mv=3_300
        )

        renewed = await client.command(Mode.SUPPLY, lease_s=60, limit_mwh=20_000)
        assert renewed.renewed
        assert renewed.limit_mwh == 10_000  # the node's limit is stricter

        pong = await client.ping()
        assert pong.lease_left_s == 58

        status = await client.get_status()
        assert status.request_id == 4
        assert status.state is NodeState.SUPPLYING
        assert (status.mv, status.ma, status.soc) == (3871, 1502, 736)
        assert client.status == status

        peer.advance.set()  # event_trip and status_tripped
        async with asyncio.timeout(5):
            while len(pushes) < 4:  # noqa: ASYNC110 - pushes arrive through a callback
                await asyncio.sleep(0.01)

        assert (await client.idle()).mode is Mode.IDLE

        with pytest.raises(CommandRefusedError) as refused:
            await client._request(_RawCommand(mode="FLY", lease_s=30), Ack)
        assert refused.value.code is ErrorCode.BAD_REQUEST
        assert refused.value.field == "mode"

        config = await client.get_config()
        assert (config.request_id, config.min_mv, config.max_lease_s) == (7, 3_300, 120)
        updated = await client.set_config(min_mv=3_400)
        assert updated.min_mv == 3_400

        async with asyncio.timeout(5):
            await peer.done.wait()
        assert peer.mismatches == []
        unsubscribe()
    finally:
        await client.close()
        await peer.stop()

    statuses = [p for p in pushes if isinstance(p, Status)]
    events = [p for p in pushes if isinstance(p, Event)]
    # Initial push, the on-change push after the ack, and the push after the trip.
    assert [s.state for s in statuses] == [
        NodeState.IDLE,
        NodeState.SUPPLYING,
        NodeState.TRIPPED,
    ]
    assert statuses[-1].last_trip is TripReason.LOW_VOLTAGE
    assert [(e.reason, e.mode, e.mv) for e in events] == [
        (TripReason.LOW_VOLTAGE, Mode.SUPPLY, 3290)
    ]


async def test_client_speaks_bench_mode_json() -> None:
    """Without a key the client sends unsigned JSON and reads unsigned acks."""
    bench = golden()["bench"]["conversation"]
    steps = [bench[0], bench[5], bench[6]]  # hello, json_receive, ack_json_receive
    peer = GoldenPeer(steps)
    await peer.start()
    client = NodeClient("127.0.0.1", peer.port, None, keepalive_interval=0)
    try:
        hello = await client.connect()
        assert hello.auth == "none"
        ack = await client.command(Mode.RECEIVE, lease_s=20)
        assert (ack.mode, ack.lease_s, ack.seq) == (Mode.RECEIVE, 20, None)
        async with asyncio.timeout(5):
            await peer.done.wait()
        assert peer.mismatches == []
    finally:
        await client.close()
        await peer.stop()
