"""A chain backend beside the local ledger: its jobs commit (or not) with the report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
import sqlite3

import pytest

from peergrid_core.depin import DepinNode
from peergrid_core.ledger import (
    LedgerChange,
    LedgerChangeKind,
    LedgerConfigError,
    LedgerDatabase,
    LedgerService,
    LedgerStorageError,
    LocalLedger,
    MintRejectedError,
    MintStatus,
    PricingConfig,
    Receipt,
    Token,
)

from .conftest import BALANCED, T0, FrozenClock, make_evidence, make_report, row_counts
from .fake_chain import FakeChain

REPORT_ID = "0b7e3c9a-1d2f-4e5a-8b6c-7d8e9f0a1b2c"
WALLETS = {
    "NODE_A": "GWALLETNODEA",
    "GATEWAY-1": "GWALLETGATEWAY",
}


def wallet(account: str) -> str:
    try:
        return WALLETS[account]
    except KeyError as err:
        raise LedgerConfigError(f"{account} has no Stellar account") from err


def _jobs(path: Path) -> list[tuple[str, str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT key, token, account, amount FROM fake_job ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


@pytest.fixture
async def chained(
    ledger_path: Path, clock: FrozenClock
) -> AsyncIterator[tuple[LedgerService, FakeChain]]:
    db = LedgerDatabase(ledger_path)
    chain = FakeChain(db)
    service = LedgerService(
        db,
        local=LocalLedger(db, clock=clock),
        chain=chain,
        pricing=PricingConfig(),
        chain_account=wallet,
        clock=clock,
    )
    await service.open()
    yield service, chain
    await service.close()


def test_a_chain_needs_an_account_mapping(ledger_path: Path) -> None:
    db = LedgerDatabase(ledger_path)
    with pytest.raises(LedgerConfigError, match="chain_account"):
        LedgerService(db, local=LocalLedger(db), chain=FakeChain(db), pricing=PricingConfig())


async def test_open_reconciles_the_chain(chained: tuple[LedgerService, FakeChain]) -> None:
    _, chain = chained
    assert chain.reconcile_calls == 1


async def test_a_report_queues_both_chain_mints_in_its_transaction(
    chained: tuple[LedgerService, FakeChain], ledger_path: Path
) -> None:
    service, _ = chained
    outcome = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    energy, carbon = outcome.chain
    assert (energy.key, energy.token, energy.account, energy.amount) == (
        f"report:{REPORT_ID}:energy",
        Token.ENERGY,
        "GWALLETNODEA",
        45_000_000,
    )
    assert (carbon.key, carbon.amount) == (f"report:{REPORT_ID}:carbon", 41_000)
    assert energy.status is carbon.status is MintStatus.PENDING
    assert energy.backend == "fakechain"
    assert _jobs(ledger_path) == [
        (f"report:{REPORT_ID}:energy", "energy", "GWALLETNODEA", "45000000"),
        (f"report:{REPORT_ID}:carbon", "carbon", "GWALLETNODEA", "41000"),
    ]
    # The local ledger is credited at once, whatever the chain does later.
    assert service.balance(Token.ENERGY, "NODE_A") == Decimal("4.5")


async def test_reconcile_confirms_and_a_duplicate_shows_it(
    chained: tuple[LedgerService, FakeChain],
) -> None:
    service, _ = chained
    changes: list[LedgerChange] = []
    service.add_listener(changes.append)
    await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    confirmed = await service.reconcile()
    assert [receipt.status for receipt in confirmed] == [MintStatus.CONFIRMED] * 2
    assert changes[-1].kind is LedgerChangeKind.RECONCILED
    assert changes[-1].receipts == tuple(confirmed)
    again = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    assert again.duplicate
    assert again.chain == tuple(confirmed)
    assert await service.reconcile() == []


async def test_a_chain_refusal_writes_nothing_anywhere(
    chained: tuple[LedgerService, FakeChain], ledger_path: Path
) -> None:
    service, chain = chained
    chain.reject_accounts.add("GWALLETNODEA")
    before = row_counts(ledger_path)
    with pytest.raises(MintRejectedError):
        await service.process_report(
            make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
        )
    assert row_counts(ledger_path) == before
    assert _jobs(ledger_path) == []
    assert service.totals().reports == 0
    # Once the chain accepts again, the same report goes through.
    chain.reject_accounts.clear()
    outcome = await service.process_report(
        make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
    )
    assert not outcome.duplicate


async def test_a_sender_without_a_chain_account_is_refused(
    chained: tuple[LedgerService, FakeChain], ledger_path: Path
) -> None:
    service, _ = chained
    before = row_counts(ledger_path)
    with pytest.raises(LedgerConfigError, match="NODE_C has no Stellar account"):
        await service.process_report(
            make_report(sender="NODE_C", report_id=REPORT_ID),
            evidence=make_evidence(sender="NODE_C"),
            market=BALANCED,
        )
    assert row_counts(ledger_path) == before


async def test_rewards_are_queued_on_the_chain_too(
    chained: tuple[LedgerService, FakeChain], ledger_path: Path
) -> None:
    service, _ = chained
    node = DepinNode(
        node_id="rpi-1",
        registered_at=T0,
        heartbeats=(T0 + timedelta(days=1),),
        heartbeat_interval=timedelta(hours=12),
    )
    receipts = await service.sync_rewards(node, account="GATEWAY-1", now=T0 + timedelta(days=1))
    assert [(r.backend, r.key, r.account, r.amount) for r in receipts] == [
        ("local", "reward:rpi-1:registration:1", "GATEWAY-1", 1_000_000_000),
        ("fakechain", "reward:rpi-1:registration:1", "GWALLETGATEWAY", 1_000_000_000),
        ("local", "reward:rpi-1:uptime:1", "GATEWAY-1", 100_000_000),
        ("fakechain", "reward:rpi-1:uptime:1", "GWALLETGATEWAY", 100_000_000),
    ]
    assert len(_jobs(ledger_path)) == 2


async def test_verify_adds_the_chain_problems(chained: tuple[LedgerService, FakeChain]) -> None:
    service, chain = chained
    chain.verify_problems = ("balance of GWALLETNODEA is 0, journal says 45000000",)
    result = await service.verify()
    assert not result.ok
    assert result.problems == ("fakechain: balance of GWALLETNODEA is 0, journal says 45000000",)
    assert (await service.verify(include_chain=False)).ok


class _UnreachableChain(FakeChain):
    async def reconcile(self) -> list[Receipt]:
        raise TimeoutError("rpc did not answer")


async def test_an_unreachable_chain_does_not_stop_open(
    ledger_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = LedgerDatabase(ledger_path)
    service = LedgerService(
        db,
        local=LocalLedger(db),
        chain=_UnreachableChain(db),
        pricing=PricingConfig(),
        chain_account=wallet,
    )
    await service.open()
    try:
        assert "Chain reconcile at open failed" in caplog.text
        outcome = await service.process_report(
            make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
        )
        assert [receipt.status for receipt in outcome.chain] == [MintStatus.PENDING] * 2
    finally:
        await service.close()


async def test_a_failed_open_closes_the_file(tmp_path: Path) -> None:
    class BrokenSchemaChain(FakeChain):
        def create_schema(self, conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE broken (")

    db = LedgerDatabase(tmp_path / "ledger.db")
    service = LedgerService(
        db,
        local=LocalLedger(db),
        chain=BrokenSchemaChain(db),
        pricing=PricingConfig(),
        chain_account=wallet,
    )
    with pytest.raises(LedgerStorageError, match="incomplete input"):
        await service.open()
    assert not db.is_open
