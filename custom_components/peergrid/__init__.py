"""The PeerGrid integration: battery nodes of a peer-to-peer energy grid."""

from __future__ import annotations

from typing import cast

from homeassistant.config_entries import SOURCE_SYSTEM
from homeassistant.const import EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import config_validation as cv, device_registry as dr
from homeassistant.helpers.typing import ConfigType

from .const import CONF_KIND, DOMAIN, GRID_UNIQUE_ID, EntryKind
from .coordinator import PeerGridConfigEntry, PeerGridNodeCoordinator
from .gateway import PeerGridGatewayConfigEntry, PeerGridGatewayCoordinator
from .grid import DATA_GRID, PeerGridGrid
from .http_api import async_setup_http_api
from .ledger import DATA_LEDGER, PeerGridLedger
from .services import async_setup_services
from .stellar import (
    PeerGridStellarConfigEntry,
    async_setup_stellar_entry,
    async_unload_stellar_entry,
)

PLATFORMS: list[Platform] = [Platform.SELECT, Platform.SENSOR, Platform.SWITCH]
GRID_PLATFORMS: list[Platform] = [Platform.SENSOR]
PLATFORMS_GATEWAY: list[Platform] = [Platform.SELECT, Platform.SENSOR, Platform.SWITCH]

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up the grid, the ledger, PeerGrid's actions and its IoT HTTP API."""
    grid = PeerGridGrid(hass)
    await grid.async_load()
    hass.data[DATA_GRID] = grid
    ledger = PeerGridLedger(hass, grid)
    await ledger.async_setup()
    hass.data[DATA_LEDGER] = ledger
    async_setup_services(hass)
    await async_setup_http_api(hass)

    async def _async_stop_transfers(event: Event) -> None:
        await grid.async_shutdown()
        await ledger.async_shutdown()

    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_stop_transfers)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: PeerGridConfigEntry) -> bool:
    """Set up a node (connect, device, entities), a gateway, or the grid entry."""
    if entry.data[CONF_KIND] == EntryKind.GRID:
        await hass.config_entries.async_forward_entry_setups(entry, GRID_PLATFORMS)
        entry.async_on_unload(entry.add_update_listener(_async_options_updated))
        return True
    if entry.data[CONF_KIND] == EntryKind.LEDGER:
        await async_setup_stellar_entry(hass, cast("PeerGridStellarConfigEntry", entry))
        return True
    if entry.data[CONF_KIND] == EntryKind.GATEWAY:
        # A gateway entry's runtime data is its gateway coordinator.
        await _async_setup_gateway(hass, cast("PeerGridGatewayConfigEntry", entry))
        return True

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
    entry.async_on_unload(hass.data[DATA_GRID].async_register_node(coordinator))
    _ensure_grid_entry(hass)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: PeerGridConfigEntry) -> bool:
    """Unload the entities; a node is left IDLE and its session closed."""
    if entry.data[CONF_KIND] == EntryKind.GRID:
        return await hass.config_entries.async_unload_platforms(entry, GRID_PLATFORMS)
    if entry.data[CONF_KIND] == EntryKind.LEDGER:
        return await async_unload_stellar_entry(hass, cast("PeerGridStellarConfigEntry", entry))
    if entry.data[CONF_KIND] == EntryKind.GATEWAY:
        # The hub listener and the availability timer go with the entry's on-unload callbacks.
        unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS_GATEWAY)
        if unloaded:
            await cast("PeerGridGatewayConfigEntry", entry).runtime_data.async_release()
        return unloaded
    unloaded = await hass.config_entries.async_unload_platforms(entry, PLATFORMS)
    if unloaded:
        grid = hass.data[DATA_GRID]
        if (record := grid.active_transfer(entry.runtime_data.uid)) is not None:
            await grid.async_stop_transfers(record.transfer_id)
        await entry.runtime_data.async_shutdown()
    return unloaded


async def async_remove_config_entry_device(
    hass: HomeAssistant, entry: PeerGridConfigEntry, device: dr.DeviceEntry
) -> bool:
    """Let the user remove a device only if it is not the entry's live node (or the grid).

    For a gateway entry, the gateway itself and the nodes it currently
    reports stay; a node it stopped reporting can go.
    """
    if entry.data[CONF_KIND] == EntryKind.GRID:
        return (DOMAIN, GRID_UNIQUE_ID) not in device.identifiers
    if entry.data[CONF_KIND] == EntryKind.LEDGER:
        return False
    if entry.data[CONF_KIND] == EntryKind.GATEWAY:
        gateway = cast("PeerGridGatewayConfigEntry", entry).runtime_data
        live = {gateway.device_id, *gateway.nodes}
        return not any((DOMAIN, name) in device.identifiers for name in live)
    return (DOMAIN, entry.runtime_data.uid) not in device.identifiers


async def _async_setup_gateway(hass: HomeAssistant, entry: PeerGridGatewayConfigEntry) -> None:
    """Create the gateway's device, follow its pings and add its nodes' sensors."""
    coordinator = PeerGridGatewayCoordinator(hass, entry)
    entry.runtime_data = coordinator
    # Registered up front so that the nodes' devices can point at it (via_device).
    dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, **coordinator.device_info()
    )
    coordinator.async_start()
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS_GATEWAY)
    _ensure_grid_entry(hass)


async def _async_options_updated(hass: HomeAssistant, entry: PeerGridConfigEntry) -> None:
    """New thresholds apply to the next plan; the grid's sensors show them at once."""
    hass.data[DATA_GRID].async_notify()


def _ensure_grid_entry(hass: HomeAssistant) -> None:
    """Create the grid entry (grid-wide settings and sensors) with the first node."""
    if any(
        entry.data.get(CONF_KIND) == EntryKind.GRID
        for entry in hass.config_entries.async_entries(DOMAIN, include_ignore=True)
    ):
        return
    hass.async_create_task(
        hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_SYSTEM}, data={CONF_KIND: EntryKind.GRID}
        )
    )


def _remove_stale_devices(hass: HomeAssistant, entry: PeerGridConfigEntry, uid: str) -> None:
    """Drop devices of this entry that are no longer its node."""
    registry = dr.async_get(hass)
    for device in dr.async_entries_for_config_entry(registry, entry.entry_id):
        if (DOMAIN, uid) not in device.identifiers:
            registry.async_update_device(device.id, remove_config_entry_id=entry.entry_id)
