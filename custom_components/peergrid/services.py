"""PeerGrid actions: start and stop transfers, auto-balance, transfer history."""

from __future__ import annotations

from typing import Any

from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import ServiceValidationError
from homeassistant.helpers import config_validation as cv, device_registry as dr
import voluptuous as vol

from .const import DOMAIN
from .grid import DATA_GRID, HISTORY_LIMIT
from .peergrid_core.balancer import BalancePlan
from .peergrid_core.transfer import MAX_DURATION_S, MAX_ENERGY_WH, TransferRecord

SERVICE_START_TRANSFER = "start_transfer"
SERVICE_STOP_TRANSFER = "stop_transfer"
SERVICE_AUTO_BALANCE = "auto_balance"
SERVICE_GET_TRANSFERS = "get_transfers"

ATTR_SENDER = "sender"
ATTR_RECEIVER = "receiver"
ATTR_ENERGY_WH = "energy_wh"
ATTR_DURATION = "duration"
ATTR_TRANSFER_ID = "transfer_id"
ATTR_DRY_RUN = "dry_run"
ATTR_LIMIT = "limit"
ATTR_ACTIVE_ONLY = "active_only"

_ENERGY = vol.All(vol.Coerce(float), vol.Range(min=0.001, max=MAX_ENERGY_WH))

START_TRANSFER_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_SENDER): cv.string,
        vol.Required(ATTR_RECEIVER): cv.string,
        vol.Optional(ATTR_ENERGY_WH): _ENERGY,
        vol.Optional(ATTR_DURATION): vol.All(
            cv.time_period,
            vol.Range(min=cv.time_period(1), max=cv.time_period(MAX_DURATION_S)),
        ),
    }
)
STOP_TRANSFER_SCHEMA = vol.Schema({vol.Optional(ATTR_TRANSFER_ID): cv.string})
AUTO_BALANCE_SCHEMA = vol.Schema(
    {vol.Optional(ATTR_DRY_RUN, default=False): cv.boolean, vol.Optional(ATTR_ENERGY_WH): _ENERGY}
)
GET_TRANSFERS_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_LIMIT, default=20): vol.All(
            vol.Coerce(int), vol.Range(min=1, max=HISTORY_LIMIT)
        ),
        vol.Optional(ATTR_ACTIVE_ONLY, default=False): cv.boolean,
    }
)


def _node_uid(hass: HomeAssistant, value: str, field: str) -> str:
    """A node given as a device id (as the UI's device selector sends) or as its uid."""
    grid = hass.data[DATA_GRID]
    if (device := dr.async_get(hass).async_get(value)) is not None:
        for domain, identifier in device.identifiers:
            if domain == DOMAIN and identifier in grid.nodes:
                return identifier
    elif value in grid.nodes:
        return value
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="unknown_node",
        translation_placeholders={"node": value, "field": field},
    )


def _record(record: TransferRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json")
    data["progress_pct"] = record.progress_pct
    return data


def _plan(plan: BalancePlan) -> dict[str, Any]:
    return {
        "spread_pct": round(plan.spread_pct, 1),
        "skipped_reason": plan.skipped_reason,
        "pairs": [
            {
                "donor": pair.donor,
                "receiver": pair.receiver,
                "gap_pct": round(pair.gap_pct, 1),
                "priority": pair.priority,
            }
            for pair in plan.pairs
        ],
    }


async def _async_start_transfer(call: ServiceCall) -> ServiceResponse:
    hass = call.hass
    sender = _node_uid(hass, call.data[ATTR_SENDER], ATTR_SENDER)
    receiver = _node_uid(hass, call.data[ATTR_RECEIVER], ATTR_RECEIVER)
    duration = call.data.get(ATTR_DURATION)
    record = await hass.data[DATA_GRID].async_start_transfer(
        sender,
        receiver,
        energy_wh=call.data.get(ATTR_ENERGY_WH),
        duration_s=duration.total_seconds() if duration is not None else None,
    )
    return _record(record)


async def _async_stop_transfer(call: ServiceCall) -> ServiceResponse:
    records = await call.hass.data[DATA_GRID].async_stop_transfers(call.data.get(ATTR_TRANSFER_ID))
    return {"stopped": [_record(record) for record in records]}


async def _async_auto_balance(call: ServiceCall) -> ServiceResponse:
    plan, started = await call.hass.data[DATA_GRID].async_auto_balance(
        dry_run=call.data[ATTR_DRY_RUN], energy_wh=call.data.get(ATTR_ENERGY_WH)
    )
    return _plan(plan) | {"started": [_record(record) for record in started]}


async def _async_get_transfers(call: ServiceCall) -> ServiceResponse:
    records = call.hass.data[DATA_GRID].transfers(
        limit=call.data[ATTR_LIMIT], active_only=call.data[ATTR_ACTIVE_ONLY]
    )
    return {"transfers": [_record(record) for record in records]}


def async_setup_services(hass: HomeAssistant) -> None:
    """Register PeerGrid's actions (from async_setup, once for the domain)."""
    hass.services.async_register(
        DOMAIN,
        SERVICE_START_TRANSFER,
        _async_start_transfer,
        schema=START_TRANSFER_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_STOP_TRANSFER,
        _async_stop_transfer,
        schema=STOP_TRANSFER_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_AUTO_BALANCE,
        _async_auto_balance,
        schema=AUTO_BALANCE_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_GET_TRANSFERS,
        _async_get_transfers,
        schema=GET_TRANSFERS_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )
