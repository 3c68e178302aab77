"""Soroban settings, the aiohttp adapter, fees, and the minting key's secrecy."""

from __future__ import annotations

from collections.abc import AsyncIterator
import logging
from pathlib import Path
import socket
from typing import Any

import aiohttp
import pytest
from stellar_sdk import Network, StrKey, TransactionEnvelope
from stellar_sdk.client.response import Response
from stellar_sdk.exceptions import (
    ConnectionError as StellarConnectionError,
    ContentSizeLimitExceededError,
)

from peergrid_core.errors import PeerGridConnectionError, PeerGridError
from peergrid_core.ledger import LedgerConfigError, MintStatus, Token
from peergrid_core.ledger.soroban import SessionClient, SorobanConfigError, SorobanLedger
from peergrid_core.sim.soroban_rpc import FakeRpcClient, Fault

from .soroban_fixtures import ADMIN, ALICE, PASSPHRASE, World, make_config, open_world

CONTRACT = StrKey.encode_contract(bytes(32))
ALL_CONTRACTS = dict.fromkeys(Token, CONTRACT)
# Same length and alphabet as the real secret, but its checksum is wrong.
BROKEN_SECRET = ADMIN.secret[:-1] + ("A" if ADMIN.secret[-1] != "A" else "B")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    opened = await open_world(tmp_path)
    yield opened
    await opened.close()


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("rpc_url", {"rpc_url": "ftp://rpc.example"}),
        ("rpc_url", {"rpc_url": "soroban-testnet.stellar.org"}),
        ("rpc_url", {"rpc_url": ""}),
        ("network_passphrase", {"network_passphrase": " "}),
        ("secret_key", {"secret_key": ""}),
        ("secret_key", {"secret_key": ADMIN.public_key}),
        ("secret_key", {"secret_key": BROKEN_SECRET}),
        ("contract", {"contracts": {Token.ENERGY: CONTRACT, Token.CARBON: CONTRACT}}),
        ("contract", {"contracts": {**ALL_CONTRACTS, Token.CARBON: ADMIN.public_key}}),
        ("inclusion_fee", {"inclusion_fee": 99}),
        ("inclusion_fee", {"inclusion_fee": True}),
        ("tx_timeout_s", {"tx_timeout_s": 5}),
        ("tx_timeout_s", {"tx_timeout_s": 4000}),
        ("max_fee", {"inclusion_fee": 5_000, "max_fee": 1_000}),
    ],
)
def test_validate_names_the_bad_field_without_the_secret(
    field: str, overrides: dict[str, Any]
) -> None:
    contracts = overrides.pop("contracts", ALL_CONTRACTS)
    config = make_config(contracts, **overrides)

    with pytest.raises(SorobanConfigError) as bad:
        config.validate()

    assert bad.value.field == field
    assert isinstance(bad.value, LedgerConfigError)
    assert str(bad.value).startswith(f"{field}: ")
    for secret in (ADMIN.secret, BROKEN_SECRET):
        assert secret not in str(bad.value)
        assert secret not in repr(bad.value)


def test_missing_contract_names_the_token() -> None:
    config = make_config({Token.ENERGY: CONTRACT, Token.CARBON: CONTRACT})
    with pytest.raises(SorobanConfigError) as bad:
        config.validate()
    assert bad.value.token is Token.REWARD


def test_config_hides_the_secret_and_derives_the_account() -> None:
    config = make_config(ALL_CONTRACTS)

    config.validate()

    assert config.public_key == ADMIN.public_key
    for text in (repr(config), str(config), f"{config}"):
        assert ADMIN.secret not in text
        assert "secret_key" not in text


async def test_a_ledger_refuses_a_bad_config_before_doing_anything(world: World) -> None:
    bad = make_config(world.contracts, secret_key=BROKEN_SECRET)
    with pytest.raises(SorobanConfigError) as refused:
        SorobanLedger(world.db, bad, client=FakeRpcClient(world.fake))
    assert refused.value.field == "secret_key"
    assert BROKEN_SECRET not in str(refused.value)


async def test_the_secret_never_leaks(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Run success and failure paths at DEBUG; look for the seed everywhere."""
    caplog.set_level(logging.DEBUG)
    raw_seed = ADMIN.raw_secret_key()
    texts: list[str] = []
    ledger = world.ledger()
    texts += [repr(ledger), str(ledger), repr(ledger.config)]

    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="ok")
    await world.settle(ledger)
    world.fake.inject(Fault.SIMULATION_ERROR)
    await world.enqueue(ledger, Token.ENERGY, ALICE, 11, key="refused")
    await world.settle(ledger)
    world.fake.inject(Fault.SEND_LOST)
    await world.enqueue(ledger, Token.CARBON, ALICE, 12, key="lost")
    await world.settle(ledger)
    wrong_network = world.ledger(
        config=make_config(world.contracts, network_passphrase=Network.PUBLIC_NETWORK_PASSPHRASE)
    )
    await world.enqueue(wrong_network, Token.REWARD, ALICE, 13, key="wrong-network")
    await wrong_network.run_once()
    world.fake.inject(Fault.RPC_DOWN, times=None)
    errors: list[BaseException] = []
    for action in (ledger.check_network, ledger.check_account, ledger.verify):
        try:
            await action()
        except PeerGridError as err:
            errors.append(err)
    world.fake.clear()
    try:
        SorobanLedger(world.db, make_config(world.contracts, secret_key=BROKEN_SECRET))
    except SorobanConfigError as err:
        errors.append(err)

    assert len(errors) == 4
    for failure in errors:
        cause: BaseException | None = failure
        while cause is not None:  # the whole chain, as a traceback would print it
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__ or cause.__context__
    texts += [repr(receipt) for receipt in await ledger.receipts()]
    texts += [caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    stored = b"".join(path.read_bytes() for path in world.path.parent.iterdir() if path.is_file())

    assert {r.status for r in await ledger.receipts()} == {
        MintStatus.CONFIRMED,
        MintStatus.FAILED,
        MintStatus.PENDING,
    }
    for text in texts:
        assert ADMIN.secret not in text
        assert BROKEN_SECRET not in text
        assert raw_seed.hex() not in text
    assert ADMIN.secret.encode() not in stored
    assert raw_seed not in stored


# ---------------------------------------------------------------- fees


class FeeRisingClient(FakeRpcClient):
    """Raises the network's minimum inclusion fee just before the first send."""

    def __init__(self, world: World, fee: int) -> None:
        super().__init__(world.fake)
        self.fee = fee
        self.raised = False

    async def post(
        self,
        url: str,
        data: dict[str, str] | None = None,
        json_data: dict[str, Any] | None = None,
    ) -> Response:
        if json_data and json_data.get("method") == "sendTransaction" and not self.raised:
            self.raised = True
            self.fake.inclusion_fee = self.fee
        return await super().post(url, data, json_data)


async def test_inclusion_fee_follows_the_network_under_load(world: World) -> None:
    world.fake.inclusion_fee = 5_000
    ledger = world.ledger()
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")

    (receipt,) = await world.settle(ledger)

    assert receipt.status is MintStatus.CONFIRMED
    envelope = TransactionEnvelope.from_xdr(
        world.fake._applied[receipt.ref].envelope_xdr, PASSPHRASE
    )
    assert envelope.transaction.fee == 5_000 + world.fake.resource_fee


async def test_fee_too_low_at_send_is_rebuilt_later_with_a_new_bid(world: World) -> None:
    ledger = world.ledger(client=FeeRisingClient(world, 2_000))
    await world.enqueue(ledger, Token.ENERGY, ALICE, 10, key="k")

    await ledger.run_once()
    assert [s.code for s in world.fake.sends] == ["txINSUFFICIENT_FEE"]
    await ledger.run_once()  # it waits before building again
    assert len(world.fake.sends) == 1
    (receipt,) = await world.settle(ledger)

    assert receipt.status is MintStatus.CONFIRMED
    assert [status for _k, _h, status in world.attempts()] == ["rejected", "success"]
    assert len(world.fake.mints) == 1


# ---------------------------------------------------------------- the aiohttp adapter


@pytest.mark.usefixtures("socket_enabled")
async def test_session_client_maps_transport_failures(world: World) -> None:
    url = await world.fake.serve(close_every_s=None)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        client = SessionClient(session, timeout_s=5)
        refused = await client.get(url, max_content_size=None)
        assert refused.status_code == 405  # RPC is POST only
        with pytest.raises(ContentSizeLimitExceededError):
            await client.get(url, max_content_size=4)
        with pytest.raises(StellarConnectionError):
            await client.post(f"http://127.0.0.1:{closed_port}/", json_data={})
        with pytest.raises(NotImplementedError):
            client.stream(url)
        await client.close()
        assert not session.closed  # the session belongs to its owner

        config = make_config(world.contracts, rpc_url=f"http://127.0.0.1:{closed_port}/")
        ledger = SorobanLedger(world.db, config, session=session)
        with pytest.raises(PeerGridConnectionError):
            await ledger.check_account()
        await ledger.close()
        assert not session.closed


@pytest.mark.usefixtures("socket_enabled")
async def test_a_ledger_without_session_opens_and_closes_its_own(world: World) -> None:
    url = await world.fake.serve(close_every_s=None)
    ledger = SorobanLedger(world.db, make_config(world.contracts, rpc_url=url))

    await ledger.check_network()
    await ledger.close()
    await ledger.close()  # closing twice is harmless
