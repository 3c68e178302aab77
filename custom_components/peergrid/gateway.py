"""The coordinator of one edge gateway entry: the nodes a gateway reports over HTTP.

A gateway POSTs its pings to the IoT hub (``iot_hub.py``); this coordinator
listens to the hub for its own ``device_id`` and keeps what the entities
read: the nodes of the gateway's recent node-data pings.

Two clocks matter, both the hub's (Home Assistant's) clock, never the
gateway's:

* **Availability.** A gateway that has sent no ping at all for
  :data:`GATEWAY_TIMEOUT` is offline, and every entity of the entry becomes
  unavailable; the next ping brings them back. The coordinator re-checks
  every :data:`CHECK_INTERVAL`, so an outage shows within half a minute of
  the timeout.
* **Stale nodes.** A node that the gateway's node-data pings have left out
  for :data:`GATEWAY_TIMEOUT` is gone: its device is removed from the entry
  (and its entities with it); if it comes back it is added again. Only the
  gateway's own pings can make a node stale, so a gateway that is switched
  off keeps its nodes (unavailable) instead of losing them all.

The coordinator also commands the gateway's nodes: its
:class:`~.peergrid_core.gateway_link.GatewayNodes` publishes the gateway's
schedule (``schedule`` events addressed to its ``device_id``) whenever what
is asked of a node changes, and confirms each command from the next ping.
The grid runs transfers through it (a
:class:`~.peergrid_core.gateway_link.GatewayNodeLink` per node), and the
nodes' Supply and Receive switches and Mode select drive it. When the entry
is set up the gateway is told that nothing is asked of it (a gateway that
reconnects after Home Assistant restarted gets that schedule first, so it
stops whatever it was doing for the Home Assistant before); when it unloads,
its transfers are stopped and its nodes left idle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator

from .const import CONF_DEVICE_ID, DOMAIN, GATEWAY_MODEL, LOGGER, MANUFACTURER
from .grid import DATA_GRID
from .iot_hub import DATA_IOT_HUB, GatewayState, IotHub
from .peergrid_core.errors import PeerGridConnectionError, PeerGridError
from .peergrid_core.events import ScheduleData, ScheduleEvent
from .peergrid_core.gateway_link import COMMAND_TIMEOUT_S, GatewayNodes
from .peergrid_core.payloads import NodeDataPing, NodeDetail
from .peergrid_core.protocol import Mode

type PeerGridGatewayConfigEntry = ConfigEntry[PeerGridGatewayCoordinator]

GATEWAY_TIMEOUT = timedelta(minutes=3)
"""Silence after which a gateway is offline, or a node it no longer reports is removed."""

CHECK_INTERVAL = timedelta(seconds=30)
"""How often the gateway's silence is re-evaluated between pings."""

type NewNodesListener = Callable[[list[NodeDetail]], None]


@dataclass(frozen=True, kw_only=True)
class GatewayData:
    """What the entities of a gateway entry read."""

    online: bool
    """Whether the gateway sent any ping within :data:`GATEWAY_TIMEOUT`."""

    nodes: Mapping[str, NodeDetail] = field(default_factory=dict)
    """The gateway's nodes by uid, each with its latest reading (stale ones are dropped)."""

    reported: frozenset[str] = frozenset()
    """The uids in the gateway's latest node-data ping: the nodes it reaches now."""


class PeerGridGatewayCoordinator(DataUpdateCoordinator[GatewayData]):
    """Follows one gateway's pings: its nodes, their readings and its availability."""

    config_entry: PeerGridGatewayConfigEntry

    def __init__(self, hass: HomeAssistant, entry: PeerGridGatewayConfigEntry) -> None:
        """Take what the hub already knows about the entry's gateway; nothing listens yet."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{DOMAIN} gateway {entry.data[CONF_DEVICE_ID]}",
            update_interval=CHECK_INTERVAL,
            always_update=False,
        )
        self.device_id: str = entry.data[CONF_DEVICE_ID]
        self._hub: IotHub = hass.data[DATA_IOT_HUB]
        self.control = GatewayNodes(
            self.device_id,
            self._publish_schedule,
            command_timeout_s=COMMAND_TIMEOUT_S,
            clock=self._hub.now,
        )
        """The gateway's nodes as commands and transfers reach them (schedules out, pings in)."""
        self._nodes: dict[str, NodeDetail] = {}
        self._node_seen_at: dict[str, datetime] = {}
        self._last_seen_at: datetime | None = None
        self._last_ping: NodeDataPing | None = None
        self._went_offline = False
        self._new_nodes_listeners: list[NewNodesListener] = []
        self._online = False
        self._forget_other_gateways(hass, entry)
        # Nodes this entry had before a restart are judged like the others:
        # once the gateway's pings have left one out for the timeout, it goes.
        started = self._hub.now()
        registry = dr.async_get(hass)
        for device in dr.async_entries_for_config_entry(registry, entry.entry_id):
            for domain, name in device.identifiers:
                if domain == DOMAIN and name != self.device_id:
                    self._node_seen_at[name] = started
        if (state := self._hub.gateway(self.device_id)) is not None:
            self._absorb(state)
        self._online = self._is_online()
        if not self._online:
            self.control.set_offline()
        self.data = GatewayData(
            online=self._online, nodes=dict(self._nodes), reported=self._reported()
        )

    @property
    def nodes(self) -> Mapping[str, NodeDetail]:
        """The gateway's current nodes by uid (stale ones are dropped)."""
        return MappingProxyType(self._nodes)

    def _forget_other_gateways(
        self, hass: HomeAssistant, entry: PeerGridGatewayConfigEntry
    ) -> None:
        """Let go of the device and entities of a gateway id this entry was reconfigured from."""
        devices = dr.async_get(hass)
        for device in dr.async_entries_for_config_entry(devices, entry.entry_id):
            if device.model == GATEWAY_MODEL and (DOMAIN, self.device_id) not in device.identifiers:
                devices.async_update_device(device.id, remove_config_entry_id=entry.entry_id)
        entities = er.async_get(hass)
        prefix = f"{self.device_id}_"
        for entity in er.async_entries_for_config_entry(entities, entry.entry_id):
            if not entity.unique_id.startswith(prefix):
                entities.async_remove(entity.entity_id)

    @callback
    def async_start(self) -> None:
        """Follow the hub's pings and offer the nodes to transfers until the entry unloads.

        The gateway is told at once that nothing is asked of its nodes.
        """
        entry = self.config_entry
        entry.async_on_unload(self._hub.async_add_listener(self._handle_state))
        entry.async_on_unload(self.hass.data[DATA_GRID].async_register_gateway(self))
        self.control.publish_schedule()

    async def async_release(self) -> None:
        """Stop the transfers through this gateway and leave its nodes idle (entry unloading)."""
        await self.hass.data[DATA_GRID].async_stop_gateway_transfers(self.device_id)
        self.control.release_all()

    def _publish_schedule(self, schedule: ScheduleData) -> None:
        self._hub.publish(ScheduleEvent(data=schedule))

    async def async_command(self, uid: str, mode: Mode) -> None:
        """Switch node ``uid`` to ``mode`` through the gateway and wait until it reports so.

        IDLE releases the node. Every failure is a translated
        :class:`HomeAssistantError`; a command that was not confirmed is
        withdrawn, so the node is left idle.
        """
        placeholders = {"name": uid, "mode": mode.value}
        try:
            await self.control.command(uid, mode)
        except PeerGridConnectionError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="gateway_node_unreachable",
                translation_placeholders={**placeholders, "gateway": self.device_id},
            ) from err
        except PeerGridError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="communication_error",
                translation_placeholders={"name": uid, "error": str(err)},
            ) from err

    @callback
    def async_add_new_nodes_listener(self, listener: NewNodesListener) -> CALLBACK_TYPE:
        """Call ``listener`` with the nodes that join (or come back) in a ping."""
        self._new_nodes_listeners.append(listener)

        @callback
        def _remove() -> None:
            self._new_nodes_listeners.remove(listener)

        return _remove

    def device_info(self) -> dr.DeviceInfo:
        """The gateway's own device, which its nodes are reached via."""
        return dr.DeviceInfo(
            identifiers={(DOMAIN, self.device_id)},
            name=self.device_id,
            manufacturer=MANUFACTURER,
            model=GATEWAY_MODEL,
            serial_number=self.device_id,
        )

    # ------------------------------------------------------------ pings

    @callback
    def _handle_state(self, state: GatewayState) -> None:
        if state.device_id != self.device_id:
            return
        joined = self._absorb(state)
        self._remove_stale_nodes()
        self.async_set_updated_data(self._snapshot())
        if joined:
            for listener in list(self._new_nodes_listeners):
                listener(joined)

    def _absorb(self, state: GatewayState) -> list[NodeDetail]:
        """Take the gateway's latest state; return the nodes that are new or newly metered.

        A node is newly metered when its ping carries telemetry for the first
        time (the gateway was upgraded): its energy, current and power
        sensors are added then.
        """
        self._last_seen_at = state.last_seen_at
        ping = state.node_data
        if ping is None or state.node_data_at is None:
            return []
        if ping is self._last_ping:
            # A heartbeat carries the last node data along: nothing was seen again.
            return []
        self._last_ping = ping
        joined = [
            detail
            for detail in ping.nodes_detail
            if (known := self._nodes.get(detail.uid)) is None
            or (known.telemetry is None and detail.telemetry is not None)
        ]
        for detail in ping.nodes_detail:
            self._nodes[detail.uid] = detail
            self._node_seen_at[detail.uid] = state.node_data_at
        self.control.observe(ping)
        return joined

    def _remove_stale_nodes(self) -> None:
        """Drop the nodes the gateway's pings have left out for too long, with their devices."""
        if not self._node_seen_at:
            return
        latest = max(self._node_seen_at.values())
        stale = [uid for uid, seen in self._node_seen_at.items() if latest - seen > GATEWAY_TIMEOUT]
        registry = dr.async_get(self.hass)
        for uid in stale:
            self._nodes.pop(uid, None)
            del self._node_seen_at[uid]
            LOGGER.info("Gateway %s no longer reports node %s; removing it", self.device_id, uid)
            if (device := registry.async_get_device(identifiers={(DOMAIN, uid)})) is not None:
                # Only this entry lets go: a node that is also configured
                # directly keeps its device and that entry's entities.
                registry.async_update_device(
                    device.id, remove_config_entry_id=self.config_entry.entry_id
                )

    # ------------------------------------------------------------ availability

    async def _async_update_data(self) -> GatewayData:
        """Re-evaluate the gateway's silence (called every :data:`CHECK_INTERVAL`)."""
        return self._snapshot()

    def _is_online(self) -> bool:
        return (
            self._last_seen_at is not None
            and self._hub.now() - self._last_seen_at <= GATEWAY_TIMEOUT
        )

    def _snapshot(self) -> GatewayData:
        """The entities' data now, logging when the gateway goes away or comes back."""
        online = self._is_online()
        if online and not self._online and self._went_offline:
            LOGGER.info("Gateway %s is available again", self.device_id)
        elif self._online and not online:
            self._went_offline = True
            LOGGER.info(
                "Gateway %s sent nothing for %s; it is unavailable", self.device_id, GATEWAY_TIMEOUT
            )
        self._online = online
        if not online:
            # Back online only with fresh node data (a ping), never on old readings.
            self.control.set_offline()
        return GatewayData(online=online, nodes=dict(self._nodes), reported=self._reported())

    def _reported(self) -> frozenset[str]:
        ping = self._last_ping
        return frozenset() if ping is None else frozenset(node.uid for node in ping.nodes_detail)
