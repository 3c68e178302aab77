"""PeerGrid loads in a real Home Assistant instance."""

from __future__ import annotations

from homeassistant.core import HomeAssistant
from homeassistant.loader import async_get_integration
from homeassistant.setup import async_setup_component

from custom_components.peergrid.const import DOMAIN


async def test_integration_loads(hass: HomeAssistant) -> None:
    """Home Assistant finds the custom integration, reads its manifest and sets it up."""
    integration = await async_get_integration(hass, DOMAIN)
    assert integration.is_built_in is False
    assert integration.name == "PeerGrid"
    assert str(integration.file_path).endswith("custom_components/peergrid")

    assert await async_setup_component(hass, DOMAIN, {})
    await hass.async_block_till_done()
    assert DOMAIN in hass.config.components
