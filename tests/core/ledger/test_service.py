"""The ledger service: reports become exact mints and orders once; refusals write nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
import hashlib
import json
from pathlib import Path
import sqlite3
import threading
import uuid

import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.events import EnergyMintData, EnergyMintEvent, parse_sse
from peergrid_core.ledger import (
    IdempotencyConflictError,
    LedgerChange,
    LedgerChangeKind,
    LedgerConfigError,
    LedgerDatabase,
    LedgerService,
    LedgerStorageError,
    LocalLedger,
    MarketState,
    MintStatus,
    OrderStatus,
    PricingConfig,
    Token,
    TransferEvidence,
)
from peergrid_core.payloads import EnergyReport
from peergrid_core.stability import quality_factor_from_voltage

from .conftest import BALANCED, T0, FrozenClock, make_evidence, make_report, row_counts

REPORT_ID = "6f1c2b1e-8a0d-4c59-9b1e-2f7a3d4c5b6a"

EMPTY = {"entry": 0, "balance": 0, "chain_head": 0, "report": 0, "sell_order": 0, "reward": 0}
ONE_REPORT = {"entry": 2, "balance": 2, "chain_head": 1, "report": 1, "sell_order": 1, "reward": 0}


def _report_id(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


# ---------------------------------------------------------------- accepted reports


async def test_five_wh_report_mints_exact_amounts(
    service: LedgerService, ledger_path: Path
) -> None:
    # By hand: deviation |3.92 - 3.85| = 0.07 V, score = 100 - 0.07 / 0.35 * 100 = 80,
    # quality factor = 0.5 + 0.5 * 80 / 100 = 0.9.
    quality = quality_factor_from_voltage(3.92)
    assert quality == Decimal("0.9000")
    # tokens = 0.005 kWh * 1000 * 0.9 = 4.5; carbon = 0.005 kWh * 0.82 = 0.0041 kg.
    outcome = await service.process_report(
        make_report(kwh=0.005, avg_voltage=3.92, report_id=REPORT_ID),
        evidence=make_evidence(wh_out=5.0),
        market=BALANCED,
    )
    assert not outcome.duplicate
    assert outcome.report_id == REPORT_ID
    assert outcome.amounts.kwh_transferred == Decimal("0.005")
    assert outcome.amounts.quality_factor == quality
    assert outcome.amounts.tokens_minted == Decimal("4.5")
    assert outcome.amounts.carbon_kg == Decimal("0.0041")
    assert outcome.energy.amount == 45_000_000
    assert outcome.carbon.amount == 41_000
    assert (outcome.energy.token, outcome.carbon.token) == (Token.ENERGY, Token.CARBON)
    assert outcome.energy.account == outcome.carbon.account == "NODE_A"
    assert outcome.energy.key == f"report:{REPORT_ID}:energy"
    assert outcome.carbon.key == f"report:{REPORT_ID}:carbon"
    assert outcome.energy.status is MintStatus.CONFIRMED
    assert (outcome.energy.ledger, outcome.carbon.ledger) == (1, 2)
    assert outcome.chain == ()
    # Balanced grid: price = 0.25 * 0.9 = 0.2250 per kWh; total = 0.005 * 0.225 = 0.001125.
    order = outcome.order
    assert order.status is OrderStatus.OPEN
    assert order.seller == "NODE_A"
    assert order.report_id == REPORT_ID
    assert order.order_id == str(
        uuid.uuid5(uuid.UUID("3f0c2a4e-5d1b-4c8e-9a77-6b2f1d0e9c41"), REPORT_ID)
    )
    assert (order.kwh, order.tokens) == (Decimal("0.005"), Decimal("4.5"))
    assert order.price_per_kwh == Decimal("0.2250")
    assert order.total_price == Decimal("0.001125")
    assert order.currency == "EUR"
    assert order.created_at == T0

    assert row_counts(ledger_path) == ONE_REPORT
    assert service.balance(Token.ENERGY, "NODE_A") == Decimal("4.5")
    assert service.balance(Token.CARBON, "NODE_A") == Decimal("0.0041")
    assert service.balance(Token.ENERGY, "NODE_B") == 0
    totals = service.totals()
    assert totals.reports == 1
    assert totals.kwh_minted == Decimal("0.005")
    assert totals.tokens_minted == Decimal("4.5")
    assert totals.carbon_kg_credited == Decimal("0.0041")
    assert totals.carbon_kg_retired == 0
    assert (totals.open_orders, totals.filled_orders) == (1, 0)
    assert dict(totals.rewards_paid) == {}
    (mint,) = service.mints()
    assert (mint.report_id, mint.transfer_id, mint.tokens) == (
        REPORT_ID,
        "transfer-1",
        Decimal("4.5"),
    )
    assert service.mints(sender="NODE_B") == ()
    assert service.orders() == (order,)
    assert service.order(order.order_id) == order
    (credit,) = service.credits()
    assert (credit.account, credit.kg, credit.report_id) == ("NODE_A", Decimal("0.0041"), REPORT_ID)
    assert (await service.verify()).ok


async def test_the_energy_mint_event_validates(service: LedgerService) -> None:
    outcome = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    event = outcome.event
    assert isinstance(event, EnergyMintData)
    # Re-validating runs EnergyMintData's own amount checks against tokens.py.
    assert EnergyMintData.model_validate(event.model_dump()) == event
    assert (event.tokens_minted, event.co2_saved_kg) == (Decimal("4.5"), Decimal("0.0041"))
    assert event.quality_factor == Decimal("0.9")
    # Price per token = 0.001125 / 4.5 = 0.00025 (the per-kWh price over 900 tokens per kWh).
    assert event.sell_price == Decimal("0.00025")
    assert event.report_id == REPORT_ID
    assert (event.sender_uid, event.receiver_uid) == ("NODE_A", "NODE_B")
    message = EnergyMintEvent(data=event).to_sse()
    assert parse_sse(message) == EnergyMintEvent(data=event)


async def test_the_specification_report_end_to_end(service: LedgerService) -> None:
    """0.5 kWh at 3.92 V, one donor and three receivers: docs/formulas.md's example."""
    outcome = await service.process_report(
        make_report(kwh=0.5),
        evidence=make_evidence(wh_out=500.0, wh_in=390.0),
        market=MarketState(donors=1, receivers=3),
    )
    assert outcome.amounts.tokens_minted == Decimal(450)
    assert outcome.amounts.carbon_kg == Decimal("0.41")
    assert outcome.energy.amount == 4_500_000_000
    assert outcome.carbon.amount == 4_100_000
    assert outcome.order.price_per_kwh == Decimal("0.2700")
    assert outcome.order.total_price == Decimal("0.135")
    assert outcome.event.sell_price == Decimal("0.0003")


async def test_a_report_without_id_gets_the_digest_of_its_content(service: LedgerService) -> None:
    report = make_report()
    canonical = json.dumps(report.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    outcome = await service.process_report(report, evidence=make_evidence(), market=BALANCED)
    assert outcome.report_id == expected
    assert outcome.event.report_id == expected
    again = await service.process_report(report, evidence=make_evidence(), market=BALANCED)
    assert again.duplicate
    assert again.report_id == expected


async def test_pricing_can_change_between_reports(service: LedgerService) -> None:
    service.pricing = PricingConfig(base_price=Decimal("0.40"), currency="USDC")
    outcome = await service.process_report(make_report(), evidence=make_evidence(), market=BALANCED)
    assert service.pricing.currency == "USDC"
    assert outcome.order.price_per_kwh == Decimal("0.3600")
    assert outcome.order.currency == "USDC"


# ---------------------------------------------------------------- refused reports


@pytest.mark.parametrize(
    ("report", "evidence", "field", "message"),
    [
        (
            EnergyReport.model_construct(
                **{**make_report().model_dump(), "kwh_transferred": Decimal("0.0009")}
            ),
            make_evidence(),
            "kwh_transferred",
            "outside 0.001..10",
        ),
        (make_report(), None, "sender_uid", "no discharge command was active for NODE_A"),
        (
            make_report(),
            make_evidence(discharge_commanded=False),
            "sender_uid",
            "no discharge command",
        ),
        (
            make_report(sender="NODE_C"),
            make_evidence(),
            "sender_uid",
            "NODE_C is not the measured sender NODE_A",
        ),
        (
            make_report(receiver="NODE_C"),
            make_evidence(),
            "receiver_uid",
            "NODE_C is not the measured receiver NODE_B",
        ),
        (
            make_report(kwh=0.5),
            make_evidence(wh_out=470.0),
            "kwh_transferred",
            r"0\.5 kWh differs from the 0\.47 kWh measured leaving NODE_A by more than 0\.0235 kWh",
        ),
        (
            make_report(kwh=0.005),
            make_evidence(wh_out=3.999),
            "kwh_transferred",
            r"0\.005 kWh differs from the 0\.003999 kWh .* by more than 0\.001 kWh",
        ),
        # Several faults: the first check in the documented order is the one reported.
        (
            EnergyReport.model_construct(
                **{**make_report().model_dump(), "kwh_transferred": Decimal(11)}
            ),
            None,
            "kwh_transferred",
            "outside",
        ),
        (make_report(sender="NODE_C", kwh=0.5), make_evidence(), "sender_uid", "NODE_C"),
    ],
)
async def test_refused_reports_name_the_field_and_write_nothing(
    service: LedgerService,
    ledger_path: Path,
    report: EnergyReport,
    evidence: object,
    field: str,
    message: str,
) -> None:
    await service.process_report(
        make_report(kwh=0.002, report_id=REPORT_ID),
        evidence=make_evidence(transfer_id="earlier", wh_out=2.0),
        market=BALANCED,
    )
    before = row_counts(ledger_path)
    totals = service.totals()
    with pytest.raises(PeerGridValidationError, match=message) as caught:
        await service.process_report(report, evidence=evidence, market=BALANCED)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert row_counts(ledger_path) == before
    assert service.totals() == totals


async def test_tolerance_is_five_percent_or_one_watt_hour(service: LedgerService) -> None:
    # 5 Wh claimed, 4 Wh measured: 1 Wh off, exactly the 1 Wh floor.
    await service.process_report(
        make_report(kwh=0.005), evidence=make_evidence(wh_out=4.0), market=BALANCED
    )
    # 0.5 kWh claimed, 0.4762 kWh measured: 0.0238 off; 5 % of 0.4762 is 0.02381.
    await service.process_report(
        make_report(kwh=0.5),
        evidence=make_evidence(transfer_id="t2", wh_out=476.2),
        market=BALANCED,
    )
    with pytest.raises(PeerGridValidationError) as caught:
        await service.process_report(
            make_report(kwh=0.5, avg_voltage=3.9),
            evidence=make_evidence(transfer_id="t3", wh_out=476.1),
            market=BALANCED,
        )
    assert caught.value.field == "kwh_transferred"


async def test_a_transfer_is_minted_only_once(service: LedgerService, ledger_path: Path) -> None:
    first = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    before = row_counts(ledger_path)
    with pytest.raises(
        PeerGridValidationError, match=f"already minted by report {first.report_id}"
    ) as caught:
        await service.process_report(
            make_report(report_id=_report_id(7)), evidence=make_evidence(), market=BALANCED
        )
    assert caught.value.field == "report_id"
    assert row_counts(ledger_path) == before


async def test_a_closed_service_refuses_work(make_service: Callable[..., LedgerService]) -> None:
    ledger = make_service()
    with pytest.raises(LedgerStorageError, match="not open"):
        await ledger.process_report(make_report(), evidence=make_evidence(), market=BALANCED)
    await ledger.open()
    await ledger.close()
    with pytest.raises(LedgerStorageError, match="not open"):
        await ledger.retire_carbon("NODE_A", Decimal(1), key="k")


# ---------------------------------------------------------------- idempotency


async def test_a_duplicate_returns_the_stored_outcome(
    service: LedgerService, ledger_path: Path
) -> None:
    changes: list[LedgerChange] = []
    service.add_listener(changes.append)
    report = make_report(report_id=REPORT_ID.upper())
    first = await service.process_report(report, evidence=make_evidence(), market=BALANCED)
    assert first.report_id == REPORT_ID  # ids are held in lower case
    before = row_counts(ledger_path)
    # A different market now: the duplicate still shows the price it was offered at.
    again = await service.process_report(
        report, evidence=make_evidence(), market=MarketState(donors=0, receivers=9)
    )
    assert again.duplicate
    assert replace(again, duplicate=False) == first
    assert row_counts(ledger_path) == before
    assert [change.kind for change in changes] == [LedgerChangeKind.REPORT]
    assert service.totals().reports == 1


async def test_a_duplicate_shows_the_order_as_it_stands(service: LedgerService) -> None:
    first = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    await service.buy_order(first.order.order_id, buyer="NODE_C")
    again = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    assert again.order.status is OrderStatus.FILLED
    assert again.order.buyer == "NODE_C"
    assert await service.report_outcome(REPORT_ID) == again
    assert await service.report_outcome(_report_id(99)) is None


async def test_a_reused_report_id_with_other_content_is_a_conflict(
    service: LedgerService, ledger_path: Path
) -> None:
    await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    before = row_counts(ledger_path)
    with pytest.raises(IdempotencyConflictError, match="different content"):
        await service.process_report(
            make_report(kwh=0.006, report_id=REPORT_ID),
            evidence=make_evidence(transfer_id="t2", wh_out=6.0),
            market=BALANCED,
        )
    with pytest.raises(IdempotencyConflictError, match="minted for transfer transfer-1, not t2"):
        await service.process_report(
            make_report(report_id=REPORT_ID),
            evidence=make_evidence(transfer_id="t2"),
            market=BALANCED,
        )
    assert row_counts(ledger_path) == before


async def test_concurrent_retries_mint_once(service: LedgerService, ledger_path: Path) -> None:
    report = make_report(report_id=REPORT_ID)
    outcomes = await asyncio.gather(
        *(
            service.process_report(report, evidence=make_evidence(), market=BALANCED)
            for _ in range(5)
        )
    )
    assert sorted(outcome.duplicate for outcome in outcomes) == [False, True, True, True, True]
    assert row_counts(ledger_path) == ONE_REPORT


async def test_concurrent_reports_chain_in_order(service: LedgerService) -> None:
    await asyncio.gather(
        *(
            service.process_report(
                make_report(report_id=_report_id(n)),
                evidence=make_evidence(transfer_id=f"t{n}"),
                market=BALANCED,
            )
            for n in range(10)
        )
    )
    result = await service.verify()
    assert result.ok
    assert result.entries == 20
    assert service.totals().tokens_minted == Decimal(45)


# ---------------------------------------------------------------- storage failures


async def test_disk_full_leaves_nothing_half_written(
    service: LedgerService, ledger_path: Path
) -> None:
    db = service._db
    await db.read(
        lambda conn: conn.execute(
            "PRAGMA max_page_count = " + str(conn.execute("PRAGMA page_count").fetchone()[0])
        )
    )
    accepted = 0
    failure: LedgerStorageError | None = None
    for n in range(500):
        before = row_counts(ledger_path)
        try:
            await service.process_report(
                make_report(report_id=_report_id(n)),
                evidence=make_evidence(transfer_id=f"t{n}"),
                market=BALANCED,
            )
        except LedgerStorageError as err:
            failure = err
            break
        accepted += 1
    assert failure is not None, "the page limit was never reached"
    assert "disk full" in str(failure)
    assert row_counts(ledger_path) == before
    assert service.totals().reports == accepted
    assert (await service.verify()).ok
    # With space again, the very same report goes through as new, not as a duplicate.
    await db.read(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
    outcome = await service.process_report(
        make_report(report_id=_report_id(accepted)),
        evidence=make_evidence(transfer_id=f"t{accepted}"),
        market=BALANCED,
    )
    assert not outcome.duplicate
    assert service.totals().reports == accepted + 1
    assert (await service.verify()).ok


async def test_a_read_only_ledger_is_readable_and_refuses_writes(
    make_service: Callable[..., LedgerService], ledger_path: Path
) -> None:
    writer = make_service()
    await writer.open()
    first = await writer.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    await writer.close()
    before = row_counts(ledger_path)

    reader = make_service(read_only=True)
    await reader.open()
    try:
        assert reader.totals().reports == 1
        assert reader.orders() == (first.order,)
        with pytest.raises(LedgerStorageError, match="read-only"):
            await reader.process_report(
                make_report(report_id=_report_id(5)),
                evidence=make_evidence(transfer_id="t5"),
                market=BALANCED,
            )
        with pytest.raises(LedgerStorageError, match="read-only"):
            await reader.buy_order(first.order.order_id, buyer="NODE_C")
        assert reader.totals().reports == 1
        assert reader.orders() == (first.order,)
        assert (await reader.verify()).ok
    finally:
        await reader.close()
    assert row_counts(ledger_path) == before


# ---------------------------------------------------------------- orders


async def test_order_life_cycle(service: LedgerService, clock: FrozenClock) -> None:
    outcome = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    order_id = outcome.order.order_id
    clock.advance(timedelta(minutes=5))
    filled = await service.buy_order(order_id, buyer="NODE_C")
    assert (filled.status, filled.buyer) == (OrderStatus.FILLED, "NODE_C")
    assert filled.updated_at == T0 + timedelta(minutes=5)
    assert service.totals().open_orders == 0
    assert service.totals().filled_orders == 1
    assert service.orders(OrderStatus.FILLED) == (filled,)
    with pytest.raises(PeerGridValidationError, match="is filled, not open") as caught:
        await service.buy_order(order_id, buyer="NODE_D")
    assert caught.value.field == "order_id"
    reopened = await service.reopen_order(order_id)
    assert (reopened.status, reopened.buyer) == (OrderStatus.OPEN, None)
    with pytest.raises(PeerGridValidationError, match="is open, not filled"):
        await service.reopen_order(order_id)
    cancelled = await service.cancel_order(order_id)
    assert cancelled.status is OrderStatus.CANCELLED
    with pytest.raises(PeerGridValidationError, match="is cancelled, not open"):
        await service.buy_order(order_id, buyer="NODE_C")
    assert service.orders(OrderStatus.OPEN) == ()
    assert service.order(order_id) == cancelled


async def test_bad_purchases_are_refused(service: LedgerService) -> None:
    outcome = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    with pytest.raises(PeerGridValidationError) as caught:
        await service.buy_order("nope", buyer="NODE_C")
    assert caught.value.field == "order_id"
    with pytest.raises(PeerGridValidationError) as caught:
        await service.buy_order(outcome.order.order_id, buyer="NODE_A")
    assert caught.value.field == "buyer"
    with pytest.raises(PeerGridValidationError) as caught:
        await service.buy_order(outcome.order.order_id, buyer="")
    assert caught.value.field == "buyer"
    assert service.order(outcome.order.order_id) == outcome.order


async def test_concurrent_buyers_fill_an_order_once(service: LedgerService) -> None:
    outcome = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    results = await asyncio.gather(
        *(service.buy_order(outcome.order.order_id, buyer=f"NODE_{n}") for n in range(4)),
        return_exceptions=True,
    )
    filled = [result for result in results if not isinstance(result, BaseException)]
    refused = [result for result in results if isinstance(result, PeerGridValidationError)]
    assert len(filled) == 1
    assert len(refused) == 3
    assert service.order(outcome.order.order_id) == filled[0]


# ---------------------------------------------------------------- carbon


async def test_retiring_carbon(service: LedgerService, ledger_path: Path) -> None:
    await service.process_report(
        make_report(kwh=0.5), evidence=make_evidence(wh_out=500.0), market=BALANCED
    )
    receipt = await service.retire_carbon("NODE_A", Decimal("0.1"), key="certificate-1")
    assert receipt.amount == 1_000_000
    assert receipt.key == "retire:certificate-1"
    before = row_counts(ledger_path)
    assert await service.retire_carbon("NODE_A", Decimal("0.1000"), key="certificate-1") == receipt
    assert row_counts(ledger_path) == before
    with pytest.raises(IdempotencyConflictError):
        await service.retire_carbon("NODE_A", Decimal("0.2"), key="certificate-1")
    with pytest.raises(PeerGridValidationError, match=r"0\.3100001 kg exceeds") as caught:
        await service.retire_carbon("NODE_A", Decimal("0.3100001"), key="certificate-2")
    assert caught.value.field == "kg"
    for bad in (Decimal(0), Decimal(-1), Decimal("0.00000001"), Decimal("NaN")):
        with pytest.raises(PeerGridValidationError) as caught:
            await service.retire_carbon("NODE_A", bad, key="certificate-3")
        assert caught.value.field == "kg"
    assert row_counts(ledger_path) == before
    assert service.balance(Token.CARBON, "NODE_A") == Decimal("0.31")
    totals = service.totals()
    assert (totals.carbon_kg_credited, totals.carbon_kg_retired) == (
        Decimal("0.41"),
        Decimal("0.1"),
    )
    assert [(c.kind.value, c.kg) for c in service.credits("NODE_A")] == [
        ("credited", Decimal("0.41")),
        ("retired", Decimal("0.1")),
    ]
    assert service.credits("NODE_B") == ()


# ---------------------------------------------------------------- rewards


async def test_rewards_are_paid_once_with_deterministic_keys(
    make_service: Callable[..., LedgerService],
) -> None:
    from peergrid_core.depin import DepinNode

    day = timedelta(days=1)
    ledger = make_service()
    await ledger.open()
    # Heartbeats every day with a 12 h interval: each beat vouches for 24 h.
    node = DepinNode(
        node_id="rpi-1",
        registered_at=T0,
        heartbeats=(T0 + day, T0 + 2 * day),
        kwh_routed=Decimal("1.2345678"),
        heartbeat_interval=timedelta(hours=12),
    )
    # At T0 + 2.5 days: 100 LT registration, 2 full days x 10 LT, 1.2345678 kWh x 1 LT.
    receipts = await ledger.sync_rewards(node, account="GATEWAY-1", now=T0 + 2 * day + day / 2)
    assert [(r.key, r.amount) for r in receipts] == [
        ("reward:rpi-1:registration:1", 1_000_000_000),
        ("reward:rpi-1:uptime:2", 200_000_000),
        ("reward:rpi-1:routing:12345678", 12_345_678),
    ]
    assert all(r.token is Token.REWARD and r.account == "GATEWAY-1" for r in receipts)
    assert await ledger.sync_rewards(node, account="GATEWAY-1", now=T0 + 2 * day + day / 2) == []

    # At T0 + 31 days, up all along: 31 days (310 LT, 290 new), one bonus window
    # above 90 % (50 LT), routing now 2.5 kWh (1.2654322 LT new).
    later = DepinNode(
        node_id="rpi-1",
        registered_at=T0,
        heartbeats=tuple(T0 + n * day for n in range(1, 32)),
        kwh_routed=Decimal("2.5"),
        heartbeat_interval=timedelta(hours=12),
    )
    receipts = await ledger.sync_rewards(later, account="GATEWAY-1", now=T0 + 31 * day)
    assert [(r.key, r.amount) for r in receipts] == [
        ("reward:rpi-1:uptime:31", 2_900_000_000),
        ("reward:rpi-1:routing:25000000", 12_654_322),
        ("reward:rpi-1:uptime_bonus:1", 500_000_000),
    ]
    await ledger.close()

    # A restart: nothing is paid twice.
    reopened = make_service()
    await reopened.open()
    try:
        assert await reopened.sync_rewards(later, account="GATEWAY-1", now=T0 + 31 * day) == []
        # 100 + 310 + 2.5 + 50 LT
        assert dict(reopened.totals().rewards_paid) == {"GATEWAY-1": Decimal("462.5")}
        assert reopened.balance(Token.REWARD, "GATEWAY-1") == Decimal("462.5")
        payments = reopened.rewards("rpi-1")
        assert [(p.category.value, p.level, p.amount) for p in payments] == [
            ("registration", 1, Decimal(100)),
            ("uptime", 2, Decimal(20)),
            ("routing", 12_345_678, Decimal("1.2345678")),
            ("uptime", 31, Decimal(290)),
            ("routing", 25_000_000, Decimal("1.2654322")),
            ("uptime_bonus", 1, Decimal(50)),
        ]
        assert reopened.rewards("rpi-2") == ()
        assert (await reopened.verify()).ok
    finally:
        await reopened.close()


async def test_concurrent_reward_syncs_pay_once(service: LedgerService) -> None:
    from peergrid_core.depin import DepinNode

    node = DepinNode(node_id="rpi-1", registered_at=T0)
    results = await asyncio.gather(
        *(service.sync_rewards(node, account="GATEWAY-1", now=T0) for _ in range(3))
    )
    assert sorted(len(receipts) for receipts in results) == [0, 0, 1]
    assert dict(service.totals().rewards_paid) == {"GATEWAY-1": Decimal(100)}


# ---------------------------------------------------------------- listeners, mirror, verify


async def test_listeners_hear_every_change_and_can_leave(service: LedgerService) -> None:
    heard: list[LedgerChangeKind] = []

    def broken(change: LedgerChange) -> None:
        raise RuntimeError("listener bug")

    service.add_listener(broken)
    remove = service.add_listener(lambda change: heard.append(change.kind))
    outcome = await service.process_report(
        make_report(kwh=0.5), evidence=make_evidence(wh_out=500.0), market=BALANCED
    )
    await service.buy_order(outcome.order.order_id, buyer="NODE_C")
    await service.retire_carbon("NODE_A", Decimal("0.01"), key="c1")
    remove()
    remove()  # removing twice is harmless
    await service.retire_carbon("NODE_A", Decimal("0.01"), key="c2")
    assert heard == [
        LedgerChangeKind.REPORT,
        LedgerChangeKind.ORDER,
        LedgerChangeKind.RETIREMENT,
    ]


async def test_the_mirror_equals_a_fresh_load(
    service: LedgerService, make_service: Callable[..., LedgerService]
) -> None:
    from peergrid_core.depin import DepinNode

    for n in range(3):
        outcome = await service.process_report(
            make_report(
                report_id=_report_id(n), sender="NODE_A" if n % 2 else "NODE_B", receiver="NODE_C"
            ),
            evidence=make_evidence(
                transfer_id=f"t{n}", sender="NODE_A" if n % 2 else "NODE_B", receiver="NODE_C"
            ),
            market=MarketState(donors=n, receivers=2),
        )
    await service.buy_order(outcome.order.order_id, buyer="NODE_C")
    await service.retire_carbon("NODE_B", Decimal("0.004"), key="c1")
    await service.sync_rewards(DepinNode(node_id="rpi-1", registered_at=T0), account="G1", now=T0)

    fresh = make_service()
    await fresh.open()
    try:
        assert fresh.mints() == service.mints()
        assert fresh.orders() == service.orders()
        assert fresh.credits() == service.credits()
        assert fresh.rewards() == service.rewards()
        assert fresh.totals() == service.totals()
        for token in Token:
            for account in ("NODE_A", "NODE_B", "NODE_C", "G1"):
                assert fresh.balance(token, account) == service.balance(token, account)
    finally:
        await fresh.close()


async def test_verify_cross_checks_the_records(service: LedgerService) -> None:
    from peergrid_core.depin import DepinNode

    outcome = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    await service.sync_rewards(DepinNode(node_id="rpi-1", registered_at=T0), account="G1", now=T0)

    def tamper(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM sell_order")
        conn.execute("UPDATE report SET tokens = '1'")
        conn.execute("UPDATE reward SET amount = '5'")

    await service._db.write(tamper)
    result = await service.verify()
    assert result.problems == (
        (
            f"report {REPORT_ID}: entry report:{REPORT_ID}:energy holds 45000000,"
            " the report recorded 1"
        ),
        f"report {REPORT_ID}: sell order {outcome.order.order_id} is missing",
        "reward reward:rpi-1:registration:1: entry holds 1000000000, the payment recorded 5",
    )


async def test_the_local_ledger_must_share_the_database(ledger_path: Path) -> None:
    db = LedgerDatabase(ledger_path)
    other = LedgerDatabase(ledger_path)
    with pytest.raises(LedgerConfigError, match="service's database"):
        LedgerService(db, local=LocalLedger(other), pricing=PricingConfig())


async def test_a_cancelled_report_still_reaches_the_mirror(ledger_path: Path) -> None:
    """Cancelled mid-transaction: the commit cannot be stopped, and the mirror follows it."""
    started = threading.Event()
    release = threading.Event()

    def slow_clock() -> datetime:
        # The local ledger stamps entries inside the transaction, on its thread.
        started.set()
        release.wait(timeout=30)
        return T0

    db = LedgerDatabase(ledger_path)
    ledger = LedgerService(db, local=LocalLedger(db, clock=slow_clock), pricing=PricingConfig())
    await ledger.open()
    try:
        task = asyncio.create_task(
            ledger.process_report(
                make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
            )
        )
        try:
            await asyncio.to_thread(started.wait, 30)
            task.cancel()
            await asyncio.sleep(0)
        finally:
            release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert row_counts(ledger_path) == ONE_REPORT
        assert ledger.totals().reports == 1
        assert ledger.balance(Token.ENERGY, "NODE_A") == Decimal("4.5")
        assert (await ledger.verify()).ok
    finally:
        await ledger.close()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"transfer_id": ""}, "transfer_id"),
        ({"sender": " NODE_A"}, "sender"),
        ({"wh_out": float("nan")}, "wh_out"),
        ({"wh_in": -0.1}, "wh_in"),
        ({"wh_out": True}, "wh_out"),
        ({"started_at": datetime(2025, 6, 1, 12, 0)}, "started_at"),  # noqa: DTZ001
        ({"ended_at": T0 - timedelta(hours=1)}, "ended_at"),
        ({"discharge_commanded": 1}, "discharge_commanded"),
    ],
)
def test_impossible_evidence_is_refused(overrides: dict[str, object], field: str) -> None:
    fields: dict[str, object] = {
        "transfer_id": "t1",
        "sender": "NODE_A",
        "receiver": "NODE_B",
        "wh_out": 5.0,
        "wh_in": 4.1,
        "started_at": T0 - timedelta(minutes=1),
        "ended_at": T0,
        "discharge_commanded": True,
    }
    fields.update(overrides)
    with pytest.raises(PeerGridValidationError) as caught:
        TransferEvidence(**fields)  # type: ignore[arg-type]
    assert caught.value.field == field
