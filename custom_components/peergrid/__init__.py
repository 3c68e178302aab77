"""The PeerGrid integration: battery nodes of a peer-to-peer energy grid."""

from __future__ import annotations

from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import config_validation as cv, device_registry as dr
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN
from .coordinator import PeerGridConfigEntry, PeerGridNodeCoordinator

PLATFORMS: list[Platform] = [Platform.SELECT, Platform.SENSOR, Platform.SWITCH]

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up PeerGrid; nodes and gateways are added as config entries."""
    return True


async def async_setup_entry(hass: HomeAssistant, entry: PeerGridConfigEntry) -> bool:
    """Connect to the entry's node, then add its device and entities."""
    coordinator = PeerGridNodeCoordinator(hass, entry)
    try:
        await coordinator.async_config_entry_first_refresh()
    except BaseException:
        await coordinator.async_shutdown()
        raise
    entry.runtime_data = coordinator
    _remove_stale_devices(hass, entry, coordinator.uid)
    coordinator.async_start()

    async def _async_release_on_stop(event: Event) -> None:
        # Config entries are not unloaded when Home Assistant stops: leave
        # the node IDLE instead of letting it wait out the lease.
        await coordinator.async_shutdown()

    entry.async_on_unload(
        hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_release_on_stop)
    )
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: PeerGridConfigEntry) -> bool:
    """Unload the entities, leave the node IDLE and close the session."""
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        await entry.runtime_data.async_shutdown()
    return unloaded


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: PeerGridConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the user remove a device only if it is not the entry's live node."""
    return (DOMAIN, entry.runtime_data.uid) not in device.identifiers


def _remove_stale_devices(hass: HomeAssistant, entry: PeerGridConfigEntry, uid: str) -> None:
    """Drop devices of this entry that are no longer its node."""
    registry = dr.async_get(hass)
    for device in dr.async_entries_for_config_entry(registry, entry.entry_id):
        if (DOMAIN, uid) not in device.identifiers:
            registry.async_update_device(device.id, remove_config_entry_id=entry.entry_id)
