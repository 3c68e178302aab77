"""LedgerService with the Soroban backend: a report mints locally and, once, on the chain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from peergrid_core.ledger import (
    LedgerConfigError,
    LedgerService,
    LocalLedger,
    MintStatus,
    PricingConfig,
    Token,
    to_base_units,
)
from peergrid_core.ledger.soroban import SorobanLedger
from peergrid_core.sim.soroban_rpc import Fault

from .conftest import BALANCED, make_evidence, make_report
from .soroban_fixtures import ALICE, BOB, World, network_clock, open_world

ACCOUNTS = {"NODE_A": ALICE, "NODE_B": BOB}
REPORT_1 = "5f0c6a1e-8d0b-4f5e-9a57-3f3c1b2d4e01"
REPORT_2 = "5f0c6a1e-8d0b-4f5e-9a57-3f3c1b2d4e02"
REPORT_3 = "5f0c6a1e-8d0b-4f5e-9a57-3f3c1b2d4e03"


def chain_account(uid: str) -> str:
    try:
        return ACCOUNTS[uid]
    except KeyError as err:
        raise LedgerConfigError(f"node {uid} has no Stellar account") from err


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    opened = await open_world(tmp_path)
    yield opened
    await opened.close()


def make_service(world: World, chain: SorobanLedger) -> LedgerService:
    return LedgerService(
        world.db,
        local=LocalLedger(world.db, clock=network_clock(world.fake)),
        chain=chain,
        pricing=PricingConfig(),
        chain_account=chain_account,
        clock=network_clock(world.fake),
    )


async def test_a_report_mints_energy_and_carbon_once_on_chain(world: World) -> None:
    chain = world.ledger()
    service = make_service(world, chain)
    await service.open()
    try:
        outcome = await service.process_report(
            make_report(kwh=0.005, report_id=REPORT_1), evidence=make_evidence(), market=BALANCED
        )
        assert [r.status for r in outcome.chain] == [MintStatus.PENDING] * 2
        again = await service.process_report(
            make_report(kwh=0.005, report_id=REPORT_1), evidence=make_evidence(), market=BALANCED
        )
        assert again.duplicate

        await world.settle(chain)
        energy = await chain.receipt(f"report:{REPORT_1}:energy")
        carbon = await chain.receipt(f"report:{REPORT_1}:carbon")
    finally:
        await service.close()

    assert energy is not None
    assert carbon is not None
    assert energy.status is carbon.status is MintStatus.CONFIRMED
    assert energy.amount == to_base_units(outcome.amounts.tokens_minted) == outcome.energy.amount
    assert carbon.amount == to_base_units(outcome.amounts.carbon_kg) == outcome.carbon.amount
    assert sorted((m.contract, m.to, m.amount) for m in world.fake.mints) == sorted(
        [
            (world.contracts[Token.ENERGY], ALICE, energy.amount),
            (world.contracts[Token.CARBON], ALICE, carbon.amount),
        ]
    )


async def test_open_reconciles_mints_a_crash_left_pending(world: World) -> None:
    first = make_service(world, world.ledger())
    await first.open()
    await first.process_report(
        make_report(kwh=0.005, report_id=REPORT_2), evidence=make_evidence(), market=BALANCED
    )
    await first.close()  # stopped before any worker pass

    await world.db.open()
    chain = world.ledger()
    restarted = make_service(world, chain)
    await restarted.open()  # reconcile: both mints are signed and sent
    try:
        assert len(world.fake.pending_hashes) == 1  # one at a time from the minting key
        receipts = await world.settle(chain)
    finally:
        await restarted.close()

    assert len(world.fake.mints) == 2
    assert [r.status for r in receipts] == [MintStatus.CONFIRMED] * 2


async def test_service_opens_while_the_rpc_is_down(world: World) -> None:
    chain = world.ledger()
    service = make_service(world, chain)
    world.fake.inject(Fault.RPC_DOWN, times=None)
    await service.open()  # the chain's reconcile fails; the service still opens
    try:
        outcome = await service.process_report(
            make_report(kwh=0.005, report_id=REPORT_3), evidence=make_evidence(), market=BALANCED
        )
        assert outcome.energy.status is MintStatus.CONFIRMED  # the local ledger
        assert [r.status for r in outcome.chain] == [MintStatus.PENDING] * 2
        world.fake.clear()
        await world.settle(chain)
    finally:
        await service.close()
    assert len(world.fake.mints) == 2
