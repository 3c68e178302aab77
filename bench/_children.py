"""Child processes of the fan-in benchmark: ``python -m bench._children KIND``.

Kinds:

* ``nodes --count N``: N simulated nodes (the real firmware) pushing a
  status every second; prints their addresses and keys as one JSON line.
* ``receiver --mode core|floor``: reads that JSON line on stdin and connects
  to every node: ``core`` with PeerGrid's :class:`NodeClient` (authenticated,
  every frame verified and parsed into a typed ``Status``), ``floor`` with a
  bare reader that authenticates the same way and then only splits lines and
  decodes their JSON (no MAC check, no validation: the least any receiver of
  these frames can do).
* ``http-floor``: an aiohttp server whose one POST handler decodes the JSON
  body and answers a small JSON object; prints its port.

Every kind then answers ``stats`` lines on stdin with one JSON line of
counters, and exits when stdin closes (or on SIGTERM), closing what it opened.
Processes of their own keep the parent's measurements of CPU and memory
honest: the parent reads the child's counters through the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
import contextlib
import json
import signal
import sys
from typing import Any

from aiohttp import web

from peergrid_core.protocol import (
    PROTOCOL_VERSION,
    Auth,
    NodeClient,
    NodePush,
    SessionSecrets,
    Status,
    new_nonce,
    parse_hello,
)
from peergrid_core.protocol.frames import MAX_LINE_BYTES, plain_line

from ._sim import node_specs, running_grid

HOST = "127.0.0.1"
MAC_PREFIX = 65
"""64 hex digits of MAC and a space before every signed body."""


STDIN_LIMIT = 1 << 24
"""The node list of a thousand nodes is one long line."""


async def _stdin() -> asyncio.StreamReader:
    """stdin as an asyncio stream (one reader for the whole life of the child)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STDIN_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _until_stopped(reader: asyncio.StreamReader, stats: Callable[[], dict[str, Any]]) -> None:
    """Answer ``stats`` lines on stdin until it closes or SIGTERM arrives."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def serve() -> None:
        while line := await reader.readline():
            if line.strip() == b"stats":
                print(json.dumps(stats()), flush=True)

    served = asyncio.create_task(serve())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({served, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (served, stopped):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------- nodes


async def run_nodes(count: int, push_s: int, seed: int) -> None:
    """Serve ``count`` nodes; count the status frames they push to authenticated sessions."""
    specs = node_specs(count, prefix="FAN", config={"push_s": push_s})
    pushed = [0]
    async with running_grid(specs, speedup=1, seed=seed) as grid:
        for node in grid.nodes.values():
            firmware: Any = node.firmware
            original = firmware.push_status

            def counting(firmware: Any = firmware, original: Any = original) -> None:
                pushed[0] += sum(1 for session in firmware.sessions if session.authed)
                original()

            firmware.push_status = counting
        print(
            json.dumps(
                {
                    "nodes": [
                        {"uid": n.uid, "host": n.host, "port": n.port, "key": n.key}
                        for n in grid.nodes.values()
                    ]
                }
            ),
            flush=True,
        )

        def stats() -> dict[str, Any]:
            firmwares: list[Any] = [n.firmware for n in grid.nodes.values() if n.firmware]
            sessions = sum(1 for fw in firmwares for s in fw.sessions if s.authed)
            return {"pushed": pushed[0], "sessions": sessions, "slipped_s": grid.clock.slipped_s}

        await _until_stopped(await _stdin(), stats)


# ---------------------------------------------------------------- receivers


async def _core_receiver(stdin: asyncio.StreamReader, nodes: list[dict[str, Any]]) -> None:
    received = [0]

    def on_push(push: NodePush) -> None:
        if isinstance(push, Status):
            received[0] += 1

    clients = [NodeClient(n["host"], n["port"], n["key"].encode()) for n in nodes]
    limit = asyncio.Semaphore(50)

    async def connect(client: NodeClient) -> None:
        async with limit:
            await client.connect()
        client.listen(on_push)

    try:
        await asyncio.gather(*(connect(client) for client in clients))
        print(json.dumps({"connected": len(clients)}), flush=True)
        await _until_stopped(
            stdin, lambda: {"received": received[0], "connected": sum(c.connected for c in clients)}
        )
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def _floor_connection(
    node: dict[str, Any], received: list[int], writers: list[asyncio.StreamWriter]
) -> asyncio.Task[None]:
    reader, writer = await asyncio.open_connection(
        node["host"], node["port"], limit=MAX_LINE_BYTES - 1
    )
    writers.append(writer)
    hello_line = await reader.readuntil(b"\n")
    parse_hello(hello_line)
    cnonce = new_nonce()
    secrets = SessionSecrets.derive(node["key"].encode(), hello_line, cnonce)
    writer.write(
        plain_line(Auth(proto=PROTOCOL_VERSION, cnonce=cnonce, mac=secrets.client_proof).to_body())
    )
    await reader.readuntil(b"\n")  # auth_ok

    async def read() -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                line = await reader.readuntil(b"\n")
                if json.loads(line[MAC_PREFIX:]).get("t") == "status":
                    received[0] += 1

    return asyncio.create_task(read())


async def _floor_receiver(stdin: asyncio.StreamReader, nodes: list[dict[str, Any]]) -> None:
    received = [0]
    writers: list[asyncio.StreamWriter] = []
    limit = asyncio.Semaphore(50)

    async def connect(node: dict[str, Any]) -> asyncio.Task[None]:
        async with limit:
            return await _floor_connection(node, received, writers)

    tasks = await asyncio.gather(*(connect(node) for node in nodes))
    print(json.dumps({"connected": len(tasks)}), flush=True)
    try:
        await _until_stopped(stdin, lambda: {"received": received[0], "connected": len(tasks)})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()


async def run_receiver(mode: str) -> None:
    """Read the node list from stdin's first line and receive their pushes."""
    stdin = await _stdin()
    nodes: list[dict[str, Any]] = json.loads(await stdin.readline())["nodes"]
    if mode == "core":
        await _core_receiver(stdin, nodes)
    else:
        await _floor_receiver(stdin, nodes)


# ---------------------------------------------------------------- HTTP floor


async def run_http_floor() -> None:
    """A bare aiohttp JSON endpoint on loopback (no auth, no validation)."""
    served = [0]

    async def handle(request: web.Request) -> web.Response:
        await request.json()
        served[0] += 1
        return web.json_response({"accepted": "node_data"})

    app = web.Application()
    app.router.add_post("/ping", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    try:
        print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
        await _until_stopped(await _stdin(), lambda: {"served": served[0]})
    finally:
        await runner.cleanup()


def main() -> None:
    """Parse the kind and run it until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m bench._children")
    kinds = parser.add_subparsers(dest="kind", required=True)
    nodes = kinds.add_parser("nodes")
    nodes.add_argument("--count", type=int, required=True)
    nodes.add_argument("--push-s", type=int, default=1)
    nodes.add_argument("--seed", type=int, default=1)
    receiver = kinds.add_parser("receiver")
    receiver.add_argument("--mode", choices=("core", "floor"), required=True)
    kinds.add_parser("http-floor")
    args = parser.parse_args()
    if args.kind == "nodes":
        asyncio.run(run_nodes(args.count, args.push_s, args.seed))
    elif args.kind == "receiver":
        asyncio.run(run_receiver(args.mode))
    else:
        asyncio.run(run_http_floor())


if __name__ == "__main__":
    main()
