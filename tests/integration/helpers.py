"""Helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
import json

from homeassistant.const import CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.peergrid.const import CONF_KEY, CONF_KIND, DOMAIN, EntryKind
from peergrid_core.sim import SimulatedGrid


async def wait_until(
    hass: HomeAssistant, predicate: Callable[[], bool], *, max_wait: float = 15.0
) -> None:
    """Let Home Assistant and the simulated nodes run until ``predicate()`` holds.

    The nodes are real TCP servers driven by the event loop, so the test waits
    for what a user would see rather than for a fixed time. ``max_wait`` only
    bounds a failing test.
    """
    async with asyncio.timeout(max_wait):
        while not predicate():
            await asyncio.sleep(0.05)
            await hass.async_block_till_done()


def node_entry(grid: SimulatedGrid, uid: str, **data: object) -> MockConfigEntry:
    """A config entry for node ``uid`` of ``grid``; ``data`` overrides host, port or key."""
    node = grid.nodes[uid]
    return MockConfigEntry(
        domain=DOMAIN,
        title=uid,
        unique_id=uid,
        data={
            CONF_KIND: EntryKind.NODE,
            CONF_HOST: node.host,
            CONF_PORT: node.port,
            CONF_KEY: node.key,
        }
        | data,
    )


async def setup_entry(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Add ``entry`` to Home Assistant and set it up."""
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


def state_value(hass: HomeAssistant, entity_id: str) -> str:
    """The state of ``entity_id``, failing clearly when the entity does not exist."""
    state = hass.states.get(entity_id)
    assert state is not None, f"{entity_id} does not exist"
    return state.state


PROTO_2_HELLO = (
    json.dumps(
        {"t": "hello", "proto": 2, "uid": "pg-future", "fw": "2.0.0", "auth": "hmac-sha512"},
        separators=(",", ":"),
    ).encode()
    + b"\n"
)
"""The hello of a node from the future: protocol version 2."""


@contextlib.asynccontextmanager
async def fake_device(first_line: bytes, port: int = 0) -> AsyncIterator[int]:
    """A TCP device on 127.0.0.1 that sends ``first_line`` and hangs up; yields its port."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(first_line)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", port)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
