"""The Stellar ledger entry: mints anchored on Soroban, against the offline test RPC.

The RPC is the core's test server (``peergrid_core.sim.soroban_rpc``) served
over HTTP on 127.0.0.1 and reached through Home Assistant's own aiohttp
session. It decodes the real transaction envelopes the integration signs,
checks their signatures against the network passphrase, and enforces
sequence numbers and time bounds; it does not run token contract code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from stellar_sdk import Keypair, Network, TransactionEnvelope, scval

from custom_components.peergrid.const import CONF_KIND, DOMAIN, GRID_UNIQUE_ID, EntryKind
from custom_components.peergrid.diagnostics import async_get_config_entry_diagnostics
from custom_components.peergrid.ledger import DATA_LEDGER, PeerGridLedger
from custom_components.peergrid.peergrid_core.api import ApiPath
from custom_components.peergrid.peergrid_core.ledger import MintStatus, Token
from custom_components.peergrid.peergrid_core.sim.soroban_rpc import FakeSorobanRpc, Fault
from custom_components.peergrid.stellar import (
    CONF_CARBON_CONTRACT,
    CONF_ENERGY_CONTRACT,
    CONF_NETWORK_PASSPHRASE,
    CONF_REWARD_CONTRACT,
    CONF_RPC_URL,
    CONF_SECRET_KEY,
    LEDGER_UNIQUE_ID,
)

from .helpers import setup_entry, wait_until
from .test_ledger import REPORT, REPORT_ID, stored_transfer

type ApiClient = TestClient[web.Request, web.Application]

PASSPHRASE = Network.TESTNET_NETWORK_PASSPHRASE
ADMIN = Keypair.from_raw_ed25519_seed(bytes([1]) * 32)
"""The minting key: admin of the three test tokens."""
OTHER = Keypair.from_raw_ed25519_seed(bytes([7]) * 32)


@pytest.fixture
async def rpc(socket_enabled: None) -> AsyncIterator[FakeSorobanRpc]:
    """The test network with the three tokens administered by ADMIN, served on 127.0.0.1."""
    fake = FakeSorobanRpc(PASSPHRASE)
    fake.create_account(ADMIN.public_key)
    fake.create_account(OTHER.public_key)
    yield fake
    await fake.stop()


async def _entry_data(fake: FakeSorobanRpc, *, secret: str = ADMIN.secret) -> dict[str, Any]:
    url = await fake.serve(close_every_s=0.05)
    return {
        CONF_KIND: EntryKind.LEDGER,
        CONF_RPC_URL: url,
        CONF_NETWORK_PASSPHRASE: PASSPHRASE,
        CONF_SECRET_KEY: secret,
        CONF_ENERGY_CONTRACT: fake.deploy_token(ADMIN.public_key, symbol="ENRG"),
        CONF_CARBON_CONTRACT: fake.deploy_token(ADMIN.public_key, symbol="CO2"),
        CONF_REWARD_CONTRACT: fake.deploy_token(ADMIN.public_key, symbol="LT"),
    }


@pytest.fixture
async def setup(hass: HomeAssistant, hass_storage: dict[str, Any]) -> PeerGridLedger:
    """PeerGrid with its HTTP API, the grid entry and one transfer the grid ran."""
    hass_storage["peergrid.transfers"] = {
        "version": 1,
        "minor_version": 1,
        "key": "peergrid.transfers",
        "data": {"transfers": [stored_transfer()], "totals": {}},
    }
    assert await async_setup_component(hass, "http", {})
    await setup_entry(
        hass,
        MockConfigEntry(domain=DOMAIN, data={CONF_KIND: EntryKind.GRID}, unique_id=GRID_UNIQUE_ID),
    )
    return hass.data[DATA_LEDGER]


async def _client(hass_client: ClientSessionGenerator) -> ApiClient:
    client: ApiClient = await hass_client()
    return client


async def test_report_is_minted_on_chain_once(
    hass: HomeAssistant,
    setup: PeerGridLedger,
    rpc: FakeSorobanRpc,
    hass_client: ClientSessionGenerator,
) -> None:
    """One report: mint(custody, 4.5 tokens) and the carbon credit, signed by the key, once."""
    data = await _entry_data(rpc)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=LEDGER_UNIQUE_ID)
    await setup_entry(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    client = await _client(hass_client)

    for _ in range(2):  # the gateway's retry mints nothing more
        response = await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
        assert response.status == 200
    await wait_until(hass, lambda: len(rpc.mints) == 2, max_wait=30)
    energy, carbon = sorted(rpc.mints, key=lambda mint: mint.contract != data[CONF_ENERGY_CONTRACT])
    assert (energy.contract, energy.to, energy.amount) == (
        data[CONF_ENERGY_CONTRACT],
        ADMIN.public_key,
        45_000_000,  # 4.5 tokens in base units of 10^-7
    )
    assert (carbon.contract, carbon.to, carbon.amount) == (
        data[CONF_CARBON_CONTRACT],
        ADMIN.public_key,
        41_000,  # 0.0041 kg
    )
    # The transaction on the network is a mint(to, amount) signed by the minting key.
    reply = rpc.handle(
        {"jsonrpc": "2.0", "id": 1, "method": "getTransaction", "params": {"hash": energy.tx_hash}}
    )
    envelope = TransactionEnvelope.from_xdr(reply["result"]["envelopeXdr"], PASSPHRASE)
    assert envelope.transaction.source.account_id == ADMIN.public_key
    ADMIN.verify(envelope.hash(), envelope.signatures[0].signature)
    (operation,) = envelope.transaction.operations
    invoke = operation.host_function.invoke_contract
    assert invoke.function_name.sc_symbol.decode() == "mint"
    assert scval.to_native(invoke.args[0]).address == ADMIN.public_key
    assert scval.from_int128(invoke.args[1]) == 45_000_000

    chain = entry.runtime_data
    receipt = await chain.receipt(f"report:{REPORT_ID}:energy")
    assert receipt is not None
    assert receipt.ref == energy.tx_hash
    assert setup.service.balance(Token.ENERGY, "NODE_A") == Decimal("4.5")
    await hass.async_block_till_done()
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    assert diagnostics["entry"]["data"][CONF_SECRET_KEY] == "**REDACTED**"
    assert ADMIN.secret not in str(diagnostics)
    assert diagnostics["account"] == ADMIN.public_key


async def test_lost_reply_still_mints_once(
    hass: HomeAssistant,
    setup: PeerGridLedger,
    rpc: FakeSorobanRpc,
    hass_client: ClientSessionGenerator,
) -> None:
    """The RPC accepts a mint but its reply is lost: the worker looks it up, never re-mints."""
    data = await _entry_data(rpc)
    rpc.inject(Fault.SEND_LOST)
    await setup_entry(hass, MockConfigEntry(domain=DOMAIN, data=data, unique_id=LEDGER_UNIQUE_ID))
    client = await _client(hass_client)
    await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    await wait_until(hass, lambda: len(rpc.mints) == 2, max_wait=30)
    assert sorted(mint.amount for mint in rpc.mints) == [41_000, 45_000_000]


async def test_restart_between_submit_and_confirm(
    hass: HomeAssistant,
    setup: PeerGridLedger,
    rpc: FakeSorobanRpc,
    hass_client: ClientSessionGenerator,
) -> None:
    """The entry goes away while its mints are in flight; the next setup confirms them once."""
    data = await _entry_data(rpc)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=LEDGER_UNIQUE_ID)
    # Replies lost, and the transactions wait in the queue: nothing is confirmed yet.
    rpc.inject(Fault.SEND_LOST, times=None)
    await setup_entry(hass, entry)
    client = await _client(hass_client)
    await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    await wait_until(hass, lambda: len(rpc.sends) >= 1, max_wait=30)
    assert await hass.config_entries.async_unload(entry.entry_id)
    rpc.clear(Fault.SEND_LOST)

    assert await hass.config_entries.async_setup(entry.entry_id)
    await wait_until(hass, lambda: len(rpc.mints) == 2, max_wait=30)
    chain = entry.runtime_data
    async with asyncio.timeout(30):
        while await chain.receipts(status=MintStatus.PENDING):  # noqa: ASYNC110 - the journal has no event to wait on
            await asyncio.sleep(0.05)
    receipts = await chain.receipts()
    assert [receipt.status for receipt in receipts] == [MintStatus.CONFIRMED] * 2
    assert len({mint.tx_hash for mint in rpc.mints}) == 2


async def test_missing_account_raises_a_repair_issue(
    hass: HomeAssistant, setup: PeerGridLedger, socket_enabled: None
) -> None:
    """A minting key without an account: the entry loads, and a repair issue says what to do."""
    fake = FakeSorobanRpc(PASSPHRASE)
    unfunded = Keypair.from_raw_ed25519_seed(bytes([3]) * 32)
    try:
        data = await _entry_data(fake, secret=unfunded.secret)
        # The tokens' admin must be the configured key.
        for field in (CONF_ENERGY_CONTRACT, CONF_CARBON_CONTRACT, CONF_REWARD_CONTRACT):
            data[field] = fake.deploy_token(unfunded.public_key, symbol=field[:3].upper())
        entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=LEDGER_UNIQUE_ID)
        await setup_entry(hass, entry)
        issue = ir.async_get(hass).async_get_issue(DOMAIN, "stellar_account_missing")
        assert issue is not None
        assert issue.translation_placeholders == {"account": unfunded.public_key}
        assert await hass.config_entries.async_unload(entry.entry_id)
        assert ir.async_get(hass).async_get_issue(DOMAIN, "stellar_account_missing") is None
    finally:
        await fake.stop()


async def test_key_that_is_not_admin_asks_for_reauth(
    hass: HomeAssistant, setup: PeerGridLedger, rpc: FakeSorobanRpc
) -> None:
    """A key that may not mint (not the tokens' admin) starts a reauthentication."""
    data = await _entry_data(rpc, secret=OTHER.secret)
    entry = MockConfigEntry(domain=DOMAIN, data=data, unique_id=LEDGER_UNIQUE_ID)
    entry.add_to_hass(hass)
    assert not await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == ["reauth"]


async def test_unreachable_rpc_retries_setup(
    hass: HomeAssistant, setup: PeerGridLedger, socket_enabled: None
) -> None:
    """No RPC at the address: the entry is retried later, nothing is minted meanwhile."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        data={
            CONF_KIND: EntryKind.LEDGER,
            CONF_RPC_URL: "http://127.0.0.1:9/",
            CONF_NETWORK_PASSPHRASE: PASSPHRASE,
            CONF_SECRET_KEY: ADMIN.secret,
            CONF_ENERGY_CONTRACT: "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSC4",
            CONF_CARBON_CONTRACT: "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSC4",
            CONF_REWARD_CONTRACT: "CAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABSC4",
        },
        unique_id=LEDGER_UNIQUE_ID,
    )
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.SETUP_RETRY
    assert setup.chain is None


async def test_node_account_option_receives_its_tokens(
    hass: HomeAssistant,
    setup: PeerGridLedger,
    rpc: FakeSorobanRpc,
    hass_client: ClientSessionGenerator,
) -> None:
    """With an account set for NODE_A, the mint is mint(NODE_A's account, amount)."""
    alice = Keypair.from_raw_ed25519_seed(bytes([2]) * 32).public_key
    data = await _entry_data(rpc)
    entry = MockConfigEntry(
        domain=DOMAIN,
        data=data,
        unique_id=LEDGER_UNIQUE_ID,
        options={"node_accounts": {"NODE_A": alice}},
    )
    await setup_entry(hass, entry)
    client = await _client(hass_client)
    await client.post(ApiPath.IOT_ENERGY_REPORT.value, json=REPORT)
    await wait_until(hass, lambda: len(rpc.mints) == 2, max_wait=30)
    assert {(mint.to, mint.amount) for mint in rpc.mints} == {
        (alice, 45_000_000),
        (alice, 41_000),
    }
    assert rpc.balance(data[CONF_ENERGY_CONTRACT], alice) == 45_000_000
