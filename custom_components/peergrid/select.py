"""The Mode select of a PeerGrid node: idle, charge (RECEIVE) or discharge (SUPPLY)."""

from __future__ import annotations

from typing import cast

from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import CONF_KIND, EntryKind
from .coordinator import PeerGridConfigEntry
from .entity import PeerGridGatewayNodeEntity, PeerGridNodeEntity, async_setup_gateway_node_entities
from .gateway import PeerGridGatewayConfigEntry, PeerGridGatewayCoordinator
from .peergrid_core.payloads import NodeDetail
from .peergrid_core.protocol import Mode

# Commands move relays: one at a time per platform.
PARALLEL_UPDATES = 1

OPTION_TO_MODE: dict[str, Mode] = {
    "idle": Mode.IDLE,
    "charge": Mode.RECEIVE,
    "discharge": Mode.SUPPLY,
}
MODE_TO_OPTION = {mode: option for option, mode in OPTION_TO_MODE.items()}

MODE_SELECT = SelectEntityDescription(
    key="mode", translation_key="mode", options=list(OPTION_TO_MODE)
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PeerGridConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the node's Mode select, or the Mode selects of a gateway's nodes."""
    if entry.data[CONF_KIND] == EntryKind.GATEWAY:
        # Gateway entries carry a gateway coordinator (see __init__.py).
        async_setup_gateway_node_entities(
            cast("PeerGridGatewayConfigEntry", entry), async_add_entities, _gateway_mode_select
        )
        return
    async_add_entities([PeerGridModeSelect(entry.runtime_data, MODE_SELECT)])


class PeerGridModeSelect(PeerGridNodeEntity, SelectEntity):
    """The node's main control; Home Assistant holds the lease while a mode is active."""

    @property
    def current_option(self) -> str:
        """The mode the node reports."""
        return MODE_TO_OPTION[self.coordinator.data.status.mode]

    async def async_select_option(self, option: str) -> None:
        """Command the node (through IDLE when switching direction, on the node)."""
        await self.coordinator.async_hold(OPTION_TO_MODE[option])


def _gateway_mode_select(
    coordinator: PeerGridGatewayCoordinator, node: NodeDetail
) -> list[PeerGridGatewayModeSelect]:
    return [PeerGridGatewayModeSelect(coordinator, node.uid, MODE_SELECT)]


class PeerGridGatewayModeSelect(PeerGridGatewayNodeEntity, SelectEntity):
    """The Mode select of a node behind a gateway; the gateway holds the lease."""

    @property
    def current_option(self) -> str | None:
        """The mode the gateway reports for the node."""
        node = self.node
        return None if node is None else MODE_TO_OPTION[Mode(node.state.value)]

    async def async_select_option(self, option: str) -> None:
        """Command the node through the gateway and wait until it reports the mode."""
        await self.coordinator.async_command(self.uid, OPTION_TO_MODE[option])
