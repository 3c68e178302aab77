"""A PeerGrid node in Home Assistant, end to end against a simulated node over TCP."""

from __future__ import annotations

from datetime import timedelta
import logging

from homeassistant.components.select import (
    ATTR_OPTION,
    DOMAIN as SELECT_DOMAIN,
    SERVICE_SELECT_OPTION,
)
from homeassistant.components.switch import DOMAIN as SWITCH_DOMAIN
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import (
    ATTR_ENTITY_ID,
    CONF_HOST,
    CONF_PORT,
    EVENT_HOMEASSISTANT_STOP,
    SERVICE_TURN_OFF,
    SERVICE_TURN_ON,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
)
from homeassistant.core import HomeAssistant, State
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, mock_restore_cache
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from custom_components.peergrid.const import CONF_KEY, CONF_KIND, DOMAIN, EntryKind
from custom_components.peergrid.peergrid_core.errors import PeerGridProtocolError
from custom_components.peergrid.peergrid_core.protocol import Mode
from peergrid_core.protocol import Mode as SimMode, NodeClient
from peergrid_core.sim import SimulatedGrid
from peergrid_core.sim.physics import Relay

from .conftest import KEY_B
from .helpers import PROTO_2_HELLO, fake_device, node_entry, setup_entry, state_value, wait_until

MODE = "select.node_a_mode"
SUPPLY = "switch.node_a_supply"
RECEIVE = "switch.node_a_receive"
AUTO_BALANCE = "switch.node_a_auto_balance"
VOLTAGE = "sensor.node_a_voltage"
POWER = "sensor.node_a_power"
BATTERY = "sensor.node_a_battery"
NODE_STATE = "sensor.node_a_node_state"
LAST_TRIP = "sensor.node_a_last_trip"


async def _select(hass: HomeAssistant, option: str) -> None:
    await hass.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: MODE, ATTR_OPTION: option},
        blocking=True,
    )


async def _switch(hass: HomeAssistant, entity_id: str, service: str) -> None:
    await hass.services.async_call(
        SWITCH_DOMAIN, service, {ATTR_ENTITY_ID: entity_id}, blocking=True
    )


async def test_entities_show_the_simulated_node(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """Voltage and battery follow the simulated cell; the node starts idle."""
    await setup_entry(hass, node_a_entry)
    assert node_a_entry.state is ConfigEntryState.LOADED

    physical = sim_grid.nodes["NODE_A"].physical
    # Shown in volts (the suggested unit); the node reports millivolts.
    assert float(state_value(hass, VOLTAGE)) == pytest.approx(physical.terminal_volts, abs=0.03)
    # The node estimates its charge from the voltage; within a few points of the truth.
    assert float(state_value(hass, BATTERY)) == pytest.approx(physical.soc_percent, abs=5)
    assert state_value(hass, MODE) == "idle"
    assert state_value(hass, NODE_STATE) == "idle"
    assert state_value(hass, SUPPLY) == STATE_OFF
    assert state_value(hass, RECEIVE) == STATE_OFF


async def test_discharge_moves_the_supply_relay(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """Selecting discharge closes the SUPPLY relay and the power sensor follows."""
    await setup_entry(hass, node_a_entry)
    node = sim_grid.nodes["NODE_A"]

    await _select(hass, "discharge")
    assert node.physical.supply_closed
    assert not node.physical.receive_closed
    await wait_until(hass, lambda: state_value(hass, MODE) == "discharge")
    assert state_value(hass, SUPPLY) == STATE_ON
    assert state_value(hass, NODE_STATE) == "supplying"
    # The boost converter and the node's own draw take power out of the cell.
    await wait_until(hass, lambda: float(state_value(hass, POWER)) > 0.1)

    await _select(hass, "idle")
    assert not node.physical.supply_closed
    await wait_until(hass, lambda: state_value(hass, SUPPLY) == STATE_OFF)


async def test_relay_switches_are_interlocked(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """Turning Receive on while Supply is on goes through the node: never both."""
    await setup_entry(hass, node_a_entry)
    node = sim_grid.nodes["NODE_A"]

    await _switch(hass, SUPPLY, SERVICE_TURN_ON)
    assert node.physical.supply_closed
    await _switch(hass, RECEIVE, SERVICE_TURN_ON)
    physical = node.physical
    assert physical.receive_closed
    assert not physical.supply_closed
    await wait_until(hass, lambda: state_value(hass, RECEIVE) == STATE_ON)
    assert state_value(hass, SUPPLY) == STATE_OFF
    assert state_value(hass, MODE) == "charge"

    # Turning off the relay that is already off changes nothing.
    await _switch(hass, SUPPLY, SERVICE_TURN_OFF)
    assert node.physical.receive_closed
    await _switch(hass, RECEIVE, SERVICE_TURN_OFF)
    assert not node.physical.receive_closed


async def test_lease_is_held_while_the_mode_is_active(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """Home Assistant renews the lease, so the node stays in SUPPLY past one lease."""
    node_a_entry.add_to_hass(hass)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("custom_components.peergrid.coordinator.LEASE_SECONDS", 3)
        await hass.config_entries.async_setup(node_a_entry.entry_id)
        await hass.async_block_till_done()
    await _select(hass, "discharge")
    start = sim_grid.time_s
    await wait_until(hass, lambda: sim_grid.time_s > start + 3 * 3)
    assert sim_grid.nodes["NODE_A"].physical.supply_closed
    assert state_value(hass, NODE_STATE) == "supplying"


async def test_unload_and_stop_leave_the_node_idle(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """Unloading the entry (and Home Assistant stopping) opens the relays at once."""
    await setup_entry(hass, node_a_entry)
    node = sim_grid.nodes["NODE_A"]
    await _select(hass, "discharge")
    assert node.physical.supply_closed

    assert await hass.config_entries.async_unload(node_a_entry.entry_id)
    await hass.async_block_till_done()
    assert node_a_entry.state is ConfigEntryState.NOT_LOADED
    assert not node.physical.supply_closed
    assert node.firmware is not None
    assert node.firmware.mode == "IDLE"

    assert await hass.config_entries.async_setup(node_a_entry.entry_id)
    await hass.async_block_till_done()
    await _select(hass, "charge")
    assert node.physical.receive_closed
    hass.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    await wait_until(hass, lambda: not node.physical.receive_closed)


async def test_node_lost_and_back(
    hass: HomeAssistant,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Killing the node makes entities unavailable; restarting it restores them, logged once each."""
    caplog.set_level(logging.INFO, logger="custom_components.peergrid")
    await setup_entry(hass, node_a_entry)

    await sim_grid.stop_node("NODE_A")
    await wait_until(hass, lambda: state_value(hass, VOLTAGE) == STATE_UNAVAILABLE)
    assert state_value(hass, MODE) == STATE_UNAVAILABLE
    # A setting of Home Assistant's own stays usable.
    assert state_value(hass, AUTO_BALANCE) == STATE_ON

    # Home Assistant does not call unavailable entities; a command racing the
    # disconnect reaches the coordinator and is refused before anything is sent.
    with pytest.raises(HomeAssistantError) as err:
        await node_a_entry.runtime_data.async_hold(Mode.SUPPLY)
    assert err.value.translation_key == "node_unreachable"

    await sim_grid.start_node("NODE_A")
    # The client reconnects with backoff (first retry within two seconds).
    await wait_until(hass, lambda: state_value(hass, VOLTAGE) != STATE_UNAVAILABLE, max_wait=20)
    assert state_value(hass, MODE) == "idle"

    messages = [r.getMessage() for r in caplog.records if r.name.startswith("custom_components")]
    assert messages.count("Node NODE_A is unavailable") == 1
    assert messages.count("Node NODE_A is available again") == 1


async def test_refused_command_is_a_translated_error(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """A SUPPLY the node refuses (cell below its floor) raises and moves nothing."""
    await setup_entry(hass, node_a_entry)
    sim_grid.inject_voltage_drop("NODE_A", 0.9)
    await sim_grid.sleep(2)

    with pytest.raises(HomeAssistantError) as err:
        await _select(hass, "discharge")
    assert err.value.translation_key == "command_refused"
    assert err.value.translation_placeholders["reason"] == "low_voltage"
    assert not sim_grid.nodes["NODE_A"].physical.supply_closed


async def test_wrong_key_starts_reauth(hass: HomeAssistant, sim_grid: SimulatedGrid) -> None:
    """A key the node rejects fails setup and asks the user for the new key."""
    entry = node_entry(sim_grid, "NODE_A", key="not-the-right-key-for-node-a")
    await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress()
    assert [flow["context"]["source"] for flow in flows] == [SOURCE_REAUTH]
    assert flows[0]["context"]["entry_id"] == entry.entry_id


async def test_unreachable_node_retries_setup(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """A node that is off at start-up puts the entry in setup retry, not error."""
    await sim_grid.stop_node("NODE_A")
    await setup_entry(hass, node_a_entry)
    assert node_a_entry.state is ConfigEntryState.SETUP_RETRY


async def test_stuck_relay_raises_a_repair_issue(
    hass: HomeAssistant,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Current through a relay commanded open is reported for a person to fix."""
    await setup_entry(hass, node_a_entry)
    node_b = sim_grid.nodes["NODE_B"]
    async with NodeClient(node_b.host, node_b.port, KEY_B.encode()) as client_b:
        # NODE_B charges from the bus; NODE_A's welded SUPPLY contact feeds it
        # although NODE_A is IDLE.
        await client_b.command(SimMode.RECEIVE, lease_s=120)
        sim_grid.inject_stuck_relay("NODE_A", Relay.SUPPLY)
        await wait_until(hass, lambda: state_value(hass, LAST_TRIP) == "stuck_relay", max_wait=20)
        await client_b.idle()
    issue = issue_registry.async_get_issue(DOMAIN, "stuck_relay_NODE_A")
    assert issue is not None
    assert issue.translation_key == "stuck_relay"
    assert issue.severity is ir.IssueSeverity.ERROR

    # Repaired and rebooted: the node's trip record starts empty, the issue goes.
    sim_grid.inject_stuck_relay("NODE_A", Relay.SUPPLY, stuck=False)
    await sim_grid.stop_node("NODE_A")
    await sim_grid.start_node("NODE_A")
    await wait_until(
        hass,
        lambda: issue_registry.async_get_issue(DOMAIN, "stuck_relay_NODE_A") is None,
        max_wait=20,
    )


async def test_auto_balance_switch_is_restored(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """The Auto-balance setting survives a restart and toggles without the node."""
    mock_restore_cache(hass, [State(AUTO_BALANCE, STATE_OFF)])
    await setup_entry(hass, node_a_entry)
    assert state_value(hass, AUTO_BALANCE) == STATE_OFF
    assert node_a_entry.runtime_data.auto_balance is False

    await _switch(hass, AUTO_BALANCE, SERVICE_TURN_ON)
    assert state_value(hass, AUTO_BALANCE) == STATE_ON
    assert node_a_entry.runtime_data.auto_balance is True
    await _switch(hass, AUTO_BALANCE, SERVICE_TURN_OFF)
    assert node_a_entry.runtime_data.auto_balance is False


async def test_stale_devices_are_removed(
    hass: HomeAssistant,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """A device of the entry that is not its node disappears at setup."""
    node_a_entry.add_to_hass(hass)
    stale = device_registry.async_get_or_create(
        config_entry_id=node_a_entry.entry_id, identifiers={(DOMAIN, "OLD_NODE")}
    )
    await hass.config_entries.async_setup(node_a_entry.entry_id)
    await hass.async_block_till_done()

    assert device_registry.async_get(stale.id) is None
    node_device = device_registry.async_get_device(identifiers={(DOMAIN, "NODE_A")})
    assert node_device is not None
    assert node_device.manufacturer == "PeerGrid"
    assert node_device.serial_number == "NODE_A"
    assert node_device.sw_version == sim_grid.nodes["NODE_A"].hardware.fw_version


@pytest.mark.usefixtures("socket_enabled")
async def test_unsupported_protocol_is_a_repair_issue(
    hass: HomeAssistant, issue_registry: ir.IssueRegistry
) -> None:
    """A node speaking a newer protocol fails setup for good and asks for a firmware update."""
    async with fake_device(PROTO_2_HELLO) as port:
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="NODE_F",
            unique_id="NODE_F",
            data={
                CONF_KIND: EntryKind.NODE,
                CONF_HOST: "127.0.0.1",
                CONF_PORT: port,
                CONF_KEY: KEY_B,
            },
        )
        await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    issue = issue_registry.async_get_issue(DOMAIN, "unsupported_protocol_NODE_F")
    assert issue is not None
    assert issue.translation_placeholders == {"name": "NODE_F", "supported": "1"}


@pytest.mark.usefixtures("socket_enabled")
async def test_device_that_is_no_node_retries_setup(hass: HomeAssistant) -> None:
    """Something else answering at the node's address is a retry, not a hard error."""
    async with fake_device(b"SSH-2.0-OpenSSH_9.6\r\n") as port:
        entry = MockConfigEntry(
            domain=DOMAIN,
            title="NODE_G",
            unique_id="NODE_G",
            data={
                CONF_KIND: EntryKind.NODE,
                CONF_HOST: "127.0.0.1",
                CONF_PORT: port,
                CONF_KEY: KEY_B,
            },
        )
        await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.SETUP_RETRY


async def test_key_changed_on_the_node_starts_reauth(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """When the node comes back with another key, the user is asked for it."""
    await setup_entry(hass, node_a_entry)
    node = sim_grid.nodes["NODE_A"]
    await sim_grid.stop_node("NODE_A")
    node.key = "a-brand-new-key-for-node-a-0001"
    await sim_grid.start_node("NODE_A")
    await wait_until(
        hass,
        lambda: any(
            flow["context"]["source"] == SOURCE_REAUTH
            for flow in hass.config_entries.flow.async_progress()
        ),
        max_wait=20,
    )
    assert state_value(hass, VOLTAGE) == STATE_UNAVAILABLE


async def test_fallback_poll_marks_the_node_unavailable(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """The fallback poll fails while the node is gone and recovers when it is back."""
    await setup_entry(hass, node_a_entry)
    coordinator = node_a_entry.runtime_data
    await sim_grid.stop_node("NODE_A")
    await coordinator.async_refresh()
    assert not coordinator.last_update_success
    assert state_value(hass, VOLTAGE) == STATE_UNAVAILABLE

    await sim_grid.start_node("NODE_A")
    await wait_until(hass, lambda: coordinator.client.connected, max_wait=20)
    await coordinator.async_refresh()
    assert coordinator.last_update_success


async def test_protocol_failure_during_a_command_is_translated(
    hass: HomeAssistant,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply the client cannot use surfaces as a translated communication error."""
    await setup_entry(hass, node_a_entry)
    coordinator = node_a_entry.runtime_data

    async def unusable_reply(mode: Mode) -> None:
        raise PeerGridProtocolError("unusable reply: unknown field")

    # The simulated firmware always answers well-formed frames; stand in for a
    # node that does not, at the one seam below the integration.
    monkeypatch.setattr(coordinator.lease, "hold", unusable_reply)
    with pytest.raises(HomeAssistantError) as err:
        await _select(hass, "discharge")
    assert err.value.translation_key == "communication_error"
    assert not sim_grid.nodes["NODE_A"].physical.supply_closed


async def test_push_first_with_a_slow_fallback_poll(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """The node pushes; the coordinator only polls every five minutes as a fallback."""
    await setup_entry(hass, node_a_entry)
    coordinator = node_a_entry.runtime_data
    assert coordinator.update_interval == timedelta(minutes=5)
    before = coordinator.data.status
    # A push arrives without any poll: the node reports its status on its own.
    await wait_until(hass, lambda: coordinator.data.status is not before, max_wait=20)


async def test_unload_removes_every_subscription(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """After unload, node pushes no longer reach Home Assistant and the session is closed."""
    await setup_entry(hass, node_a_entry)
    coordinator = node_a_entry.runtime_data
    updates: list[object] = []
    coordinator.async_add_listener(lambda: updates.append(coordinator.data))

    assert await hass.config_entries.async_unload(node_a_entry.entry_id)
    await hass.async_block_till_done()
    updates.clear()
    await sim_grid.sleep(6)  # longer than the node's push period
    assert updates == []
    assert not coordinator.client.connected


async def test_only_stale_devices_can_be_removed(
    hass: HomeAssistant,
    hass_ws_client: WebSocketGenerator,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """The user may delete a device the node no longer is, never the live node."""
    assert await async_setup_component(hass, "config", {})
    await setup_entry(hass, node_a_entry)
    live = device_registry.async_get_device(identifiers={(DOMAIN, "NODE_A")})
    assert live is not None
    stale = device_registry.async_get_or_create(
        config_entry_id=node_a_entry.entry_id, identifiers={(DOMAIN, "GONE")}
    )
    client = await hass_ws_client(hass)

    for device, allowed in ((live, False), (stale, True)):
        await client.send_json_auto_id(
            {
                "type": "config/device_registry/remove_config_entry",
                "config_entry_id": node_a_entry.entry_id,
                "device_id": device.id,
            }
        )
        response = await client.receive_json()
        assert response["success"] is allowed
    assert device_registry.async_get(live.id) is not None
    assert device_registry.async_get(stale.id) is None
