"""Baseline message stacks on loopback, to compare PeerGrid's command path with.

Each stack is an async context manager with a server and a connected client
in this process (as the simulated node and PeerGrid's client are), and one
operation: :meth:`call` sends one JSON message and returns when the reply is
back, with the ``time.perf_counter()`` at which the server's handler ran (the
moment a relay would switch on a node behind that stack).

* :class:`EchoStack` -- a raw asyncio TCP line echo: the floor of any
  JSON-over-TCP protocol in Python (no parsing, no authentication);
* :class:`SocketIoStack` -- python-socketio over a WebSocket (aiohttp server,
  asyncio client), an event with an acknowledgement: the stack shape of the
  paper's Node.js/Socket.IO backend;
* :class:`HttpPostStack` -- one HTTP POST with a JSON body per message on a
  kept-alive connection (aiohttp server and client): the specification's
  ``/iot/ping`` shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp
from aiohttp import web
import socketio  # type: ignore[import-untyped]

HOST = "127.0.0.1"


def command_body(sequence: int) -> dict[str, Any]:
    """A control message of the size and shape the paper's backend sends a node."""
    return {
        "type": "START_TRANSFER",
        "device_id": "NODE_A",
        "mode": "SUPPLY",
        "lease_s": 30,
        "limit_mwh": 10000,
        "seq": sequence,
    }


class Stack(Protocol):
    """A server and a connected client; :meth:`call` is one message and its reply."""

    name: str

    async def __aenter__(self) -> Self:
        """Start the server and connect the client."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Disconnect and stop."""

    async def call(self, body: dict[str, Any]) -> float:
        """Send ``body``, wait for the reply; the perf_counter at which the server got it."""


class EchoStack:
    """A raw asyncio TCP line echo on loopback."""

    name = "tcp_echo"

    def __init__(self) -> None:
        """Nothing runs until ``async with``."""
        self._server: asyncio.Server | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._received = 0.0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while line := await reader.readline():
                self._received = time.perf_counter()
                writer.write(line)
        writer.close()

    async def __aenter__(self) -> Self:
        """Listen and connect."""
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        port = self._server.sockets[0].getsockname()[1]
        self._reader, self._writer = await asyncio.open_connection(HOST, port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close both ends."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def call(self, body: dict[str, Any]) -> float:
        """One line out, the same line back."""
        assert self._reader is not None  # noqa: S101 - inside ``async with``
        assert self._writer is not None  # noqa: S101
        self._writer.write(json.dumps(body, separators=(",", ":")).encode() + b"\n")
        await self._reader.readline()
        return self._received


class SocketIoStack:
    """python-socketio: an event with an acknowledgement over a WebSocket."""

    name = "socketio"

    def __init__(self) -> None:
        """Nothing runs until ``async with``."""
        self._sio = socketio.AsyncServer(async_mode="aiohttp")
        self._app = web.Application()
        self._sio.attach(self._app)
        self._runner: web.AppRunner | None = None
        self._client = socketio.AsyncClient()
        self._received = 0.0
        self._sio.on("command", self._on_command)

    async def _on_command(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        self._received = time.perf_counter()
        return {"ok": True, "seq": data.get("seq")}

    async def __aenter__(self) -> Self:
        """Serve on loopback and connect over the WebSocket transport."""
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        await self._client.connect(f"http://{HOST}:{port}", transports=["websocket"])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Disconnect and stop the server."""
        await self._client.disconnect()
        if self._runner is not None:
            await self._runner.cleanup()

    async def call(self, body: dict[str, Any]) -> float:
        """``emit`` with a callback, awaited."""
        await self._client.call("command", body, timeout=10)
        return self._received


class HttpPostStack:
    """One JSON HTTP POST per message on a kept-alive aiohttp connection."""

    name = "http_post"

    def __init__(self) -> None:
        """Nothing runs until ``async with``."""
        self._app = web.Application()
        self._app.router.add_post("/command", self._on_command)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url = ""
        self._received = 0.0

    async def _on_command(self, request: web.Request) -> web.Response:
        data = await request.json()
        self._received = time.perf_counter()
        return web.json_response({"ok": True, "seq": data.get("seq")})

    async def __aenter__(self) -> Self:
        """Serve on loopback and open a client session (one kept-alive connection)."""
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._url = f"http://{HOST}:{port}/command"
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the session and stop the server."""
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def call(self, body: dict[str, Any]) -> float:
        """POST and read the JSON answer."""
        assert self._session is not None  # noqa: S101 - inside ``async with``
        async with self._session.post(self._url, json=body) as response:
            await response.read()
        return self._received


BASELINES: tuple[type[EchoStack | SocketIoStack | HttpPostStack], ...] = (
    EchoStack,
    SocketIoStack,
    HttpPostStack,
)
