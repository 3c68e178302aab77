"""Building blocks of the Soroban tests: a fake network, fixed keys, a journal on disk.

Everything runs on the fake's ledger clock: the ledger under test gets a
clock that reads :attr:`FakeSorobanRpc.network_time`, and time moves only when
a test closes ledgers. Nothing sleeps for real.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
import sqlite3
from typing import Any

from stellar_sdk import Keypair, Network, TransactionEnvelope
from stellar_sdk.client.base_async_client import BaseAsyncClient
from stellar_sdk.client.response import Response
from stellar_sdk.soroban_server_async import SorobanServerAsync

from peergrid_core.ledger import LedgerDatabase, MintStatus, Receipt, Token
from peergrid_core.ledger.soroban import SorobanConfig, SorobanLedger
from peergrid_core.sim.soroban_rpc import FakeRpcClient, FakeSorobanRpc

PASSPHRASE = Network.TESTNET_NETWORK_PASSPHRASE
RPC_URL = "https://soroban-testnet.example/rpc"
"""Only a label for in-process tests: FakeRpcClient never opens a socket."""

ADMIN = Keypair.from_raw_ed25519_seed(bytes([1]) * 32)
"""The minting key: source of every mint and admin of the three tokens."""
STRANGER = Keypair.from_raw_ed25519_seed(bytes([9]) * 32)
"""A funded key that administers nothing."""
ALICE = Keypair.from_raw_ed25519_seed(bytes([2]) * 32).public_key
BOB = Keypair.from_raw_ed25519_seed(bytes([3]) * 32).public_key


class SimulatedCrashError(Exception):
    """The process 'dies' at this point (raised out of the send path)."""


class CrashingClient(FakeRpcClient):
    """Dies on the next ``sendTransaction``: before it reaches the fake, or just after."""

    def __init__(self, fake: FakeSorobanRpc, *, after_delivery: bool = False) -> None:
        super().__init__(fake)
        self.after_delivery = after_delivery

    async def post(
        self,
        url: str,
        data: dict[str, str] | None = None,
        json_data: dict[str, Any] | None = None,
    ) -> Response:
        if json_data and json_data.get("method") == "sendTransaction":
            if self.after_delivery:
                await super().post(url, data, json_data)
            raise SimulatedCrashError("power cut while sending")
        return await super().post(url, data, json_data)


def network_clock(fake: FakeSorobanRpc) -> Callable[[], datetime]:
    """A clock that reads the fake network's ledger close time."""
    return lambda: datetime.fromtimestamp(fake.network_time, UTC)


@dataclass
class World:
    """A fake network with the three tokens deployed, and a ledger file for the journal."""

    fake: FakeSorobanRpc
    db: LedgerDatabase
    path: Path
    contracts: dict[Token, str]
    config: SorobanConfig
    ledgers: list[SorobanLedger] = field(default_factory=list)

    def ledger(
        self,
        *,
        client: BaseAsyncClient | None = None,
        config: SorobanConfig | None = None,
        **kwargs: Any,
    ) -> SorobanLedger:
        """A SorobanLedger on this world's file, talking in-process to the fake by default."""
        if client is None and "session" not in kwargs:
            client = FakeRpcClient(self.fake)
        kwargs.setdefault("clock", network_clock(self.fake))
        ledger = SorobanLedger(self.db, config or self.config, client=client, **kwargs)
        self.ledgers.append(ledger)
        return ledger

    async def enqueue(
        self,
        ledger: SorobanLedger,
        token: Token,
        account: str,
        amount: int,
        *,
        key: str,
        detail: Mapping[str, str] | None = None,
    ) -> Receipt:
        """Queue a mint the way the service does: inside a database write transaction."""
        return await self.db.write(
            lambda conn: ledger.mint_in(conn, token, account, amount, key=key, detail=detail or {})
        )

    async def settle(self, ledger: SorobanLedger, *, max_ledgers: int = 30) -> list[Receipt]:
        """Alternate worker passes and ledger closes until nothing is pending."""
        for _ in range(max_ledgers):
            await ledger.run_once()
            if not await ledger.receipts(status=MintStatus.PENDING):
                break
            self.fake.close_ledger()
        return await ledger.receipts()

    def attempts(self) -> list[tuple[str, str, str]]:
        """``(job key, tx hash, status)`` of every attempt, read from the file directly."""
        conn = sqlite3.connect(self.path)
        try:
            return [
                (str(key), str(tx_hash), str(status))
                for key, tx_hash, status in conn.execute(
                    "SELECT j.key, a.tx_hash, a.status FROM soroban_attempt a"
                    " JOIN soroban_job j ON j.id = a.job_id ORDER BY a.rowid"
                )
            ]
        finally:
            conn.close()

    async def close(self) -> None:
        for ledger in self.ledgers:
            await ledger.close()
        await self.fake.stop()
        await self.db.close()


def make_config(contracts: Mapping[Token, str], **overrides: Any) -> SorobanConfig:
    """The test configuration: the fake testnet, the ADMIN key, the given contracts."""
    values: dict[str, Any] = {
        "rpc_url": RPC_URL,
        "network_passphrase": PASSPHRASE,
        "secret_key": ADMIN.secret,
        "contracts": dict(contracts),
    }
    values.update(overrides)
    return SorobanConfig(**values)


async def open_world(tmp_path: Path, *, fund_admin: bool = True, **overrides: Any) -> World:
    """Create the fake network (tokens administered by ADMIN) and an open ledger file."""
    fake = FakeSorobanRpc(PASSPHRASE)
    if fund_admin:
        fake.create_account(ADMIN.public_key)
    fake.create_account(STRANGER.public_key)
    contracts = {
        Token.ENERGY: fake.deploy_token(ADMIN.public_key, name="PeerGrid Energy", symbol="PGE"),
        Token.CARBON: fake.deploy_token(ADMIN.public_key, name="PeerGrid Carbon", symbol="PGC"),
        Token.REWARD: fake.deploy_token(ADMIN.public_key, name="PeerGrid Reward", symbol="LT"),
    }
    path = tmp_path / "peergrid_ledger.db"
    db = LedgerDatabase(path)
    await db.open()
    config = make_config(contracts, **overrides)
    world = World(fake=fake, db=db, path=path, contracts=contracts, config=config)
    await db.write(SorobanLedger(db, config, client=FakeRpcClient(fake)).create_schema)
    return world


async def onchain_envelope(fake: FakeSorobanRpc, tx_hash: str) -> TransactionEnvelope:
    """The envelope the network applied under ``tx_hash``, read back through the SDK."""
    server = SorobanServerAsync(RPC_URL, client=FakeRpcClient(fake))
    reply = await server.get_transaction(tx_hash)
    assert reply.envelope_xdr is not None, f"{tx_hash} is not on the ledger"
    return TransactionEnvelope.from_xdr(reply.envelope_xdr, PASSPHRASE)
