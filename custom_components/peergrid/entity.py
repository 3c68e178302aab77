"""The base entities of PeerGrid nodes: reached directly, or through an edge gateway."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN, GRID_UNIQUE_ID, MANUFACTURER, NODE_MODEL
from .coordinator import PeerGridNodeCoordinator
from .gateway import PeerGridGatewayConfigEntry, PeerGridGatewayCoordinator
from .peergrid_core.payloads import NodeDetail

type GatewayNodeEntityFactory = Callable[
    [PeerGridGatewayCoordinator, NodeDetail], Iterable[PeerGridGatewayNodeEntity]
]


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


@callback
def async_setup_gateway_node_entities(
    entry: PeerGridGatewayConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    entities_for: GatewayNodeEntityFactory,
) -> None:
    """Add a platform's entities for the gateway's nodes now and whenever nodes join.

    ``entities_for`` gives the entities a node should have (it may give more
    once the node's pings carry telemetry); an entity already added is not
    added twice, and one removed with its node's device is added again if
    the node comes back.
    """
    coordinator = entry.runtime_data
    added: set[str] = set()

    @callback
    def _add(nodes: Iterable[NodeDetail]) -> None:
        new: list[PeerGridGatewayNodeEntity] = []
        for node in nodes:
            for entity in entities_for(coordinator, node):
                unique_id = entity.unique_id
                if unique_id is None or unique_id in added:
                    continue
                added.add(unique_id)
                entity.async_on_remove(partial(added.discard, unique_id))
                new.append(entity)
        if new:
            async_add_entities(new)

    _add(coordinator.nodes.values())
    entry.async_on_unload(coordinator.async_add_new_nodes_listener(_add))


def grid_device_info() -> DeviceInfo:
    """The grid's own device: grid-wide sensors and settings."""
    return DeviceInfo(
        identifiers={(DOMAIN, GRID_UNIQUE_ID)},
        name="PeerGrid grid",
        manufacturer=MANUFACTURER,
        model="Peer-to-peer battery grid",
        entry_type=DeviceEntryType.SERVICE,
    )
