"""SorobanLedger against the fake network: each mint lands once, whatever fails.

The fake RPC decodes the envelopes the SDK really produced and checks their
signatures, sequence numbers and time bounds (see test_soroban_rpc.py), so
"exactly one mint" below is counted by the network, not by the journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
import sqlite3
import uuid

import aiohttp
from hypothesis import HealthCheck, example, given, settings, strategies as st
import pytest
from stellar_sdk import Address, Keypair, Network, scval
from stellar_sdk.operation import InvokeHostFunction

from peergrid_core.errors import PeerGridConnectionError, PeerGridValidationError
from peergrid_core.ledger import (
    IdempotencyConflictError,
    LedgerDatabase,
    MintStatus,
    Receipt,
    Token,
)
from peergrid_core.ledger.soroban import AccountCheck, SorobanConfigError, SorobanLedger
from peergrid_core.sim.soroban_rpc import FakeRpcClient, Fault

from .soroban_fixtures import (
    ADMIN,
    ALICE,
    BOB,
    STRANGER,
    CrashingClient,
    SimulatedCrashError,
    World,
    onchain_envelope,
    open_world,
)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    opened = await open_world(tmp_path)
    yield opened
    await opened.close()


def statuses(world: World) -> list[str]:
    return [status for _key, _hash, status in world.attempts()]


def hashes(world: World) -> set[str]:
    return {tx_hash for _key, tx_hash, _status in world.attempts()}


async def test_a_mint_is_mint_to_amount_signed_by_the_key_on_the_right_contract(
    world: World,
) -> None:
    ledger = world.ledger()
    heard: list[Receipt] = []
    ledger.add_listener(heard.append)
    queued = await world.enqueue(ledger, Token.CARBON, ALICE, 42_000_000, key="report:r1:carbon")
    assert queued.status is MintStatus.PENDING
    assert queued.ref == ""
    assert queued.backend == "soroban"

    await ledger.run_once()
    ledger_seq = world.fake.close_ledger()
    finished = await ledger.run_once()

    receipt = await ledger.receipt("report:r1:carbon")
    assert receipt is not None
    assert finished == [receipt]
    assert receipt.status is MintStatus.CONFIRMED
    assert receipt.ledger == ledger_seq
    assert receipt.error is None
    envelope = await onchain_envelope(world.fake, receipt.ref)
    assert envelope.hash_hex() == receipt.ref
    tx = envelope.transaction
    assert tx.source.account_id == ADMIN.public_key
    (signature,) = envelope.signatures
    Keypair.from_public_key(ADMIN.public_key).verify(envelope.hash(), signature.signature)
    (operation,) = tx.operations
    assert isinstance(operation, InvokeHostFunction)
    call = operation.host_function.invoke_contract
    assert call is not None
    assert (
        Address.from_xdr_sc_address(call.contract_address).address
        == (world.contracts[Token.CARBON])
    )
    assert call.function_name.sc_symbol == b"mint"
    to, amount = call.args
    assert scval.from_address(to).address == ALICE
    assert scval.from_int128(amount) == 42_000_000
    (mint,) = world.fake.mints
    assert (mint.contract, mint.to, mint.amount, mint.tx_hash) == (
        world.contracts[Token.CARBON],
        ALICE,
        42_000_000,
        receipt.ref,
    )
    assert [(r.status, bool(r.ref)) for r in heard] == [
        (MintStatus.PENDING, True),
        (MintStatus.CONFIRMED, True),
    ]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amount=st.integers(min_value=1, max_value=2**127 - 1))
@example(amount=1)
@example(amount=2**63)
@example(amount=2**127 - 1)
async def test_amounts_reach_the_chain_exactly(tmp_path: Path, amount: int) -> None:
    world = await open_world(tmp_path / uuid.uuid4().hex)  # examples share tmp_path
    try:
        ledger = world.ledger()
        await world.enqueue(ledger, Token.REWARD, BOB, amount, key="reward:x")
        await world.settle(ledger)
        assert world.fake.balance(world.contracts[Token.REWARD], BOB) == amount
        assert await ledger.balance(Token.REWARD, BOB) == amount
    finally:
        await world.close()


async def test_same_key_same_arguments_is_the_same_mint(world: World) -> None:
    ledger = world.ledger()
    first = await world.enqueue(ledger, Token.ENERGY, ALICE, 5, key="k", detail={"kwh": "1"})
    again = await world.enqueue(ledger, Token.ENERGY, ALICE, 5, key="k", detail={"kwh": "1"})
    assert again == first
    with pytest.raises(IdempotencyConflictError, match="amount"):
        await world.enqueue(ledger, Token.ENERGY, ALICE, 6, key="k", detail={"kwh": "1"})
    with pytest.raises(IdempotencyConflictError, match="account, detail"):
        await world.enqueue(ledger, Token.ENERGY, BOB, 5, key="k", detail={"kwh": "2"})

    await world.settle(ledger)
    confirmed = await world.enqueue(ledger, Token.ENERGY, ALICE, 5, key="k", detail={"kwh": "1"})

    assert confirmed.status is MintStatus.CONFIRMED
    assert [m.amount for m in world.fake.mints] == [5]


@pytest.mark.parametrize(
    ("field", "token", "account", "amount", "key", "detail"),
    [
        ("account", Token.ENERGY, "NODE_A", 5, "k", {}),
        ("account", Token.ENERGY, ADMIN.secret, 5, "k", {}),
        ("amount", Token.ENERGY, ALICE, 0, "k", {}),
        ("amount", Token.ENERGY, ALICE, -1, "k", {}),
        ("amount", Token.ENERGY, ALICE, 2**127, "k", {}),
        ("amount", Token.ENERGY, ALICE, True, "k", {}),
        ("amount", Token.ENERGY, ALICE, 1.5, "k", {}),
        ("key", Token.ENERGY, ALICE, 5, "", {}),
        ("key", Token.ENERGY, ALICE, 5, " k", {}),
        ("token", "energy", ALICE, 5, "k", {}),
        ("detail", Token.ENERGY, ALICE, 5, "k", {"kwh": 1}),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    world: World,
    field: str,
    token: Token,
    account: str,
    amount: int,
    key: str,
    detail: dict[str, str],
) -> None:
    ledger = world.ledger()
    with pytest.raises(PeerGridValidationError) as raised:
        await world.enqueue(ledger, token, account, amount, key=key, detail=detail)
    assert raised.value.field == field
    assert ADMIN.secret not in str(raised.value)
    assert await ledger.receipts() == []


async def test_a_rolled_back_transaction_leaves_no_job(world: World) -> None:
    ledger = world.ledger()

    def enqueue_then_fail(conn: sqlite3.Connection) -> None:
        ledger.mint_in(conn, Token.ENERGY, ALICE, 5, key="k", detail={})
        raise PeerGridValidationError("report", "refused after the mint was queued")

    with pytest.raises(PeerGridValidationError):
        await world.db.write(enqueue_then_fail)
    await ledger.run_once()

    assert await ledger.receipts() == []
    assert world.fake.calls["sendTransaction"] == 0


# ---------------------------------------------------------------- exactly once


async def test_crash_after_journal_before_send_resumes_with_the_same_transaction(
    world: World,
) -> None:
    crashing = world.ledger(client=CrashingClient(world.fake))
    await world.enqueue(crashing, Token.ENERGY, ALICE, 10, key="report:a:energy")

    with pytest.raises(SimulatedCrashError):
        await crashing.run_once()
    ((_, signed_hash, status),) = world.attempts()
    assert status == "signed"  # written before anything was sent
    assert world.fake.calls["sendTransaction"] == 0

    restarted = world.ledger()  # a fresh process on the same file
    receipts = await world.settle(restarted)

    assert [r.status for r in receipts] == [MintStatus.CONFIRMED]
    assert receipts[0].ref == signed_hash
    assert hashes(world) == {signed_hash}
    assert [m.tx_hash for m in world.fake.mints] == [signed_hash]


async def test_crash_just_after_the_send_landed_is_not_minted_twice(world: World) -> None:
    crashing = world.ledger(client=CrashingClient(world.fake, after_delivery=True))
    await world.enqueue(crashing, Token.ENERGY, ALICE, 10, key="report:b:energy")

    with pytest.raises(SimulatedCrashError):
        await crashing.run_once()
    assert len(world.fake.pending_hashes) == 1

    restarted = world.ledger()
    await restarted.run_once()  # the same envelope again: DUPLICATE, not a second tx
    assert [s.status for s in world.fake.sends] == ["PENDING", "DUPLICATE"]
    await world.settle(restarted)

    assert len(world.fake.mints) == 1
    assert len(hashes(world)) == 1


async def test_send_timed_out_but_the_transaction_landed(world: World) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(Fault.SEND_LOST)

    await ledger.run_once()  # accepted, but the reply never came
    world.fake.close_ledger()
    await ledger.run_once()

    receipt = await ledger.receipt("k")
    assert receipt is not None
    assert receipt.status is MintStatus.CONFIRMED
    assert statuses(world) == ["success"]
    assert world.fake.calls["sendTransaction"] == 1
    assert len(world.fake.mints) == 1


async def test_send_timed_out_and_never_arrived_expires_then_exactly_one_rebuild(
    world: World,
) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(Fault.SEND_VANISHED, times=None)

    await ledger.run_once()
    for _ in range(5):  # while the first may still land, only it is re-sent
        world.fake.close_ledger()
        await ledger.run_once()
    assert len(hashes(world)) == 1
    assert world.fake.calls["sendTransaction"] > 1

    world.fake.advance(world.config.tx_timeout_s + 10)  # past its time bound
    world.fake.clear()
    receipts = await world.settle(ledger)

    assert statuses(world) == ["expired", "success"]
    assert [r.status for r in receipts] == [MintStatus.CONFIRMED]
    assert len(world.fake.mints) == 1
    assert world.fake.mints[0].tx_hash == receipts[0].ref


async def test_try_again_later_resends_the_same_envelope(world: World) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(Fault.TRY_AGAIN_LATER)

    await ledger.run_once()
    assert [s.status for s in world.fake.sends] == ["TRY_AGAIN_LATER"]
    await ledger.run_once()  # not yet: it waits before sending again
    assert len(world.fake.sends) == 1
    receipts = await world.settle(ledger)

    assert [s.status for s in world.fake.sends] == ["TRY_AGAIN_LATER", "PENDING"]
    assert len({s.tx_hash for s in world.fake.sends}) == 1
    assert [r.status for r in receipts] == [MintStatus.CONFIRMED]
    assert len(world.fake.mints) == 1


async def test_sequence_taken_by_someone_else_rebuilds_once(world: World) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(Fault.SEQUENCE_TAKEN)

    await ledger.run_once()  # txBAD_SEQ for a tx never accepted: dead, rebuilt at once

    assert [(s.status, s.code) for s in world.fake.sends] == [
        ("ERROR", "txBAD_SEQ"),
        ("PENDING", None),
    ]
    receipts = await world.settle(ledger)
    assert statuses(world) == ["rejected", "success"]
    assert [r.status for r in receipts] == [MintStatus.CONFIRMED]
    assert len(world.fake.mints) == 1


async def test_bad_seq_after_an_unknown_send_waits_for_the_time_bound(world: World) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(Fault.SEND_VANISHED)
    await ledger.run_once()  # outcome unknown
    world.fake.close_ledger()
    world.fake.inject(Fault.SEQUENCE_TAKEN)
    await ledger.run_once()  # re-sent: txBAD_SEQ, but our own tx might be the one that used it

    for _ in range(3):
        world.fake.close_ledger()
        await ledger.run_once()
    assert len(hashes(world)) == 1  # no rebuild while it may have landed
    assert [s.code for s in world.fake.sends] == ["txBAD_SEQ"]  # and no pointless re-sends

    world.fake.advance(world.config.tx_timeout_s + 10)
    await world.settle(ledger)

    assert statuses(world) == ["expired", "success"]
    assert len(world.fake.mints) == 1


async def test_accepted_but_dropped_from_the_queue_expires_then_one_rebuild(
    world: World,
) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(Fault.DROP_PENDING)

    await ledger.run_once()  # PENDING, then evicted: it will never be included
    for _ in range(3):
        world.fake.close_ledger()
        await ledger.run_once()
    assert statuses(world) == ["submitted"]  # no rebuild while it might still land

    world.fake.advance(world.config.tx_timeout_s + 10)
    await world.settle(ledger)

    assert statuses(world) == ["expired", "success"]
    assert len(world.fake.mints) == 1


async def test_concurrent_passes_of_one_ledger_send_one_transaction(world: World) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="a")
    await world.enqueue(ledger, Token.ENERGY, BOB, 20, key="b")

    await asyncio.gather(ledger.run_once(), ledger.run_once(), ledger.reconcile())

    assert len(world.attempts()) == 1
    assert [s.status for s in world.fake.sends] == ["PENDING"]
    await world.settle(ledger)
    assert sorted(m.amount for m in world.fake.mints) == [10, 20]


async def test_simulation_error_fails_for_good_and_mints_nothing(world: World) -> None:
    ledger = world.ledger()
    heard: list[Receipt] = []
    ledger.add_listener(heard.append)
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(
        Fault.SIMULATION_ERROR, message="HostError: Error(Contract, #3)\nEvent log (newest first):"
    )

    finished = await ledger.run_once()
    for _ in range(3):
        world.fake.close_ledger()
        await ledger.run_once()

    (receipt,) = finished
    assert receipt.status is MintStatus.FAILED
    assert receipt.error == "the network refused the mint: HostError: Error(Contract, #3)"
    assert receipt.ref == ""
    assert heard == [receipt]
    assert world.attempts() == []
    assert world.fake.calls["sendTransaction"] == 0
    assert world.fake.mints == []


async def test_a_call_that_traps_on_chain_fails_with_the_host_error(world: World) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    await ledger.run_once()
    # Between simulation and inclusion, someone makes another key the admin.
    world.fake.token(world.contracts[Token.ENERGY]).admin = STRANGER.public_key
    world.fake.close_ledger()

    (receipt,) = await ledger.run_once()

    assert receipt.status is MintStatus.FAILED
    assert receipt.error is not None
    assert "INVOKE_HOST_FUNCTION_TRAPPED" in receipt.error
    assert "not the admin" in receipt.error
    assert receipt.ledger == world.fake.ledger
    assert statuses(world) == ["failed"]
    assert world.fake.mints == []


async def test_many_mints_from_one_source_are_serialised(world: World) -> None:
    ledger = world.ledger()
    wanted = [
        (token, account, 1_000 + n, f"report:{n}:{token}")
        for n, (token, account) in enumerate([(t, a) for t in Token for a in (ALICE, BOB)] * 2)
    ]
    for token, account, amount, key in wanted:
        await world.enqueue(ledger, token, account, amount, key=key)

    receipts = await world.settle(ledger, max_ledgers=len(wanted) + 3)

    assert all(r.status is MintStatus.CONFIRMED for r in receipts)
    assert sorted((m.contract, m.to, m.amount) for m in world.fake.mints) == sorted(
        (world.contracts[token], account, amount) for token, account, amount, _key in wanted
    )
    # Never two transactions of the source at once, so never TRY_AGAIN_LATER
    # and one mint per ledger, in queue order.
    assert {s.status for s in world.fake.sends} == {"PENDING"}
    assert len(world.fake.sends) == len(wanted)
    ledgers = [r.ledger for r in receipts if r.ledger is not None]
    assert ledgers == sorted(ledgers)
    assert len(set(ledgers)) == len(wanted)


async def test_wrong_passphrase_is_refused_and_the_mint_waits(world: World) -> None:
    config = world.config.__class__(
        rpc_url=world.config.rpc_url,
        network_passphrase=Network.PUBLIC_NETWORK_PASSPHRASE,
        secret_key=ADMIN.secret,
        contracts=world.contracts,
    )
    ledger = world.ledger(config=config)
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")

    await ledger.run_once()

    assert [(s.status, s.code) for s in world.fake.sends] == [("ERROR", "txBAD_AUTH")]
    receipt = await ledger.receipt("k")
    assert receipt is not None
    assert receipt.status is MintStatus.PENDING  # still owed once the setting is fixed
    assert receipt.error is not None
    assert "passphrase" in receipt.error
    assert world.fake.mints == []
    with pytest.raises(SorobanConfigError) as wrong:
        await ledger.check_network()
    assert wrong.value.field == "network_passphrase"

    fixed = world.ledger()  # the user corrects the passphrase
    world.fake.advance(3600)  # the backoff after a configuration error
    receipts = await world.settle(fixed)
    assert [r.status for r in receipts] == [MintStatus.CONFIRMED]
    assert len(world.fake.mints) == 1


async def test_rpc_down_keeps_mints_pending_until_it_is_back(world: World) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(Fault.RPC_DOWN, times=None)

    with pytest.raises(PeerGridConnectionError):
        await ledger.run_once()
    with pytest.raises(PeerGridConnectionError):
        await ledger.reconcile()

    paused_by = ledger.last_error
    assert paused_by is not None
    assert "connection refused" in paused_by
    receipt = await ledger.receipt("k")
    assert receipt is not None
    assert receipt.status is MintStatus.PENDING
    world.fake.clear()
    await world.settle(ledger)
    assert ledger.last_error is None
    assert len(world.fake.mints) == 1


async def test_unfunded_source_waits_and_resumes_once_funded(tmp_path: Path) -> None:
    world = await open_world(tmp_path, fund_admin=False)
    try:
        ledger = world.ledger()
        await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
        assert await ledger.check_account() is AccountCheck.MISSING
        await ledger.run_once()
        receipt = await ledger.receipt("k")
        assert receipt is not None
        assert receipt.status is MintStatus.PENDING
        assert "does not exist" in (receipt.error or "")

        world.fake.create_account(ADMIN.public_key)
        world.fake.advance(3600)
        receipts = await world.settle(ledger)
        assert [r.status for r in receipts] == [MintStatus.CONFIRMED]
        assert receipts[0].error is None
    finally:
        await world.close()


async def test_fee_above_the_cap_is_never_signed(tmp_path: Path) -> None:
    world = await open_world(tmp_path, max_fee=1_000)
    try:
        ledger = world.ledger()
        await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
        await ledger.run_once()
        receipt = await ledger.receipt("k")
        assert receipt is not None
        assert receipt.status is MintStatus.PENDING
        assert "max_fee" in (receipt.error or "")
        assert world.attempts() == []
        assert world.fake.calls["sendTransaction"] == 0
    finally:
        await world.close()


async def test_an_attempt_older_than_the_rpc_history_is_never_rebuilt(tmp_path: Path) -> None:
    world = await open_world(tmp_path)
    try:
        world.fake.retention_ledgers = 20
        crashing = world.ledger(client=CrashingClient(world.fake))
        await world.enqueue(crashing, Token.ENERGY, ALICE, 10, key="k")
        with pytest.raises(SimulatedCrashError):
            await crashing.run_once()
        world.fake.advance(30 * world.fake.ledger_interval_s)  # the host was off for a while

        restarted = world.ledger()
        await restarted.run_once()
        world.fake.close_ledger()
        await restarted.run_once()

        receipt = await restarted.receipt("k")
        assert receipt is not None
        assert receipt.status is MintStatus.PENDING
        assert "block explorer" in (receipt.error or "")
        assert statuses(world) == ["unknown"]
        assert world.fake.calls["sendTransaction"] == 0
    finally:
        await world.close()


# ---------------------------------------------------------------- checks


async def test_check_account(tmp_path: Path) -> None:
    world = await open_world(tmp_path)
    try:
        ledger = world.ledger()
        assert await ledger.check_account() is AccountCheck.OK
        account = world.fake.account(ADMIN.public_key)
        assert account is not None
        account.balance = 2 * 5_000_000 + 9_999_999  # reserve + just under 1 XLM
        assert await ledger.check_account() is AccountCheck.UNFUNDED
        world.fake.inject(Fault.RPC_DOWN)
        with pytest.raises(PeerGridConnectionError):
            await ledger.check_account()
    finally:
        await world.close()


async def test_check_contracts(world: World) -> None:
    ledger = world.ledger()
    await ledger.check_contracts()
    await ledger.check_network()

    world.fake.token(world.contracts[Token.REWARD]).admin = STRANGER.public_key
    with pytest.raises(SorobanConfigError) as not_admin:
        await ledger.check_contracts()

    assert not_admin.value.field == "contract"
    assert not_admin.value.token is Token.REWARD
    assert world.fake.calls["sendTransaction"] == 0


async def test_verify_checks_the_journal_and_the_chain(world: World) -> None:
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="a")
    await world.enqueue(ledger, Token.CARBON, BOB, 20, key="b")
    await world.settle(ledger)
    clean = await ledger.verify()
    assert clean.ok
    assert clean.entries == 2
    assert clean.problems == ()

    conn = sqlite3.connect(world.path)
    with conn:
        conn.execute("UPDATE soroban_job SET amount = '11' WHERE key = 'a'")
        conn.execute("UPDATE soroban_job SET ledger = 1 WHERE key = 'b'")
    conn.close()
    tampered = await ledger.verify()

    assert not tampered.ok
    assert any(p.startswith("a: ") and "not mint" in p for p in tampered.problems)
    assert any(p.startswith("b: ") for p in tampered.problems)

    world.fake.inject(Fault.RPC_DOWN)
    with pytest.raises(PeerGridConnectionError):
        await ledger.verify()


# ---------------------------------------------------------------- the worker task


async def test_run_wakes_on_mint_in_and_confirms(world: World) -> None:
    ledger = world.ledger(poll_interval_s=0.001)
    task = asyncio.create_task(ledger.run())
    try:
        await asyncio.sleep(0)  # the worker starts, finds nothing, waits
        await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
        for _ in range(500):
            if world.fake.pending_hashes:
                break
            await asyncio.sleep(0.001)
        world.fake.close_ledger()
        for _ in range(500):
            receipt = await ledger.receipt("k")
            if receipt is not None and receipt.status is MintStatus.CONFIRMED:
                break
            await asyncio.sleep(0.001)
        assert receipt is not None
        assert receipt.status is MintStatus.CONFIRMED
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_survives_an_unreachable_rpc(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = world.ledger(poll_interval_s=0.001)
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")
    world.fake.inject(Fault.RPC_DOWN, times=3)
    task = asyncio.create_task(ledger.run())
    try:
        for _ in range(2000):
            if world.fake.pending_hashes:
                break
            await asyncio.sleep(0.001)
        assert world.fake.pending_hashes
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "Soroban minting paused" in caplog.text


@pytest.mark.usefixtures("socket_enabled")
async def test_loopback_worker_over_a_real_aiohttp_session(world: World) -> None:
    url = await world.fake.serve(close_every_s=0.002)
    async with aiohttp.ClientSession() as session:
        config = world.config.__class__(
            rpc_url=url,
            network_passphrase=world.config.network_passphrase,
            secret_key=ADMIN.secret,
            contracts=world.contracts,
        )
        ledger = world.ledger(config=config, session=session, poll_interval_s=0.002)
        heard: list[Receipt] = []
        ledger.add_listener(heard.append)
        task = asyncio.create_task(ledger.run())
        try:
            keys = [f"report:{n}:energy" for n in range(3)]
            for n, key in enumerate(keys):
                await world.enqueue(ledger, Token.ENERGY, ALICE, 100 + n, key=key)
            for _ in range(3000):
                if not await ledger.receipts(status=MintStatus.PENDING):
                    break
                await asyncio.sleep(0.002)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        receipts = await ledger.receipts()
        verified = await ledger.verify()
    assert verified.ok
    assert [r.status for r in receipts] == [MintStatus.CONFIRMED] * 3
    assert sorted(m.amount for m in world.fake.mints) == [100, 101, 102]
    assert {r.key for r in heard if r.status is MintStatus.CONFIRMED} == set(keys)


async def test_two_ledgers_on_one_file_share_the_journal(world: World) -> None:
    writer = world.ledger()
    await world.enqueue(writer, Token.ENERGY, ALICE, 10, key="k")
    other_db = LedgerDatabase(world.path)
    await other_db.open()
    try:
        reader = SorobanLedger(other_db, world.config, client=FakeRpcClient(world.fake))
        assert (await reader.receipt("k")) == (await writer.receipt("k"))
    finally:
        await other_db.close()
