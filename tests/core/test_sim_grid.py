"""Tests of the simulated grid: the real firmware on simulated batteries over TCP.

The grid runs faster than real time; assertions are about physical outcomes
and protocol behaviour, never about wall-clock durations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
import json
import sys

import pytest

from peergrid_core.errors import PeerGridError, PeerGridValidationError
from peergrid_core.protocol import Mode, NodeClient, NodeState, TripReason
from peergrid_core.sim import (
    CellParams,
    ChargerState,
    FirmwareNotFoundError,
    NodeParams,
    NodeSpec,
    PhysicalMode,
    Relay,
    SimNode,
    SimulatedGrid,
)
from peergrid_core.sim.physics import JOULES_PER_WH

# Nodes listen on 127.0.0.1; the Home Assistant test plugin blocks sockets
# unless a test asks for them.
pytestmark = pytest.mark.usefixtures("socket_enabled")

SPEEDUP = 50.0
LEASE_S = 60


async def _hello(host: str, port: int) -> dict[str, object]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        line = await asyncio.wait_for(reader.readline(), 5.0)
    finally:
        writer.close()
        await writer.wait_closed()
    hello: dict[str, object] = json.loads(line)
    return hello


@contextlib.asynccontextmanager
async def _client(grid: SimulatedGrid, uid: str) -> AsyncIterator[NodeClient]:
    node = grid.nodes[uid]
    client = NodeClient(node.host, node.port, node.key_bytes)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


async def _hold(
    grid: SimulatedGrid,
    commands: list[tuple[NodeClient, Mode]],
    *,
    seconds: float,
    until: Callable[[], bool] | None = None,
) -> None:
    """Keep renewing the leases every 10 simulated seconds for ``seconds``."""
    end = grid.time_s + seconds
    while grid.time_s < end and not (until is not None and until()):
        for client, mode in commands:
            with contextlib.suppress(PeerGridError):
                await client.command(mode, lease_s=LEASE_S)
        await grid.sleep(10.0)


def _running(node: SimNode) -> bool:
    # A call, so that the type checker does not carry an earlier assert over.
    return node.running


def _supply_closed(node: SimNode) -> bool:
    return node.physical.supply_closed


def _specs(*socs: float) -> list[NodeSpec]:
    return [NodeSpec(uid=f"NODE_{chr(65 + i)}", soc_percent=soc) for i, soc in enumerate(socs)]


async def test_nodes_start_greet_and_stop_cleanly() -> None:
    grid = SimulatedGrid(_specs(80.0, 50.0, 30.0), speedup=SPEEDUP, seed=1)
    async with grid:
        assert list(grid.nodes) == ["NODE_A", "NODE_B", "NODE_C"]
        ports = {node.port for node in grid.nodes.values()}
        assert len(ports) == 3
        for uid, node in grid.nodes.items():
            assert node.host == "127.0.0.1"
            assert node.running
            assert node.mode == "IDLE"
            assert len(node.key) == 32
            hello = await _hello(node.host, node.port)
            assert hello["t"] == "hello"
            assert hello["uid"] == uid
            assert hello["auth"] == "hmac-sha256"
            assert hello["reset"] == "power_on"
            state = node.physical
            assert state.powered
            assert state.mode is PhysicalMode.IDLE
        await grid.wait_for(lambda: grid.time_s > 5.0, timeout_s=60.0)
        # Idle nodes only feed their ESP32.
        for node in grid.nodes.values():
            assert 0.05 < node.physical.cell_amps < 0.15
            assert node.physical.energy.boost_in_j == 0.0
            assert node.hardware is not None
            assert node.hardware.wdt.feeds > 0  # the firmware's supervisor is alive
    for node in grid.nodes.values():
        assert not node.running
        assert node.mode is None
        assert not node.physical.powered
        assert not node.physical.supply_closed
        assert not node.physical.receive_closed
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(node.host, node.port)


async def test_transfer_moves_energy_from_a_to_b_with_losses() -> None:
    async with (
        SimulatedGrid(_specs(90.0, 20.0), speedup=SPEEDUP, seed=2) as grid,
        _client(grid, "NODE_A") as client_a,
        _client(grid, "NODE_B") as client_b,
    ):
        node_a, node_b = grid.nodes["NODE_A"], grid.nodes["NODE_B"]
        before_a, before_b = node_a.physical, node_b.physical
        await grid.sleep(2.0)  # a fresh reading before the first command
        ack = await client_a.command(Mode.SUPPLY, lease_s=LEASE_S)
        assert ack.mode is Mode.SUPPLY
        await client_b.command(Mode.RECEIVE, lease_s=LEASE_S)
        await _hold(grid, [(client_a, Mode.SUPPLY), (client_b, Mode.RECEIVE)], seconds=240.0)
        during_a, during_b = node_a.physical, node_b.physical
        status_a = await client_a.get_status()
        await client_a.idle()
        await client_b.idle()
        await grid.sleep(2.0)

        assert during_a.mode is PhysicalMode.SUPPLY
        assert during_b.mode is PhysicalMode.RECEIVE
        assert during_b.charger_state is ChargerState.CONSTANT_CURRENT
        assert 1.6 < during_a.cell_amps < 2.1  # a 1 A charger costs ~1.9 A at the supplier
        after_a, after_b = node_a.physical, node_b.physical
        assert after_a.mode is PhysicalMode.IDLE
        assert after_b.mode is PhysicalMode.IDLE
        assert after_a.soc_percent < before_a.soc_percent - 2.0
        assert after_b.soc_percent > before_b.soc_percent + 1.0

        out_wh = after_a.energy.terminal_out_j / JOULES_PER_WH
        stored_wh = after_b.energy.chemical_in_j / JOULES_PER_WH
        assert out_wh > 0.2
        assert 0.35 < stored_wh / out_wh < 0.65  # converter, charger, wiring, ESP32
        balance = grid.energy_balance()
        assert balance.delivered_to_bus_wh == pytest.approx(balance.drawn_from_bus_wh)
        assert balance.chemical_out_wh == pytest.approx(
            balance.chemical_in_wh + balance.losses_wh, rel=1e-9
        )
        # The firmware's own meter agrees with the physics (it measures at
        # the shunt's cell side, so it reads a little more than the terminals).
        assert status_a.e_out_mwh / 1000 == pytest.approx(
            during_a.energy.terminal_out_j / JOULES_PER_WH, rel=0.2
        )


async def test_low_voltage_trip_when_the_supplier_is_drained() -> None:
    small = NodeParams(cell=CellParams(capacity_ah=0.3))
    specs = [
        NodeSpec(uid="NODE_A", soc_percent=30.0, params=small),
        NodeSpec(uid="NODE_B", soc_percent=20.0),
    ]
    async with (
        SimulatedGrid(specs, speedup=SPEEDUP, seed=3) as grid,
        _client(grid, "NODE_A") as client_a,
        _client(grid, "NODE_B") as client_b,
    ):
        node_a = grid.nodes["NODE_A"]
        await grid.sleep(2.0)
        await client_a.command(Mode.SUPPLY, lease_s=LEASE_S)
        await client_b.command(Mode.RECEIVE, lease_s=LEASE_S)
        await _hold(
            grid,
            [(client_a, Mode.SUPPLY), (client_b, Mode.RECEIVE)],
            seconds=900.0,
            until=lambda: not node_a.physical.supply_closed,
        )
        await grid.wait_for(lambda: not node_a.physical.supply_closed, timeout_s=60.0)
        status = await client_a.get_status()
        assert status.last_trip is TripReason.LOW_VOLTAGE
        assert status.mode is Mode.IDLE
        assert node_a.mode == "IDLE"
        # The cut-off acts on the loaded voltage: charge is left in the cell.
        assert node_a.physical.soc_percent > 5.0
        await client_b.idle()


async def test_killed_node_keeps_its_battery_and_address() -> None:
    async with SimulatedGrid(_specs(70.0, 40.0), speedup=SPEEDUP, seed=4) as grid:
        node_a = grid.nodes["NODE_A"]
        port = node_a.port
        await grid.sleep(5.0)
        await grid.stop_node("NODE_A")
        assert not node_a.running
        assert node_a.mode is None
        stopped = node_a.physical
        assert not stopped.powered
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(node_a.host, port)
        await grid.sleep(20.0)
        # Switched off, the cell rests: no ESP32 draw.
        assert node_a.physical.soc_percent == pytest.approx(stopped.soc_percent, abs=1e-9)
        assert node_a.physical.energy.overhead_j == stopped.energy.overhead_j

        await grid.start_node("NODE_A")
        assert _running(node_a)
        assert node_a.port == port
        hello = await _hello(node_a.host, node_a.port)
        assert hello["uid"] == "NODE_A"
        assert hello["reset"] == "hard"
        assert node_a.boots == 2
        assert node_a.physical.soc_percent == pytest.approx(stopped.soc_percent, abs=0.01)
        async with _client(grid, "NODE_A") as client:
            await grid.sleep(2.0)
            status = await client.get_status()
        assert status.mv is not None
        assert status.mv / 1000 == pytest.approx(node_a.physical.terminal_volts, abs=0.05)
        await grid.stop_node("NODE_A")
        await grid.stop_node("NODE_A")  # stopping a stopped node is harmless
        with pytest.raises(PeerGridError):
            await grid.start_node("NODE_B")  # already running


async def test_welded_supply_relay_is_detected_and_keeps_conducting() -> None:
    async with (
        SimulatedGrid(_specs(90.0, 20.0), speedup=SPEEDUP, seed=5) as grid,
        _client(grid, "NODE_A") as client_a,
        _client(grid, "NODE_B") as client_b,
    ):
        node_a = grid.nodes["NODE_A"]
        await grid.sleep(2.0)
        grid.inject_stuck_relay("NODE_A", Relay.SUPPLY)
        await client_b.command(Mode.RECEIVE, lease_s=LEASE_S)
        # A is IDLE but its cell carries the bus: the firmware must notice.
        await _hold(
            grid,
            [(client_b, Mode.RECEIVE)],
            seconds=120.0,
            until=lambda: client_a.status is not None and client_a.status.last_trip is not None,
        )
        status = await client_a.get_status()
        assert status.last_trip is TripReason.STUCK_RELAY
        assert node_a.physical.supply_closed  # welded: firmware cannot open it
        assert grid.nodes["NODE_B"].physical.charger_state is ChargerState.CONSTANT_CURRENT
        grid.inject_stuck_relay("NODE_A", Relay.SUPPLY, stuck=False)
        assert not _supply_closed(node_a)
        await client_b.idle()


async def test_sensor_fault_trips_a_transfer_and_reset_is_recalibrated() -> None:
    async with (
        SimulatedGrid(_specs(90.0, 20.0), speedup=SPEEDUP, seed=6) as grid,
        _client(grid, "NODE_A") as client_a,
    ):
        node_a = grid.nodes["NODE_A"]
        hardware = node_a.hardware
        assert hardware is not None
        await grid.sleep(2.0)
        # Brown-out of the sensor: the firmware writes the calibration back.
        grid.inject_sensor_reset("NODE_A")
        assert hardware.i2c.readfrom_mem(0x40, 0x05, 2) == b"\x00\x00"
        await grid.wait_for(
            lambda: hardware.i2c.readfrom_mem(0x40, 0x05, 2) != b"\x00\x00", timeout_s=30.0
        )
        await client_a.command(Mode.SUPPLY, lease_s=LEASE_S)
        assert node_a.physical.supply_closed
        grid.inject_sensor_fault("NODE_A")
        await grid.wait_for(lambda: not node_a.physical.supply_closed, timeout_s=30.0)
        assert hardware.i2c.failed_transfers > 0
        grid.inject_sensor_fault("NODE_A", active=False)
        await grid.sleep(3.0)
        status = await client_a.get_status()
        assert status.last_trip is TripReason.SENSOR_FAULT
        assert status.mv is not None  # reads again


async def test_sudden_voltage_drop_trips_the_supplier() -> None:
    async with (
        SimulatedGrid(_specs(60.0, 20.0), speedup=SPEEDUP, seed=7) as grid,
        _client(grid, "NODE_A") as client_a,
        _client(grid, "NODE_B") as client_b,
    ):
        node_a = grid.nodes["NODE_A"]
        await grid.sleep(2.0)
        await client_a.command(Mode.SUPPLY, lease_s=LEASE_S)
        await client_b.command(Mode.RECEIVE, lease_s=LEASE_S)
        await grid.sleep(5.0)
        grid.inject_voltage_drop("NODE_A", 0.45)
        await grid.wait_for(lambda: not node_a.physical.supply_closed, timeout_s=30.0)
        status = await client_a.get_status()
        assert status.last_trip is TripReason.LOW_VOLTAGE
        assert status.state in (NodeState.TRIPPED, NodeState.IDLE)
        assert node_a.physical.energy.fault_loss_j > 0.0
        await client_b.idle()


async def test_fault_injection_needs_a_known_started_node() -> None:
    grid = SimulatedGrid(_specs(50.0), speedup=SPEEDUP, seed=8)
    with pytest.raises(PeerGridValidationError) as err:
        grid.inject_voltage_drop("NODE_Z", 0.1)
    assert err.value.field == "uid"
    with pytest.raises(PeerGridError):
        grid.inject_sensor_fault("NODE_A")
    with pytest.raises(PeerGridError):
        grid.inject_sensor_reset("NODE_A")
    with pytest.raises(PeerGridError):
        _ = grid.nodes["NODE_A"].port  # not bound yet
    with pytest.raises(PeerGridError):
        await grid.start_node("NODE_A")  # the grid is not started


async def test_unauthenticated_bench_node() -> None:
    spec = NodeSpec(uid="BENCH", key="", bench_mode=True, soc_percent=80.0)
    async with SimulatedGrid([spec], speedup=SPEEDUP) as grid:
        node = grid.nodes["BENCH"]
        assert node.key_bytes is None
        hello = await _hello(node.host, node.port)
        assert hello["auth"] == "none"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"uid": "bad uid"}, "uid"),
        ({"uid": "A", "key": "short"}, "key"),
        ({"uid": "A", "soc_percent": 120.0}, "soc_percent"),
        ({"uid": "A", "port": 70000}, "port"),
        ({"uid": "A", "capacity_ah": 0.0}, "capacity_ah"),
    ],
)
def test_bad_node_specs_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(PeerGridValidationError) as err:
        NodeSpec(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_bad_grid_arguments_name_their_field() -> None:
    with pytest.raises(PeerGridValidationError) as err:
        SimulatedGrid([])
    assert err.value.field == "nodes"
    with pytest.raises(PeerGridValidationError) as err:
        SimulatedGrid([NodeSpec(uid="A"), NodeSpec(uid="A")])
    assert err.value.field == "nodes"
    with pytest.raises(PeerGridValidationError) as err:
        SimulatedGrid([NodeSpec(uid="A")], step_s=0.0)
    assert err.value.field == "step_s"
    with pytest.raises(PeerGridValidationError) as err:
        SimulatedGrid([NodeSpec(uid="A")], speedup=-1.0)
    assert err.value.field == "speedup"
    with pytest.raises(PeerGridValidationError) as err:
        SimulatedGrid([NodeSpec(uid="A")], noise_volts=1.0)
    assert err.value.field == "noise_volts"
    with pytest.raises(PeerGridValidationError) as err:
        SimulatedGrid([NodeSpec(uid="A")], step_s=0.5, max_lag_s=0.1)
    assert err.value.field == "max_lag_s"


def test_capacity_and_seeded_keys() -> None:
    first = SimulatedGrid([NodeSpec(uid="A", capacity_ah=3.4)], seed=9)
    second = SimulatedGrid([NodeSpec(uid="A", capacity_ah=3.4)], seed=9)
    assert first.nodes["A"].physics.params.cell.capacity_ah == 3.4
    assert first.nodes["A"].key == second.nodes["A"].key
    assert first.node("A") is first.nodes["A"]


async def test_missing_firmware_explains_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peergrid_node.node", None)
    grid = SimulatedGrid([NodeSpec(uid="A")], speedup=SPEEDUP)
    with pytest.raises(FirmwareNotFoundError, match="repository checkout"):
        await grid.start()


async def test_a_sensor_glitch_is_ridden_out() -> None:
    async with (
        SimulatedGrid(_specs(90.0, 20.0), speedup=SPEEDUP, seed=10) as grid,
        _client(grid, "NODE_A") as client_a,
        _client(grid, "NODE_B") as client_b,
    ):
        node_a = grid.nodes["NODE_A"]
        assert node_a.hardware is not None
        await grid.sleep(2.0)
        await client_a.command(Mode.SUPPLY, lease_s=LEASE_S)
        await client_b.command(Mode.RECEIVE, lease_s=LEASE_S)
        grid.inject_sensor_fault("NODE_A", transfers=1)
        await grid.sleep(5.0)
        assert node_a.hardware.i2c.failed_transfers == 1
        assert node_a.physical.supply_closed
        status = await client_a.get_status()
        assert status.last_trip is None
        assert status.mode is Mode.SUPPLY
        await client_a.idle()
        await client_b.idle()
        with pytest.raises(PeerGridValidationError) as err:
            grid.inject_sensor_fault("NODE_A", transfers=-1)
        assert err.value.field == "transfers"


async def test_firmware_config_errors_name_the_field() -> None:
    spec = NodeSpec(uid="NODE_A", config={"push_s": 0})
    grid = SimulatedGrid([spec], speedup=SPEEDUP)
    with pytest.raises(PeerGridValidationError) as err:
        await grid.start()
    assert err.value.field == "push_s"
    assert not grid.nodes["NODE_A"].running


async def test_a_stopped_grid_can_start_again_with_its_batteries() -> None:
    grid = SimulatedGrid(_specs(65.0), speedup=SPEEDUP, seed=11)
    async with grid:
        await grid.sleep(5.0)
        with pytest.raises(PeerGridError):
            await grid.start()  # already running
    soc = grid.nodes["NODE_A"].physical.soc_percent
    assert soc < 65.0  # the ESP32 drew from the cell
    with pytest.raises(PeerGridError):
        await grid.start_node("NODE_A")  # the grid is stopped
    async with grid:
        node = grid.nodes["NODE_A"]
        assert node.boots == 2
        assert node.physical.soc_percent == pytest.approx(soc, abs=0.01)
        hello = await _hello(node.host, node.port)
        assert hello["reset"] == "hard"
