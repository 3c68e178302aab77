"""The safety trips not shown elsewhere over a real socket: energy limit, over-current, interlock.

Each runs the firmware on simulated hardware behind its TCP server on
127.0.0.1 and drives it with the core client, as a controller would. (Low
voltage, stuck relay and sensor fault are in ``test_sim_grid.py``; lease
expiry and a lost controller in ``test_client_firmware.py``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from peergrid_core.protocol import (
    CommandRefusedError,
    ErrorCode,
    Event,
    Mode,
    NodeClient,
    NodePush,
    TripReason,
)
from peergrid_core.sim import NodeSpec, SimulatedGrid

pytestmark = pytest.mark.usefixtures("socket_enabled")


@pytest.fixture
async def grid() -> AsyncIterator[SimulatedGrid]:
    """A supplier and a receiver sharing the bus, ten times faster than life."""
    specs = [
        NodeSpec(uid="NODE_A", key="trip-test-key-node-a", soc_percent=85),
        NodeSpec(uid="NODE_B", key="trip-test-key-node-b", soc_percent=30),
    ]
    async with SimulatedGrid(specs, speedup=10, seed=9) as running:
        yield running


def _client(grid: SimulatedGrid, uid: str) -> NodeClient:
    node = grid.node(uid)
    return NodeClient(node.host, node.port, node.key_bytes, keepalive_interval=0)


async def _until(predicate: Callable[[], bool], seconds: float = 20) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - the condition spans client and grid
            await asyncio.sleep(0.01)


def _trips(pushes: list[NodePush]) -> list[TripReason]:
    return [push.reason for push in pushes if isinstance(push, Event)]


async def test_energy_limit_trips_the_supplier(grid: SimulatedGrid) -> None:
    """A SUPPLY with a 20 mWh budget stops itself once 20 mWh have left the cell."""
    pushes: list[NodePush] = []
    async with _client(grid, "NODE_A") as a, _client(grid, "NODE_B") as b:
        a.listen(pushes.append)
        await a.command(Mode.SUPPLY, lease_s=600, limit_mwh=20)
        await b.command(Mode.RECEIVE, lease_s=600)
        await _until(lambda: TripReason.ENERGY_LIMIT in _trips(pushes))
        assert not grid.node("NODE_A").physical.supply_closed
        status = await a.get_status()
        assert status.e_session_mwh >= 20
        assert status.last_trip is TripReason.ENERGY_LIMIT
        await b.idle()


async def test_over_current_trips_the_supplier(grid: SimulatedGrid) -> None:
    """With a 300 mA ceiling, feeding a charger (about 1.9 A from the cell) trips at once."""
    pushes: list[NodePush] = []
    async with _client(grid, "NODE_A") as a, _client(grid, "NODE_B") as b:
        a.listen(pushes.append)
        config = await a.set_config(max_ma=300)
        assert config.max_ma == 300
        await a.command(Mode.SUPPLY, lease_s=600)
        await b.command(Mode.RECEIVE, lease_s=600)
        await _until(lambda: TripReason.OVER_CURRENT in _trips(pushes))
        assert not grid.node("NODE_A").physical.supply_closed
        await b.idle()


async def test_interlock_attempts_never_close_both_relays(grid: SimulatedGrid) -> None:
    """Switching direction, and a second controller's command, never make SUPPLY meet RECEIVE."""
    node = grid.node("NODE_A")
    seen_both: list[bool] = []

    async def watch() -> None:
        while True:
            physical = node.physical
            seen_both.append(physical.supply_closed and physical.receive_closed)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    try:
        async with _client(grid, "NODE_A") as first, _client(grid, "NODE_A") as second:
            for mode in (Mode.SUPPLY, Mode.RECEIVE, Mode.SUPPLY, Mode.RECEIVE):
                ack = await first.command(mode, lease_s=60)
                assert ack.mode is mode
                assert node.mode == mode
            # Another controller cannot take over while the first holds the node ...
            with pytest.raises(CommandRefusedError) as err:
                await second.command(Mode.SUPPLY, lease_s=60)
            assert err.value.code is ErrorCode.BUSY
            assert node.mode == "RECEIVE"
            # ... but anyone with the key can always stop it.
            await second.idle()
            assert node.mode == "IDLE"
    finally:
        watcher.cancel()
    assert seen_both
    assert not any(seen_both)
