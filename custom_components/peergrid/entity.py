"""The base entities of PeerGrid nodes: reached directly, or through an edge gateway."""

from __future__ import annotations

from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN, GRID_UNIQUE_ID, MANUFACTURER, NODE_MODEL
from .coordinator import PeerGridNodeCoordinator
from .gateway import PeerGridGatewayCoordinator
from .peergrid_core.payloads import NodeDetail


class PeerGridNodeEntity(CoordinatorEntity[PeerGridNodeCoordinator]):
    """An entity of one node: named after its description, grouped under the node's device."""

    _attr_has_entity_name = True

    def __init__(
        self, coordinator: PeerGridNodeCoordinator, description: EntityDescription
    ) -> None:
        """Identify the entity by node uid and description key."""
        super().__init__(coordinator)
        self.entity_description = description
        uid = coordinator.uid
        self._attr_unique_id = f"{uid}_{description.key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, uid)},
            name=uid,
            manufacturer=MANUFACTURER,
            model=NODE_MODEL,
            serial_number=uid,
            sw_version=coordinator.data.hello.fw,
        )


class PeerGridGatewayNodeEntity(CoordinatorEntity[PeerGridGatewayCoordinator]):
    """An entity of one node behind an edge gateway, on the node's device via the gateway.

    Its unique id is ``<device_id>_<uid>_<key>``, not the ``<uid>_<key>`` of a
    directly connected node: a node can be configured directly and reported
    by a gateway at the same time, and the two readings (the node's own
    status and the gateway's copy of it) must stay two entities rather than
    collide. Both sets of entities share the node's device.
    """

    _attr_has_entity_name = True

    def __init__(
        self, coordinator: PeerGridGatewayCoordinator, uid: str, description: EntityDescription
    ) -> None:
        """Identify the entity by gateway, node uid and description key."""
        super().__init__(coordinator)
        self.entity_description = description
        self.uid = uid
        self._attr_unique_id = f"{coordinator.device_id}_{uid}_{description.key}"
        self._attr_device_info = DeviceInfo(
            identifiers={(DOMAIN, uid)},
            name=uid,
            manufacturer=MANUFACTURER,
            model=NODE_MODEL,
            serial_number=uid,
            via_device=(DOMAIN, coordinator.device_id),
        )

    @property
    def available(self) -> bool:
        """Available while the gateway pings and its latest node data has this node."""
        data = self.coordinator.data
        return super().available and data.online and self.uid in data.reported

    @property
    def node(self) -> NodeDetail | None:
        """The node's latest reading from the gateway."""
        return self.coordinator.data.nodes.get(self.uid)


def grid_device_info() -> DeviceInfo:
    """The grid's own device: grid-wide sensors and settings."""
    return DeviceInfo(
        identifiers={(DOMAIN, GRID_UNIQUE_ID)},
        name="PeerGrid grid",
        manufacturer=MANUFACTURER,
        model="Peer-to-peer battery grid",
        entry_type=DeviceEntryType.SERVICE,
    )
