"""PeerGrid actions: start and stop transfers, auto-balance, transfer history."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
import uuid

from homeassistant.core import HomeAssistant, ServiceCall, ServiceResponse, SupportsResponse
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import config_validation as cv, device_registry as dr
import voluptuous as vol

from .const import DOMAIN
from .grid import DATA_GRID, HISTORY_LIMIT
from .ledger import DATA_LEDGER
from .peergrid_core.balancer import BalancePlan
from .peergrid_core.errors import PeerGridValidationError
from .peergrid_core.ledger import IdempotencyConflictError, MintRecord, OrderStatus, SellOrder
from .peergrid_core.transfer import MAX_DURATION_S, MAX_ENERGY_WH, TransferRecord

SERVICE_START_TRANSFER = "start_transfer"
SERVICE_STOP_TRANSFER = "stop_transfer"
SERVICE_AUTO_BALANCE = "auto_balance"
SERVICE_GET_TRANSFERS = "get_transfers"
SERVICE_LIST_MINTS = "list_mints"
SERVICE_LIST_ORDERS = "list_orders"
SERVICE_BUY_ORDER = "buy_order"
SERVICE_CANCEL_ORDER = "cancel_order"
SERVICE_RETIRE_CARBON = "retire_carbon"
SERVICE_VERIFY_LEDGER = "verify_ledger"

ATTR_SENDER = "sender"
ATTR_RECEIVER = "receiver"
ATTR_ENERGY_WH = "energy_wh"
ATTR_DURATION = "duration"
ATTR_TRANSFER_ID = "transfer_id"
ATTR_DRY_RUN = "dry_run"
ATTR_LIMIT = "limit"
ATTR_ACTIVE_ONLY = "active_only"
ATTR_ORDER_ID = "order_id"
ATTR_BUYER = "buyer"
ATTR_NODE = "node"
ATTR_STATUS = "status"
ATTR_KG = "kg"
ATTR_RETIREMENT_ID = "retirement_id"

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


LIST_MINTS_SCHEMA = vol.Schema(
    {
        vol.Optional(ATTR_NODE): cv.string,
        vol.Optional(ATTR_LIMIT, default=20): vol.All(vol.Coerce(int), vol.Range(min=1, max=1000)),
    }
)
LIST_ORDERS_SCHEMA = vol.Schema(
    {vol.Optional(ATTR_STATUS): vol.In([status.value for status in OrderStatus])}
)
BUY_ORDER_SCHEMA = vol.Schema(
    {vol.Required(ATTR_ORDER_ID): cv.string, vol.Required(ATTR_BUYER): cv.string}
)
CANCEL_ORDER_SCHEMA = vol.Schema({vol.Required(ATTR_ORDER_ID): cv.string})
RETIRE_CARBON_SCHEMA = vol.Schema(
    {
        vol.Required(ATTR_NODE): cv.string,
        vol.Required(ATTR_KG): vol.All(
            vol.Coerce(str), vol.Match(r"^\d{1,6}(\.\d{1,7})?$"), vol.Coerce(Decimal)
        ),
        vol.Optional(ATTR_RETIREMENT_ID): cv.string,
    }
)


def _node_uid(hass: HomeAssistant, value: str, field: str) -> str:
    """A node given as a device id (as the UI's device selector sends) or as its uid."""
    grid = hass.data[DATA_GRID]
    if (device := dr.async_get(hass).async_get(value)) is not None:
        for domain, identifier in device.identifiers:
            if domain == DOMAIN and grid.has_node(identifier):
                return identifier
    elif grid.has_node(value):
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
    async_setup_ledger_services(hass)
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


# ------------------------------------------------------------ ledger


def _refused(err: PeerGridValidationError) -> ServiceValidationError:
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="ledger_refused",
        translation_placeholders={"field": err.field, "message": err.message},
    )


def _text(value: Decimal) -> str:
    """An exact amount as JSON text: no float rounding, no exponent."""
    return format(value.normalize(), "f")


def _order(order: SellOrder) -> dict[str, Any]:
    return order.model_dump(mode="json")


def _mint(record: MintRecord) -> dict[str, Any]:
    return {
        "report_id": record.report_id,
        "transfer_id": record.transfer_id,
        "device_id": record.device_id,
        "sender": record.sender_uid,
        "receiver": record.receiver_uid,
        "kwh": _text(record.kwh),
        "quality_factor": _text(record.quality_factor),
        "tokens": _text(record.tokens),
        "carbon_kg": _text(record.carbon_kg),
        "order_id": record.order_id,
        "created_at": record.created_at.isoformat(),
    }


async def _async_list_mints(call: ServiceCall) -> ServiceResponse:
    ledger = call.hass.data[DATA_LEDGER].service
    sender = call.data.get(ATTR_NODE)
    if sender is not None:
        sender = _ledger_account(call.hass, sender, ATTR_NODE)
    mints = sorted(ledger.mints(sender=sender), key=lambda m: m.created_at, reverse=True)
    return {"mints": [_mint(record) for record in mints[: call.data[ATTR_LIMIT]]]}


async def _async_list_orders(call: ServiceCall) -> ServiceResponse:
    ledger = call.hass.data[DATA_LEDGER]
    status = call.data.get(ATTR_STATUS)
    orders = ledger.service.orders(OrderStatus(status) if status else None)
    return {
        "market_price": _text(ledger.price_now()),
        "currency": ledger.service.pricing.currency,
        "orders": [_order(order) for order in orders],
    }


async def _async_buy_order(call: ServiceCall) -> ServiceResponse:
    """Fill an order and start the transfer that delivers it; reopen it if that fails."""
    hass = call.hass
    ledger = hass.data[DATA_LEDGER].service
    buyer = _node_uid(hass, call.data[ATTR_BUYER], ATTR_BUYER)
    order_id = call.data[ATTR_ORDER_ID]
    if (order := ledger.order(order_id)) is None:
        raise _refused(PeerGridValidationError(ATTR_ORDER_ID, f"there is no sell order {order_id}"))
    _node_uid(hass, order.seller, ATTR_ORDER_ID)
    try:
        order = await ledger.buy_order(order_id, buyer=buyer)
    except PeerGridValidationError as err:
        raise _refused(err) from err
    try:
        record = await hass.data[DATA_GRID].async_start_transfer(
            order.seller, buyer, energy_wh=float(order.kwh * 1000)
        )
    except HomeAssistantError:
        await ledger.reopen_order(order_id)
        raise
    return {"order": _order(order), "transfer": _record(record)}


async def _async_cancel_order(call: ServiceCall) -> ServiceResponse:
    try:
        order = await call.hass.data[DATA_LEDGER].service.cancel_order(call.data[ATTR_ORDER_ID])
    except PeerGridValidationError as err:
        raise _refused(err) from err
    return {"order": _order(order)}


async def _async_retire_carbon(call: ServiceCall) -> ServiceResponse:
    """Retire carbon credits of a node for good; the same retirement id never retires twice."""
    hass = call.hass
    account = _ledger_account(hass, call.data[ATTR_NODE], ATTR_NODE)
    key = call.data.get(ATTR_RETIREMENT_ID) or uuid.uuid4().hex
    try:
        receipt = await hass.data[DATA_LEDGER].service.retire_carbon(
            account, call.data[ATTR_KG], key=key
        )
    except PeerGridValidationError as err:
        raise _refused(err) from err
    except IdempotencyConflictError as err:
        raise _refused(PeerGridValidationError(ATTR_RETIREMENT_ID, str(err))) from err
    hass.data[DATA_LEDGER].async_notify()
    return {
        "retirement_id": key,
        "node": account,
        "kg": _text(call.data[ATTR_KG]),
        "entry_hash": receipt.ref,
        "entry": receipt.ledger,
    }


async def _async_verify_ledger(call: ServiceCall) -> ServiceResponse:
    result = await call.hass.data[DATA_LEDGER].service.verify()
    return {"ok": result.ok, "entries": result.entries, "problems": list(result.problems)}


def _ledger_account(hass: HomeAssistant, value: str, field: str) -> str:
    """A node's ledger account: its uid, given as a device id or the uid itself.

    Nodes that are gone keep their accounts, so a uid the ledger knows is
    accepted even when the node is not loaded.
    """
    ledger = hass.data[DATA_LEDGER].service
    if (device := dr.async_get(hass).async_get(value)) is not None:
        for domain, identifier in device.identifiers:
            if domain == DOMAIN:
                return identifier
    elif hass.data[DATA_GRID].has_node(value) or ledger.mints(sender=value):
        return value
    raise ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key="unknown_node",
        translation_placeholders={"node": value, "field": field},
    )


def async_setup_ledger_services(hass: HomeAssistant) -> None:
    """Register the ledger's actions: mints, the order book, carbon credits, verification."""
    for name, handler, schema, response in (
        (SERVICE_LIST_MINTS, _async_list_mints, LIST_MINTS_SCHEMA, SupportsResponse.ONLY),
        (SERVICE_LIST_ORDERS, _async_list_orders, LIST_ORDERS_SCHEMA, SupportsResponse.ONLY),
        (SERVICE_BUY_ORDER, _async_buy_order, BUY_ORDER_SCHEMA, SupportsResponse.OPTIONAL),
        (SERVICE_CANCEL_ORDER, _async_cancel_order, CANCEL_ORDER_SCHEMA, SupportsResponse.OPTIONAL),
        (
            SERVICE_RETIRE_CARBON,
            _async_retire_carbon,
            RETIRE_CARBON_SCHEMA,
            SupportsResponse.OPTIONAL,
        ),
        (SERVICE_VERIFY_LEDGER, _async_verify_ledger, vol.Schema({}), SupportsResponse.ONLY),
    ):
        hass.services.async_register(
            DOMAIN, name, handler, schema=schema, supports_response=response
        )
