"""Diagnostics of a PeerGrid node entry, with its key redacted."""

from __future__ import annotations

from typing import Any, cast

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_KEY, CONF_KIND, EntryKind
from .coordinator import PeerGridConfigEntry
from .gateway import PeerGridGatewayConfigEntry

TO_REDACT = {CONF_KEY, "nonce"}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PeerGridConfigEntry
) -> dict[str, Any]:
    """The entry, the node's hello and its latest status (or a gateway's nodes), without secrets."""
    if entry.data[CONF_KIND] == EntryKind.GATEWAY:
        gateway = cast("PeerGridGatewayConfigEntry", entry).runtime_data
        return {
            "entry": async_redact_data(entry.as_dict(), TO_REDACT),
            "online": gateway.data.online,
            "reported": sorted(gateway.data.reported),
            "nodes": {
                uid: node.model_dump(mode="json") for uid, node in gateway.data.nodes.items()
            },
        }
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
