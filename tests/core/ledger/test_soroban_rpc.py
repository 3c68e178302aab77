"""The fake Stellar RPC checks what a real network checks, through the real SDK.

These tests pin the test double itself: if it accepted what stellar-core
refuses, the ledger tests built on it would prove nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import json

import aiohttp
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest
from stellar_sdk import Keypair, Network, TransactionBuilder, TransactionEnvelope, scval, xdr as sx
from stellar_sdk.exceptions import (
    AccountNotFoundException,
    BadResponseError,
    ConnectionError as StellarConnectionError,
    SorobanRpcErrorResponse,
)
from stellar_sdk.memo import TextMemo
from stellar_sdk.soroban_rpc import GetTransactionStatus, SendTransactionStatus
from stellar_sdk.soroban_server_async import SorobanServerAsync

from peergrid_core.ledger.soroban import SessionClient
from peergrid_core.sim.soroban_rpc import FakeRpcClient, FakeSorobanRpc, Fault

from .soroban_fixtures import ADMIN, ALICE, BOB, PASSPHRASE, RPC_URL, STRANGER


@pytest.fixture
def fake() -> FakeSorobanRpc:
    network = FakeSorobanRpc(PASSPHRASE)
    network.create_account(ADMIN.public_key)
    network.create_account(STRANGER.public_key)
    return network


@pytest.fixture
def token(fake: FakeSorobanRpc) -> str:
    return fake.deploy_token(ADMIN.public_key)


@pytest.fixture
def server(fake: FakeSorobanRpc) -> SorobanServerAsync:
    return SorobanServerAsync(RPC_URL, client=FakeRpcClient(fake))


async def signed_mint(
    server: SorobanServerAsync,
    fake: FakeSorobanRpc,
    token: str,
    *,
    to: str = ALICE,
    amount: int = 12_345,
    signer: Keypair = ADMIN,
    passphrase: str = PASSPHRASE,
    valid_for_s: int = 60,
    memo: str | None = None,
) -> TransactionEnvelope:
    """Load, build, simulate, prepare and sign a mint exactly as a client would."""
    account = await server.load_account(signer.public_key)
    builder = TransactionBuilder(account, passphrase, base_fee=100).add_time_bounds(
        0, fake.network_time + valid_for_s
    )
    if memo is not None:
        builder.add_text_memo(memo)
    tx = builder.append_invoke_contract_function_op(
        token, "mint", [scval.to_address(to), scval.to_int128(amount)]
    ).build()
    prepared = await server.prepare_transaction(tx)
    prepared.sign(signer)
    return prepared


def result_code(error_result_xdr: str | None) -> str:
    assert error_result_xdr is not None
    return str(sx.TransactionResult.from_xdr(error_result_xdr).result.code.name)


async def test_mint_goes_through_the_real_sdk(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    tx = await signed_mint(server, fake, token, amount=2**100 + 7)

    sent = await server.send_transaction(tx)
    assert sent.status is SendTransactionStatus.PENDING
    assert sent.hash == tx.hash_hex()
    # Pending until a ledger closes, and a second send is a duplicate.
    assert (await server.get_transaction(tx.hash_hex())).status is GetTransactionStatus.NOT_FOUND
    assert (await server.send_transaction(tx)).status is SendTransactionStatus.DUPLICATE

    ledger = fake.close_ledger()
    found = await server.get_transaction(tx.hash_hex())

    assert found.status is GetTransactionStatus.SUCCESS
    assert found.ledger == ledger
    assert found.result_meta_xdr is not None
    assert found.events is not None
    meta = sx.TransactionMeta.from_xdr(found.result_meta_xdr)
    assert meta.v4 is not None
    assert meta.v4.soroban_meta is not None
    assert meta.v4.soroban_meta.return_value == scval.to_void()
    assert found.events.contract_events_xdr is not None
    (event_xdr,) = found.events.contract_events_xdr[0]
    event = sx.ContractEvent.from_xdr(event_xdr).body.v0
    assert event is not None
    assert len(event.topics) == 2
    assert scval.from_symbol(event.topics[0]) == "mint"
    assert scval.from_address(event.topics[1]).address == ALICE
    assert scval.from_int128(event.data) == 2**100 + 7
    assert fake.balance(token, ALICE) == 2**100 + 7
    (mint,) = fake.mints
    assert (mint.contract, mint.to, mint.amount, mint.tx_hash) == (
        token,
        ALICE,
        2**100 + 7,
        tx.hash_hex(),
    )
    # The sequence number is used: the same envelope can never apply again.
    again = await server.send_transaction(tx)
    assert again.status is SendTransactionStatus.ERROR
    assert result_code(again.error_result_xdr) == "txBAD_SEQ"


async def test_wrong_network_passphrase_is_refused(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    tx = await signed_mint(server, fake, token, passphrase=Network.PUBLIC_NETWORK_PASSPHRASE)

    sent = await server.send_transaction(tx)

    assert sent.status is SendTransactionStatus.ERROR
    assert result_code(sent.error_result_xdr) == "txBAD_AUTH"
    assert not fake.pending_hashes


async def test_signature_of_another_key_is_refused(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    tx = await signed_mint(server, fake, token)
    tx.signatures = []
    tx.sign(STRANGER)

    sent = await server.send_transaction(tx)

    assert result_code(sent.error_result_xdr) == "txBAD_AUTH"


async def test_memo_on_a_soroban_transaction_is_malformed(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    tx = await signed_mint(server, fake, token, memo="report:1")
    assert isinstance(tx.transaction.memo, TextMemo)

    sent = await server.send_transaction(tx)

    assert result_code(sent.error_result_xdr) == "txMALFORMED"


async def test_stale_sequence_is_refused(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    tx = await signed_mint(server, fake, token)
    fake.consume_sequence(ADMIN.public_key)

    sent = await server.send_transaction(tx)

    assert result_code(sent.error_result_xdr) == "txBAD_SEQ"


async def test_one_pending_transaction_per_source(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    first = await signed_mint(server, fake, token, amount=1)
    second = await signed_mint(server, fake, token, amount=2)  # same sequence number
    assert first.transaction.sequence == second.transaction.sequence

    assert (await server.send_transaction(first)).status is SendTransactionStatus.PENDING
    assert (await server.send_transaction(second)).status is SendTransactionStatus.TRY_AGAIN_LATER
    fake.close_ledger()
    late = await server.send_transaction(second)

    assert result_code(late.error_result_xdr) == "txBAD_SEQ"
    assert [m.amount for m in fake.mints] == [1]


async def test_time_bounds_follow_the_ledger_clock(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    expired = await signed_mint(server, fake, token, valid_for_s=10)
    fake.advance(15)
    refused = await server.send_transaction(expired)
    assert result_code(refused.error_result_xdr) == "txTOO_LATE"

    # Accepted in time, but the queue holds it past its bound: it is dropped.
    queued = await signed_mint(server, fake, token, valid_for_s=10)
    assert (await server.send_transaction(queued)).status is SendTransactionStatus.PENDING
    fake.close_ledger(seconds=11)
    gone = await server.get_transaction(queued.hash_hex())

    assert gone.status is GetTransactionStatus.NOT_FOUND
    assert gone.latest_ledger_close_time > queued.transaction.preconditions.time_bounds.max_time  # type: ignore[union-attr]
    assert not fake.mints


async def test_simulation_refuses_what_the_contract_would(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    async def simulate(contract: str, signer: Keypair, amount: int) -> str | None:
        account = await server.load_account(signer.public_key)
        tx = (
            TransactionBuilder(account, PASSPHRASE)
            .add_time_bounds(0, 0)
            .append_invoke_contract_function_op(
                contract, "mint", [scval.to_address(BOB), scval.to_int128(amount)]
            )
            .build()
        )
        return (await server.simulate_transaction(tx)).error

    assert await simulate(token, ADMIN, 5) is None
    assert "Auth" in (await simulate(token, STRANGER, 5) or "")
    assert "negative" in (await simulate(token, ADMIN, -5) or "")
    unknown = fake.deploy_token(ADMIN.public_key, symbol="X")
    del fake._tokens[unknown]  # a contract id nobody deployed
    assert "contract not found" in (await simulate(unknown, ADMIN, 5) or "")
    fake.inject(Fault.SIMULATION_ERROR, message="HostError: Error(Budget, ExceededLimit)")
    assert await simulate(token, ADMIN, 5) == "HostError: Error(Budget, ExceededLimit)"


async def test_call_without_the_simulated_auth_traps_on_chain(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    tx = await signed_mint(server, fake, token)
    tx.transaction.operations[0].auth = []  # type: ignore[attr-defined]
    tx.signatures = []
    tx.sign(ADMIN)
    sequence_before = fake.account(ADMIN.public_key).seq  # type: ignore[union-attr]

    assert (await server.send_transaction(tx)).status is SendTransactionStatus.PENDING
    fake.close_ledger()
    found = await server.get_transaction(tx.hash_hex())

    assert found.status is GetTransactionStatus.FAILED
    result = sx.TransactionResult.from_xdr(found.result_xdr)  # type: ignore[arg-type]
    invoke = result.result.results[0].tr.invoke_host_function_result  # type: ignore[index, union-attr]
    assert invoke is not None
    assert invoke.code is sx.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_TRAPPED
    assert fake.account(ADMIN.public_key).seq == sequence_before + 1  # type: ignore[union-attr]
    assert not fake.mints


async def test_reads_and_accounts(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    health = await server.get_health()
    network = await server.get_network()
    latest = await server.get_latest_ledger()
    fees = await server.get_fee_stats()

    assert health.status == "healthy"
    assert network.passphrase == PASSPHRASE
    assert latest.sequence == fake.ledger
    assert latest.close_time == fake.network_time
    assert fees.soroban_inclusion_fee.p90 == 100
    account = await server.load_account(ADMIN.public_key)
    assert account.sequence == fake.account(ADMIN.public_key).seq  # type: ignore[union-attr]
    with pytest.raises(AccountNotFoundException):
        await server.load_account(BOB)


async def test_history_is_forgotten_after_the_retention_window() -> None:
    fake = FakeSorobanRpc(PASSPHRASE, retention_ledgers=5)
    fake.create_account(ADMIN.public_key)
    token = fake.deploy_token(ADMIN.public_key)
    server = SorobanServerAsync(RPC_URL, client=FakeRpcClient(fake))
    tx = await signed_mint(server, fake, token)
    await server.send_transaction(tx)
    included = fake.close_ledger()
    for _ in range(6):
        fake.close_ledger()

    found = await server.get_transaction(tx.hash_hex())

    assert found.status is GetTransactionStatus.NOT_FOUND
    assert found.oldest_ledger > included


async def test_json_rpc_errors(fake: FakeSorobanRpc, server: SorobanServerAsync) -> None:
    with pytest.raises(SorobanRpcErrorResponse) as invalid:
        await server.send_transaction("AAAA")
    assert invalid.value.code == -32602
    with pytest.raises(SorobanRpcErrorResponse) as short_hash:
        await server.get_transaction("abc")
    assert short_hash.value.code == -32602
    reply = fake.handle({"jsonrpc": "2.0", "id": 1, "method": "getNothing"})
    assert reply["error"]["code"] == -32601


async def test_transport_faults_look_like_the_sdk_client_s(
    fake: FakeSorobanRpc, server: SorobanServerAsync, token: str
) -> None:
    fake.inject(Fault.RPC_DOWN)
    with pytest.raises(StellarConnectionError):
        await server.get_health()
    fake.inject(Fault.BAD_GATEWAY)
    with pytest.raises(BadResponseError):
        await server.get_health()

    tx = await signed_mint(server, fake, token)
    fake.inject(Fault.SEND_LOST)
    with pytest.raises(TimeoutError):
        await server.send_transaction(tx)
    assert fake.pending_hashes == [tx.hash_hex()]  # accepted although nobody heard it

    fake.close_ledger()
    other = await signed_mint(server, fake, token, amount=1)
    fake.inject(Fault.SEND_VANISHED)
    with pytest.raises(TimeoutError):
        await server.send_transaction(other)
    assert fake.pending_hashes == []
    assert fake.calls["sendTransaction"] == 2


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["sendTransaction", "simulateTransaction", "getTransaction"]),
    payload=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.hex())),
)
def test_any_payload_gets_a_json_rpc_reply(fake: FakeSorobanRpc, method: str, payload: str) -> None:
    params = {"hash": payload} if method == "getTransaction" else {"transaction": payload}

    reply = fake.handle({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})

    assert reply["id"] == 7
    assert ("result" in reply) != ("error" in reply)
    json.dumps(reply)


@pytest.fixture
async def served(fake: FakeSorobanRpc, socket_enabled: None) -> AsyncIterator[str]:
    url = await fake.serve(close_every_s=None)
    yield url
    await fake.stop()


@pytest.mark.usefixtures("socket_enabled")
async def test_loopback_server_through_an_aiohttp_session(
    fake: FakeSorobanRpc, token: str, served: str
) -> None:
    async with aiohttp.ClientSession() as session:
        server = SorobanServerAsync(served, client=SessionClient(session, timeout_s=5))
        tx = await signed_mint(server, fake, token, amount=77)
        assert (await server.send_transaction(tx)).status is SendTransactionStatus.PENDING
        fake.close_ledger()
        assert (await server.get_transaction(tx.hash_hex())).status is (
            GetTransactionStatus.SUCCESS
        )
        assert fake.balance(token, ALICE) == 77

        fake.inject(Fault.RPC_DOWN)
        with pytest.raises(StellarConnectionError):
            await server.get_health()
        fake.inject(Fault.BAD_GATEWAY)
        with pytest.raises(BadResponseError):
            await server.get_health()
        async with session.post(served, data=b"not json") as reply:
            assert (await reply.json())["error"]["code"] == -32700


@pytest.mark.usefixtures("socket_enabled")
async def test_loopback_server_closes_ledgers_on_its_own(fake: FakeSorobanRpc) -> None:
    start = fake.ledger
    url = await fake.serve(close_every_s=0.001)
    try:
        async with aiohttp.ClientSession() as session:
            server = SorobanServerAsync(url, client=SessionClient(session, timeout_s=5))
            for _ in range(1000):
                if (await server.get_latest_ledger()).sequence > start + 2:
                    break
            assert fake.ledger > start + 2
    finally:
        await fake.stop()
    stopped_at = fake.ledger
    await fake.stop()  # stopping twice is harmless
    assert fake.ledger == stopped_at
