"""The ledger in Home Assistant: energy reports become mints, sell orders and carbon credits.

Reports reach the ledger two ways, through one path: a gateway posts them to
``iot/energy/report`` over real HTTP, and the grid writes one for each of its
own transfers between directly connected nodes. The tests here check the
amounts with numbers written out by hand, exactly-once under repeats and
restarts, refusals that leave no trace, the actions and the entities.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
import sqlite3
from typing import Any
import uuid

from aiohttp import web
from aiohttp.test_utils import TestClient
from homeassistant.core import Event, HomeAssistant
from homeassistant.exceptions import ServiceValidationError
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.peergrid.const import (
    CONF_DEVICE_ID,
    CONF_KIND,
    DOMAIN,
    GRID_UNIQUE_ID,
    EntryKind,
)
from custom_components.peergrid.grid import DATA_GRID, STORAGE_KEY
from custom_components.peergrid.iot_hub import DATA_IOT_HUB
from custom_components.peergrid.ledger import DATA_LEDGER, EVENT_ENERGY_MINT, PeerGridLedger
from custom_components.peergrid.peergrid_core.api import ApiPath
from custom_components.peergrid.peergrid_core.events import EnergyMintEvent
from custom_components.peergrid.peergrid_core.ledger import LedgerStorageError
from custom_components.peergrid.peergrid_core.stability import quality_factor_from_voltage
from custom_components.peergrid.peergrid_core.tokens import compute_mint
from peergrid_core.sim import NodeSpec, SimulatedGrid

from .helpers import node_entry, setup_entry, state_value, wait_until

type ApiClient = TestClient[web.Request, web.Application]

DEVICE = "rpi-4b-prod-01"
TRANSFER_ID = "5a0c3e1f2b7d4c9e8f6a1b2c3d4e5f60"
REPORT_ID = "9b2e4c6a-1d3f-4a5b-8c7d-9e0f1a2b3c4d"
REPORT: dict[str, Any] = {
    "device_id": DEVICE,
    "sender_uid": "NODE_A",
    "receiver_uid": "NODE_B",
    "kwh_transferred": 0.005,
    "duration_seconds": 1320,
    "avg_voltage": 3.92,
    "avg_current": 0.35,
    "report_id": REPORT_ID,
}
"""A gateway's report of the 5 Wh transfer :func:`stored_transfer` describes."""


def stored_transfer(
    transfer_id: str = TRANSFER_ID,
    *,
    sender: str = "NODE_A",
    receiver: str = "NODE_B",
    wh_out: float = 5.02,
    wh_in: float = 2.16,
) -> dict[str, Any]:
    """A finished transfer as the grid stores it (the grid ran it through a gateway)."""
    ended = dt_util.utcnow() - timedelta(minutes=5)
    return {
        "transfer_id": transfer_id,
        "sender": sender,
        "receiver": receiver,
        "requested_wh": 5.0,
        "requested_duration_s": None,
        "started_at": (ended - timedelta(minutes=22)).isoformat(),
        "ended_at": ended.isoformat(),
        "state": "completed",
        "stop_reason": "target_reached",
        "wh_out": wh_out,
        "wh_in": wh_in,
        "loss_wh": wh_out - wh_in,
        "avg_voltage_v": 3.92,
        "avg_current_a": 0.35,
        "trip_reason": None,
    }


@pytest.fixture
def transfers(hass_storage: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid's stored transfer history, read when the integration starts."""
    records = [stored_transfer()]
    hass_storage[STORAGE_KEY] = {
        "version": 1,
        "minor_version": 1,
        "key": STORAGE_KEY,
        "data": {"transfers": records, "totals": {}},
    }
    return records


@pytest.fixture
async def ledger(hass: HomeAssistant, transfers: list[dict[str, Any]]) -> PeerGridLedger:
    """PeerGrid set up with its grid entry (ledger entities) and the HTTP API."""
    assert await async_setup_component(hass, "http", {})
    grid_entry = MockConfigEntry(
        domain=DOMAIN, data={CONF_KIND: EntryKind.GRID}, unique_id=GRID_UNIQUE_ID
    )
    await setup_entry(hass, grid_entry)
    return hass.data[DATA_LEDGER]


@pytest.fixture
async def client(ledger: PeerGridLedger, hass_client: ClientSessionGenerator) -> ApiClient:
    """An HTTP client holding a valid Home Assistant access token."""
    api_client: ApiClient = await hass_client()
    return api_client


def mint_events(hass: HomeAssistant) -> list[Event]:
    """Collect ``peergrid_energy_mint`` bus events."""
    events: list[Event] = []
    hass.bus.async_listen(EVENT_ENERGY_MINT, events.append)
    return events


def ledger_rows(path: Path) -> dict[str, int]:
    """Row counts of the ledger file's tables, read with plain sqlite3."""
    with sqlite3.connect(path) as conn:
        tables = [
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}  # noqa: S608


# ---------------------------------------------------------------- a gateway's report over HTTP


async def test_report_mints_tokens_order_and_credit(
    hass: HomeAssistant, ledger: PeerGridLedger, client: ApiClient
) -> None:
    """0.005 kWh at 3.92 V: 4.5 tokens, 0.0041 kg CO2, one order at 0.2250 per kWh.

    By hand: 3.92 V scores 80 (20 points below 100 for 0.08 V from 4.0 V),
    so the quality factor is 0.5 + 0.5 x 0.80 = 0.90; 0.005 kWh x 1000 x 0.90
    = 4.5 tokens; 0.005 x 0.82 = 0.0041 kg. No node is online, so the market
    is balanced and the price is 0.25 x 0.90 = 0.2250 per kWh; the order costs
    0.005 x 0.2250 = 0.001125.
    """
    events = mint_events(hass)
    stream = hass.data[DATA_IOT_HUB].subscribe()

    response = await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    assert response.status == 200, await response.text()
    assert await response.json() == {"accepted": True, "duplicate": False, "report_id": REPORT_ID}
    await hass.async_block_till_done()

    (mint,) = ledger.service.mints()
    assert mint.transfer_id == TRANSFER_ID
    assert (mint.kwh, mint.quality_factor) == (Decimal("0.005"), Decimal("0.9"))
    assert mint.tokens == Decimal("4.5")
    assert mint.carbon_kg == Decimal("0.0041")
    (order,) = ledger.service.orders()
    assert order.order_id == mint.order_id
    assert (order.seller, order.status) == ("NODE_A", "open")
    assert order.price_per_kwh == Decimal("0.2250")
    assert order.total_price == Decimal("0.001125")
    assert order.tokens == Decimal("4.5")
    (credit,) = ledger.service.credits()
    assert (credit.account, credit.kg) == ("NODE_A", Decimal("0.0041"))

    (event,) = events
    assert event.data["report_id"] == REPORT_ID
    assert event.data["tokens_minted"] == 4.5
    assert event.data["co2_saved_kg"] == 0.0041
    assert event.data["order_id"] == order.order_id
    published = await stream.next_event()
    assert isinstance(published, EnergyMintEvent)
    assert published.data.tokens_minted == Decimal("4.5")
    assert published.data.sender_uid == "NODE_A"

    assert state_value(hass, "sensor.peergrid_grid_tokens_minted") == "4.5"
    assert state_value(hass, "sensor.peergrid_grid_carbon_saved") == "0.0041"
    assert state_value(hass, "sensor.peergrid_grid_open_sell_orders") == "1"
    assert state_value(hass, "sensor.peergrid_grid_market_price") == "0.25"


async def test_same_report_twice_mints_once(
    hass: HomeAssistant, ledger: PeerGridLedger, client: ApiClient
) -> None:
    """A retried report is acknowledged as a duplicate; nothing is minted twice."""
    events = mint_events(hass)
    first = await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    again = await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    assert (await first.json())["accepted"] is True
    assert await again.json() == {"accepted": False, "duplicate": True, "report_id": REPORT_ID}
    await hass.async_block_till_done()
    assert len(ledger.service.mints()) == 1
    assert len(ledger.service.orders()) == 1
    assert len(events) == 1


async def test_second_report_of_one_transfer_is_refused(
    hass: HomeAssistant, ledger_file: Path, ledger: PeerGridLedger, client: ApiClient
) -> None:
    """Another report id for a transfer already minted mints nothing."""
    await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    rows = ledger_rows(ledger_file)
    response = await client.post(
        ApiPath.IOT_ENERGY_REPORT.value, json={**REPORT, "report_id": str(uuid.uuid4())}
    )
    assert response.status == 400
    assert ledger_rows(ledger_file) == rows
    assert len(ledger.service.mints()) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sender_uid": "NODE_C"}, "sender_uid"),
        ({"receiver_uid": "NODE_C"}, "sender_uid"),
        ({"kwh_transferred": 0.009}, "kwh_transferred"),
        ({"kwh_transferred": 0.0005}, "kwh_transferred"),
        ({"kwh_transferred": 12}, "kwh_transferred"),
    ],
)
async def test_refused_report_leaves_no_trace(
    hass: HomeAssistant,
    ledger_file: Path,
    ledger: PeerGridLedger,
    client: ApiClient,
    change: dict[str, Any],
    field: str,
) -> None:
    """No such transfer, energy that differs from the measurement, out of range: 400, no trace."""
    events = mint_events(hass)
    rows = ledger_rows(ledger_file)
    response = await client.post(ApiPath.IOT_ENERGY_REPORT.value, json={**REPORT, **change})
    assert response.status == 400
    body = await response.json()
    assert body["error"] == "invalid_payload"
    assert [problem["field"] for problem in body["fields"]] == [field]
    await hass.async_block_till_done()
    assert ledger_rows(ledger_file) == rows
    assert ledger.service.mints() == ()
    assert events == []
    assert len(hass.data[DATA_IOT_HUB].reports) == 0


async def test_report_while_storage_fails_is_retryable(
    hass: HomeAssistant, ledger: PeerGridLedger, client: ApiClient
) -> None:
    """A ledger that cannot write answers 503 (the gateway keeps the report and retries)."""
    original = ledger.service.process_report

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise LedgerStorageError("database or disk is full")

    ledger.service.process_report = failing  # type: ignore[method-assign]
    response = await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    assert response.status == 503
    assert (await response.json())["error"] == "ledger_unavailable"
    ledger.service.process_report = original  # type: ignore[method-assign]
    retried = await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    assert (await retried.json())["accepted"] is True
    assert len(ledger.service.mints()) == 1


# ---------------------------------------------------------------- actions


async def test_list_verify_and_retire(
    hass: HomeAssistant, ledger: PeerGridLedger, client: ApiClient
) -> None:
    """The actions list mints and orders, retire credits once, and verify the chain."""
    await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)

    mints = await hass.services.async_call(
        DOMAIN, "list_mints", {}, blocking=True, return_response=True
    )
    assert mints is not None
    (listed,) = mints["mints"]
    assert (listed["sender"], listed["tokens"], listed["carbon_kg"]) == ("NODE_A", "4.5", "0.0041")
    orders = await hass.services.async_call(
        DOMAIN, "list_orders", {"status": "open"}, blocking=True, return_response=True
    )
    assert orders is not None
    assert [order["order_id"] for order in orders["orders"]] == [listed["order_id"]]
    assert orders["market_price"] == "0.25"

    retire = {"node": "NODE_A", "kg": "0.004", "retirement_id": "spring"}
    first = await hass.services.async_call(
        DOMAIN, "retire_carbon", retire, blocking=True, return_response=True
    )
    again = await hass.services.async_call(
        DOMAIN, "retire_carbon", retire, blocking=True, return_response=True
    )
    assert first == again
    assert ledger.service.totals().carbon_kg_retired == Decimal("0.004")
    await hass.async_block_till_done()
    assert state_value(hass, "sensor.peergrid_grid_carbon_credits_retired") == "0.004"
    with pytest.raises(ServiceValidationError) as refused:
        await hass.services.async_call(
            DOMAIN, "retire_carbon", {"node": "NODE_A", "kg": "0.001"}, blocking=True
        )
    assert refused.value.translation_key == "ledger_refused"
    assert refused.value.translation_placeholders["field"] == "kg"

    verified = await hass.services.async_call(
        DOMAIN, "verify_ledger", {}, blocking=True, return_response=True
    )
    assert verified == {"ok": True, "entries": 3, "problems": []}


async def test_verify_catches_a_tampered_row(
    hass: HomeAssistant, ledger_file: Path, ledger: PeerGridLedger, client: ApiClient
) -> None:
    """Edit an amount behind the ledger's back: the verify action reports it."""
    await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    with sqlite3.connect(ledger_file) as conn:
        (trigger,) = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%UPDATE%'"
        ).fetchone()
        conn.execute(f'DROP TRIGGER "{trigger}"')
        conn.execute("UPDATE entry SET amount = '450000000' WHERE seq = 1")
    verified = await hass.services.async_call(
        DOMAIN, "verify_ledger", {}, blocking=True, return_response=True
    )
    assert verified is not None
    assert verified["ok"] is False
    assert any("1" in problem for problem in verified["problems"])


async def test_cancel_and_unknown_order(
    hass: HomeAssistant, ledger: PeerGridLedger, client: ApiClient
) -> None:
    """An order can be withdrawn once; unknown orders are refused by name."""
    await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    (order,) = ledger.service.orders()
    cancelled = await hass.services.async_call(
        DOMAIN, "cancel_order", {"order_id": order.order_id}, blocking=True, return_response=True
    )
    assert cancelled is not None
    assert cancelled["order"]["status"] == "cancelled"
    for data in ({"order_id": order.order_id}, {"order_id": "nope"}):
        with pytest.raises(ServiceValidationError) as refused:
            await hass.services.async_call(DOMAIN, "cancel_order", data, blocking=True)
        assert refused.value.translation_placeholders["field"] == "order_id"


# ---------------------------------------------------------------- the grid's own transfers

SPEEDUP = 100.0


def _spec(uid: str, soc: float) -> NodeSpec:
    return NodeSpec(
        uid=uid,
        key=f"{uid.lower()}-key-0123456789abcdef",
        soc_percent=soc,
        limits={"lease_max_s": 3600},
    )


@pytest.fixture
def long_lease() -> Iterator[None]:
    """The longest lease: simulated time runs a hundred times faster than renewals."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("custom_components.peergrid.coordinator.LEASE_SECONDS", 3600)
        yield


@pytest.fixture
async def pair_grid(socket_enabled: None, long_lease: None) -> AsyncIterator[SimulatedGrid]:
    """A full sender and an empty receiver, a hundred times faster than life."""
    grid = SimulatedGrid([_spec("NODE_A", 95.0), _spec("NODE_B", 25.0)], speedup=SPEEDUP, seed=3)
    await grid.start()
    try:
        yield grid
    finally:
        await grid.stop()


async def test_direct_transfer_mints_once_and_an_order_is_bought(
    hass: HomeAssistant, pair_grid: SimulatedGrid
) -> None:
    """5 Wh between two direct nodes: one mint from the measurement; buying its order moves energy."""
    events = mint_events(hass)
    for uid in pair_grid.nodes:
        await setup_entry(hass, node_entry(pair_grid, uid))
    await hass.async_block_till_done()
    ledger = hass.data[DATA_LEDGER]
    started = await hass.services.async_call(
        DOMAIN,
        "start_transfer",
        {"sender": "NODE_A", "receiver": "NODE_B", "energy_wh": 5},
        blocking=True,
        return_response=True,
    )
    assert started is not None
    await wait_until(hass, lambda: bool(events), max_wait=300)
    await hass.async_block_till_done()

    (record,) = hass.data[DATA_GRID].transfers(limit=1)
    (mint,) = ledger.service.mints()
    assert mint.transfer_id == record.transfer_id == started["transfer_id"]
    assert mint.report_id == str(uuid.UUID(hex=record.transfer_id))
    assert mint.device_id == "peergrid-grid"
    # The report is the grid's own measurement, rounded down to one mWh.
    assert Decimal("0.005") <= mint.kwh <= Decimal(repr(record.wh_out)) / 1000
    expected = compute_mint(mint.kwh, quality_factor_from_voltage(round(record.avg_voltage_v, 3)))
    assert (mint.tokens, mint.carbon_kg) == (expected.tokens_minted, expected.carbon_kg)
    assert len(events) == 1

    # B is now the buyer of A's energy; the order becomes a transfer A -> B.
    (order,) = ledger.service.orders()
    bought = await hass.services.async_call(
        DOMAIN,
        "buy_order",
        {"order_id": order.order_id, "buyer": "NODE_B"},
        blocking=True,
        return_response=True,
    )
    assert bought is not None
    assert bought["order"]["status"] == "filled"
    assert bought["order"]["buyer"] == "NODE_B"
    assert (bought["transfer"]["sender"], bought["transfer"]["receiver"]) == ("NODE_A", "NODE_B")
    assert bought["transfer"]["requested_wh"] == pytest.approx(float(order.kwh) * 1000)
    assert pair_grid.nodes["NODE_A"].physical.supply_closed
    with pytest.raises(ServiceValidationError):
        await hass.services.async_call(
            DOMAIN, "buy_order", {"order_id": order.order_id, "buyer": "NODE_B"}, blocking=True
        )
    await hass.services.async_call(DOMAIN, "stop_transfer", {}, blocking=True)


async def test_restart_settles_a_transfer_it_did_not_mint(
    hass: HomeAssistant, pair_grid: SimulatedGrid
) -> None:
    """Home Assistant stopped between the end of a transfer and its mint: one mint after restart."""
    for uid in pair_grid.nodes:
        await setup_entry(hass, node_entry(pair_grid, uid))
    ledger: PeerGridLedger = hass.data[DATA_LEDGER]
    original = ledger.service.process_report

    async def killed(*args: Any, **kwargs: Any) -> Any:
        raise LedgerStorageError("Home Assistant stopped before the mint was written")

    ledger.service.process_report = killed  # type: ignore[method-assign]
    await hass.services.async_call(
        DOMAIN,
        "start_transfer",
        {"sender": "NODE_A", "receiver": "NODE_B", "energy_wh": 2},
        blocking=True,
    )
    grid = hass.data[DATA_GRID]
    await wait_until(hass, lambda: grid.active_count == 0, max_wait=300)
    await hass.async_block_till_done()
    assert ledger.service.mints() == ()
    ledger.service.process_report = original  # type: ignore[method-assign]

    # The next start: a new ledger on the same file settles what was left,
    # and a second restart finds nothing more to mint.
    await ledger.async_shutdown()
    for _ in range(2):
        restarted = PeerGridLedger(hass, grid)
        await restarted.async_setup()
        hass.data[DATA_LEDGER] = restarted
        await hass.async_block_till_done()
        (mint,) = restarted.service.mints()
        assert mint.transfer_id == grid.transfers(limit=1)[0].transfer_id
        await restarted.async_shutdown()


# ---------------------------------------------------------------- DePIN rewards


async def test_gateway_rewards_are_paid_once(
    hass: HomeAssistant, ledger: PeerGridLedger, client: ApiClient
) -> None:
    """A registered gateway earns 100 LT once; paying again pays nothing more."""
    gateway = MockConfigEntry(
        domain=DOMAIN,
        data={CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: DEVICE},
        unique_id=f"gateway:{DEVICE}",
        title=DEVICE,
    )
    await setup_entry(hass, gateway)
    response = await client.post(
        ApiPath.DEPIN_REGISTER.value,
        json={
            "device_id": DEVICE,
            "hardware_model": "Raspberry Pi 4B",
            "firmware_version": "0.3.0",
            "wallet_address": "GBRPYHIL2CI3FNQ4BXLFMNDLFJUNPU2HY3ZMFSHONUCEOASW7QC7OX2H",
        },
    )
    assert response.status == 201
    await ledger.async_pay_rewards()
    await ledger.async_pay_rewards()
    await hass.async_block_till_done()
    (payment,) = ledger.service.rewards(DEVICE)
    assert (payment.category, payment.amount) == ("registration", Decimal(100))
    assert ledger.service.totals().rewards_paid == {DEVICE: Decimal(100)}
    assert state_value(hass, "sensor.rpi_4b_prod_01_reward_balance") == "100"
    assert float(state_value(hass, "sensor.rpi_4b_prod_01_reliability")) == pytest.approx(100.0)
