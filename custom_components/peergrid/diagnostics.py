"""Diagnostics of PeerGrid entries, with keys and secrets redacted."""

from __future__ import annotations

from typing import Any, cast

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_KEY, CONF_KIND, EntryKind
from .coordinator import PeerGridConfigEntry
from .gateway import PeerGridGatewayConfigEntry
from .ledger import DATA_LEDGER
from .peergrid_core.ledger import MintStatus
from .stellar import CONF_SECRET_KEY, PeerGridStellarConfigEntry

TO_REDACT = {CONF_KEY, "nonce", CONF_SECRET_KEY}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: PeerGridConfigEntry
) -> dict[str, Any]:
    """The entry, the node's hello and its latest status (or a gateway's nodes), without secrets."""
    if entry.data[CONF_KIND] == EntryKind.LEDGER:
        chain = cast("PeerGridStellarConfigEntry", entry).runtime_data
        receipts = await chain.receipts()
        return {
            "entry": async_redact_data(entry.as_dict(), TO_REDACT),
            "account": chain.account_id,
            "last_error": chain.last_error,
            "jobs": {
                status.value: sum(receipt.status is status for receipt in receipts)
                for status in MintStatus
            },
            "ledger": _ledger_summary(hass),
        }
    if entry.data[CONF_KIND] == EntryKind.GRID:
        return {"entry": entry.as_dict(), "ledger": _ledger_summary(hass)}
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


def _ledger_summary(hass: HomeAssistant) -> dict[str, Any]:
    """The embedded ledger's totals (amounts as exact text)."""
    totals = hass.data[DATA_LEDGER].service.totals()
    return {
        "reports": totals.reports,
        "kwh_minted": str(totals.kwh_minted),
        "tokens_minted": str(totals.tokens_minted),
        "carbon_kg_credited": str(totals.carbon_kg_credited),
        "carbon_kg_retired": str(totals.carbon_kg_retired),
        "open_orders": totals.open_orders,
        "filled_orders": totals.filled_orders,
        "rewards_paid": {account: str(paid) for account, paid in totals.rewards_paid.items()},
    }
