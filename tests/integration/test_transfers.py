"""Transfers, auto-balance and their records in Home Assistant, against simulated nodes.

The grid runs sped up so that watt-hours move in seconds; the nodes' leases
are in simulated time, so these tests ask for the longest lease the protocol
allows (Home Assistant renews at a third of it, in real time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from homeassistant.config_entries import SOURCE_SYSTEM
from homeassistant.core import Event, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import device_registry as dr
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import voluptuous as vol

from custom_components.peergrid.const import (
    CONF_KIND,
    DOMAIN,
    EVENT_TRANSFER_ABORTED,
    EVENT_TRANSFER_COMPLETED,
    EVENT_TRANSFER_PROGRESS,
    EVENT_TRANSFER_STARTED,
    EntryKind,
)
from custom_components.peergrid.grid import DATA_GRID, STORAGE_KEY, PeerGridGrid
from peergrid_core.sim import NodeSpec, SimulatedGrid

from .helpers import node_entry, setup_entry, state_value, wait_until

SPEEDUP = 100.0


def _key(uid: str) -> str:
    return f"{uid.lower()}-key-0123456789abcdef"


def _spec(uid: str, soc: float) -> NodeSpec:
    return NodeSpec(uid=uid, key=_key(uid), soc_percent=soc, limits={"lease_max_s": 3600})


@pytest.fixture(autouse=True)
def long_lease() -> Iterator[None]:
    """The longest lease: simulated time runs a hundred times faster than renewals."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("custom_components.peergrid.coordinator.LEASE_SECONDS", 3600)
        yield


async def _grid(specs: list[NodeSpec]) -> SimulatedGrid:
    grid = SimulatedGrid(specs, speedup=SPEEDUP, seed=3)
    await grid.start()
    return grid


async def _add_nodes(hass: HomeAssistant, grid: SimulatedGrid) -> dict[str, MockConfigEntry]:
    entries = {}
    for uid in grid.nodes:
        entry = node_entry(grid, uid)
        await setup_entry(hass, entry)
        entries[uid] = entry
    return entries


@pytest.fixture
async def pair_grid(socket_enabled: None) -> AsyncIterator[SimulatedGrid]:
    """A full sender and an empty receiver, running a hundred times faster than life."""
    grid = await _grid([_spec("NODE_A", 95.0), _spec("NODE_B", 25.0)])
    try:
        yield grid
    finally:
        await grid.stop()


def _capture(hass: HomeAssistant) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = {}
    for name in (
        EVENT_TRANSFER_STARTED,
        EVENT_TRANSFER_PROGRESS,
        EVENT_TRANSFER_COMPLETED,
        EVENT_TRANSFER_ABORTED,
    ):

        def _record(event: Event, name: str = name) -> None:
            events.setdefault(name, []).append(dict(event.data))

        hass.bus.async_listen(name, _record)
    return events


def _device_id(hass: HomeAssistant, uid: str) -> str:
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, uid)})
    assert device is not None
    return device.id


async def _start(hass: HomeAssistant, **data: Any) -> dict[str, Any]:
    response = await hass.services.async_call(
        DOMAIN, "start_transfer", data, blocking=True, return_response=True
    )
    assert isinstance(response, dict)
    return response


async def test_transfer_moves_energy_and_stops_by_itself(
    hass: HomeAssistant, pair_grid: SimulatedGrid
) -> None:
    """5 Wh leave A for B; the transfer stops at the target with the loss recorded."""
    await _add_nodes(hass, pair_grid)
    events = _capture(hass)
    sender, receiver = pair_grid.nodes["NODE_A"], pair_grid.nodes["NODE_B"]
    out_before = sender.physical.energy.as_wh()["terminal_out_wh"]

    started = await _start(
        hass,
        sender=_device_id(hass, "NODE_A"),
        receiver=_device_id(hass, "NODE_B"),
        energy_wh=5,
    )
    assert started["state"] == "active"
    assert (started["sender"], started["receiver"]) == ("NODE_A", "NODE_B")
    assert sender.physical.supply_closed
    assert receiver.physical.receive_closed
    await wait_until(
        hass, lambda: state_value(hass, "sensor.node_a_transfer_progress") != "unknown"
    )

    # About 40 simulated minutes; the bound only stops a broken test on a loaded machine.
    await wait_until(hass, lambda: EVENT_TRANSFER_COMPLETED in events, max_wait=300)
    (record,) = events[EVENT_TRANSFER_COMPLETED]
    assert record["transfer_id"] == started["transfer_id"]
    assert record["stop_reason"] == "target_reached"
    assert record["wh_out"] >= 5.0
    assert 0 < record["wh_in"] < record["wh_out"]
    assert record["loss_wh"] == pytest.approx(record["wh_out"] - record["wh_in"], abs=1e-6)
    assert record["avg_voltage_v"] > 3.3
    assert record["sender_device_id"] == _device_id(hass, "NODE_A")
    assert events[EVENT_TRANSFER_STARTED][0]["transfer_id"] == started["transfer_id"]
    assert events.get(EVENT_TRANSFER_PROGRESS), "progress is announced while it runs"

    # Both nodes are idle again, and the physics agrees with the books.
    await wait_until(hass, lambda: not sender.physical.supply_closed)
    assert not receiver.physical.receive_closed
    # The node meters on its side of the shunt, the physics at the cell's
    # terminals: the two books agree to within the shunt's share.
    out_during = sender.physical.energy.as_wh()["terminal_out_wh"] - out_before
    assert out_during == pytest.approx(record["wh_out"], rel=0.1)

    # The totals are Energy-dashboard counters on each node.
    assert float(state_value(hass, "sensor.node_a_energy_shared_to_peers")) == pytest.approx(
        record["wh_out"] / 1000, abs=1e-3
    )
    assert float(state_value(hass, "sensor.node_b_energy_received_from_peers")) == pytest.approx(
        record["wh_in"] / 1000, abs=1e-3
    )

    history = await hass.services.async_call(
        DOMAIN, "get_transfers", {}, blocking=True, return_response=True
    )
    assert [t["transfer_id"] for t in history["transfers"]] == [started["transfer_id"]]


async def test_low_voltage_trip_ends_the_transfer(
    hass: HomeAssistant, pair_grid: SimulatedGrid
) -> None:
    """A sender falling below 3.3 V mid-transfer ends it with that reason; both go idle."""
    await _add_nodes(hass, pair_grid)
    events = _capture(hass)
    await _start(hass, sender="NODE_A", receiver="NODE_B", energy_wh=50)
    pair_grid.inject_voltage_drop("NODE_A", 0.75)

    await wait_until(hass, lambda: EVENT_TRANSFER_ABORTED in events, max_wait=60)
    (record,) = events[EVENT_TRANSFER_ABORTED]
    assert record["stop_reason"] == "sender_low_voltage"
    assert record["trip_reason"] == "low_voltage"
    physical_a = pair_grid.nodes["NODE_A"].physical
    physical_b = pair_grid.nodes["NODE_B"].physical
    for physical in (physical_a, physical_b):
        assert not physical.supply_closed
        assert not physical.receive_closed
    assert state_value(hass, "sensor.node_a_last_trip") == "low_voltage"


async def test_stop_transfer_on_request(hass: HomeAssistant, pair_grid: SimulatedGrid) -> None:
    """stop_transfer ends a running transfer as completed on request."""
    await _add_nodes(hass, pair_grid)
    started = await _start(hass, sender="NODE_A", receiver="NODE_B", energy_wh=50)
    response = await hass.services.async_call(
        DOMAIN,
        "stop_transfer",
        {"transfer_id": started["transfer_id"]},
        blocking=True,
        return_response=True,
    )
    (stopped,) = response["stopped"]
    assert stopped["stop_reason"] == "requested"
    assert stopped["state"] == "completed"
    assert not pair_grid.nodes["NODE_A"].physical.supply_closed
    assert state_value(hass, "sensor.peergrid_grid_active_transfers") == "0"

    with pytest.raises(ServiceValidationError) as err:
        await hass.services.async_call(
            DOMAIN, "stop_transfer", {"transfer_id": started["transfer_id"]}, blocking=True
        )
    assert err.value.translation_key == "unknown_transfer"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sender": "NODE_A", "receiver": "NODE_A"}, "transfer_same_node"),
        ({"sender": "NODE_X", "receiver": "NODE_B"}, "unknown_node"),
        ({"sender": "NODE_B", "receiver": "NODE_A"}, None),  # refused: see below
    ],
)
async def test_bad_requests_move_nothing(
    hass: HomeAssistant, pair_grid: SimulatedGrid, data: dict[str, Any], key: str | None
) -> None:
    """Refused requests raise translated errors and no relay moves."""
    await _add_nodes(hass, pair_grid)
    if key is None:
        # NODE_B (25 %) could send, but NODE_A (95 %) is already full.
        key = "transfer_receiver_full"
    with pytest.raises(ServiceValidationError) as err:
        await _start(hass, **data)
    assert err.value.translation_key == key
    for node in pair_grid.nodes.values():
        assert not node.physical.supply_closed
        assert not node.physical.receive_closed
    assert hass.data[DATA_GRID].active_count == 0


@pytest.mark.parametrize("energy", [0, -1, 1000, "lots"])
async def test_out_of_range_energy_is_refused_by_the_schema(
    hass: HomeAssistant, pair_grid: SimulatedGrid, energy: object
) -> None:
    """Zero, negative, huge or non-numeric energy never reaches a node."""
    await _add_nodes(hass, pair_grid)
    with pytest.raises(vol.Invalid):
        await _start(hass, sender="NODE_A", receiver="NODE_B", energy_wh=energy)
    assert not pair_grid.nodes["NODE_A"].physical.supply_closed


async def test_busy_and_offline_nodes_are_refused(
    hass: HomeAssistant, pair_grid: SimulatedGrid
) -> None:
    """A node already in a transfer, or one that is offline, cannot start another."""
    await _add_nodes(hass, pair_grid)
    await _start(hass, sender="NODE_A", receiver="NODE_B", energy_wh=50)
    with pytest.raises(ServiceValidationError) as err:
        await _start(hass, sender="NODE_A", receiver="NODE_B")
    assert err.value.translation_key == "transfer_sender_busy"
    await hass.services.async_call(DOMAIN, "stop_transfer", {}, blocking=True)

    await pair_grid.stop_node("NODE_B")
    await wait_until(hass, lambda: state_value(hass, "sensor.node_b_voltage") == "unavailable")
    with pytest.raises(ServiceValidationError) as err:
        await _start(hass, sender="NODE_A", receiver="NODE_B")
    assert err.value.translation_key == "transfer_receiver_offline"
    assert not pair_grid.nodes["NODE_A"].physical.supply_closed


async def test_restart_mid_transfer_keeps_the_record(
    hass: HomeAssistant, pair_grid: SimulatedGrid, hass_storage: dict[str, Any]
) -> None:
    """A transfer running when Home Assistant stops is closed with its measured energy."""
    await _add_nodes(hass, pair_grid)
    started = await _start(hass, sender="NODE_A", receiver="NODE_B", energy_wh=50)
    grid = hass.data[DATA_GRID]

    def moved() -> float:
        record = grid.active_transfer("NODE_A")
        return record.wh_out if record is not None else 0.0

    await wait_until(hass, lambda: moved() > 0.05, max_wait=30)
    measured = grid.active_transfer("NODE_A")
    assert measured is not None

    # What a crash leaves behind: the last progress written, still "active".
    await grid._store.async_save(grid._serialise())
    stored = hass_storage[STORAGE_KEY]["data"]["transfers"]
    assert stored[-1]["state"] == "active"

    events = _capture(hass)
    restarted = PeerGridGrid(hass)
    await restarted.async_load()
    (record,) = restarted.transfers(limit=1)
    assert record.transfer_id == started["transfer_id"]
    assert record.stop_reason == "interrupted"
    assert record.state == "aborted"
    assert record.wh_out >= measured.wh_out > 0
    assert hass_storage[STORAGE_KEY]["data"]["transfers"][-1]["stop_reason"] == "interrupted"
    await hass.async_block_till_done()
    assert [e["transfer_id"] for e in events[EVENT_TRANSFER_ABORTED]] == [started["transfer_id"]]
    assert restarted.totals("NODE_A").shared_wh == pytest.approx(record.wh_out)


async def test_grid_entry_and_thresholds(hass: HomeAssistant, pair_grid: SimulatedGrid) -> None:
    """The grid entry appears with the first node; its options are validated thresholds."""
    await _add_nodes(hass, pair_grid)
    await hass.async_block_till_done()
    (grid_entry,) = [
        e for e in hass.config_entries.async_entries(DOMAIN) if e.data[CONF_KIND] == "grid"
    ]
    assert grid_entry.unique_id == "grid"
    assert float(state_value(hass, "sensor.peergrid_grid_soc_spread")) > 50
    assert state_value(hass, "sensor.peergrid_grid_nodes_online") == "2"

    result = await hass.config_entries.options.async_init(grid_entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    # Each value within its own range, but low and high collide.
    bad = {**hass.data[DATA_GRID].thresholds.as_dict(), "soc_low": 50, "soc_high": 50}
    result = await hass.config_entries.options.async_configure(result["flow_id"], bad)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"soc_high": "invalid_threshold"}
    good = {**hass.data[DATA_GRID].thresholds.as_dict(), "balance_deadband": 25}
    result = await hass.config_entries.options.async_configure(result["flow_id"], good)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert hass.data[DATA_GRID].thresholds.balance_deadband == 25

    # A second system flow never makes a second grid entry.
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_SYSTEM}, data={CONF_KIND: EntryKind.GRID}
    )
    assert result["type"] is FlowResultType.ABORT
    # Node entries have no options: they are reconfigured instead.
    node_entry = hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, "NODE_A")
    assert node_entry is not None
    assert not node_entry.supports_options


TEN_NODES = {
    "N01": 95.0,
    "N02": 88.0,
    "N03": 75.0,
    "N04": 72.0,
    "N05": 60.0,
    "N06": 45.0,
    "N07": 38.0,
    "N08": 30.0,
    "N09": 18.0,
    "N10": 12.0,
}


@pytest.fixture
async def ten_grid(socket_enabled: None) -> AsyncIterator[SimulatedGrid]:
    """Ten nodes spread from 12 % to 95 %."""
    grid = await _grid([_spec(uid, soc) for uid, soc in TEN_NODES.items()])
    try:
        yield grid
    finally:
        await grid.stop()


async def test_auto_balance_on_ten_nodes(hass: HomeAssistant, ten_grid: SimulatedGrid) -> None:
    """The plan pairs what the thresholds imply, and running it starts exactly those transfers.

    With the defaults (critical 20, low 40, high 70, full 90, gap 15): donors are
    N01 95, N02 88, N03 75, N04 72; receivers N10 12 and N09 18 (critical, first),
    then N08 30, N07 38. Fullest free donor to each receiver in order:
    N01->N10, N02->N09, N03->N08, N04->N07. N05 and N06 stay out.
    The node SoCs are the nodes' own estimates, so the test waits until they
    have settled to the same ranks.
    """
    await _add_nodes(hass, ten_grid)
    dry = await hass.services.async_call(
        DOMAIN, "auto_balance", {"dry_run": True}, blocking=True, return_response=True
    )
    pairs = [(p["donor"], p["receiver"]) for p in dry["pairs"]]
    assert pairs == [("N01", "N10"), ("N02", "N09"), ("N03", "N08"), ("N04", "N07")]
    assert [p["priority"] for p in dry["pairs"]] == ["critical", "critical", "normal", "normal"]
    assert dry["started"] == []
    assert all(not n.physical.supply_closed for n in ten_grid.nodes.values())

    run = await hass.services.async_call(
        DOMAIN, "auto_balance", {"energy_wh": 0.2}, blocking=True, return_response=True
    )
    assert [(t["sender"], t["receiver"]) for t in run["started"]] == pairs
    grid = hass.data[DATA_GRID]
    await wait_until(hass, lambda: grid.active_count == 0, max_wait=60)
    done = grid.transfers(limit=10)
    assert sorted((t.sender, t.receiver) for t in done) == sorted(pairs)
    assert {(t.stop_reason, t.trip_reason) for t in done} == {("target_reached", None)}, [
        (t.sender, t.stop_reason, t.trip_reason, t.wh_out) for t in done
    ]
    # The physics saw the same: donors fed the bus, receivers charged, the rest did nothing.
    for donor, receiver in pairs:
        assert ten_grid.nodes[donor].physical.energy.boost_out_j > 0
        assert ten_grid.nodes[receiver].physical.energy.charger_out_j > 0
    for idle in ("N05", "N06"):
        books = ten_grid.nodes[idle].physical.energy
        assert books.boost_out_j == books.charger_out_j == 0


async def test_auto_balance_skips_opted_out_nodes(
    hass: HomeAssistant, pair_grid: SimulatedGrid
) -> None:
    """A node whose Auto-balance switch is off is never paired."""
    entries = await _add_nodes(hass, pair_grid)
    entries["NODE_B"].runtime_data.auto_balance = False
    plan = await hass.services.async_call(
        DOMAIN, "auto_balance", {"dry_run": True}, blocking=True, return_response=True
    )
    assert plan["pairs"] == []
    assert plan["skipped_reason"] == "not_enough_nodes"


async def test_drained_sender_is_refused(hass: HomeAssistant, pair_grid: SimulatedGrid) -> None:
    """A sender whose cell has sagged below its floor is refused before anything moves."""
    await _add_nodes(hass, pair_grid)
    pair_grid.inject_voltage_drop("NODE_A", 0.9)
    await pair_grid.sleep(10)  # the next status push carries the sagged cell
    await wait_until(hass, lambda: float(state_value(hass, "sensor.node_a_voltage")) < 3.3)
    with pytest.raises(ServiceValidationError) as err:
        await _start(hass, sender="NODE_A", receiver="NODE_B", energy_wh=0.2)
    assert err.value.translation_key in {"transfer_sender_low_voltage", "transfer_sender_low_soc"}
    assert not pair_grid.nodes["NODE_A"].physical.supply_closed
    assert not pair_grid.nodes["NODE_B"].physical.receive_closed


async def test_duration_only_transfer_and_running_list(
    hass: HomeAssistant, pair_grid: SimulatedGrid
) -> None:
    """A transfer with only a duration runs until it; get_transfers lists it while it runs."""
    await _add_nodes(hass, pair_grid)
    events = _capture(hass)
    started = await _start(hass, sender="NODE_A", receiver="NODE_B", duration={"seconds": 2})
    assert started["requested_wh"] is None
    assert started["requested_duration_s"] == 2
    running = await hass.services.async_call(
        DOMAIN, "get_transfers", {"active_only": True}, blocking=True, return_response=True
    )
    assert [t["transfer_id"] for t in running["transfers"]] == [started["transfer_id"]]
    assert running["transfers"][0]["progress_pct"] is None

    await wait_until(hass, lambda: EVENT_TRANSFER_COMPLETED in events, max_wait=30)
    (record,) = events[EVENT_TRANSFER_COMPLETED]
    assert record["stop_reason"] == "duration_reached"
    assert record["wh_out"] > 0


async def test_home_assistant_stop_interrupts_running_transfers(
    hass: HomeAssistant, pair_grid: SimulatedGrid, hass_storage: dict[str, Any]
) -> None:
    """Stopping Home Assistant leaves both nodes idle and the record closed as interrupted."""
    await _add_nodes(hass, pair_grid)
    events = _capture(hass)
    started = await _start(hass, sender="NODE_A", receiver="NODE_B", energy_wh=50)
    await hass.data[DATA_GRID].async_shutdown()
    (record,) = events[EVENT_TRANSFER_ABORTED]
    assert record["transfer_id"] == started["transfer_id"]
    assert record["stop_reason"] == "interrupted"
    assert not pair_grid.nodes["NODE_A"].physical.supply_closed
    assert not pair_grid.nodes["NODE_B"].physical.receive_closed
    stored = hass_storage[STORAGE_KEY]["data"]["transfers"]
    assert stored[-1]["stop_reason"] == "interrupted"


async def test_transfers_publish_the_schedule_event(
    hass: HomeAssistant, pair_grid: SimulatedGrid
) -> None:
    """Starting and ending a transfer publishes the specification's schedule event."""
    await _add_nodes(hass, pair_grid)
    schedules: list[dict[str, Any]] = []
    hass.bus.async_listen("peergrid_iot_schedule", lambda e: schedules.append(dict(e.data)))
    await _start(hass, sender="NODE_A", receiver="NODE_B", energy_wh=50)
    await hass.async_block_till_done()
    commands = {c["uid"]: c["action"] for c in schedules[-1]["commands"]}
    assert commands == {"NODE_A": "discharge", "NODE_B": "charge"}
    assert schedules[-1]["device_id"] == "peergrid-grid"
    assert schedules[-1]["grid_summary"]["node_count"] == 2

    await hass.services.async_call(DOMAIN, "stop_transfer", {}, blocking=True)
    await hass.async_block_till_done()
    commands = {c["uid"]: c["action"] for c in schedules[-1]["commands"]}
    assert commands == {"NODE_A": "idle", "NODE_B": "idle"}
