"""A Stellar RPC (Soroban JSON-RPC) test double that checks what it is sent.

:class:`FakeSorobanRpc` stands in for ``stellar-rpc`` and the network behind
it in tests and demos, where no Stellar network can be reached. It is a test
double, not a mock: the client under test talks to it with the real
``stellar_sdk.SorobanServerAsync`` and the answers are parsed by the SDK's own
pydantic models, so a shape the real server would not send fails the test.

What it proves (it is checked for every request):

* the envelope is the real XDR the SDK produced, decoded here byte for byte;
* the transaction hash is computed over the network passphrase this server
  was started with, and the source account's ed25519 signature verifies
  against it: a client configured for another network gets ``txBAD_AUTH``;
* sequence numbers: a transaction applies only with the source's next
  sequence number, which it consumes even when the contract call fails;
* time bounds are enforced against the server's own ledger clock, when a
  transaction is sent and again when a ledger closes (an expired transaction
  is dropped from the queue and never appears);
* at most one pending transaction per source account (``TRY_AGAIN_LATER``);
* the CAP-67 rules for Soroban transactions: one ``InvokeHostFunction``
  operation, Soroban resource data attached, no memo, no muxed source;
* the fee covers the resource fee plus the minimum inclusion fee, and the
  source can pay it;
* the contract call: ``mint(to: Address, amount: i128)`` on a registered
  token, invoked by that token's admin, with the admin's authorisation entry
  and the footprint the simulation returned attached to the transaction.

What it does not prove: no WASM runs here. A registered token behaves like
the ``soroban-examples`` token or a Stellar Asset Contract (admin-only
``mint``, ``balance``, ``decimals``, ``name``, ``symbol``) as coded below;
resource use, fees, footprints, auth recording, archival and ledger timing
are simulated, and only account ledger entries can be read. Contract
semantics are only really tested on testnet.

Serve it in-process with :class:`FakeRpcClient` (a ``BaseAsyncClient``; no
sockets) or over loopback HTTP with :meth:`FakeSorobanRpc.serve`, which also
closes ledgers on a timer. Faults are injected with
:meth:`FakeSorobanRpc.inject` (see :class:`Fault`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping
import contextlib
from dataclasses import dataclass, field
from enum import StrEnum
import hashlib
import json
import logging
from typing import Any, Final, override

from aiohttp import web
from stellar_sdk import Address, Keypair, StrKey, TransactionEnvelope, scval, xdr as sx
from stellar_sdk.client.base_async_client import BaseAsyncClient
from stellar_sdk.client.response import Response
from stellar_sdk.exceptions import BadSignatureError, ConnectionError as StellarConnectionError
from stellar_sdk.fee_bump_transaction_envelope import FeeBumpTransactionEnvelope
from stellar_sdk.memo import NoneMemo
from stellar_sdk.operation import InvokeHostFunction

_LOGGER = logging.getLogger(__name__)

type JsonObject = dict[str, Any]

DEFAULT_START_TIME: Final = 1_767_225_600
"""Close time of the first ledger: 2026-01-01 00:00:00 UTC."""
DEFAULT_START_LEDGER: Final = 50_000
LEDGER_INTERVAL_S: Final = 5
"""Seconds of network time one ledger close advances by default."""
PROTOCOL_VERSION: Final = 23
RETENTION_LEDGERS: Final = 120_960
"""stellar-rpc's default history retention: seven days of ledgers."""
MIN_INCLUSION_FEE: Final = 100
"""Minimum inclusion fee per operation, stroops."""
RESOURCE_FEE: Final = 60_000
"""Resource fee the simulation asks for a token call, stroops."""
BASE_RESERVE: Final = 5_000_000
"""0.5 XLM per reserve unit; an account keeps two units plus one per sub-entry."""
DEFAULT_ACCOUNT_BALANCE: Final = 10_000 * 10**7
"""10 000 XLM, what friendbot gives a testnet account."""
I128_MAX: Final = 2**127 - 1

_MINT_INSTRUCTIONS: Final = 1_500_000
_READ_BYTES: Final = 1_200
_WRITE_BYTES: Final = 200
_JSONRPC_PARSE_ERROR: Final = -32700
_JSONRPC_INVALID_REQUEST: Final = -32600
_JSONRPC_METHOD_NOT_FOUND: Final = -32601
_JSONRPC_INVALID_PARAMS: Final = -32602
_FEE_STATS: Final = (
    "max",
    "min",
    "mode",
    *(f"p{rank}" for rank in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99)),
)
_BAD_GATEWAY_HTML: Final = "<html><body><h1>502 Bad Gateway</h1></body></html>"


class Fault(StrEnum):
    """A failure the fake reproduces on request (see :meth:`FakeSorobanRpc.inject`)."""

    RPC_DOWN = "rpc_down"
    """Every request fails as if nothing listened on the port."""
    BAD_GATEWAY = "bad_gateway"
    """A proxy in front of the RPC answers HTTP 502 with an HTML page."""
    SIMULATION_ERROR = "simulation_error"
    """``simulateTransaction`` answers with a host error (HTTP 200, no result)."""
    SEND_LOST = "send_lost"
    """``sendTransaction`` is processed (normally: accepted), but the reply never arrives."""
    SEND_VANISHED = "send_vanished"
    """``sendTransaction`` never reaches the network and the reply never arrives."""
    TRY_AGAIN_LATER = "try_again_later"
    """``sendTransaction`` answers ``TRY_AGAIN_LATER`` without accepting anything."""
    SEQUENCE_TAKEN = "sequence_taken"
    """Just before ``sendTransaction`` is handled, another transaction of the same
    source lands and consumes the sequence number the sent one carries."""
    DROP_PENDING = "drop_pending"
    """The next accepted transaction is evicted from the queue and never included."""


_TRANSPORT_FAULTS: Final = frozenset(
    {Fault.RPC_DOWN, Fault.BAD_GATEWAY, Fault.SEND_LOST, Fault.SEND_VANISHED}
)


class TransportFaultError(Exception):
    """A request got no JSON-RPC reply; the transport decides what the client sees.

    Raised by :meth:`FakeSorobanRpc.handle`. :class:`FakeRpcClient` turns it
    into what ``stellar_sdk``'s own aiohttp client raises; the loopback
    server drops the connection or answers 502.
    """

    def __init__(self, fault: Fault) -> None:
        """Keep the fault that swallowed the reply."""
        super().__init__(f"no reply: {fault}")
        self.fault = fault


class _RpcError(Exception):
    """A JSON-RPC error object (code, message) for the reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, kw_only=True, slots=True)
class Mint:
    """One successful ``mint`` call, as the ledger applied it."""

    contract: str
    """The token contract (``C...``)."""
    to: str
    """The recipient (``G...`` or ``C...``)."""
    amount: int
    """Base units, exactly as the transaction carried them."""
    tx_hash: str
    ledger: int


@dataclass(frozen=True, kw_only=True, slots=True)
class SendRecord:
    """One ``sendTransaction`` the fake handled and what it decided."""

    tx_hash: str
    status: str
    """``PENDING``, ``DUPLICATE``, ``TRY_AGAIN_LATER`` or ``ERROR``."""
    code: str | None = None
    """The ``TransactionResultCode`` name for ``ERROR`` (``txBAD_SEQ``, ...)."""


@dataclass(kw_only=True, slots=True)
class FakeAccount:
    """A classic account: what the fake needs of it."""

    account_id: str
    balance: int
    """Stroops of XLM."""
    seq: int
    last_modified: int
    """Ledger that last changed the account (``lastModifiedLedgerSeq``)."""


@dataclass(kw_only=True, slots=True)
class FakeToken:
    """A token contract registered with the fake."""

    contract_id: str
    admin: str
    name: str
    symbol: str
    decimals: int
    balances: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Pending:
    envelope: TransactionEnvelope
    envelope_xdr: str
    tx_hash: str
    dropped: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class _Applied:
    tx_hash: str
    successful: bool
    ledger: int
    close_time: int
    application_order: int
    envelope_xdr: str
    result_xdr: str
    result_meta_xdr: str
    contract_events: tuple[str, ...]
    diagnostic_events: tuple[str, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class _Call:
    """What a contract call did (or would do): its return value or error."""

    value: sx.SCVal | None = None
    error: str | None = None
    read_only: tuple[sx.LedgerKey, ...] = ()
    read_write: tuple[sx.LedgerKey, ...] = ()
    needs_admin_auth: bool = False
    mint: tuple[str, int] | None = None


class FakeSorobanRpc:
    """An in-memory Stellar network with a Soroban RPC front (see the module docstring).

    Time is the fake's own ledger clock: :attr:`network_time` is the close
    time of the latest ledger and moves only when a ledger closes
    (:meth:`close_ledger`, :meth:`advance`, or the timer of :meth:`serve`).
    Tests drive it explicitly and give the client under test a clock that
    reads it, so nothing depends on the wall clock.
    """

    def __init__(
        self,
        network_passphrase: str,
        *,
        start_time: int = DEFAULT_START_TIME,
        start_ledger: int = DEFAULT_START_LEDGER,
        ledger_interval_s: int = LEDGER_INTERVAL_S,
        retention_ledgers: int = RETENTION_LEDGERS,
        resource_fee: int = RESOURCE_FEE,
        inclusion_fee: int = MIN_INCLUSION_FEE,
    ) -> None:
        """Start a network at ledger ``start_ledger`` closed at ``start_time``."""
        if not network_passphrase:
            raise ValueError("network_passphrase must not be empty")
        if ledger_interval_s < 1 or retention_ledgers < 1 or start_ledger < 2:
            raise ValueError("ledger interval, retention and start ledger must be positive")
        self.network_passphrase = network_passphrase
        self.ledger_interval_s = ledger_interval_s
        self.retention_ledgers = retention_ledgers
        self.resource_fee = resource_fee
        self.inclusion_fee = inclusion_fee
        """Lowest inclusion fee admitted now (raise it to model surge pricing)."""
        self._ledger = start_ledger
        self._close_time = start_time
        self._close_times: dict[int, int] = {start_ledger: start_time}
        self._accounts: dict[str, FakeAccount] = {}
        self._tokens: dict[str, FakeToken] = {}
        self._pending: dict[str, _Pending] = {}
        self._applied: dict[str, _Applied] = {}
        self._faults: dict[Fault, int | None] = {}
        self._simulation_error = "HostError: Error(Context, InternalError)"
        self._runner: web.AppRunner | None = None
        self._closer: asyncio.Task[None] | None = None
        self.mints: list[Mint] = []
        """Every successful mint, in ledger order."""
        self.sends: list[SendRecord] = []
        """Every ``sendTransaction`` that reached the network, in order."""
        self.calls: Counter[str] = Counter()
        """JSON-RPC calls by method name, including those a fault swallowed."""

    # ------------------------------------------------------------ the network

    @property
    def ledger(self) -> int:
        """Sequence number of the latest closed ledger."""
        return self._ledger

    @property
    def network_time(self) -> int:
        """Close time of the latest ledger, Unix seconds: the network's clock."""
        return self._close_time

    @property
    def oldest_ledger(self) -> int:
        """Oldest ledger still inside the RPC's history retention window."""
        # Ledgers already forgotten stay forgotten if retention grows later.
        return max(min(self._close_times), self._ledger - self.retention_ledgers + 1)

    @property
    def pending_hashes(self) -> list[str]:
        """Hashes of the transactions waiting in the queue for the next ledger."""
        return [pending.tx_hash for pending in self._pending.values()]

    def create_account(
        self, account_id: str, *, balance: int = DEFAULT_ACCOUNT_BALANCE
    ) -> FakeAccount:
        """Create and fund a classic account, as friendbot would.

        Its sequence number starts at ``ledger << 32`` like a real one's.
        """
        if not StrKey.is_valid_ed25519_public_key(account_id):
            raise ValueError(f"{account_id!r} is not a G... account id")
        if account_id in self._accounts:
            raise ValueError(f"account {account_id} exists")
        account = FakeAccount(
            account_id=account_id,
            balance=balance,
            seq=self._ledger << 32,
            last_modified=self._ledger,
        )
        self._accounts[account_id] = account
        return account

    def account(self, account_id: str) -> FakeAccount | None:
        """The account ``account_id``, or None if it does not exist."""
        return self._accounts.get(account_id)

    def deploy_token(
        self, admin: str, *, name: str = "PeerGrid Energy", symbol: str = "PGE", decimals: int = 7
    ) -> str:
        """Register a token contract whose ``mint`` only ``admin`` may call; return its id."""
        if not StrKey.is_valid_ed25519_public_key(admin):
            raise ValueError(f"{admin!r} is not a G... account id")
        seed = f"{self.network_passphrase}|token|{len(self._tokens)}|{symbol}".encode()
        contract_id = StrKey.encode_contract(hashlib.sha256(seed).digest())
        self._tokens[contract_id] = FakeToken(
            contract_id=contract_id, admin=admin, name=name, symbol=symbol, decimals=decimals
        )
        return contract_id

    def token(self, contract_id: str) -> FakeToken:
        """The registered token ``contract_id`` (KeyError if unknown)."""
        return self._tokens[contract_id]

    def balance(self, contract_id: str, holder: str) -> int:
        """Balance of ``holder`` in the token ``contract_id``, base units."""
        return self._tokens[contract_id].balances.get(holder, 0)

    def consume_sequence(self, account_id: str) -> int:
        """Let another transaction of ``account_id`` land now; return the sequence it used.

        This is what happens when the same key is used by a second program:
        the sequence number the client loaded is gone.
        """
        account = self._accounts[account_id]
        account.seq += 1
        account.balance -= MIN_INCLUSION_FEE
        account.last_modified = self._ledger
        return account.seq

    def close_ledger(self, *, seconds: int | None = None) -> int:
        """Close one ledger ``seconds`` later and apply the queue; return its sequence.

        A queued transaction is applied only if its time bounds admit the
        new close time and its sequence number is still the source's next;
        otherwise it is dropped and never appears. Applying consumes the
        sequence number and charges the fee even when the call fails.
        """
        step = self.ledger_interval_s if seconds is None else seconds
        if step < 1:
            raise ValueError("a ledger closes at least one second after the previous one")
        self._ledger += 1
        self._close_time += step
        self._close_times[self._ledger] = self._close_time
        oldest = self.oldest_ledger
        for old in [seq for seq in self._close_times if seq < oldest]:
            del self._close_times[old]
        for old_hash in [h for h, applied in self._applied.items() if applied.ledger < oldest]:
            del self._applied[old_hash]
        queue, self._pending = self._pending, {}
        order = 0
        for pending in queue.values():
            tx = pending.envelope.transaction
            account = self._accounts.get(tx.source.account_id)
            bounds = tx.preconditions.time_bounds if tx.preconditions else None
            if pending.dropped or account is None or tx.sequence != account.seq + 1:
                continue
            if bounds is not None and bounds.max_time and self._close_time > bounds.max_time:
                continue
            order += 1
            self._apply(pending, account, order)
        return self._ledger

    def advance(self, seconds: int) -> int:
        """Close ledgers at the normal interval until ``seconds`` have passed."""
        target = self._close_time + seconds
        while self._close_time < target:
            self.close_ledger(seconds=min(self.ledger_interval_s, target - self._close_time))
        return self._ledger

    # ------------------------------------------------------------ faults

    def inject(self, fault: Fault, *, times: int | None = 1, message: str | None = None) -> None:
        """Make the next ``times`` matching requests fail with ``fault`` (None: until cleared).

        ``message`` is the host error text for :attr:`Fault.SIMULATION_ERROR`.
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for until cleared)")
        self._faults[fault] = times
        if message is not None:
            self._simulation_error = message

    def clear(self, fault: Fault | None = None) -> None:
        """Remove ``fault`` (or every fault)."""
        if fault is None:
            self._faults.clear()
        else:
            self._faults.pop(fault, None)

    def _take(self, fault: Fault) -> bool:
        if fault not in self._faults:
            return False
        remaining = self._faults[fault]
        if remaining is not None:
            if remaining <= 1:
                del self._faults[fault]
            else:
                self._faults[fault] = remaining - 1
        return True

    # ------------------------------------------------------------ JSON-RPC

    def handle(self, request: Mapping[str, Any]) -> JsonObject:
        """Answer one JSON-RPC request object with a JSON-RPC response object.

        Raises :class:`TransportFaultError` when an injected fault means the
        client gets no reply at all.
        """
        request_id = request.get("id")
        method = request.get("method")
        if isinstance(method, str):
            self.calls[method] += 1
        if self._take(Fault.RPC_DOWN):
            raise TransportFaultError(Fault.RPC_DOWN)
        if self._take(Fault.BAD_GATEWAY):
            raise TransportFaultError(Fault.BAD_GATEWAY)
        try:
            result = self._dispatch(request)
        except _RpcError as err:
            return {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": err.code, "message": err.message},
            }
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def _dispatch(self, request: Mapping[str, Any]) -> JsonObject:
        method = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            raise _RpcError(_JSONRPC_INVALID_REQUEST, "invalid request")
        handler = self._methods().get(method)
        if handler is None:
            raise _RpcError(_JSONRPC_METHOD_NOT_FOUND, f"method {method!r} not found")
        params = request.get("params") or {}
        if not isinstance(params, Mapping):
            raise _RpcError(_JSONRPC_INVALID_PARAMS, "params must be an object")
        return handler(params)

    def _methods(self) -> dict[str, Callable[[Mapping[str, Any]], JsonObject]]:
        return {
            "getHealth": self._get_health,
            "getNetwork": self._get_network,
            "getLatestLedger": self._get_latest_ledger,
            "getLedgerEntries": self._get_ledger_entries,
            "getFeeStats": self._get_fee_stats,
            "simulateTransaction": self._simulate_transaction,
            "sendTransaction": self._send_transaction,
            "getTransaction": self._get_transaction,
        }

    def _get_health(self, _params: Mapping[str, Any]) -> JsonObject:
        oldest = self.oldest_ledger
        return {
            "status": "healthy",
            "latestLedger": self._ledger,
            "oldestLedger": oldest,
            "ledgerRetentionWindow": self.retention_ledgers,
            "latestLedgerCloseTime": str(self._close_time),
            "oldestLedgerCloseTime": str(self._close_times[oldest]),
        }

    def _get_network(self, _params: Mapping[str, Any]) -> JsonObject:
        return {"passphrase": self.network_passphrase, "protocolVersion": PROTOCOL_VERSION}

    def _get_latest_ledger(self, _params: Mapping[str, Any]) -> JsonObject:
        ledger_hash = hashlib.sha256(f"{self.network_passphrase}|{self._ledger}".encode())
        # Header and close meta are not modelled: empty strings parse, and no
        # PeerGrid code reads them.
        return {
            "id": ledger_hash.hexdigest(),
            "protocolVersion": PROTOCOL_VERSION,
            "sequence": self._ledger,
            "closeTime": str(self._close_time),
            "headerXdr": "",
            "metadataXdr": "",
        }

    def _get_fee_stats(self, _params: Mapping[str, Any]) -> JsonObject:
        def distribution(fee: int) -> JsonObject:
            stats: JsonObject = dict.fromkeys(_FEE_STATS, str(fee))
            stats["transactionCount"] = "0"
            stats["ledgerCount"] = 50
            return stats

        return {
            "sorobanInclusionFee": distribution(self.inclusion_fee),
            "inclusionFee": distribution(self.inclusion_fee),
            "latestLedger": self._ledger,
        }

    def _get_ledger_entries(self, params: Mapping[str, Any]) -> JsonObject:
        keys = params.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise _RpcError(_JSONRPC_INVALID_PARAMS, "keys must be a non-empty list of strings")
        entries: list[JsonObject] = []
        for key_xdr in keys:
            try:
                key = sx.LedgerKey.from_xdr(key_xdr)
            except (EOFError, ValueError) as err:
                raise _RpcError(_JSONRPC_INVALID_PARAMS, f"cannot unmarshal key: {err}") from err
            # Only accounts are modelled; any other entry reads as absent.
            if key.type != sx.LedgerEntryType.ACCOUNT or key.account is None:
                continue
            raw = key.account.account_id.account_id.ed25519
            if raw is None:
                continue
            account = self._accounts.get(StrKey.encode_ed25519_public_key(raw.uint256))
            if account is None:
                continue
            entries.append(
                {
                    "key": key_xdr,
                    "xdr": _account_entry(account).to_xdr(),
                    "lastModifiedLedgerSeq": account.last_modified,
                }
            )
        return {"entries": entries, "latestLedger": self._ledger}

    def _simulate_transaction(self, params: Mapping[str, Any]) -> JsonObject:
        envelope = self._decode(_string_param(params, "transaction"))
        tx = envelope.transaction
        if len(tx.operations) != 1 or not isinstance(tx.operations[0], InvokeHostFunction):
            raise _RpcError(
                _JSONRPC_INVALID_PARAMS, "transaction must hold exactly one host function call"
            )
        host_function = tx.operations[0].host_function
        args = host_function.invoke_contract
        if host_function.type != sx.HostFunctionType.HOST_FUNCTION_TYPE_INVOKE_CONTRACT or (
            args is None
        ):
            return self._simulation_failure("HostError: Error(Context, InvalidAction)")
        if self._take(Fault.SIMULATION_ERROR):
            return self._simulation_failure(self._simulation_error)
        call = self._call(args, invoker=tx.source.account_id)
        if call.error is not None:
            return self._simulation_failure(call.error)
        auth: list[str] = []
        if call.needs_admin_auth:
            auth.append(
                sx.SorobanAuthorizationEntry(
                    credentials=sx.SorobanCredentials(
                        sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT
                    ),
                    root_invocation=_invocation(args),
                ).to_xdr()
            )
        data = sx.SorobanTransactionData(
            ext=sx.SorobanTransactionDataExt(0),
            resources=sx.SorobanResources(
                footprint=sx.LedgerFootprint(
                    read_only=list(call.read_only), read_write=list(call.read_write)
                ),
                instructions=sx.Uint32(_MINT_INSTRUCTIONS),
                disk_read_bytes=sx.Uint32(_READ_BYTES),
                write_bytes=sx.Uint32(_WRITE_BYTES),
            ),
            resource_fee=sx.Int64(self.resource_fee),
        )
        value = call.value if call.value is not None else scval.to_void()
        return {
            "transactionData": data.to_xdr(),
            "minResourceFee": str(self.resource_fee),
            "events": [],
            "results": [{"auth": auth, "xdr": value.to_xdr()}],
            "latestLedger": self._ledger,
        }

    def _simulation_failure(self, message: str) -> JsonObject:
        return {"error": message, "events": [], "latestLedger": self._ledger}

    def _send_transaction(self, params: Mapping[str, Any]) -> JsonObject:
        raw = _string_param(params, "transaction")
        code: str | None
        envelope: TransactionEnvelope | None
        if self._take(Fault.SEND_VANISHED):
            raise TransportFaultError(Fault.SEND_VANISHED)
        try:
            envelope_xdr = sx.TransactionEnvelope.from_xdr(raw)
            if envelope_xdr.type == sx.EnvelopeType.ENVELOPE_TYPE_TX_FEE_BUMP:
                # Fee bumps are real but not modelled here.
                bump = FeeBumpTransactionEnvelope.from_xdr_object(
                    envelope_xdr, self.network_passphrase
                )
                tx_hash, status, code = bump.hash_hex(), "ERROR", "txNOT_SUPPORTED"
                envelope = None
            else:
                envelope = TransactionEnvelope.from_xdr_object(
                    envelope_xdr, self.network_passphrase
                )
        except (EOFError, ValueError, TypeError, IndexError) as err:
            raise _RpcError(_JSONRPC_INVALID_PARAMS, "invalid_xdr") from err
        if envelope is not None:
            tx_hash = envelope.hash_hex()
            source = envelope.transaction.source.account_id
            if source in self._accounts and self._take(Fault.SEQUENCE_TAKEN):
                self.consume_sequence(source)
            if self._take(Fault.TRY_AGAIN_LATER):
                status, code = "TRY_AGAIN_LATER", None
            else:
                status, code = self._admit(envelope, raw)
        self.sends.append(SendRecord(tx_hash=tx_hash, status=status, code=code))
        if self._take(Fault.SEND_LOST):
            raise TransportFaultError(Fault.SEND_LOST)
        reply: JsonObject = {
            "status": status,
            "hash": tx_hash,
            "latestLedger": self._ledger,
            "latestLedgerCloseTime": str(self._close_time),
        }
        if code is not None:
            result = sx.TransactionResult(
                fee_charged=sx.Int64(0),
                result=sx.TransactionResultResult(sx.TransactionResultCode[code]),
                ext=sx.TransactionResultExt(0),
            )
            reply["errorResultXdr"] = result.to_xdr()
            reply["diagnosticEventsXdr"] = []
        return reply

    def _admit(self, envelope: TransactionEnvelope, raw: str) -> tuple[str, str | None]:
        """Validate like stellar-core's queue, in its order; queue if valid.

        Returns the reply status and, for ``ERROR``, the result code's name.
        """
        tx = envelope.transaction
        tx_hash = envelope.hash_hex()
        source = tx.source.account_id
        queued = self._pending.get(source)
        if queued is not None and queued.tx_hash == tx_hash:
            return "DUPLICATE", None
        account = self._accounts.get(source)
        if account is None:
            return "ERROR", "txNO_ACCOUNT"
        if len(tx.operations) != 1:
            return "ERROR", "txMALFORMED"
        if not isinstance(tx.operations[0], InvokeHostFunction):
            return "ERROR", "txNOT_SUPPORTED"
        # CAP-67: no memo and no muxed source on a Soroban transaction.
        if not isinstance(tx.memo, NoneMemo) or tx.source.account_muxed_id is not None:
            return "ERROR", "txMALFORMED"
        if tx.soroban_data is None:
            return "ERROR", "txMALFORMED"
        bounds = tx.preconditions.time_bounds if tx.preconditions else None
        if bounds is not None and bounds.min_time and self._close_time < bounds.min_time:
            return "ERROR", "txTOO_EARLY"
        if bounds is not None and bounds.max_time and self._close_time > bounds.max_time:
            return "ERROR", "txTOO_LATE"
        resource_fee = tx.soroban_data.resource_fee.int64
        if resource_fee < self.resource_fee or tx.fee - resource_fee < self.inclusion_fee:
            return "ERROR", "txINSUFFICIENT_FEE"
        if queued is not None:
            return "TRY_AGAIN_LATER", None
        if tx.sequence != account.seq + 1:
            return "ERROR", "txBAD_SEQ"
        if not _signed_by(envelope, source):
            return "ERROR", "txBAD_AUTH"
        if account.balance - 2 * BASE_RESERVE < tx.fee:
            return "ERROR", "txINSUFFICIENT_BALANCE"
        self._pending[source] = _Pending(
            envelope=envelope,
            envelope_xdr=raw,
            tx_hash=tx_hash,
            dropped=self._take(Fault.DROP_PENDING),
        )
        return "PENDING", None

    def _get_transaction(self, params: Mapping[str, Any]) -> JsonObject:
        tx_hash = _string_param(params, "hash")
        if len(tx_hash) != 64:
            raise _RpcError(_JSONRPC_INVALID_PARAMS, f"unexpected hash length ({len(tx_hash)})")
        try:
            bytes.fromhex(tx_hash)
        except ValueError as err:
            raise _RpcError(_JSONRPC_INVALID_PARAMS, "incorrect hash") from err
        oldest = self.oldest_ledger
        reply: JsonObject = {
            "txHash": tx_hash,
            "latestLedger": self._ledger,
            "latestLedgerCloseTime": str(self._close_time),
            "oldestLedger": oldest,
            "oldestLedgerCloseTime": str(self._close_times[oldest]),
        }
        applied = self._applied.get(tx_hash.lower())
        if applied is None:
            reply["status"] = "NOT_FOUND"
            return reply
        reply |= {
            "status": "SUCCESS" if applied.successful else "FAILED",
            "applicationOrder": applied.application_order,
            "feeBump": False,
            "envelopeXdr": applied.envelope_xdr,
            "resultXdr": applied.result_xdr,
            "resultMetaXdr": applied.result_meta_xdr,
            "diagnosticEventsXdr": list(applied.diagnostic_events),
            "events": {
                "transactionEventsXdr": [],
                "contractEventsXdr": [list(applied.contract_events)],
            },
            "ledger": applied.ledger,
            "createdAt": str(applied.close_time),
        }
        return reply

    # ------------------------------------------------------------ contracts

    def _decode(self, raw: str) -> TransactionEnvelope:
        try:
            envelope: TransactionEnvelope = TransactionEnvelope.from_xdr(
                raw, self.network_passphrase
            )
        except (EOFError, ValueError, TypeError, IndexError) as err:
            raise _RpcError(_JSONRPC_INVALID_PARAMS, "invalid_xdr") from err
        return envelope

    def _call(self, args: sx.InvokeContractArgs, *, invoker: str) -> _Call:
        """Evaluate a token call against the current state without changing it."""
        contract = Address.from_xdr_sc_address(args.contract_address).address
        token = self._tokens.get(contract)
        if token is None:
            return _Call(error="HostError: Error(Storage, MissingValue): contract not found")
        function = args.function_name.sc_symbol.decode()
        instance = _instance_key(contract)
        try:
            match function, args.args:
                case "mint", [to_val, amount_val]:
                    to = scval.from_address(to_val).address
                    amount = scval.from_int128(amount_val)
                    if invoker != token.admin:
                        return _Call(error="HostError: Error(Auth, InvalidAction): not the admin")
                    if amount < 0:
                        return _Call(error="HostError: Error(Contract, #8): negative amount")
                    if token.balances.get(to, 0) + amount > I128_MAX:
                        return _Call(error="HostError: Error(Contract, #9): balance overflow")
                    return _Call(
                        read_only=(instance,),
                        read_write=(_balance_key(contract, to),),
                        needs_admin_auth=True,
                        mint=(to, amount),
                    )
                case "balance", [holder_val]:
                    holder = scval.from_address(holder_val).address
                    return _Call(
                        value=scval.to_int128(token.balances.get(holder, 0)),
                        read_only=(instance, _balance_key(contract, holder)),
                    )
                case "decimals", []:
                    return _Call(value=scval.to_uint32(token.decimals), read_only=(instance,))
                case "name", []:
                    return _Call(value=scval.to_string(token.name), read_only=(instance,))
                case "symbol", []:
                    return _Call(value=scval.to_string(token.symbol), read_only=(instance,))
        except ValueError as err:
            return _Call(error=f"HostError: Error(Value, UnexpectedType): {err}")
        return _Call(error=f"HostError: Error(WasmVm, MissingValue): no function {function!r}")

    def _apply(self, pending: _Pending, account: FakeAccount, order: int) -> None:
        """Apply one queued transaction in the ledger just closed."""
        tx = pending.envelope.transaction
        account.seq = tx.sequence
        account.balance -= tx.fee
        account.last_modified = self._ledger
        operation = tx.operations[0]
        if not isinstance(operation, InvokeHostFunction):  # refused on admission
            raise TypeError(f"cannot apply {type(operation).__name__}")
        error, value, events = self._execute(
            operation, tx.soroban_data, tx.source.account_id, pending.tx_hash
        )
        contract_events: tuple[str, ...] = ()
        diagnostics: tuple[str, ...] = ()
        if error is None:
            code = sx.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_SUCCESS
            success = sx.Hash(
                hashlib.sha256(
                    sx.InvokeHostFunctionSuccessPreImage(value, events).to_xdr_bytes()
                ).digest()
            )
            contract_events = tuple(event.to_xdr() for event in events)
            result_code = sx.TransactionResultCode.txSUCCESS
        else:
            code = sx.InvokeHostFunctionResultCode.INVOKE_HOST_FUNCTION_TRAPPED
            success = None
            diagnostics = (_diagnostic(error).to_xdr(),)
            result_code = sx.TransactionResultCode.txFAILED
            events = []
        result = sx.TransactionResult(
            fee_charged=sx.Int64(tx.fee),
            result=sx.TransactionResultResult(
                result_code,
                results=[
                    sx.OperationResult(
                        sx.OperationResultCode.opINNER,
                        sx.OperationResultTr(
                            sx.OperationType.INVOKE_HOST_FUNCTION,
                            invoke_host_function_result=sx.InvokeHostFunctionResult(
                                code, success=success
                            ),
                        ),
                    )
                ],
            ),
            ext=sx.TransactionResultExt(0),
        )
        meta = sx.TransactionMeta(
            4,
            v4=sx.TransactionMetaV4(
                ext=sx.ExtensionPoint(0),
                tx_changes_before=sx.LedgerEntryChanges([]),
                operations=[
                    sx.OperationMetaV2(
                        ext=sx.ExtensionPoint(0),
                        changes=sx.LedgerEntryChanges([]),
                        events=list(events),
                    )
                ],
                tx_changes_after=sx.LedgerEntryChanges([]),
                soroban_meta=sx.SorobanTransactionMetaV2(
                    ext=sx.SorobanTransactionMetaExt(0),
                    return_value=value if error is None else None,
                ),
                events=[],
                diagnostic_events=[],
            ),
        )
        self._applied[pending.tx_hash] = _Applied(
            tx_hash=pending.tx_hash,
            successful=error is None,
            ledger=self._ledger,
            close_time=self._close_time,
            application_order=order,
            envelope_xdr=pending.envelope_xdr,
            result_xdr=result.to_xdr(),
            result_meta_xdr=meta.to_xdr(),
            contract_events=contract_events,
            diagnostic_events=diagnostics,
        )

    def _execute(
        self,
        operation: InvokeHostFunction,
        soroban_data: sx.SorobanTransactionData | None,
        source: str,
        tx_hash: str,
    ) -> tuple[str | None, sx.SCVal, list[sx.ContractEvent]]:
        """Run the call for real: check footprint and auth, then change state."""
        void = scval.to_void()
        args = operation.host_function.invoke_contract
        if args is None or soroban_data is None:
            return "HostError: Error(Context, InvalidAction)", void, []
        call = self._call(args, invoker=source)
        if call.error is not None:
            return call.error, void, []
        footprint = soroban_data.resources.footprint
        read_only = {key.to_xdr() for key in footprint.read_only}
        read_write = {key.to_xdr() for key in footprint.read_write}
        if not all(key.to_xdr() in read_only | read_write for key in call.read_only) or not all(
            key.to_xdr() in read_write for key in call.read_write
        ):
            return "HostError: Error(Storage, ExceededLimit): footprint misses an entry", void, []
        if call.needs_admin_auth and not _authorises(operation.auth, args):
            return "HostError: Error(Auth, InvalidAction): admin authorisation missing", void, []
        if call.mint is None:
            return None, call.value if call.value is not None else void, []
        to, amount = call.mint
        contract = Address.from_xdr_sc_address(args.contract_address).address
        token = self._tokens[contract]
        token.balances[to] = token.balances.get(to, 0) + amount
        # The soroban-examples token's event: topics ["mint", to], data amount.
        event = sx.ContractEvent(
            ext=sx.ExtensionPoint(0),
            contract_id=sx.ContractID(sx.Hash(StrKey.decode_contract(contract))),
            type=sx.ContractEventType.CONTRACT,
            body=sx.ContractEventBody(
                0,
                v0=sx.ContractEventV0(
                    topics=[scval.to_symbol("mint"), scval.to_address(to)],
                    data=scval.to_int128(amount),
                ),
            ),
        )
        self.mints.append(
            Mint(contract=contract, to=to, amount=amount, tx_hash=tx_hash, ledger=self._ledger)
        )
        return None, void, [event]

    # ------------------------------------------------------------ loopback HTTP

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, close_every_s: float | None = 0.05
    ) -> str:
        """Serve JSON-RPC over HTTP on ``host:port``; return the URL to give the SDK.

        With ``close_every_s`` a background task closes a ledger that often
        (real time), each advancing the network clock by the normal ledger
        interval. :meth:`stop` ends both.
        """
        if self._runner is not None:
            raise RuntimeError("already serving")
        app = web.Application()
        app.router.add_post("/", self._http)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        if close_every_s is not None:
            self._closer = asyncio.create_task(
                self._close_periodically(close_every_s), name="fake-soroban-ledger-close"
            )
        return f"http://{host}:{bound_port}/"

    async def stop(self) -> None:
        """Stop serving and the ledger timer; stopping twice does nothing."""
        closer, self._closer = self._closer, None
        if closer is not None:
            closer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closer
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _close_periodically(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            self.close_ledger()

    async def _http(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response(
                {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": _JSONRPC_PARSE_ERROR, "message": "parse error"},
                }
            )
        if not isinstance(body, dict):
            body = {}
        try:
            reply = self.handle(body)
        except TransportFaultError as err:
            if err.fault is Fault.BAD_GATEWAY:
                return web.Response(status=502, text=_BAD_GATEWAY_HTML, content_type="text/html")
            # No reply at all: the client sees the connection drop.
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=503)
        return web.json_response(reply)


class FakeRpcClient(BaseAsyncClient):
    """A ``stellar_sdk`` async client that hands requests to a :class:`FakeSorobanRpc`.

    No sockets: ``SorobanServerAsync(url, client=FakeRpcClient(fake))`` talks
    to the fake directly. Replies still go through JSON text, and injected
    transport faults surface as what ``stellar_sdk``'s aiohttp client raises:
    :class:`stellar_sdk.exceptions.ConnectionError` for a refused
    connection, the builtin :class:`TimeoutError` for a reply that never
    comes, and an HTTP 502 page from a proxy.
    """

    def __init__(self, fake: FakeSorobanRpc) -> None:
        """Serve requests from ``fake``."""
        self.fake = fake

    @override
    async def post(
        self,
        url: str,
        data: dict[str, str] | None = None,
        json_data: dict[str, Any] | None = None,
    ) -> Response:
        """Answer a JSON-RPC POST from the fake."""
        try:
            reply = self.fake.handle(json_data or {})
        except TransportFaultError as err:
            if err.fault is Fault.RPC_DOWN:
                raise StellarConnectionError(
                    f"cannot connect to {url}: connection refused"
                ) from err
            if err.fault is Fault.BAD_GATEWAY:
                return Response(502, _BAD_GATEWAY_HTML, {"Content-Type": "text/html"}, url)
            raise TimeoutError(f"no reply from {url}") from err
        return Response(200, json.dumps(reply), {"Content-Type": "application/json"}, url)

    @override
    async def get(
        self,
        url: str,
        params: dict[str, str] | None = None,
        max_content_size: int | None = None,
    ) -> Response:
        """Stellar RPC has no GET endpoints; answer like a server that says so."""
        return Response(405, "method not allowed", {"Content-Type": "text/plain"}, url)

    @override
    def stream(
        self, url: str, params: dict[str, str] | None = None
    ) -> AsyncGenerator[dict[str, Any]]:
        """Stellar RPC does not stream (Horizon's SSE is not part of it)."""
        raise NotImplementedError("Stellar RPC has no event streams")

    @override
    async def close(self) -> None:
        """Nothing to release."""


# ---------------------------------------------------------------- XDR helpers


def _string_param(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise _RpcError(_JSONRPC_INVALID_PARAMS, f"missing or invalid {name!r}")
    return value


def _signed_by(envelope: TransactionEnvelope, account_id: str) -> bool:
    """Whether a signature of ``account_id``'s master key covers the envelope's hash."""
    keypair = Keypair.from_public_key(account_id)
    hint = keypair.signature_hint()
    tx_hash = envelope.hash()
    for signature in envelope.signatures:
        if signature.signature_hint != hint:
            continue
        try:
            keypair.verify(tx_hash, signature.signature)
        except BadSignatureError:
            continue
        return True
    return False


def _authorises(entries: list[sx.SorobanAuthorizationEntry], args: sx.InvokeContractArgs) -> bool:
    """Whether a source-account authorisation entry covers exactly this call."""
    wanted = _invocation(args).to_xdr()
    return any(
        entry.credentials.type == sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT
        and entry.root_invocation.to_xdr() == wanted
        for entry in entries
    )


def _invocation(args: sx.InvokeContractArgs) -> sx.SorobanAuthorizedInvocation:
    return sx.SorobanAuthorizedInvocation(
        function=sx.SorobanAuthorizedFunction(
            sx.SorobanAuthorizedFunctionType.SOROBAN_AUTHORIZED_FUNCTION_TYPE_CONTRACT_FN,
            contract_fn=args,
        ),
        sub_invocations=[],
    )


def _instance_key(contract: str) -> sx.LedgerKey:
    return sx.LedgerKey(
        sx.LedgerEntryType.CONTRACT_DATA,
        contract_data=sx.LedgerKeyContractData(
            contract=Address(contract).to_xdr_sc_address(),
            key=sx.SCVal(sx.SCValType.SCV_LEDGER_KEY_CONTRACT_INSTANCE),
            durability=sx.ContractDataDurability.PERSISTENT,
        ),
    )


def _balance_key(contract: str, holder: str) -> sx.LedgerKey:
    """The token's persistent ``Balance(holder)`` entry (soroban-examples layout)."""
    return sx.LedgerKey(
        sx.LedgerEntryType.CONTRACT_DATA,
        contract_data=sx.LedgerKeyContractData(
            contract=Address(contract).to_xdr_sc_address(),
            key=scval.to_vec([scval.to_symbol("Balance"), scval.to_address(holder)]),
            durability=sx.ContractDataDurability.PERSISTENT,
        ),
    )


def _account_entry(account: FakeAccount) -> sx.LedgerEntryData:
    return sx.LedgerEntryData(
        sx.LedgerEntryType.ACCOUNT,
        account=sx.AccountEntry(
            account_id=Keypair.from_public_key(account.account_id).xdr_account_id(),
            balance=sx.Int64(account.balance),
            seq_num=sx.SequenceNumber(sx.Int64(account.seq)),
            num_sub_entries=sx.Uint32(0),
            inflation_dest=None,
            flags=sx.Uint32(0),
            home_domain=sx.String32(b""),
            thresholds=sx.Thresholds(bytes([1, 0, 0, 0])),
            signers=[],
            ext=sx.AccountEntryExt(0),
        ),
    )


def _diagnostic(message: str) -> sx.DiagnosticEvent:
    """A diagnostic event carrying a host error text, as failed calls emit."""
    return sx.DiagnosticEvent(
        in_successful_contract_call=False,
        event=sx.ContractEvent(
            ext=sx.ExtensionPoint(0),
            contract_id=None,
            type=sx.ContractEventType.DIAGNOSTIC,
            body=sx.ContractEventBody(
                0,
                v0=sx.ContractEventV0(
                    topics=[scval.to_symbol("error")], data=scval.to_string(message)
                ),
            ),
        ),
    )
