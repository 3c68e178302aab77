"""Diagnostics of a PeerGrid node entry, with its key redacted."""

from __future__ import annotations

from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_KEY
from .coordinator import PeerGridConfigEntry

TO_REDACT = {CONF_KEY, "nonce"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PeerGridConfigEntry
) -> dict[str, Any]:
    """The entry, the node's hello and its latest status, without secrets."""
    coordinator = entry.runtime_data
    data = coordinator.data
    return {
        "entry": async_redact_data(entry.as_dict(), TO_REDACT),
        "connection": {
            "state": coordinator.client.state.value,
            "held_mode": coordinator.lease.mode.value,
            "lease_s": coordinator.lease.lease_s,
            "auto_balance": coordinator.auto_balance,
        },
        "hello": async_redact_data(data.hello.model_dump(mode="json"), TO_REDACT),
        "status": data.status.model_dump(mode="json"),
    }
