"""Fixtures for the node firmware tests (CPython side).

The firmware package ``peergrid_node`` is on the path through pytest's
``pythonpath``. Nodes run on :mod:`tests.firmware.fakes` hardware; the
:class:`RawController` speaks the wire protocol with CPython's own ``hmac``
and ``json``, independently of the firmware's codec.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
import contextlib
import hashlib
import hmac
import json
from pathlib import Path
import secrets
from typing import Any

import pytest

from peergrid_node.node import Node

from .fakes import FakeHw

GOLDEN_PATH = Path(__file__).parents[1] / "fixtures" / "protocol" / "golden_frames.json"
GOLDEN: dict[str, Any] = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
GOLDEN_KEY = GOLDEN["key"]["text"]
GOLDEN_UID = "pg-a1b2c3"

type Body = dict[str, Any]


def golden_config(**overrides: Any) -> Body:
    """A node configuration matching the golden conversation's node."""
    config: Body = {
        "uid": GOLDEN_UID,
        "key": GOLDEN_KEY,
        "host": "127.0.0.1",
        "port": 0,
    }
    config.update(overrides)
    return config


class RunningNode:
    """A node whose ``run()`` task is active, with its fake hardware."""

    def __init__(self, node: Node, hw: FakeHw, task: asyncio.Task[None]) -> None:
        """Keep the pieces together."""
        self.node = node
        self.hw = hw
        self.task = task

    async def stop(self) -> None:
        """Stop the node and wait for ``run()`` to return."""
        self.node.stop()
        await self.hw.clock.stop_free()
        await asyncio.wait_for(self.task, 5)


type NodeFactory = Callable[..., Coroutine[Any, Any, RunningNode]]


@pytest.fixture(autouse=True)
def _loopback_sockets(socket_enabled: None) -> None:
    """Nodes listen on 127.0.0.1 (the Home Assistant plugin blocks sockets otherwise)."""


@pytest.fixture
async def start_node() -> AsyncIterator[NodeFactory]:
    """Start nodes on fake hardware; every node is stopped at teardown.

    ``free=True`` lets virtual time follow the event loop (10 ms per real ms,
    for socket tests); otherwise the test moves time with ``hw.clock.advance``.
    """
    running: list[RunningNode] = []

    async def factory(
        config: Body | None = None, *, hw: FakeHw | None = None, free: bool = False
    ) -> RunningNode:
        hw = hw or FakeHw(nonce=bytes.fromhex(GOLDEN["node_nonce"]))
        node = Node(config or golden_config(), hw)
        task = asyncio.create_task(node.run())
        item = RunningNode(node, hw, task)
        running.append(item)
        for _ in range(200):
            if node.port is not None or task.done():
                break
            await asyncio.sleep(0.005)
        if task.done():
            task.result()  # raises what made run() fail
        await hw.clock.advance(0)
        if free:
            hw.clock.run_free()
        return item

    yield factory
    for item in running:
        if not item.task.done():
            await item.stop()


def mac_hex(key: bytes, data: bytes) -> str:
    """Lowercase hex HMAC-SHA256 (CPython's hmac, not the firmware's)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


class RawController:
    """A minimal controller over raw frames: handshake, signing, verification."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wrap an open connection."""
        self.reader = reader
        self.writer = writer
        self.hello_line = b""
        self.hello: Body = {}
        self.k_c2n = b""
        self.k_n2c = b""
        self.tx_seq = 0
        self.rx_seq = 0
        self.received: list[Body] = []

    @classmethod
    async def open(cls, port: int) -> RawController:
        """Connect and read the hello."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ctl = cls(reader, writer)
        ctl.hello_line = (await asyncio.wait_for(reader.readline(), 5)).rstrip(b"\n")
        ctl.hello = json.loads(ctl.hello_line)
        return ctl

    async def authenticate(self, key: str = GOLDEN_KEY, cnonce: str | None = None) -> Body:
        """Run the handshake; returns the first (signed) status."""
        k = key.encode()
        cnonce = cnonce or secrets.token_hex(16)
        transcript = hashlib.sha256(self.hello_line).hexdigest() + "|" + cnonce
        proof = mac_hex(k, f"peergrid/1|client|{transcript}".encode())
        await self.send_raw(
            json.dumps(
                {"t": "auth", "proto": 1, "cnonce": cnonce, "mac": proof}, separators=(",", ":")
            ).encode()
            + b"\n"
        )
        auth_ok = json.loads(await self.read_line())
        assert auth_ok["t"] == "auth_ok", auth_ok
        assert auth_ok["mac"] == mac_hex(k, f"peergrid/1|node|{transcript}".encode())
        self.k_c2n = hmac.digest(k, f"peergrid/1|c2n|{transcript}".encode(), "sha256")
        self.k_n2c = hmac.digest(k, f"peergrid/1|n2c|{transcript}".encode(), "sha256")
        first = await self.recv()
        assert first["t"] == "status"
        return first

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are."""
        self.writer.write(data)
        await self.writer.drain()

    def sign(self, body: Body) -> bytes:
        """The signed line for ``body`` with the next sequence number."""
        self.tx_seq += 1
        full = {"t": body["t"], "seq": self.tx_seq} | {k: v for k, v in body.items() if k != "t"}
        data = json.dumps(full, separators=(",", ":")).encode()
        return mac_hex(self.k_c2n, data).encode() + b" " + data + b"\n"

    async def send(self, body: Body) -> None:
        """Sign and send."""
        await self.send_raw(self.sign(body))

    async def read_line(self, wait_s: float = 5) -> bytes:
        """The next raw line (without LF); b'' at EOF."""
        line = await asyncio.wait_for(self.reader.readline(), wait_s)
        return line.rstrip(b"\n")

    async def recv(self, wait_s: float = 5) -> Body:
        """The next signed frame, MAC and sequence verified."""
        line = await self.read_line(wait_s)
        assert line, "connection closed"
        tag, body = line[:64].decode(), line[65:]
        assert line[64:65] == b" "
        assert hmac.compare_digest(tag, mac_hex(self.k_n2c, body)), line
        msg: Body = json.loads(body)
        assert msg["seq"] == self.rx_seq + 1, msg
        self.rx_seq = msg["seq"]
        self.received.append(msg)
        return msg

    async def recv_type(self, t: str, wait_s: float = 5) -> Body:
        """Skip pushes until a frame of type ``t`` arrives."""
        while True:
            msg = await self.recv(wait_s)
            if msg["t"] == t:
                return msg

    async def request(self, body: Body, wait_s: float = 5) -> Body:
        """Send a request and return the frame answering its ``id``."""
        await self.send(body)
        while True:
            msg = await self.recv(wait_s)
            if msg.get("id") == body.get("id") and msg["t"] != "event":
                return msg

    async def closed(self, wait_s: float = 5) -> bool:
        """True when the node closes the connection (reads to EOF)."""
        with contextlib.suppress(ConnectionError):
            while True:
                data = await asyncio.wait_for(self.reader.read(4096), wait_s)
                if not data:
                    return True
        return True

    async def close(self) -> None:
        """Close our side."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def controllers() -> AsyncIterator[Callable[[int], Coroutine[Any, Any, RawController]]]:
    """Open raw controllers; all are closed at teardown."""
    opened: list[RawController] = []

    async def factory(port: int) -> RawController:
        ctl = await RawController.open(port)
        opened.append(ctl)
        return ctl

    yield factory
    for ctl in opened:
        await ctl.close()
