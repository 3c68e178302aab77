"""Transfers end to end: the real node firmware on simulated batteries over TCP.

The grid runs up to 100x faster than real time; the session's clock and the
lease keepers' sleeps are the grid's simulated time, so leases, durations and
timestamps are all in the nodes' time. Assertions are about physical
outcomes and records, never about wall-clock durations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from peergrid_core.protocol import Mode, NodeClient, NodeState, TripReason
from peergrid_core.protocol.lease import LeaseKeeper
from peergrid_core.sim import NodeSpec, PhysicalMode, SimulatedGrid
from peergrid_core.sim.physics import JOULES_PER_WH
from peergrid_core.transfer import (
    ClientNodeLink,
    RefusalReason,
    StopReason,
    TransferPolicy,
    TransferRecord,
    TransferRequest,
    TransferSession,
    TransferState,
    TransferValidationError,
)

pytestmark = pytest.mark.usefixtures("socket_enabled")

SPEEDUP = 100.0
LEASE_S = 60
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _sim_clock(grid: SimulatedGrid) -> Callable[[], datetime]:
    return lambda: EPOCH + timedelta(seconds=grid.time_s)


@contextlib.asynccontextmanager
async def _link(grid: SimulatedGrid, uid: str) -> AsyncIterator[ClientNodeLink]:
    node = grid.nodes[uid]
    client = NodeClient(node.host, node.port, node.key_bytes)
    await client.connect()
    keeper = LeaseKeeper(client, lease_s=LEASE_S, sleep=grid.sleep)
    try:
        # A first status, so the checks have something to look at.
        await client.get_status()
        yield ClientNodeLink(client, keeper, uid)
    finally:
        await keeper.close()
        await client.close()


def _relays_open(grid: SimulatedGrid, uid: str) -> bool:
    state = grid.nodes[uid].physical
    return not state.supply_closed and not state.receive_closed


async def test_moves_energy_from_a_full_node_to_an_empty_one() -> None:
    """1.5 Wh out of a full node: the sender stops itself at the target, losses are booked."""
    specs = [NodeSpec(uid="FULL", soc_percent=95.0), NodeSpec(uid="EMPTY", soc_percent=10.0)]
    updates: list[TransferRecord] = []
    async with (
        SimulatedGrid(specs, speedup=SPEEDUP, seed=21) as grid,
        _link(grid, "FULL") as sender,
        _link(grid, "EMPTY") as receiver,
    ):
        stored_before = grid.nodes["EMPTY"].physical.stored_energy_wh
        session = TransferSession(
            TransferRequest(sender="FULL", receiver="EMPTY", energy_wh=1.5),
            sender,
            receiver,
            clock=_sim_clock(grid),
            on_update=updates.append,
        )
        started = await session.start()
        assert started.state is TransferState.ACTIVE
        assert grid.nodes["FULL"].physical.mode is PhysicalMode.SUPPLY
        assert grid.nodes["EMPTY"].physical.mode is PhysicalMode.RECEIVE

        record = await session.wait()
        await grid.sleep(2.0)

        assert record.state is TransferState.COMPLETED
        assert record.stop_reason is StopReason.TARGET_REACHED
        assert record.wh_out > record.wh_in > 0.0
        assert record.wh_out == pytest.approx(1.5, abs=0.05)
        assert record.loss_wh == pytest.approx(record.wh_out - record.wh_in, abs=1e-9)
        # A 5 V boost converter feeding a linear charger: about half arrives.
        assert 0.3 < record.wh_in / record.wh_out < 0.75
        assert record.avg_voltage_v is not None
        assert 3.5 < record.avg_voltage_v < 4.2
        assert record.avg_current_a is not None
        assert 1.5 < record.avg_current_a < 2.3
        assert record.ended_at is not None
        # 1.5 Wh at ~7.5 W: about 12 simulated minutes.
        assert 400 < (record.ended_at - record.started_at).total_seconds() < 1500
        assert record.progress_pct == pytest.approx(100.0, abs=4.0)
        # Both nodes released, relays open, nothing flows any more.
        for uid in ("FULL", "EMPTY"):
            assert _relays_open(grid, uid)
            assert grid.nodes[uid].mode == "IDLE"
        assert not session.active
        # The metered energy is what the physics booked (the node meters at
        # the shunt, so it reads close to the terminals).
        out_wh = grid.nodes["FULL"].physical.energy.terminal_out_j / JOULES_PER_WH
        assert record.wh_out == pytest.approx(out_wh, rel=0.1)
        assert grid.nodes["EMPTY"].physical.stored_energy_wh > stored_before
        # Start, some progress, end; progress never goes backwards.
        assert updates[0].state is TransferState.ACTIVE
        assert updates[-1] == record
        assert len(updates) > 3
        outs = [update.wh_out for update in updates]
        assert outs == sorted(outs)


async def test_refused_request_never_closes_a_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that is already full: refused before any relay moves."""
    specs = [NodeSpec(uid="A", soc_percent=80.0), NodeSpec(uid="B", soc_percent=96.0)]
    async with (
        SimulatedGrid(specs, speedup=SPEEDUP, seed=22) as grid,
        _link(grid, "A") as sender,
        _link(grid, "B") as receiver,
    ):
        closed: list[str] = []
        for uid in ("A", "B"):
            hardware = grid.nodes[uid].hardware
            assert hardware is not None
            for pin in (hardware.supply_pin, hardware.receive_pin):
                original = pin.value

                def spy(
                    level: int | bool | None = None,
                    *,
                    _original: Callable[[int | bool | None], int] = original,
                    _name: str = f"{uid}:{pin.relay}",
                ) -> int:
                    if level:
                        closed.append(_name)
                    return _original(level)

                monkeypatch.setattr(pin, "value", spy)
        session = TransferSession(
            TransferRequest(sender="A", receiver="B", energy_wh=1.0),
            sender,
            receiver,
            clock=_sim_clock(grid),
        )
        with pytest.raises(TransferValidationError) as err:
            await session.start()
        assert err.value.reason is RefusalReason.RECEIVER_FULL
        assert err.value.field == "receiver"
        await grid.sleep(3.0)
        assert closed == []
        for uid in ("A", "B"):
            assert _relays_open(grid, uid)
            assert grid.nodes[uid].physical.energy.boost_in_j == 0.0
            assert grid.nodes[uid].physical.energy.charger_in_j == 0.0
        assert not session.active


async def test_low_voltage_trip_on_the_sender_ends_the_transfer() -> None:
    """An internal short drops the sender's voltage: reason sender_low_voltage, both IDLE."""
    specs = [NodeSpec(uid="A", soc_percent=60.0), NodeSpec(uid="B", soc_percent=20.0)]
    async with (
        SimulatedGrid(specs, speedup=SPEEDUP, seed=23) as grid,
        _link(grid, "A") as sender,
        _link(grid, "B") as receiver,
    ):
        # The short also drags the sender's SoC estimate down; a low floor
        # lets the node's own cut-off act first, which is what is tested.
        session = TransferSession(
            TransferRequest(sender="A", receiver="B", energy_wh=5.0),
            sender,
            receiver,
            policy=TransferPolicy(sender_soc_floor_pct=2.0),
            clock=_sim_clock(grid),
        )
        await session.start()
        await grid.sleep(20.0)
        grid.inject_voltage_drop("A", 0.45)
        record = await session.wait()
        await grid.sleep(2.0)

        assert record.state is TransferState.ABORTED
        assert record.stop_reason is StopReason.SENDER_LOW_VOLTAGE
        assert record.trip_reason is TripReason.LOW_VOLTAGE
        assert record.wh_out > record.wh_in > 0.0
        for uid, link in (("A", sender), ("B", receiver)):
            assert _relays_open(grid, uid)
            assert grid.nodes[uid].mode == "IDLE"
            assert link.status is not None
            assert link.status.mode is Mode.IDLE
        assert sender.status is not None
        assert sender.status.last_trip is TripReason.LOW_VOLTAGE


async def test_sender_lost_mid_transfer_releases_the_receiver() -> None:
    """The sender's firmware dies: the record closes with what was measured."""
    specs = [NodeSpec(uid="A", soc_percent=85.0), NodeSpec(uid="B", soc_percent=25.0)]
    async with (
        SimulatedGrid(specs, speedup=SPEEDUP, seed=24) as grid,
        _link(grid, "A") as sender,
        _link(grid, "B") as receiver,
    ):
        session = TransferSession(
            TransferRequest(sender="A", receiver="B", energy_wh=5.0),
            sender,
            receiver,
            clock=_sim_clock(grid),
        )
        await session.start()
        await grid.wait_for(lambda: session.record.wh_in > 0.02, timeout_s=120.0)
        await grid.stop_node("A")
        record = await session.wait()
        await grid.sleep(2.0)

        assert record.state is TransferState.ABORTED
        assert record.stop_reason is StopReason.SENDER_LOST
        assert record.wh_out > record.wh_in > 0.0
        assert record.ended_at is not None
        assert _relays_open(grid, "B")
        assert grid.nodes["B"].mode == "IDLE"
        assert receiver.status is not None
        assert receiver.status.state in (NodeState.IDLE, NodeState.TRIPPED)
        assert receiver.status.mode is Mode.IDLE


async def test_receiver_lost_mid_transfer_releases_the_sender() -> None:
    """The receiver's firmware dies: the sender stops supplying at once."""
    specs = [NodeSpec(uid="A", soc_percent=85.0), NodeSpec(uid="B", soc_percent=25.0)]
    async with (
        SimulatedGrid(specs, speedup=SPEEDUP, seed=25) as grid,
        _link(grid, "A") as sender,
        _link(grid, "B") as receiver,
    ):
        session = TransferSession(
            TransferRequest(sender="A", receiver="B", duration_s=3600.0, energy_wh=None),
            sender,
            receiver,
            clock=_sim_clock(grid),
        )
        await session.start()
        await grid.wait_for(lambda: session.record.wh_out > 0.02, timeout_s=120.0)
        await grid.stop_node("B")
        record = await session.wait()
        await grid.sleep(2.0)

        assert record.stop_reason is StopReason.RECEIVER_LOST
        assert record.state is TransferState.ABORTED
        assert record.wh_out > 0.0
        assert record.requested_wh is None
        assert record.progress_pct is None
        assert _relays_open(grid, "A")
        assert sender.status is not None
        assert sender.status.mode is Mode.IDLE


async def test_duration_limit_in_simulated_time() -> None:
    """A duration-only transfer ends after its duration, on the injected clock."""
    specs = [NodeSpec(uid="A", soc_percent=85.0), NodeSpec(uid="B", soc_percent=25.0)]
    async with (
        SimulatedGrid(specs, speedup=SPEEDUP, seed=26) as grid,
        _link(grid, "A") as sender,
        _link(grid, "B") as receiver,
    ):
        session = TransferSession(
            TransferRequest(sender="A", receiver="B", energy_wh=None, duration_s=120.0),
            sender,
            receiver,
            clock=_sim_clock(grid),
        )
        await session.start()
        record = await session.wait()
        await grid.sleep(2.0)

        assert record.stop_reason is StopReason.DURATION_REACHED
        assert record.state is TransferState.COMPLETED
        assert record.ended_at is not None
        # Checked on every status push (every 5 s of node time).
        assert 120.0 <= (record.ended_at - record.started_at).total_seconds() < 135.0
        assert record.wh_out > record.wh_in > 0.0
        assert _relays_open(grid, "A")
        assert _relays_open(grid, "B")
