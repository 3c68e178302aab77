"""Simulator helpers for the benchmarks: grids of any size, and relay probes.

:class:`RelayProbe` timestamps the moment the firmware drives a relay pin of
a simulated node, on the wall clock (``time.perf_counter``, the clock every
benchmark client uses) and on the simulator's clock (simulated ms, what the
node's own ``ticks_ms`` reads). The probe wraps the pin's ``value`` method of
that one node; the firmware and the physics are unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
import contextlib
from dataclasses import dataclass
import time
from typing import Any, Final

from peergrid_core.sim import NodeSpec, Relay, SimNode, SimulatedGrid

RSSI_BASE_DBM: Final = -50


def sane_rssi(grid: SimulatedGrid) -> None:
    """Keep every node's simulated Wi-Fi level inside the protocol's -127..0 dBm.

    The simulator gives node *i* a level of ``-50 - 3 i`` dBm, so from the
    27th node on its status frames carry an RSSI the protocol refuses (and the
    client drops every status of those nodes). Benchmarks with more nodes
    spread the levels over -50..-122 dBm instead. Reported to the lead; to be
    removed once the simulator clamps the level itself.
    """
    for index, node in enumerate(grid.nodes.values()):
        if node.hardware is not None:
            node.hardware._rssi_dbm = RSSI_BASE_DBM - 3 * (index % 25)  # noqa: SLF001


@contextlib.asynccontextmanager
async def running_grid(specs: Sequence[NodeSpec], **options: Any) -> AsyncIterator[SimulatedGrid]:
    """A started :class:`SimulatedGrid` (``options`` as its keywords) with sane RSSI levels."""
    async with SimulatedGrid(specs, **options) as grid:
        sane_rssi(grid)
        yield grid


def node_specs(
    count: int,
    *,
    prefix: str = "BENCH",
    soc_percent: float = 80.0,
    config: dict[str, object] | None = None,
    limits: dict[str, int] | None = None,
) -> list[NodeSpec]:
    """``count`` nodes with fixed keys (reproducible) and the given firmware config."""
    return [
        NodeSpec(
            uid=f"{prefix}_{index:04d}",
            key=f"bench-key-{index:06d}-peergrid",
            soc_percent=soc_percent,
            config=dict(config or {}),
            limits=dict(limits or {}),
        )
        for index in range(count)
    ]


@dataclass(frozen=True, slots=True)
class PinChange:
    """One change of a relay pin."""

    relay: Relay
    level: int
    wall_s: float
    """``time.perf_counter()`` at the change."""
    sim_ms: float
    """The simulator's clock at the change, milliseconds."""


class RelayProbe:
    """Records every level change of a node's SUPPLY and RECEIVE pins.

    :meth:`expect` returns a future resolved with the next change of a relay
    to a level, so a benchmark can arm it before sending a command.
    """

    def __init__(self, grid: SimulatedGrid, node: SimNode) -> None:
        """Wrap the pins of ``node`` (its firmware must be running)."""
        hardware = node.hardware
        if hardware is None:
            raise RuntimeError(f"node {node.uid} has not started")
        self._clock = grid.clock
        self.changes: list[PinChange] = []
        self._waiters: list[tuple[Relay, int, asyncio.Future[PinChange]]] = []
        for pin in (hardware.supply_pin, hardware.receive_pin):
            pin.value = self._wrap(pin.relay, pin.value)  # type: ignore[method-assign,assignment]

    def _wrap(
        self, relay: Relay, original: Callable[[int | bool | None], int]
    ) -> Callable[[int | bool | None], int]:
        def value(level: int | bool | None = None) -> int:
            if level is None:
                return original(None)
            before = original(None)
            after = original(level)
            if after != before:
                self._record(PinChange(relay, after, time.perf_counter(), self._clock.now_ms()))
            return after

        return value

    def _record(self, change: PinChange) -> None:
        self.changes.append(change)
        waiting = []
        for relay, level, future in self._waiters:
            if relay is change.relay and level == change.level and not future.done():
                future.set_result(change)
            elif not future.done():
                waiting.append((relay, level, future))
        self._waiters = waiting

    def expect(self, relay: Relay, level: int) -> asyncio.Future[PinChange]:
        """A future for the next change of ``relay`` to ``level``."""
        future: asyncio.Future[PinChange] = asyncio.get_running_loop().create_future()
        self._waiters.append((relay, level, future))
        return future
