"""Relay switching: break-before-make, dead time, and the interlock property."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from peergrid_node.node import Node
from peergrid_node.relays import IDLE, RECEIVE, SUPPLY, InterlockError, Relays

from .conftest import golden_config
from .fakes import FakeHw


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a private event loop (for hypothesis examples)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def test_break_before_make_with_dead_time() -> None:
    """SUPPLY -> RECEIVE opens SUPPLY, waits the dead time, then closes RECEIVE."""
    hw = FakeHw()
    relays = Relays(hw.supply_pin, hw.receive_pin, hw, dead_ms=100)
    task = asyncio.create_task(relays.set(SUPPLY))
    await hw.clock.advance(99)
    assert (hw.supply_pin.level, relays.mode) == (0, IDLE)
    await hw.clock.advance(1)
    assert await task is True
    assert (hw.supply_pin.level, hw.receive_pin.level, relays.mode) == (1, 0, SUPPLY)
    task = asyncio.create_task(relays.set(RECEIVE))
    await hw.clock.advance(0)
    assert (hw.supply_pin.level, hw.receive_pin.level, relays.mode) == (0, 0, IDLE)
    await hw.clock.advance(100)
    assert await task is True
    assert (hw.supply_pin.level, hw.receive_pin.level) == (0, 1)
    assert relays.changed_ms == 200
    assert hw.monitor.both_on == 0


async def test_off_now_cancels_a_pending_make() -> None:
    """A trip during the dead time wins: the make never happens."""
    hw = FakeHw()
    relays = Relays(hw.supply_pin, hw.receive_pin, hw)
    task = asyncio.create_task(relays.set(RECEIVE))
    await hw.clock.advance(50)
    relays.off_now()
    await hw.clock.advance(100)
    assert await task is False
    assert hw.receive_pin.writes.count(1) == 0
    assert relays.mode == IDLE


async def test_newer_request_supersedes_a_pending_one() -> None:
    """Two concurrent requests: the later one is what the relays end up doing."""
    hw = FakeHw()
    relays = Relays(hw.supply_pin, hw.receive_pin, hw)
    first = asyncio.create_task(relays.set(SUPPLY))
    await hw.clock.advance(10)
    second = asyncio.create_task(relays.set(RECEIVE))
    await hw.clock.advance(300)
    assert await first is False
    assert await second is True
    assert relays.mode == RECEIVE
    assert hw.supply_pin.writes.count(1) == 0


async def test_a_pin_reading_back_on_blocks_the_other() -> None:
    """If RECEIVE reads back on, SUPPLY is refused and both are forced off."""
    hw = FakeHw()
    relays = Relays(hw.supply_pin, hw.receive_pin, hw)
    hw.receive_pin.stuck = 1
    task = asyncio.create_task(relays.set(SUPPLY))
    await hw.clock.advance(150)
    with pytest.raises(InterlockError):
        await task
    assert (hw.supply_pin.level, hw.receive_pin.level, relays.mode) == (0, 0, IDLE)
    assert relays.interlock_faults == 1


async def test_unknown_mode_is_rejected() -> None:
    """Only the three modes exist."""
    hw = FakeHw()
    relays = Relays(hw.supply_pin, hw.receive_pin, hw)
    with pytest.raises(ValueError, match="mode"):
        await relays.set("BOTH")


CMD = st.tuples(
    st.just("cmd"),
    st.integers(min_value=0, max_value=1),
    st.sampled_from([SUPPLY, RECEIVE, IDLE]),
    st.integers(min_value=1, max_value=4),
)
ADVANCE = st.tuples(st.just("advance"), st.integers(min_value=0, max_value=400))
FAULT = st.one_of(
    st.tuples(st.just("ocv"), st.integers(min_value=3250, max_value=4150)),
    st.tuples(st.just("supply_ma"), st.integers(min_value=0, max_value=3100)),
    st.tuples(st.just("i2c_fail"), st.booleans()),
    st.tuples(st.just("weld"), st.booleans()),
    st.tuples(st.just("stuck_pin"), st.sampled_from(["", "supply", "receive"])),
    st.tuples(st.just("brownout")),
    st.tuples(st.just("close"), st.integers(min_value=0, max_value=1)),
)
# Commands and time dominate; faults are sprinkled in.
OPS = st.one_of(CMD, CMD, CMD, ADVANCE, ADVANCE, FAULT)


def check_invariants(node: Node, hw: FakeHw) -> None:
    """What must hold after every step."""
    assert hw.monitor.both_on == 0
    supply, receive = hw.supply_pin.level, hw.receive_pin.level
    assert (supply, receive) == (node.mode == SUPPLY, node.mode == RECEIVE)
    if node.mode != IDLE:
        assert node.controller is not None
        assert node.lease_left_s() > 0
        assert node.fault is None


async def scenario(ops: list[tuple[Any, ...]]) -> None:
    """Drive a node through ``ops`` with concurrent commands and faults."""
    hw = FakeHw()
    node = Node(golden_config(), hw)
    run_task = asyncio.create_task(node.run())
    sessions = [object(), object()]
    pending: list[asyncio.Task[dict[str, Any]]] = []
    try:
        while node.port is None:  # noqa: ASYNC110 - run() sets it once listening
            await asyncio.sleep(0.001)
        await hw.clock.advance(300)
        for op in ops:
            kind = op[0]
            if kind == "cmd":
                _, who, mode, lease_s = op
                pending.append(
                    asyncio.create_task(node.command(sessions[who], mode, 1, lease_s, 10000, 3300))
                )
                await hw.clock.settle()
            elif kind == "advance":
                await hw.clock.advance(op[1])
            elif kind == "ocv":
                hw.cell.ocv_mv = op[1]
            elif kind == "supply_ma":
                hw.cell.supply_ma = op[1]
            elif kind == "i2c_fail":
                hw.i2c.fail = op[1]
            elif kind == "weld":
                hw.cell.welded_supply = op[1]
            elif kind == "stuck_pin":
                hw.supply_pin.stuck = 1 if op[1] == "supply" else None
                hw.receive_pin.stuck = 1 if op[1] == "receive" else None
            elif kind == "brownout":
                hw.chip.brownout()
            elif kind == "close":
                node.session_closed(sessions[op[1]])
            check_invariants(node, hw)
        # Every lease in the scenario is at most 4 s: all of it must end.
        hw.i2c.fail = False
        await hw.clock.advance(5000)
        for task in pending:
            reply = await task
            assert reply["t"] in ("ack", "err")
        check_invariants(node, hw)
        assert node.mode == IDLE
        assert (hw.supply_pin.level, hw.receive_pin.level) == (0, 0)
    finally:
        node.stop()
        await run_task
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, max_size=30))
def test_supply_and_receive_are_never_on_together(ops: list[tuple[Any, ...]]) -> None:
    """Random commands from two sessions, trips and faults: never both relays on."""
    run(scenario(ops))
