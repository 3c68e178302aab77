"""The Mode select of a PeerGrid node: idle, charge (RECEIVE) or discharge (SUPPLY)."""

from __future__ import annotations

from homeassistant.components.select import SelectEntity, SelectEntityDescription
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .coordinator import PeerGridConfigEntry
from .entity import PeerGridNodeEntity
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
    """Add the node's Mode select."""
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
