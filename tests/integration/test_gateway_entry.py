"""Gateway entries: an edge gateway's nodes as devices, driven by the gateway's pings.

The pings go through the IoT hub exactly as the HTTP API records them
(``IotHub.async_record_ping``); one test posts a ping over HTTP end to end.
Home Assistant's clock is frozen and moved by hand, so the three-minute
timeouts are checked to the second without waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.config_entries import SOURCE_ZEROCONF, ConfigEntryState
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_fire_time_changed
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.peergrid import async_remove_config_entry_device
from custom_components.peergrid.const import CONF_DEVICE_ID, CONF_KIND, DOMAIN, EntryKind
from custom_components.peergrid.diagnostics import async_get_config_entry_diagnostics
from custom_components.peergrid.iot_hub import DATA_IOT_HUB, IotHub
from custom_components.peergrid.peergrid_core.payloads import HeartbeatPing, NodeDataPing

from .helpers import setup_entry, state_value

NOW = datetime(2026, 2, 23, 10, 0, tzinfo=UTC)
GATEWAY = "rpi-4b-prod-01"
OTHER_GATEWAY = "rpi-4b-prod-02"

type Node = tuple[str, float, float, str]
"""uid, voltage, state of charge, relay state: one node of a ping."""

NODE_A: Node = ("NODE_A", 3.921, 72.4, "IDLE")
NODE_B: Node = ("NODE_B", 3.61, 28.1, "RECEIVE")
NODE_C: Node = ("NODE_C", 4.05, 91.0, "SUPPLY")


def _ping(*nodes: Node, device_id: str = GATEWAY) -> NodeDataPing:
    """A node-data ping of ``device_id`` reporting ``nodes`` (the first one is primary)."""
    return NodeDataPing.model_validate(_ping_json(*nodes, device_id=device_id))


def _ping_json(*nodes: Node, device_id: str = GATEWAY) -> dict[str, Any]:
    _, voltage, soc, state = nodes[0]
    return {
        "device_id": device_id,
        "voltage": voltage,
        "battery_level": soc,
        "state": state,
        "source": "rpi_energy_grid",
        "timestamp": "2026-02-23T09:56:48Z",
        "connected_nodes_count": len(nodes),
        "connected_nodes": [{"uid": n[0], "voltage": n[1]} for n in nodes],
        "nodes_detail": [
            {"uid": n[0], "ip": f"192.168.1.{101 + i}", "voltage": n[1], "soc": n[2], "state": n[3]}
            for i, n in enumerate(nodes)
        ],
    }


@pytest.fixture
def clock(freezer: FrozenDateTimeFactory) -> FrozenDateTimeFactory:
    """Home Assistant's (and the hub's) clock, frozen at :data:`NOW`."""
    freezer.move_to(NOW)
    return freezer


@pytest.fixture
def gateway_entry() -> MockConfigEntry:
    """The entry of gateway :data:`GATEWAY`, as the zeroconf flow creates it."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=GATEWAY,
        unique_id=f"gateway:{GATEWAY}",
        data={CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: GATEWAY},
    )


@pytest.fixture
async def hub(
    hass: HomeAssistant, clock: FrozenDateTimeFactory, gateway_entry: MockConfigEntry
) -> IotHub:
    """The IoT hub, with the gateway entry set up and no ping received yet."""
    await setup_entry(hass, gateway_entry)
    assert gateway_entry.state is ConfigEntryState.LOADED
    return hass.data[DATA_IOT_HUB]


async def _record(hass: HomeAssistant, hub: IotHub, ping: NodeDataPing | HeartbeatPing) -> None:
    hub.async_record_ping(ping)
    await hass.async_block_till_done()


async def _advance(hass: HomeAssistant, clock: FrozenDateTimeFactory, delta: timedelta) -> None:
    """Move the clock and run what falls due (the gateway's availability checks)."""
    clock.tick(delta)
    async_fire_time_changed(hass)
    await hass.async_block_till_done()


def _entity_id(hass: HomeAssistant, uid: str, key: str) -> str | None:
    return er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{GATEWAY}_{uid}_{key}")


def _node_entity_ids(hass: HomeAssistant, uid: str) -> list[str]:
    ids = [_entity_id(hass, uid, key) for key in ("voltage", "battery", "node_state")]
    assert all(ids), f"{uid} lacks sensors: {ids}"
    return [entity_id for entity_id in ids if entity_id]


def hub_entry_id(hass: HomeAssistant) -> str:
    """The entry id of the gateway entry under test."""
    (entry,) = [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.data[CONF_KIND] == EntryKind.GATEWAY
    ]
    return entry.entry_id


def _node_device(hass: HomeAssistant, uid: str) -> dr.DeviceEntry | None:
    return dr.async_get(hass).async_get_device(identifiers={(DOMAIN, uid)})


# ----------------------------------------------------------------- discovery to entities


async def test_zeroconf_gateway_entry_shows_its_nodes(
    hass: HomeAssistant, clock: FrozenDateTimeFactory
) -> None:
    """Discovered, confirmed and set up for real: the first ping brings the nodes' sensors."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_ZEROCONF},
        data=ZeroconfServiceInfo(
            ip_address=ip_address("192.0.2.50"),
            ip_addresses=[ip_address("192.0.2.50")],
            port=0,
            hostname=f"peergrid-{GATEWAY}.local.",
            type="_peergrid._tcp.local.",
            name=f"{GATEWAY}._peergrid._tcp.local.",
            properties={"device_id": GATEWAY, "version": "0.3.0"},
        ),
    )
    assert result["step_id"] == "zeroconf_confirm"
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    entry = result["result"]
    assert entry.state is ConfigEntryState.LOADED

    await _record(hass, hass.data[DATA_IOT_HUB], _ping(NODE_A))
    voltage, _, _ = _node_entity_ids(hass, "NODE_A")
    assert state_value(hass, voltage) == "3.921"


async def test_node_data_ping_creates_devices_and_sensors(hass: HomeAssistant, hub: IotHub) -> None:
    """Each reported node is a device via the gateway, with the ping's values."""
    gateway = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, GATEWAY)})
    assert gateway is not None
    assert gateway.model == "Edge gateway (Raspberry Pi)"
    assert gateway.name == GATEWAY
    assert _entity_id(hass, "NODE_A", "voltage") is None

    await _record(hass, hub, _ping(NODE_A, NODE_B))

    for uid in ("NODE_A", "NODE_B"):
        device = _node_device(hass, uid)
        assert device is not None
        assert device.via_device_id == gateway.id
        assert device.name == uid
    voltage, battery, node_state = _node_entity_ids(hass, "NODE_A")
    assert state_value(hass, voltage) == "3.921"
    assert hass.states.get(voltage).attributes["unit_of_measurement"] == "V"  # type: ignore[union-attr]
    assert state_value(hass, battery) == "72.4"
    assert hass.states.get(battery).attributes["unit_of_measurement"] == "%"  # type: ignore[union-attr]
    assert state_value(hass, node_state) == "idle"
    assert hass.states.get(node_state).attributes["options"] == [  # type: ignore[union-attr]
        "idle",
        "supplying",
        "receiving",
    ]
    _, _, b_state = _node_entity_ids(hass, "NODE_B")
    assert state_value(hass, b_state) == "receiving"

    # Later pings update the values in place.
    await _record(hass, hub, _ping(("NODE_A", 3.8, 65.0, "SUPPLY"), NODE_B))
    assert state_value(hass, voltage) == "3.8"
    assert state_value(hass, battery) == "65.0"
    assert state_value(hass, node_state) == "supplying"


async def test_ping_over_http_reaches_the_entities(
    hass: HomeAssistant, hub: IotHub, hass_client: ClientSessionGenerator
) -> None:
    """The gateway's real path: POST /api/peergrid/iot/ping, then the sensors show it."""
    client = await hass_client()
    response = await client.post("/api/peergrid/iot/ping", json=_ping_json(NODE_C))
    assert response.status < 300, await response.text()
    await hass.async_block_till_done()
    _, battery, node_state = _node_entity_ids(hass, "NODE_C")
    assert state_value(hass, battery) == "91.0"
    assert state_value(hass, node_state) == "supplying"


async def test_entry_set_up_after_pings_starts_with_the_known_nodes(
    hass: HomeAssistant, clock: FrozenDateTimeFactory, gateway_entry: MockConfigEntry
) -> None:
    """A gateway that pinged before its entry was set up has its nodes at once."""
    other = MockConfigEntry(
        domain=DOMAIN,
        unique_id=f"gateway:{OTHER_GATEWAY}",
        data={CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: OTHER_GATEWAY},
    )
    await setup_entry(hass, other)
    await _record(hass, hass.data[DATA_IOT_HUB], _ping(NODE_A, NODE_B))

    await setup_entry(hass, gateway_entry)
    assert len(_node_entity_ids(hass, "NODE_B")) == 3


async def test_pings_of_other_gateways_are_ignored(hass: HomeAssistant, hub: IotHub) -> None:
    """Only the entry's own gateway adds nodes to it."""
    await _record(hass, hub, _ping(NODE_A, device_id=OTHER_GATEWAY))
    assert _entity_id(hass, "NODE_A", "voltage") is None
    assert _node_device(hass, "NODE_A") is None


# ----------------------------------------------------------------- dynamic and stale devices


async def test_a_node_that_joins_gets_its_device_without_a_reload(
    hass: HomeAssistant, hub: IotHub, gateway_entry: MockConfigEntry
) -> None:
    """A third node in a later ping gets a device and sensors; the others stay as they were."""
    await _record(hass, hub, _ping(NODE_A, NODE_B))
    before = _node_entity_ids(hass, "NODE_A")

    await _record(hass, hub, _ping(NODE_A, NODE_B, NODE_C))

    assert gateway_entry.state is ConfigEntryState.LOADED
    voltage, _, node_state = _node_entity_ids(hass, "NODE_C")
    assert state_value(hass, voltage) == "4.05"
    assert state_value(hass, node_state) == "supplying"
    assert _node_entity_ids(hass, "NODE_A") == before
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), gateway_entry.entry_id)
    assert len(devices) == 4  # the gateway and three nodes


async def test_a_node_left_out_for_three_minutes_is_removed(
    hass: HomeAssistant,
    hub: IotHub,
    clock: FrozenDateTimeFactory,
    gateway_entry: MockConfigEntry,
) -> None:
    """A node missing from the pings for over three minutes loses its device and sensors."""
    await _record(hass, hub, _ping(NODE_A, NODE_B, NODE_C))
    c_entities = _node_entity_ids(hass, "NODE_C")

    for _ in range(3):  # exactly three minutes without NODE_C: not yet stale
        await _advance(hass, clock, timedelta(minutes=1))
        await _record(hass, hub, _ping(NODE_A, NODE_B))
    assert _node_device(hass, "NODE_C") is not None
    # Still reported recently enough to exist, but no longer in the pings.
    assert state_value(hass, c_entities[0]) == STATE_UNAVAILABLE

    await _advance(hass, clock, timedelta(seconds=30))
    await _record(hass, hub, _ping(NODE_A, NODE_B))

    assert _node_device(hass, "NODE_C") is None
    registry = er.async_get(hass)
    assert all(registry.async_get(entity_id) is None for entity_id in c_entities)
    assert all(hass.states.get(entity_id) is None for entity_id in c_entities)
    assert _node_device(hass, "NODE_A") is not None

    # The node comes back: its device and sensors are added again.
    await _record(hass, hub, _ping(NODE_A, NODE_B, NODE_C))
    voltage, _, _ = _node_entity_ids(hass, "NODE_C")
    assert state_value(hass, voltage) == "4.05"


async def test_a_node_gone_while_home_assistant_was_down_is_removed(
    hass: HomeAssistant, clock: FrozenDateTimeFactory, gateway_entry: MockConfigEntry
) -> None:
    """A node device left from before a restart goes once the pings leave it out long enough."""
    gateway_entry.add_to_hass(hass)
    registry = dr.async_get(hass)
    registry.async_get_or_create(
        config_entry_id=gateway_entry.entry_id, identifiers={(DOMAIN, "NODE_OLD")}
    )
    await hass.config_entries.async_setup(gateway_entry.entry_id)
    await hass.async_block_till_done()
    hub = hass.data[DATA_IOT_HUB]

    await _record(hass, hub, _ping(NODE_A))
    await _advance(hass, clock, timedelta(minutes=3))
    await _record(hass, hub, _ping(NODE_A))
    assert _node_device(hass, "NODE_OLD") is not None

    await _advance(hass, clock, timedelta(seconds=30))
    await _record(hass, hub, _ping(NODE_A))
    assert _node_device(hass, "NODE_OLD") is None
    assert _node_device(hass, "NODE_A") is not None


async def test_a_stale_node_whose_device_is_already_gone(
    hass: HomeAssistant, hub: IotHub, clock: FrozenDateTimeFactory
) -> None:
    """A node device deleted in the meantime is simply forgotten when it turns stale."""
    await _record(hass, hub, _ping(NODE_A, NODE_B))
    device = _node_device(hass, "NODE_B")
    assert device is not None
    dr.async_get(hass).async_remove_device(device.id)
    await hass.async_block_till_done()

    await _advance(hass, clock, timedelta(minutes=3, seconds=30))
    await _record(hass, hub, _ping(NODE_A))
    entry = hass.config_entries.async_get_entry(hub_entry_id(hass))
    assert entry is not None
    assert "NODE_B" not in entry.runtime_data.nodes
    assert _node_device(hass, "NODE_A") is not None


async def test_a_silent_gateway_keeps_its_nodes(
    hass: HomeAssistant, hub: IotHub, clock: FrozenDateTimeFactory
) -> None:
    """Only the gateway's pings make a node stale: a gateway that is off loses no device."""
    await _record(hass, hub, _ping(NODE_A, NODE_B))
    await _advance(hass, clock, timedelta(minutes=10))
    await _record(hass, hub, HeartbeatPing(device_id=GATEWAY, status="heartbeat"))
    assert _node_device(hass, "NODE_A") is not None
    assert _node_device(hass, "NODE_B") is not None


async def test_removing_devices_by_hand(
    hass: HomeAssistant, hub: IotHub, gateway_entry: MockConfigEntry
) -> None:
    """The gateway and the nodes it reports stay; a node it no longer reports can go."""
    await _record(hass, hub, _ping(NODE_A))
    registry = dr.async_get(hass)
    stale = registry.async_get_or_create(
        config_entry_id=gateway_entry.entry_id, identifiers={(DOMAIN, "NODE_OLD")}
    )
    gateway = registry.async_get_device(identifiers={(DOMAIN, GATEWAY)})
    node_a = _node_device(hass, "NODE_A")
    assert gateway is not None
    assert node_a is not None

    assert not await async_remove_config_entry_device(hass, gateway_entry, gateway)
    assert not await async_remove_config_entry_device(hass, gateway_entry, node_a)
    assert await async_remove_config_entry_device(hass, gateway_entry, stale)


# ----------------------------------------------------------------- availability


async def test_entities_unavailable_after_three_silent_minutes(
    hass: HomeAssistant, hub: IotHub, clock: FrozenDateTimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """No ping for three minutes: every sensor is unavailable; the next ping brings them back."""
    await _record(hass, hub, _ping(NODE_A, NODE_B))
    entities = _node_entity_ids(hass, "NODE_A") + _node_entity_ids(hass, "NODE_B")

    await _advance(hass, clock, timedelta(minutes=2, seconds=50))
    assert all(state_value(hass, e) != STATE_UNAVAILABLE for e in entities)

    await _advance(hass, clock, timedelta(seconds=40))
    assert all(state_value(hass, e) == STATE_UNAVAILABLE for e in entities)
    assert f"Gateway {GATEWAY} sent nothing" in caplog.text

    await _record(hass, hub, _ping(NODE_A, NODE_B))
    assert all(state_value(hass, e) != STATE_UNAVAILABLE for e in entities)
    assert state_value(hass, entities[0]) == "3.921"
    assert f"Gateway {GATEWAY} is available again" in caplog.text


async def test_a_gateway_that_only_sent_a_heartbeat(hass: HomeAssistant, hub: IotHub) -> None:
    """A heartbeat before any node data: the gateway is known, with no node yet."""
    await _record(hass, hub, HeartbeatPing(device_id=GATEWAY, status="heartbeat"))
    devices = dr.async_entries_for_config_entry(dr.async_get(hass), hub_entry_id(hass))
    assert [device.name for device in devices] == [GATEWAY]

    await _record(hass, hub, _ping(NODE_A))
    assert len(_node_entity_ids(hass, "NODE_A")) == 3


async def test_a_heartbeat_keeps_the_gateway_available(
    hass: HomeAssistant, hub: IotHub, clock: FrozenDateTimeFactory
) -> None:
    """Any ping counts as a sign of life; the nodes keep their last readings."""
    await _record(hass, hub, _ping(NODE_A))
    voltage, _, _ = _node_entity_ids(hass, "NODE_A")
    for _ in range(4):
        await _advance(hass, clock, timedelta(minutes=2))
        await _record(hass, hub, HeartbeatPing(device_id=GATEWAY, status="heartbeat"))
    assert state_value(hass, voltage) == "3.921"
    assert _node_device(hass, "NODE_A") is not None


# ----------------------------------------------------------------- unload


async def test_unload_removes_the_listeners(
    hass: HomeAssistant, hub: IotHub, gateway_entry: MockConfigEntry
) -> None:
    """After unloading, pings reach nothing of the entry and its sensors are unavailable."""
    await _record(hass, hub, _ping(NODE_A))
    voltage, _, _ = _node_entity_ids(hass, "NODE_A")
    listeners = len(hub._listeners)  # the hub exposes no listener count

    assert await hass.config_entries.async_unload(gateway_entry.entry_id)
    await hass.async_block_till_done()
    assert gateway_entry.state is ConfigEntryState.NOT_LOADED
    assert len(hub._listeners) == listeners - 1

    await _record(hass, hub, _ping(NODE_A, NODE_C))
    assert _entity_id(hass, "NODE_C", "voltage") is None
    assert state_value(hass, voltage) == STATE_UNAVAILABLE

    # Set up again, it follows the pings from where the hub is.
    assert await hass.config_entries.async_setup(gateway_entry.entry_id)
    await hass.async_block_till_done()
    assert len(_node_entity_ids(hass, "NODE_C")) == 3


async def test_gateway_diagnostics(
    hass: HomeAssistant, hub: IotHub, gateway_entry: MockConfigEntry
) -> None:
    """A gateway entry's diagnostics list its nodes and whether it is online."""
    await _record(hass, hub, _ping(NODE_A, NODE_B))
    # Called directly: the frozen clock predates the test client's access token.
    diagnostics = await async_get_config_entry_diagnostics(hass, gateway_entry)
    assert diagnostics["online"] is True
    assert diagnostics["reported"] == ["NODE_A", "NODE_B"]
    assert diagnostics["nodes"]["NODE_A"]["voltage"] == 3.921
    assert diagnostics["entry"]["data"]["device_id"] == GATEWAY
