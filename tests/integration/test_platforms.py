"""Snapshots of every PeerGrid platform's entities, and the node's diagnostics.

The simulated node's readings carry sensor noise, so the snapshots hold what
defines each entity (unique id, device class, units, category, translation,
whether it is enabled) and its state attributes, not its changing value;
values are asserted against the simulated physics in ``test_node.py``.
"""

from __future__ import annotations

from typing import Any

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from peergrid_core.sim import SimulatedGrid

from .conftest import KEY_A
from .helpers import setup_entry


def _entity_shape(hass: HomeAssistant, entry: er.RegistryEntry) -> dict[str, Any]:
    state = hass.states.get(entry.entity_id)
    return {
        "entity_id": entry.entity_id,
        "unique_id": entry.unique_id,
        "translation_key": entry.translation_key,
        "original_name": entry.original_name,
        "original_device_class": entry.original_device_class,
        "entity_category": entry.entity_category,
        "disabled_by": entry.disabled_by,
        "capabilities": entry.capabilities,
        "unit_of_measurement": entry.unit_of_measurement,
        "attributes": dict(state.attributes) if state else None,
    }


@pytest.mark.parametrize("platform", [Platform.SELECT, Platform.SENSOR, Platform.SWITCH])
async def test_platform_entities(
    hass: HomeAssistant,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
    platform: Platform,
) -> None:
    """Each platform creates the entities it should, shaped as the snapshot says."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("custom_components.peergrid.PLATFORMS", [platform])
        await setup_entry(hass, node_a_entry)
    entries = sorted(
        er.async_entries_for_config_entry(entity_registry, node_a_entry.entry_id),
        key=lambda entry: entry.entity_id,
    )
    assert {entry.domain for entry in entries} == {platform.value}
    assert [_entity_shape(hass, entry) for entry in entries] == snapshot


async def test_noisy_diagnostics_are_disabled_by_default(
    hass: HomeAssistant,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
    entity_registry: er.EntityRegistry,
) -> None:
    """Signal strength, uptime, protocol version and lease left start disabled."""
    await setup_entry(hass, node_a_entry)
    disabled = {
        entry.unique_id
        for entry in er.async_entries_for_config_entry(entity_registry, node_a_entry.entry_id)
        if entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    }
    assert disabled == {
        "NODE_A_rssi",
        "NODE_A_uptime",
        "NODE_A_protocol_version",
        "NODE_A_lease_left",
    }


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_diagnostic_sensors_when_enabled(
    hass: HomeAssistant, sim_grid: SimulatedGrid, node_a_entry: MockConfigEntry
) -> None:
    """Enabled, the diagnostic sensors report the node's own values."""
    await setup_entry(hass, node_a_entry)
    node = sim_grid.nodes["NODE_A"]
    assert hass.states.get("sensor.node_a_protocol_version").state == "1"
    assert hass.states.get("sensor.node_a_firmware").state == node.hardware.fw_version
    assert int(hass.states.get("sensor.node_a_signal_strength").state) < 0
    assert float(hass.states.get("sensor.node_a_lease_left").state) == 0


async def test_diagnostics_redact_the_key(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
) -> None:
    """Diagnostics carry the entry, hello and status, never the key or the nonce."""
    await setup_entry(hass, node_a_entry)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, node_a_entry)

    assert diagnostics["entry"]["data"]["key"] == "**REDACTED**"
    assert diagnostics["hello"]["nonce"] == "**REDACTED**"
    assert diagnostics["hello"]["uid"] == "NODE_A"
    assert diagnostics["status"]["mode"] == "IDLE"
    assert diagnostics["connection"] == {
        "state": "connected",
        "held_mode": "IDLE",
        "lease_s": 30,
        "auto_balance": True,
    }
    assert KEY_A not in str(diagnostics)
