"""A gateway's nodes driven from Home Assistant: switches, the mode select and transfers.

The gateway is played by :class:`PingingGateway`, which answers every
``schedule`` event Home Assistant publishes for it the way the edge gateway
does: it applies the commands to its nodes and sends a node-data ping through
the IoT hub (as the HTTP API records it). Energy moves when the test says so.
``test_gateway_e2e.py`` runs the same paths against the real gateway process
over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.peergrid.const import (
    CONF_DEVICE_ID,
    CONF_KIND,
    DOMAIN,
    EVENT_TRANSFER_COMPLETED,
    EntryKind,
)
from custom_components.peergrid.grid import DATA_GRID
from custom_components.peergrid.iot_hub import DATA_IOT_HUB, EVENT_IOT_SCHEDULE, IotHub
from custom_components.peergrid.peergrid_core.payloads import NodeDataPing

from .helpers import setup_entry, state_value, wait_until

GATEWAY = "rpi-4b-prod-01"
MODES = {"discharge": "SUPPLY", "charge": "RECEIVE", "idle": "IDLE"}


@dataclass(kw_only=True)
class Node:
    """One node behind the played gateway."""

    uid: str
    voltage: float
    soc: float
    state: str = "IDLE"
    e_out_mwh: int = 0
    e_in_mwh: int = 0
    uptime_s: int = 500
    trip: str | None = None
    limit_mwh: int | None = None
    metered: bool = True
    reported: bool = True


@dataclass(kw_only=True)
class PingingGateway:
    """Answers Home Assistant's schedules with node-data pings, like the edge gateway."""

    hass: HomeAssistant
    nodes: dict[str, Node]
    schedules: list[dict[str, Any]] = field(default_factory=list)
    deaf: bool = False

    def start(self) -> None:
        self.hass.bus.async_listen(EVENT_IOT_SCHEDULE, self._on_schedule)

    @callback
    def _on_schedule(self, event: Event) -> None:
        if event.data["device_id"] != GATEWAY:
            return
        self.schedules.append(dict(event.data))
        if self.deaf:
            return
        for command in event.data["commands"]:
            node = self.nodes[command["uid"]]
            state = MODES[command["action"]]
            if state != node.state:
                node.trip = None
                node.limit_mwh = command.get("limit_mwh") if state != "IDLE" else None
            node.state = state
        # After applying, the gateway pings (outside the event's dispatch).
        self.hass.loop.call_soon(self.ping)

    def ping(self) -> None:
        reported = [node for node in self.nodes.values() if node.reported]
        details = [
            {
                "uid": node.uid,
                "ip": f"192.168.1.{101 + index}",
                "voltage": node.voltage,
                "soc": node.soc,
                "state": node.state,
            }
            | (
                {
                    "telemetry": {
                        "e_out_mwh": node.e_out_mwh,
                        "e_in_mwh": node.e_in_mwh,
                        "uptime_s": node.uptime_s,
                        "ma": 1500 if node.state == "SUPPLY" else 0,
                        "mw": 5900 if node.state == "SUPPLY" else 0,
                        "trip": node.trip,
                        "limit_mwh": node.limit_mwh,
                    }
                }
                if node.metered
                else {}
            )
            for index, node in enumerate(reported)
        ]
        first = details[0]
        hub: IotHub = self.hass.data[DATA_IOT_HUB]
        hub.async_record_ping(
            NodeDataPing.model_validate(
                {
                    "device_id": GATEWAY,
                    "voltage": first["voltage"],
                    "battery_level": first["soc"],
                    "state": first["state"],
                    "source": "rpi_energy_grid",
                    "timestamp": "2026-02-23T09:56:48Z",
                    "connected_nodes_count": len(details),
                    "connected_nodes": [
                        {"uid": d["uid"], "voltage": d["voltage"]} for d in details
                    ],
                    "nodes_detail": details,
                }
            )
        )

    def move(self, mwh: int) -> None:
        """The supplying node gives ``mwh``, the charging one takes 90 % of it; then a ping."""
        for node in self.nodes.values():
            if node.state == "SUPPLY":
                node.e_out_mwh += mwh
            elif node.state == "RECEIVE":
                node.e_in_mwh += mwh * 9 // 10
        self.ping()


@pytest.fixture(autouse=True)
def quick_commands() -> Iterator[None]:
    """A gateway that does not answer is given up on quickly."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("custom_components.peergrid.gateway.COMMAND_TIMEOUT_S", 0.3)
        yield


@pytest.fixture
async def gateway_entry(hass: HomeAssistant) -> MockConfigEntry:
    """PeerGrid with the gateway's entry set up."""
    assert await async_setup_component(hass, DOMAIN, {})
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=GATEWAY,
        unique_id=f"gateway:{GATEWAY}",
        data={CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: GATEWAY},
    )
    await setup_entry(hass, entry)
    return entry


@pytest.fixture
async def gateway(hass: HomeAssistant, gateway_entry: MockConfigEntry) -> PingingGateway:
    """The played gateway with a full NODE_A and an empty NODE_B, after its first ping."""
    played = PingingGateway(
        hass=hass,
        nodes={
            "NODE_A": Node(uid="NODE_A", voltage=3.95, soc=85.0, e_out_mwh=4_000),
            "NODE_B": Node(uid="NODE_B", voltage=3.6, soc=25.0),
        },
    )
    played.start()
    played.ping()
    await hass.async_block_till_done()
    return played


def _entity(hass: HomeAssistant, platform: str, uid: str, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{GATEWAY}_{uid}_{key}")
    assert entity_id is not None, f"{platform} {uid} {key} does not exist"
    return entity_id


def _actions(schedule: dict[str, Any]) -> dict[str, str]:
    return {command["uid"]: command["action"] for command in schedule["commands"]}


# ----------------------------------------------------------------- entities


async def test_gateway_nodes_have_the_direct_nodes_entities(
    hass: HomeAssistant, gateway: PingingGateway
) -> None:
    """Telemetry brings the energy, current and power sensors; relays and mode are controls."""
    energy = _entity(hass, "sensor", "NODE_A", "energy_supplied")
    assert state_value(hass, energy) == "0.004"  # 4 Wh, shown in kWh
    assert hass.states.get(energy).attributes["device_class"] == "energy"  # type: ignore[union-attr]
    assert state_value(hass, _entity(hass, "sensor", "NODE_A", "energy_received")) == "0.0"
    assert state_value(hass, _entity(hass, "sensor", "NODE_A", "current")) == "0.0"
    assert state_value(hass, _entity(hass, "sensor", "NODE_A", "power")) == "0.0"
    assert state_value(hass, _entity(hass, "sensor", "NODE_A", "stability_score")) != "unknown"
    assert state_value(hass, _entity(hass, "sensor", "NODE_A", "energy_shared")) == "0.0"
    assert state_value(hass, _entity(hass, "sensor", "NODE_A", "transfer_progress")) == "unknown"
    assert state_value(hass, _entity(hass, "switch", "NODE_A", "supply")) == "off"
    assert state_value(hass, _entity(hass, "switch", "NODE_A", "receive")) == "off"
    assert state_value(hass, _entity(hass, "select", "NODE_A", "mode")) == "idle"
    # The node's own protocol details do not travel through a gateway.
    registry = er.async_get(hass)
    for key in ("rssi", "uptime", "firmware", "lease_left", "protocol_version"):
        assert registry.async_get_entity_id("sensor", DOMAIN, f"{GATEWAY}_NODE_A_{key}") is None
    # No auto-balance switch: the balancer works with directly connected nodes.
    assert registry.async_get_entity_id("switch", DOMAIN, f"{GATEWAY}_NODE_A_auto_balance") is None


async def test_metered_sensors_come_when_the_telemetry_does(
    hass: HomeAssistant, gateway: PingingGateway
) -> None:
    """A node reported without telemetry gets them once its pings carry it."""
    gateway.nodes["NODE_C"] = Node(uid="NODE_C", voltage=3.8, soc=60.0, metered=False)
    gateway.ping()
    await hass.async_block_till_done()
    registry = er.async_get(hass)
    assert _entity(hass, "sensor", "NODE_C", "voltage")
    assert _entity(hass, "switch", "NODE_C", "supply")
    assert (
        registry.async_get_entity_id("sensor", DOMAIN, f"{GATEWAY}_NODE_C_energy_supplied") is None
    )

    gateway.nodes["NODE_C"].metered = True
    gateway.nodes["NODE_C"].e_in_mwh = 2_500
    gateway.ping()
    await hass.async_block_till_done()
    assert state_value(hass, _entity(hass, "sensor", "NODE_C", "energy_received")) == "0.0025"
    # Each entity exists once.
    assert len(er.async_entries_for_config_entry(registry, _entry_id(hass))) == len(
        {entry.unique_id for entry in er.async_entries_for_config_entry(registry, _entry_id(hass))}
    )


def _entry_id(hass: HomeAssistant) -> str:
    (entry,) = [
        entry
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.data[CONF_KIND] == EntryKind.GATEWAY
    ]
    return entry.entry_id


async def test_supply_switch_and_mode_select_drive_the_node_through_the_gateway(
    hass: HomeAssistant, gateway: PingingGateway
) -> None:
    """Each control publishes the gateway's schedule and returns once a ping confirms it."""
    supply = _entity(hass, "switch", "NODE_A", "supply")
    receive = _entity(hass, "switch", "NODE_B", "receive")
    mode = _entity(hass, "select", "NODE_A", "mode")

    await hass.services.async_call("switch", "turn_on", {"entity_id": supply}, blocking=True)
    assert _actions(gateway.schedules[-1]) == {"NODE_A": "discharge", "NODE_B": "idle"}
    assert state_value(hass, supply) == "on"
    assert state_value(hass, mode) == "discharge"

    await hass.services.async_call("switch", "turn_on", {"entity_id": receive}, blocking=True)
    assert _actions(gateway.schedules[-1]) == {"NODE_A": "discharge", "NODE_B": "charge"}

    # Off for a relay that is off changes nothing; off for one that is on goes idle.
    published = len(gateway.schedules)
    await hass.services.async_call(
        "switch",
        "turn_off",
        {"entity_id": _entity(hass, "switch", "NODE_A", "receive")},
        blocking=True,
    )
    assert len(gateway.schedules) == published
    await hass.services.async_call("switch", "turn_off", {"entity_id": receive}, blocking=True)
    assert _actions(gateway.schedules[-1])["NODE_B"] == "idle"

    await hass.services.async_call(
        "select", "select_option", {"entity_id": mode, "option": "charge"}, blocking=True
    )
    assert _actions(gateway.schedules[-1])["NODE_A"] == "charge"
    assert state_value(hass, mode) == "charge"
    assert state_value(hass, supply) == "off"


async def test_a_command_the_gateway_does_not_confirm(
    hass: HomeAssistant, gateway: PingingGateway
) -> None:
    """No confirming ping: a translated error, and the command is withdrawn."""
    gateway.deaf = True
    with pytest.raises(HomeAssistantError) as caught:
        await hass.services.async_call(
            "switch",
            "turn_on",
            {"entity_id": _entity(hass, "switch", "NODE_A", "supply")},
            blocking=True,
        )
    assert caught.value.translation_key == "gateway_node_unreachable"
    assert caught.value.translation_placeholders == {
        "name": "NODE_A",
        "mode": "SUPPLY",
        "gateway": GATEWAY,
    }
    assert [_actions(s)["NODE_A"] for s in gateway.schedules[-2:]] == ["discharge", "idle"]


async def test_a_command_superseded_by_another(
    hass: HomeAssistant, gateway: PingingGateway
) -> None:
    """Two quick commands to one node: the first reports that it was superseded."""
    gateway.deaf = True
    mode = _entity(hass, "select", "NODE_A", "mode")
    first = hass.async_create_task(
        hass.services.async_call(
            "select", "select_option", {"entity_id": mode, "option": "charge"}, blocking=True
        )
    )
    await asyncio.sleep(0.05)
    gateway.deaf = False
    await hass.services.async_call(
        "select", "select_option", {"entity_id": mode, "option": "discharge"}, blocking=True
    )
    with pytest.raises(HomeAssistantError) as caught:
        await first
    assert caught.value.translation_key == "communication_error"
    assert state_value(hass, mode) == "discharge"


# ----------------------------------------------------------------- transfers


async def test_transfer_through_the_gateway(hass: HomeAssistant, gateway: PingingGateway) -> None:
    """Scheduled with the target as budget, metered from the pings, stopped at the target."""
    completed: list[dict[str, Any]] = []
    hass.bus.async_listen(
        EVENT_TRANSFER_COMPLETED, callback(lambda event: completed.append(event.data))
    )
    started = await hass.services.async_call(
        DOMAIN,
        "start_transfer",
        {"sender": "NODE_A", "receiver": "NODE_B", "energy_wh": 0.5},
        blocking=True,
        return_response=True,
    )
    assert started is not None
    assert started["state"] == "active"
    schedule = gateway.schedules[-1]
    assert schedule["commands"] == [
        {"uid": "NODE_A", "action": "discharge", "limit_mwh": 550, "min_mv": 3300},
        {"uid": "NODE_B", "action": "charge", "limit_mwh": 550},
    ]
    progress = _entity(hass, "sensor", "NODE_A", "transfer_progress")
    gateway.move(250)
    await hass.async_block_till_done()
    assert state_value(hass, progress) == "50.0"
    # A node in a transfer is refused for another one.
    with pytest.raises(ServiceValidationError) as busy:
        await hass.data[DATA_GRID].async_start_transfer("NODE_B", "NODE_A", energy_wh=1)
    assert busy.value.translation_key == "transfer_sender_busy"

    gateway.move(250)
    await wait_until(hass, lambda: bool(completed))
    (record,) = completed
    assert record["stop_reason"] == "target_reached"
    assert (record["wh_out"], record["wh_in"]) == (0.5, 0.45)
    device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, "NODE_B")})
    assert device is not None
    assert record["receiver_device_id"] == device.id
    assert _actions(gateway.schedules[-1]) == {"NODE_A": "idle", "NODE_B": "idle"}
    assert gateway.nodes["NODE_A"].state == "IDLE"
    assert state_value(hass, _entity(hass, "sensor", "NODE_A", "energy_shared")) == "0.0005"
    assert state_value(hass, progress) == "unknown"


async def test_transfers_the_gateway_cannot_carry_are_refused(
    hass: HomeAssistant, gateway: PingingGateway
) -> None:
    """Unmetered, unreported or unknown nodes are refused before anything is published."""
    published = len(gateway.schedules)
    gateway.nodes["NODE_C"] = Node(uid="NODE_C", voltage=3.8, soc=60.0, metered=False)
    gateway.ping()
    await hass.async_block_till_done()
    grid = hass.data[DATA_GRID]
    with pytest.raises(ServiceValidationError) as unmetered:
        await grid.async_start_transfer("NODE_A", "NODE_C", energy_wh=1)
    assert unmetered.value.translation_key == "transfer_not_metered"
    assert unmetered.value.translation_placeholders == {"node": "NODE_C", "gateway": GATEWAY}

    gateway.nodes["NODE_B"].reported = False
    gateway.ping()
    await hass.async_block_till_done()
    with pytest.raises(ServiceValidationError) as offline:
        await grid.async_start_transfer("NODE_A", "NODE_B", energy_wh=1)
    assert offline.value.translation_key == "transfer_receiver_offline"

    with pytest.raises(ServiceValidationError) as unknown:
        await hass.services.async_call(
            DOMAIN,
            "start_transfer",
            {"sender": "NODE_A", "receiver": "NODE_Z"},
            blocking=True,
            return_response=True,
        )
    assert unknown.value.translation_key == "unknown_node"
    assert len(gateway.schedules) == published


async def test_unloading_the_gateway_stops_its_transfers_and_idles_its_nodes(
    hass: HomeAssistant, gateway: PingingGateway, gateway_entry: MockConfigEntry
) -> None:
    """The entry going away ends the transfer with what was measured; the nodes are idle."""
    aborted: list[dict[str, Any]] = []
    hass.bus.async_listen(
        EVENT_TRANSFER_COMPLETED, callback(lambda event: aborted.append(event.data))
    )
    await hass.data[DATA_GRID].async_start_transfer("NODE_A", "NODE_B", energy_wh=2)
    await hass.services.async_call(
        "select",
        "select_option",
        {"entity_id": _entity(hass, "select", "NODE_A", "mode"), "option": "discharge"},
        blocking=True,
    )
    gateway.move(300)
    await hass.async_block_till_done()

    assert await hass.config_entries.async_unload(gateway_entry.entry_id)
    await hass.async_block_till_done()
    assert gateway_entry.state is ConfigEntryState.NOT_LOADED
    (record,) = aborted
    assert (record["stop_reason"], record["wh_out"]) == ("requested", 0.3)
    assert {command["action"] for command in gateway.schedules[-1]["commands"]} == {"idle"}
    assert state_value(hass, _entity(hass, "select", "NODE_A", "mode")) == STATE_UNAVAILABLE
    assert hass.data[DATA_GRID].active_count == 0


async def test_a_gateway_entry_tells_the_gateway_nothing_is_asked(
    hass: HomeAssistant, gateway_entry: MockConfigEntry
) -> None:
    """Set up, the entry publishes an idle schedule; a stream for the gateway starts with it."""
    hub: IotHub = hass.data[DATA_IOT_HUB]
    standing = hub.standing_schedule(GATEWAY)
    assert standing is not None
    assert standing.data.commands == ()
    assert standing.data.issued_at is not None

    subscription = hub.subscribe(GATEWAY)
    other = hub.subscribe(None)
    try:
        assert subscription.queued == 1
        assert await subscription.next_event() == standing
        assert other.queued == 0
    finally:
        hub.unsubscribe(subscription)
        hub.unsubscribe(other)


async def test_reconfigured_to_another_gateway_the_old_one_is_let_go(
    hass: HomeAssistant, gateway: PingingGateway, gateway_entry: MockConfigEntry
) -> None:
    """The old gateway's device and the entities keyed by its id leave the entry."""
    registry = er.async_get(hass)
    old_entities = er.async_entries_for_config_entry(registry, gateway_entry.entry_id)
    assert old_entities
    hass.config_entries.async_update_entry(
        gateway_entry,
        unique_id="gateway:rpi-4b-prod-09",
        data={**gateway_entry.data, CONF_DEVICE_ID: "rpi-4b-prod-09"},
    )
    assert await hass.config_entries.async_reload(gateway_entry.entry_id)
    await hass.async_block_till_done()

    devices = dr.async_get(hass)
    assert devices.async_get_device(identifiers={(DOMAIN, GATEWAY)}) is None
    new_gateway = devices.async_get_device(identifiers={(DOMAIN, "rpi-4b-prod-09")})
    assert new_gateway is not None
    assert all(registry.async_get(entity.entity_id) is None for entity in old_entities)
    # The nodes' devices wait for the new gateway's pings (or go stale like any node).
    assert devices.async_get_device(identifiers={(DOMAIN, "NODE_A")}) is not None
