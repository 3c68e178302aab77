"""The base entity shared by every PeerGrid node entity."""

from __future__ import annotations

from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN, GRID_UNIQUE_ID, MANUFACTURER, NODE_MODEL
from .coordinator import PeerGridNodeCoordinator


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


def grid_device_info() -> DeviceInfo:
    """The grid's own device: grid-wide sensors and settings."""
    return DeviceInfo(
        identifiers={(DOMAIN, GRID_UNIQUE_ID)},
        name="PeerGrid grid",
        manufacturer=MANUFACTURER,
        model="Peer-to-peer battery grid",
        entry_type=DeviceEntryType.SERVICE,
    )
