"""Mint PeerGrid tokens on Stellar Soroban: at most once per key, crash-safe.

:class:`SorobanLedger` is the chain backend of the ledger. A mint is first a
*job* row written by :meth:`SorobanLedger.mint_in` inside the caller's
database transaction (a transactional outbox: the report, the local entries
and the chain job commit together or not at all). A worker,
:meth:`SorobanLedger.run`, then turns each job into one Soroban transaction
calling ``mint(to: Address, amount: i128)`` on the token's contract, signed
by the configured minting key, and follows it to a final state.

Why a mint can never land twice, and what the worker does about it:

* A transaction's hash is known once it is signed. Every signed transaction
  is written to the ``soroban_attempt`` table (hash, envelope, time bound)
  and **committed before it is sent**, so after a crash the worker knows
  every transaction that might be on the network.
* A transaction carries the source account's next sequence number and a
  ``max_time`` time bound. It can be applied at most once, and never in a
  ledger that closes after ``max_time``.
* Before building anything, the worker resolves every attempt that might
  still land by its hash (``getTransaction``): found -> confirmed or failed;
  not found while the network's latest ledger closed after ``max_time`` ->
  it provably never landed and never will; otherwise the *same* envelope is
  sent again (harmless: the network answers ``DUPLICATE`` or ignores it).
* A new transaction is built only when no earlier attempt of the job, and
  no attempt of the same source account, can still land. Partial unique
  indexes in the database enforce both rules.
* An attempt the network refused outright (``ERROR`` on ``sendTransaction``)
  is dead at once only if this process knows that no earlier send of it
  could have been accepted; otherwise the time bound decides.
* A memo cannot carry the job key: since CAP-67 Soroban transactions must
  not have one. The key stays off-chain, in the journal.

Time bounds come from the network's own clock (the latest ledger's close
time), so a host clock that is wrong (a Raspberry Pi before NTP) cannot
make transactions expire early or linger. The injectable ``clock`` only
schedules retries and stamps rows.

``stellar_sdk`` is imported only here and in ``sim/soroban_rpc.py``; the
rest of the core works without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
import json
import logging
import sqlite3
from typing import Any, Final, override
from urllib.parse import urlsplit

import aiohttp
from pydantic import ValidationError
from stellar_sdk import (
    Account,
    Address,
    Keypair,
    StrKey,
    TransactionBuilder,
    TransactionEnvelope,
    scval,
    xdr as sx,
)
from stellar_sdk.client.base_async_client import BaseAsyncClient
from stellar_sdk.client.response import Response
from stellar_sdk.exceptions import (
    AccountNotFoundException,
    BaseHorizonError,
    BaseRequestError,
    ConnectionError as StellarConnectionError,
    ContentSizeLimitExceededError,
    SorobanRpcErrorResponse,
)
from stellar_sdk.operation import InvokeHostFunction
from stellar_sdk.soroban_rpc import (
    GetTransactionResponse,
    GetTransactionStatus,
    SendTransactionStatus,
    SimulateTransactionResponse,
)
from stellar_sdk.soroban_server_async import SorobanServerAsync

from ..errors import (
    PeerGridConnectionError,
    PeerGridError,
    PeerGridTimeoutError,
    PeerGridValidationError,
)
from .base import (
    I128_MAX,
    IdempotencyConflictError,
    LedgerConfigError,
    LedgerError,
    MintStatus,
    Receipt,
    Token,
    VerifyResult,
)
from .db import LedgerDatabase

_LOGGER = logging.getLogger(__name__)

BACKEND_NAME: Final = "soroban"

MIN_INCLUSION_FEE: Final = 100
"""The network's minimum inclusion fee per operation, stroops."""
DEFAULT_MAX_FEE: Final = 10_000_000
"""Never sign a mint whose total fee exceeds 1 XLM."""
BASE_RESERVE: Final = 5_000_000
"""0.5 XLM: an account must keep (2 + sub-entries) reserves."""
MIN_SPENDABLE: Final = 10_000_000
"""Below 1 XLM above its reserve the minting key counts as unfunded."""
DEFAULT_POLL_INTERVAL_S: Final = 2.0
IDLE_INTERVAL_S: Final = 60.0
"""With nothing to do the worker still looks every minute (jobs written by
another process do not wake it)."""
MAX_BACKOFF_S: Final = 300.0
CONFIG_BACKOFF_S: Final = 60.0
"""First wait after a configuration problem (unfunded key, wrong network)."""
MAX_CONFIG_BACKOFF_S: Final = 900.0
MAX_CHAIN_FAILURES: Final = 3
"""Rebuilds after transactions that failed on-chain for a retryable reason."""
MAX_BUILDS_PER_PASS: Final = 3
REQUEST_TIMEOUT_S: Final = 20.0
_MAX_ERROR_CHARS: Final = 300

_JOB_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS soroban_job (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        token TEXT NOT NULL,
        contract TEXT NOT NULL,
        account TEXT NOT NULL,
        amount TEXT NOT NULL,
        detail TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'unresolved', 'confirmed', 'failed')),
        tx_hash TEXT NOT NULL DEFAULT '',
        ledger INTEGER,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        chain_failures INTEGER NOT NULL DEFAULT 0,
        backoff INTEGER NOT NULL DEFAULT 0,
        next_try_at REAL NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS soroban_job_due ON soroban_job (status, next_try_at, id)
    """,
    """
    CREATE TABLE IF NOT EXISTS soroban_attempt (
        tx_hash TEXT PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES soroban_job (id),
        source TEXT NOT NULL,
        sequence TEXT NOT NULL,
        envelope TEXT NOT NULL,
        max_time INTEGER NOT NULL,
        signed_ledger INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (
            status IN ('signed', 'submitted', 'success', 'failed', 'expired', 'rejected', 'unknown')
        ),
        ledger INTEGER,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )
    """,
    # The two rules that keep a mint from landing twice, enforced by SQLite:
    # a job has at most one attempt that may still land, and a source
    # account has at most one (it could not use the same sequence twice).
    """
    CREATE UNIQUE INDEX IF NOT EXISTS soroban_attempt_live_job
        ON soroban_attempt (job_id) WHERE status IN ('signed', 'submitted')
    """,
    """
    CREATE UNIQUE INDEX IF NOT EXISTS soroban_attempt_live_source
        ON soroban_attempt (source) WHERE status IN ('signed', 'submitted')
    """,
    """
    CREATE UNIQUE INDEX IF NOT EXISTS soroban_attempt_one_success
        ON soroban_attempt (job_id) WHERE status = 'success'
    """,
)

_JOB_COLUMNS: Final = (
    "id, key, token, contract, account, amount, detail, status, tx_hash, ledger, error,"
    " attempts, chain_failures, backoff, next_try_at"
)
_ATTEMPT_COLUMNS: Final = (
    "tx_hash, job_id, source, sequence, envelope, max_time, signed_ledger, status, ledger, error"
)
_JOB_UPDATABLE: Final = frozenset(
    {
        "status",
        "tx_hash",
        "ledger",
        "error",
        "attempts",
        "chain_failures",
        "backoff",
        "next_try_at",
    }
)
_ATTEMPT_UPDATABLE: Final = frozenset({"status", "ledger", "error"})

# Send refusals that say something about the configuration, not the job:
# the job waits (it is still owed) and the receipt says what to fix.
_CONFIG_REFUSALS: Final = {
    "txBAD_AUTH": (
        "the network refused the signature (txBAD_AUTH): wrong network passphrase, "
        "or the key cannot sign for its account"
    ),
    "txBAD_AUTH_EXTRA": "the network refused extra signatures (txBAD_AUTH_EXTRA)",
    "txNO_ACCOUNT": "the minting account does not exist on this network (txNO_ACCOUNT)",
    "txINSUFFICIENT_BALANCE": (
        "the minting account cannot pay the fee (txINSUFFICIENT_BALANCE): fund it with XLM"
    ),
}
# Send refusals after which a fresh transaction is expected to go through.
_REBUILD_REFUSALS: Final = frozenset(
    {"txBAD_SEQ", "txTOO_LATE", "txTOO_EARLY", "txBAD_MIN_SEQ_AGE_OR_GAP"}
)
# The network is busy: build a fresh transaction (with a fresh fee bid) later.
_BUSY_REFUSALS: Final = frozenset({"txINSUFFICIENT_FEE"})
# On-chain failures a rebuilt (re-simulated) transaction may get past.
_RETRYABLE_CHAIN_FAILURES: Final = frozenset(
    {
        "INVOKE_HOST_FUNCTION_RESOURCE_LIMIT_EXCEEDED",
        "INVOKE_HOST_FUNCTION_INSUFFICIENT_REFUNDABLE_FEE",
        "INVOKE_HOST_FUNCTION_ENTRY_ARCHIVED",
    }
)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class AccountCheck(StrEnum):
    """State of the minting key's account on the configured network."""

    OK = "ok"
    """The account exists and can pay for mints."""
    MISSING = "missing"
    """No such account on this network: create and fund it (testnet: friendbot)."""
    UNFUNDED = "unfunded"
    """The account exists but holds less than :data:`MIN_SPENDABLE` above its reserve."""


class SorobanConfigError(LedgerConfigError):
    """A Soroban setting is wrong; ``field`` names it (for a config form).

    ``field`` is one of ``rpc_url``, ``network_passphrase``, ``secret_key``,
    ``contract`` (``token`` then says which), ``inclusion_fee``,
    ``tx_timeout_s``, ``max_fee``. The message never contains the secret.
    """

    def __init__(self, field: str, message: str, *, token: Token | None = None) -> None:
        """Keep the field (and token) beside the message."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.token = token


class AccountNotFoundError(LedgerConfigError):
    """The minting account does not exist on the configured network."""


@dataclass(frozen=True, kw_only=True)
class SorobanConfig:
    """Where and how to mint: the RPC, the network, the minting key, the contracts.

    ``secret_key`` is the minting key's ``S...`` seed. It is left out of
    ``repr`` (and so ``str``), and no message of this module contains it.
    """

    rpc_url: str
    """Stellar RPC endpoint, e.g. ``https://soroban-testnet.stellar.org``."""
    network_passphrase: str
    """E.g. ``Test SDF Network ; September 2015``; transactions are signed for it."""
    secret_key: str = field(repr=False)
    contracts: Mapping[Token, str]
    """Token contract id (``C...``) for each of ENERGY, CARBON and REWARD."""
    inclusion_fee: int = MIN_INCLUSION_FEE
    """Inclusion fee bid per transaction, stroops (the resource fee comes on top)."""
    tx_timeout_s: int = 60
    """How long a signed mint may wait for a ledger (its ``max_time`` bound)."""
    max_fee: int = DEFAULT_MAX_FEE
    """Refuse to sign a mint whose total fee (inclusion + resources) is higher."""

    def validate(self) -> None:
        """Raise :class:`SorobanConfigError` naming the first bad field; nothing else."""
        url = self.rpc_url if isinstance(self.rpc_url, str) else ""
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise SorobanConfigError("rpc_url", "must be an http:// or https:// URL")
        if not isinstance(self.network_passphrase, str) or not self.network_passphrase.strip():
            raise SorobanConfigError("network_passphrase", "must not be empty")
        # is_valid_... returns a bool; the SDK's decoder would put the seed
        # into its exception message.
        if not isinstance(self.secret_key, str) or not StrKey.is_valid_ed25519_secret_seed(
            self.secret_key
        ):
            raise SorobanConfigError(
                "secret_key", "is not a Stellar secret seed (56 characters starting with S)"
            )
        for token in Token:
            contract = self.contracts.get(token)
            if not isinstance(contract, str) or not StrKey.is_valid_contract(contract):
                raise SorobanConfigError(
                    "contract",
                    f"the {token} token needs a contract id (56 characters starting with C)",
                    token=token,
                )
        for name, value, low, high in (
            ("inclusion_fee", self.inclusion_fee, MIN_INCLUSION_FEE, 10**9),
            ("tx_timeout_s", self.tx_timeout_s, 10, 3600),
            ("max_fee", self.max_fee, MIN_INCLUSION_FEE, 10**10),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise SorobanConfigError(name, f"{value!r} is outside {low}..{high}")
        if self.inclusion_fee > self.max_fee:
            raise SorobanConfigError("max_fee", "must not be below inclusion_fee")

    @property
    def public_key(self) -> str:
        """The minting key's account id (``G...``), the source of every mint."""
        self.validate()
        return Keypair.from_secret(self.secret_key).public_key


class SessionClient(BaseAsyncClient):
    """A ``stellar_sdk`` async client over an aiohttp session someone else owns.

    Inside Home Assistant, pass the shared session
    (``async_get_clientsession(hass)``): ``stellar_sdk``'s own aiohttp client
    would open a session of its own and needs the ``aiohttp-sse-client``
    extra. Timeouts and transport errors become
    :class:`stellar_sdk.exceptions.ConnectionError`; :meth:`close` leaves the
    session open.
    """

    def __init__(self, session: aiohttp.ClientSession, *, timeout_s: float = REQUEST_TIMEOUT_S):
        """Use ``session``; give up on a request after ``timeout_s`` seconds."""
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    @override
    async def post(
        self,
        url: str,
        data: dict[str, str] | None = None,
        json_data: dict[str, Any] | None = None,
    ) -> Response:
        """POST ``json_data`` (or form ``data``) and return the reply."""
        try:
            async with self._session.post(
                url, json=json_data, data=data, timeout=self._timeout
            ) as reply:
                return Response(reply.status, await reply.text(), dict(reply.headers), url)
        except TimeoutError as err:
            raise StellarConnectionError(
                f"no reply within {self._timeout.total} s (the request may have arrived)"
            ) from err
        except aiohttp.ClientError as err:
            raise StellarConnectionError(f"{type(err).__name__}: {err}") from err

    @override
    async def get(
        self,
        url: str,
        params: dict[str, str] | None = None,
        max_content_size: int | None = None,
    ) -> Response:
        """GET ``url``; refuse a body larger than ``max_content_size`` bytes."""
        try:
            async with self._session.get(url, params=params, timeout=self._timeout) as reply:
                chunks: list[bytes] = []
                size = 0
                async for chunk in reply.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if max_content_size is not None and size > max_content_size:
                        raise ContentSizeLimitExceededError(max_content_size, size)
                    chunks.append(chunk)
                body = b"".join(chunks)
                text = body.decode(reply.get_encoding(), errors="replace")
                return Response(reply.status, text, dict(reply.headers), url)
        except TimeoutError as err:
            raise StellarConnectionError(f"no reply within {self._timeout.total} s") from err
        except aiohttp.ClientError as err:
            raise StellarConnectionError(f"{type(err).__name__}: {err}") from err

    @override
    def stream(
        self, url: str, params: dict[str, str] | None = None
    ) -> AsyncGenerator[dict[str, Any]]:
        """Not supported: Stellar RPC has no event streams (Horizon's SSE is not used)."""
        raise NotImplementedError("Stellar RPC has no event streams")

    @override
    async def close(self) -> None:
        """Leave the session open: its owner closes it."""


# ---------------------------------------------------------------- journal rows


class _JobStatus(StrEnum):
    QUEUED = "queued"
    """Owed: the worker builds (or waits for) a transaction."""
    UNRESOLVED = "unresolved"
    """An attempt's fate can no longer be learnt from the RPC; never rebuilt."""
    CONFIRMED = "confirmed"
    FAILED = "failed"


class _AttemptStatus(StrEnum):
    SIGNED = "signed"
    """Written; not known to have been accepted (maybe never sent)."""
    SUBMITTED = "submitted"
    """The RPC accepted it (``PENDING``/``DUPLICATE``)."""
    SUCCESS = "success"
    FAILED = "failed"
    """Included with a failed call: sequence used, nothing minted."""
    EXPIRED = "expired"
    """Provably never included: the network passed its ``max_time``."""
    REJECTED = "rejected"
    """Refused at submission and never accepted before: cannot land."""
    UNKNOWN = "unknown"
    """Beyond the RPC's history: cannot land any more, but may have landed."""


_LIVE: Final = (_AttemptStatus.SIGNED.value, _AttemptStatus.SUBMITTED.value)
_RECEIPT_STATUS: Final = {
    _JobStatus.QUEUED: MintStatus.PENDING,
    _JobStatus.UNRESOLVED: MintStatus.PENDING,
    _JobStatus.CONFIRMED: MintStatus.CONFIRMED,
    _JobStatus.FAILED: MintStatus.FAILED,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class _Job:
    id: int
    key: str
    token: Token
    contract: str
    account: str
    amount: int
    detail: dict[str, str]
    status: _JobStatus
    tx_hash: str
    ledger: int | None
    error: str | None
    attempts: int
    chain_failures: int
    backoff: int
    next_try_at: float

    def receipt(self) -> Receipt:
        return Receipt(
            key=self.key,
            token=self.token,
            account=self.account,
            amount=self.amount,
            status=_RECEIPT_STATUS[self.status],
            backend=BACKEND_NAME,
            ref=self.tx_hash,
            ledger=self.ledger,
            error=self.error,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Attempt:
    tx_hash: str
    job_id: int
    source: str
    sequence: int
    envelope: str
    max_time: int
    signed_ledger: int
    status: _AttemptStatus
    ledger: int | None
    error: str | None


def _job_from_row(row: sqlite3.Row | tuple[Any, ...]) -> _Job:
    return _Job(
        id=int(row[0]),
        key=str(row[1]),
        token=Token(row[2]),
        contract=str(row[3]),
        account=str(row[4]),
        amount=int(row[5]),
        detail=dict(json.loads(row[6])),
        status=_JobStatus(row[7]),
        tx_hash=str(row[8]),
        ledger=None if row[9] is None else int(row[9]),
        error=None if row[10] is None else str(row[10]),
        attempts=int(row[11]),
        chain_failures=int(row[12]),
        backoff=int(row[13]),
        next_try_at=float(row[14]),
    )


def _attempt_from_row(row: sqlite3.Row | tuple[Any, ...]) -> _Attempt:
    return _Attempt(
        tx_hash=str(row[0]),
        job_id=int(row[1]),
        source=str(row[2]),
        sequence=int(row[3]),
        envelope=str(row[4]),
        max_time=int(row[5]),
        signed_ledger=int(row[6]),
        status=_AttemptStatus(row[7]),
        ledger=None if row[8] is None else int(row[8]),
        error=None if row[9] is None else str(row[9]),
    )


def _job_by_key_in(conn: sqlite3.Connection, key: str) -> _Job | None:
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM soroban_job WHERE key = ?",  # noqa: S608 - constant columns
        (key,),
    ).fetchone()
    return None if row is None else _job_from_row(row)


def _job_in(conn: sqlite3.Connection, job_id: int) -> _Job:
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM soroban_job WHERE id = ?",  # noqa: S608 - constant columns
        (job_id,),
    ).fetchone()
    if row is None:
        raise LedgerError(f"soroban job {job_id} disappeared from the journal")
    return _job_from_row(row)


def _canonical(detail: Mapping[str, str]) -> str:
    return json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _short(text: str) -> str:
    """First line of ``text``, bounded: host errors carry long event logs."""
    line = text.strip().splitlines()[0] if text.strip() else "no detail"
    return line if len(line) <= _MAX_ERROR_CHARS else line[: _MAX_ERROR_CHARS - 3] + "..."


def _shown(value: object) -> str:
    """``repr(value)`` for a message, unless it is a secret seed pasted in the wrong place."""
    if isinstance(value, str) and StrKey.is_valid_ed25519_secret_seed(value):
        return "a secret seed (S...), which must never be used here"
    return repr(value)


def _describe(err: BaseException) -> str:
    """What went wrong talking to the RPC, without URLs (they may hold API keys)."""
    if isinstance(err, SorobanRpcErrorResponse):
        return f"RPC error {err.code}: {err.message}"
    if isinstance(err, BaseHorizonError):
        return f"HTTP {err.status} from the RPC"
    if isinstance(err, TimeoutError):
        return "no reply in time"
    if isinstance(err, ValidationError | json.JSONDecodeError):
        return "the RPC answered something that is not a Stellar RPC reply"
    return _short(str(err)) if str(err) else type(err).__name__


# ---------------------------------------------------------------- the backend


class SorobanLedger:
    """The Soroban chain backend: a journal in the ledger file and a mint worker.

    Lifecycle: construct with the shared :class:`~.db.LedgerDatabase` (the
    service creates the schema with :meth:`create_schema`), start
    :meth:`run` as a background task, cancel that task on shutdown, then
    ``await close()``. :meth:`run_once` does a single pass (tests,
    :meth:`reconcile`).

    Talking to the RPC: pass a ``client`` (any ``stellar_sdk``
    ``BaseAsyncClient``; tests pass ``FakeRpcClient``), or an aiohttp
    ``session`` (wrapped in :class:`SessionClient`; Home Assistant passes
    its shared one), or neither, and a session is opened on first use and
    closed by :meth:`close`.
    """

    name: str = BACKEND_NAME

    def __init__(
        self,
        db: LedgerDatabase,
        config: SorobanConfig,
        *,
        client: BaseAsyncClient | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], datetime] = utcnow,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        """Check ``config`` (:class:`SorobanConfigError` names a bad field) and keep it."""
        config.validate()
        if not 0 < poll_interval_s <= IDLE_INTERVAL_S:
            raise PeerGridValidationError("poll_interval_s", f"{poll_interval_s} is not in (0, 60]")
        self._db = db
        self._config = config
        self._keypair = Keypair.from_secret(config.secret_key)
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._request_timeout_s = request_timeout_s
        self._own_session: aiohttp.ClientSession | None = None
        self._client = client
        if client is None and session is not None:
            self._client = SessionClient(session, timeout_s=request_timeout_s)
        self._server: SorobanServerAsync | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[Callable[[Receipt], None]] = []
        # Attempts this process signed and whose every send got a definite
        # "not accepted" answer. After a restart the set is empty: an attempt
        # found in the journal may have been sent just before the crash.
        self._clean: set[str] = set()
        # Attempts whose re-send can only be refused again (their sequence
        # number is used): wait for getTransaction or the time bound.
        self._no_resend: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._last_error: str | None = None

    def __repr__(self) -> str:
        """Name the account and the RPC host; never the key (nor a URL's path, which may
        hold an RPC provider's API key)."""
        host = urlsplit(self._config.rpc_url).hostname
        return f"SorobanLedger(account={self._keypair.public_key}, rpc_host={host!r})"

    @property
    def config(self) -> SorobanConfig:
        """The configuration in force."""
        return self._config

    @property
    def account_id(self) -> str:
        """The minting key's account (``G...``): the source of every mint."""
        return self._keypair.public_key

    @property
    def last_error(self) -> str | None:
        """Why the last pass could not reach the RPC; None after a good pass."""
        return self._last_error

    # ------------------------------------------------------------ schema and enqueue

    def create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the journal tables and their indexes if missing (idempotent)."""
        for statement in _JOB_SCHEMA:
            conn.execute(statement)

    def mint_in(
        self,
        conn: sqlite3.Connection,
        token: Token,
        account: str,
        amount: int,
        *,
        key: str,
        detail: Mapping[str, str],
    ) -> Receipt:
        """Queue a mint of ``amount`` base units of ``token`` to ``account``; PENDING receipt.

        Synchronous: runs inside the caller's open write transaction and
        writes only through ``conn``, so the job commits with the rest of
        it. The amount goes on-chain exactly as given, as an ``i128``.
        ``account`` is a ``G...`` account or a ``C...`` contract address.
        The same ``key`` with the same arguments returns the job's current
        receipt; with other arguments raises
        :class:`~.base.IdempotencyConflictError`. Bad input raises
        :class:`PeerGridValidationError` naming the field.
        """
        if not isinstance(token, Token):
            raise PeerGridValidationError("token", f"{token!r} is not a Token")
        if not isinstance(key, str) or not key or key != key.strip():
            raise PeerGridValidationError("key", f"{key!r} must be non-empty text without blanks")
        if not isinstance(account, str) or not (
            StrKey.is_valid_ed25519_public_key(account) or StrKey.is_valid_contract(account)
        ):
            raise PeerGridValidationError(
                "account", f"{_shown(account)} is not a Stellar account (G...) or contract (C...)"
            )
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise PeerGridValidationError("amount", f"{amount!r} is not an integer of base units")
        if not 0 < amount <= I128_MAX:
            raise PeerGridValidationError("amount", f"{amount} is not in 1..2**127-1")
        checked: dict[str, str] = {}
        for name, value in detail.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise PeerGridValidationError("detail", f"{name!r}: {value!r} is not text to text")
            checked[name] = value

        existing = _job_by_key_in(conn, key)
        if existing is not None:
            differences = [
                name
                for name, stored, asked in (
                    ("token", existing.token, token),
                    ("account", existing.account, account),
                    ("amount", existing.amount, amount),
                    ("detail", existing.detail, checked),
                )
                if stored != asked
            ]
            if differences:
                raise IdempotencyConflictError(
                    f"key {key!r} was already used with a different {', '.join(differences)}"
                )
            return existing.receipt()

        now = _timestamp(self._clock())
        conn.execute(
            "INSERT INTO soroban_job (key, token, contract, account, amount, detail, status,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                token.value,
                self._config.contracts[token],
                account,
                str(amount),
                _canonical(checked),
                _JobStatus.QUEUED.value,
                now,
                now,
            ),
        )
        self._schedule_wake()
        return Receipt(
            key=key,
            token=token,
            account=account,
            amount=amount,
            status=MintStatus.PENDING,
            backend=BACKEND_NAME,
            ref="",
            ledger=None,
        )

    # ------------------------------------------------------------ reads

    async def receipt(self, key: str) -> Receipt | None:
        """The receipt of the mint queued under ``key``, or None."""
        job = await self._db.read(lambda conn: _job_by_key_in(conn, key))
        return None if job is None else job.receipt()

    async def receipts(self, *, status: MintStatus | None = None) -> list[Receipt]:
        """Every mint's receipt in queue order; only those with ``status`` when given."""

        def read(conn: sqlite3.Connection) -> list[Receipt]:
            rows = conn.execute(f"SELECT {_JOB_COLUMNS} FROM soroban_job ORDER BY id")  # noqa: S608
            return [_job_from_row(row).receipt() for row in rows]

        found = await self._db.read(read)
        return [r for r in found if status is None or r.status is status]

    async def balance(self, token: Token, account: str) -> int:
        """On-chain balance of ``account`` in ``token``, base units (a simulated ``balance``).

        Raises :class:`~..errors.PeerGridConnectionError` when the RPC cannot
        be reached and :class:`~.base.LedgerError` when the contract refuses.
        """
        if not (StrKey.is_valid_ed25519_public_key(account) or StrKey.is_valid_contract(account)):
            raise PeerGridValidationError(
                "account", f"{_shown(account)} is not a G... or C... address"
            )
        contract = self._config.contracts[Token(token)]
        # Reads need no sequence number: simulation does not check it.
        source = TransactionBuilder(
            Account(self._keypair.public_key, 0), self._config.network_passphrase
        )
        tx = (
            source.add_time_bounds(0, 0)
            .append_invoke_contract_function_op(contract, "balance", [scval.to_address(account)])
            .build()
        )
        sim = await self._rpc("simulateTransaction", self._api.simulate_transaction(tx))
        if sim.error or not sim.results:
            raise LedgerError(f"the {token} contract refused balance(): {_short(sim.error or '')}")
        try:
            return scval.from_int128(sx.SCVal.from_xdr(sim.results[0].xdr))
        except (ValueError, EOFError) as err:
            raise LedgerError(f"the {token} contract's balance() is not an i128") from err

    # ------------------------------------------------------------ checks

    async def check_network(self) -> None:
        """Make sure the RPC serves the configured network.

        Raises :class:`SorobanConfigError` (field ``network_passphrase``) if
        it serves another one, and
        :class:`~..errors.PeerGridConnectionError` if it cannot be reached.
        """
        network = await self._rpc("getNetwork", self._api.get_network())
        if network.passphrase != self._config.network_passphrase:
            raise SorobanConfigError(
                "network_passphrase",
                f"the RPC serves {network.passphrase!r}, not the configured network",
            )

    async def check_account(self, *, min_spendable: int = MIN_SPENDABLE) -> AccountCheck:
        """Whether the minting key's account exists and can pay for mints.

        Spendable means the XLM balance above the account's reserve
        ((2 + sub-entries) x 0.5 XLM). Raises
        :class:`~..errors.PeerGridConnectionError` if the RPC cannot be reached.
        """
        key = sx.LedgerKey(
            sx.LedgerEntryType.ACCOUNT,
            account=sx.LedgerKeyAccount(account_id=self._keypair.xdr_account_id()),
        )
        reply = await self._rpc("getLedgerEntries", self._api.get_ledger_entries([key]))
        if not reply.entries:
            return AccountCheck.MISSING
        try:
            entry = sx.LedgerEntryData.from_xdr(reply.entries[0].xdr).account
        except (ValueError, EOFError) as err:
            raise PeerGridConnectionError("the RPC returned an unreadable account entry") from err
        if entry is None:
            raise PeerGridConnectionError("the RPC returned something else than an account")
        reserve = (2 + entry.num_sub_entries.uint32) * BASE_RESERVE
        spendable = entry.balance.int64 - reserve
        return AccountCheck.OK if spendable >= min_spendable else AccountCheck.UNFUNDED

    async def check_contracts(self) -> None:
        """Simulate a mint of one base unit per token to the minting account itself.

        Nothing is sent. Raises :class:`SorobanConfigError` (field
        ``contract``, ``token`` set) when a contract is missing or the key is
        not its admin, :class:`~..errors.PeerGridConnectionError` when the RPC
        cannot be reached.
        """
        for token in Token:
            tx = self._mint_transaction(
                Account(self._keypair.public_key, 0),
                self._config.contracts[token],
                self._keypair.public_key,
                1,
                max_time=0,
            )
            sim = await self._rpc("simulateTransaction", self._api.simulate_transaction(tx))
            if sim.error:
                raise SorobanConfigError(
                    "contract",
                    f"the {token} contract refuses mint: {_short(sim.error)}",
                    token=token,
                )
            if _needs_other_signer(sim):
                raise SorobanConfigError(
                    "contract", f"the minting key is not the {token} token's admin", token=token
                )

    async def verify(self) -> VerifyResult:
        """Check the journal, and every confirmed mint against the chain.

        Offline checks: each stored envelope still hashes to its recorded
        hash (for the configured network) and is ``mint(account, amount)``
        on the job's contract; a confirmed job has exactly one successful
        attempt with its hash and ledger; no other job has one. Online: each
        confirmed mint's transaction is found by hash and succeeded in the
        recorded ledger (mints older than the RPC's history are counted, not
        checked). Raises :class:`~..errors.PeerGridConnectionError` if the
        RPC cannot be reached (rather than reporting a false problem).
        """

        def read(conn: sqlite3.Connection) -> tuple[list[_Job], list[_Attempt]]:
            jobs = [
                _job_from_row(row)
                for row in conn.execute(f"SELECT {_JOB_COLUMNS} FROM soroban_job ORDER BY id")  # noqa: S608
            ]
            attempts = [
                _attempt_from_row(row)
                for row in conn.execute(
                    f"SELECT {_ATTEMPT_COLUMNS} FROM soroban_attempt ORDER BY rowid"  # noqa: S608
                )
            ]
            return jobs, attempts

        jobs, attempts = await self._db.read(read)
        by_job: dict[int, list[_Attempt]] = {}
        for attempt in attempts:
            by_job.setdefault(attempt.job_id, []).append(attempt)
        problems: list[str] = []
        for job in jobs:
            own = by_job.get(job.id, [])
            for attempt in own:
                problems.extend(self._envelope_problems(job, attempt))
            successes = [a for a in own if a.status is _AttemptStatus.SUCCESS]
            if job.status is _JobStatus.CONFIRMED:
                if len(successes) != 1:
                    problems.append(f"{job.key}: confirmed with {len(successes)} successful txs")
                elif successes[0].tx_hash != job.tx_hash or successes[0].ledger != job.ledger:
                    problems.append(f"{job.key}: receipt does not match its successful tx")
            elif successes:
                problems.append(f"{job.key}: {job.status} but tx {successes[0].tx_hash} succeeded")
            if job.status is _JobStatus.FAILED and any(a.status.value in _LIVE for a in own):
                problems.append(f"{job.key}: failed while a tx may still land")
        for job in jobs:
            if job.status is not _JobStatus.CONFIRMED or not job.tx_hash:
                continue
            reply = await self._rpc("getTransaction", self._api.get_transaction(job.tx_hash))
            if reply.status is GetTransactionStatus.SUCCESS:
                if reply.ledger != job.ledger:
                    problems.append(
                        f"{job.key}: on-chain in ledger {reply.ledger}, not {job.ledger}"
                    )
            elif reply.status is GetTransactionStatus.FAILED:
                problems.append(f"{job.key}: tx {job.tx_hash} failed on-chain")
            elif job.ledger is not None and job.ledger >= reply.oldest_ledger:
                problems.append(f"{job.key}: tx {job.tx_hash} is not on-chain")
        return VerifyResult(ok=not problems, entries=len(jobs), problems=tuple(problems))

    def _envelope_problems(self, job: _Job, attempt: _Attempt) -> list[str]:
        try:
            envelope = TransactionEnvelope.from_xdr(
                attempt.envelope, self._config.network_passphrase
            )
        except (EOFError, ValueError, TypeError, IndexError):
            return [f"{job.key}: envelope of tx {attempt.tx_hash} is unreadable"]
        if envelope.hash_hex() != attempt.tx_hash:
            return [f"{job.key}: envelope does not hash to tx {attempt.tx_hash}"]
        call = _mint_call(envelope)
        if call != (job.contract, job.account, job.amount):
            return [f"{job.key}: tx {attempt.tx_hash} is not mint({job.account}, {job.amount})"]
        return []

    # ------------------------------------------------------------ listeners

    def add_listener(self, cb: Callable[[Receipt], None]) -> Callable[[], None]:
        """Call ``cb(receipt)`` on the event loop whenever a mint's receipt changes.

        Changes are a new status, transaction hash, ledger or error text,
        always after the change is committed. Returns a function that
        removes the listener.
        """
        self._listeners.append(cb)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(cb)

        return remove

    def _notify(self, before: Receipt | None, after: Receipt) -> None:
        if before == after:
            return
        for listener in list(self._listeners):
            try:
                listener(after)
            except Exception:
                _LOGGER.exception("A Soroban receipt listener failed")

    # ------------------------------------------------------------ the worker

    async def run(self) -> None:
        """Drive queued mints forever; cancel the task to stop.

        Passes run every ``poll_interval_s`` while mints are open, at once
        when :meth:`mint_in` queues one, and at least every minute when
        idle. An RPC that cannot be reached makes the worker back off
        (doubling up to five minutes); it never gives up.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        failures = 0
        try:
            while True:
                self._wake.clear()
                try:
                    await self.run_once()
                    failures = 0
                    delay = await self._next_delay()
                except (PeerGridError, sqlite3.Error) as err:
                    failures += 1
                    delay = min(self._poll_interval_s * 2**failures, MAX_BACKOFF_S)
                    log = _LOGGER.warning if failures == 1 else _LOGGER.debug
                    log("Soroban minting paused, retrying in %.0f s: %s", delay, err)
                except Exception:
                    # A bug must not stop every later mint: log it and go on.
                    failures += 1
                    delay = min(self._poll_interval_s * 2**failures, MAX_BACKOFF_S)
                    _LOGGER.exception("Unexpected error in the Soroban mint worker")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            self._wake = None
            self._loop = None

    async def run_once(self) -> list[Receipt]:
        """One pass: resolve what may have landed, then send what is owed.

        Returns the receipts that became final (CONFIRMED or FAILED) in this
        pass; listeners hear about every change. Raises
        :class:`~..errors.PeerGridConnectionError` when the RPC cannot be
        reached (whatever was learnt before is kept), and
        :class:`~.base.LedgerStorageError` when the journal cannot be written.
        """
        finished: list[Receipt] = []
        try:
            sources = await self._db.read(
                lambda conn: [
                    str(row[0])
                    for row in conn.execute(
                        "SELECT DISTINCT source FROM soroban_attempt WHERE status IN (?, ?)",
                        _LIVE,
                    )
                ]
            )
            for source in sorted({*sources, self._keypair.public_key}):
                async with self._lock_for(source):
                    await self._resolve_live(source, finished)
                    if source == self._keypair.public_key:
                        await self._build_owed(finished)
        except PeerGridConnectionError as err:
            self._last_error = str(err)
            raise
        self._last_error = None
        return finished

    async def reconcile(self) -> list[Receipt]:
        """Resolve mints left PENDING (after a crash or an outage): one :meth:`run_once`."""
        return await self.run_once()

    async def close(self) -> None:
        """Close the aiohttp session this ledger opened itself (if any).

        Cancel the :meth:`run` task first. A session or client passed in is
        left to its owner.
        """
        session, self._own_session = self._own_session, None
        self._server = None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------ pass, part 1: resolve

    async def _resolve_live(self, source: str, finished: list[Receipt]) -> None:
        def read(conn: sqlite3.Connection) -> list[_Attempt]:
            return [
                _attempt_from_row(row)
                for row in conn.execute(
                    f"SELECT {_ATTEMPT_COLUMNS} FROM soroban_attempt"  # noqa: S608
                    " WHERE source = ? AND status IN (?, ?) ORDER BY rowid",
                    (source, *_LIVE),
                )
            ]

        for attempt in await self._db.read(read):
            await self._resolve(attempt, finished)

    async def _resolve(self, attempt: _Attempt, finished: list[Receipt]) -> None:
        """Learn what became of ``attempt``; send it again if it can still land."""
        reply = await self._rpc("getTransaction", self._api.get_transaction(attempt.tx_hash))
        if reply.status is GetTransactionStatus.SUCCESS:
            await self._settle(
                attempt,
                _AttemptStatus.SUCCESS,
                finished,
                ledger=reply.ledger,
                job_changes={
                    "status": _JobStatus.CONFIRMED.value,
                    "tx_hash": attempt.tx_hash,
                    "ledger": reply.ledger,
                    "error": None,
                    "backoff": 0,
                },
            )
            _LOGGER.debug("Mint tx %s confirmed in ledger %s", attempt.tx_hash, reply.ledger)
            return
        if reply.status is GetTransactionStatus.FAILED:
            await self._chain_failure(attempt, reply, finished)
            return
        if reply.oldest_ledger > attempt.signed_ledger:
            # The RPC's history no longer covers the ledgers this transaction
            # could have landed in: it cannot land now, but it may have.
            message = (
                f"tx {attempt.tx_hash} is older than the RPC's history; "
                "check it on a block explorer before minting again"
            )
            await self._settle(
                attempt,
                _AttemptStatus.UNKNOWN,
                finished,
                error=message,
                job_changes={"status": _JobStatus.UNRESOLVED.value, "error": message},
            )
            _LOGGER.warning("Soroban mint unresolved: %s", message)
            return
        if reply.latest_ledger_close_time > attempt.max_time:
            await self._settle(
                attempt,
                _AttemptStatus.EXPIRED,
                finished,
                error="not included before its time bound",
                job_changes={"next_try_at": 0.0},
            )
            _LOGGER.debug("Mint tx %s expired unseen; a new one will be built", attempt.tx_hash)
            return
        if attempt.status is _AttemptStatus.SIGNED and attempt.tx_hash not in self._no_resend:
            job = await self._db.read(lambda conn: _job_in(conn, attempt.job_id))
            if job.next_try_at <= self._now():
                await self._send(attempt, job, finished)

    async def _chain_failure(
        self, attempt: _Attempt, reply: GetTransactionResponse, finished: list[Receipt]
    ) -> None:
        """The transaction was included but the call failed: nothing was minted."""
        code = _operation_failure(reply.result_xdr)
        reason = _diagnostic_text(reply.diagnostic_events_xdr)
        message = f"the mint failed on-chain ({code})" + (f": {reason}" if reason else "")
        job = await self._db.read(lambda conn: _job_in(conn, attempt.job_id))
        retry = code in _RETRYABLE_CHAIN_FAILURES and job.chain_failures < MAX_CHAIN_FAILURES
        job_changes: dict[str, object] = {"chain_failures": job.chain_failures + 1}
        if retry:
            job_changes |= {"error": message, "next_try_at": 0.0}
        else:
            job_changes |= {
                "status": _JobStatus.FAILED.value,
                "tx_hash": attempt.tx_hash,
                "ledger": reply.ledger,
                "error": message,
            }
        await self._settle(
            attempt,
            _AttemptStatus.FAILED,
            finished,
            ledger=reply.ledger,
            error=message,
            job_changes=job_changes,
        )
        _LOGGER.warning("Soroban mint %s: %s", job.key, message)

    # ------------------------------------------------------------ pass, part 2: build and send

    async def _build_owed(self, finished: list[Receipt]) -> None:
        for _ in range(MAX_BUILDS_PER_PASS):
            now = self._now()

            def due(conn: sqlite3.Connection, now: float = now) -> _Job | None:
                source = self._keypair.public_key
                if conn.execute(
                    "SELECT 1 FROM soroban_attempt WHERE source = ? AND status IN (?, ?)",
                    (source, *_LIVE),
                ).fetchone():
                    return None  # one transaction of this source may still land
                row = conn.execute(
                    f"SELECT {_JOB_COLUMNS} FROM soroban_job"  # noqa: S608
                    " WHERE status = ? AND next_try_at <= ? ORDER BY id LIMIT 1",
                    (_JobStatus.QUEUED.value, now),
                ).fetchone()
                return None if row is None else _job_from_row(row)

            job = await self._db.read(due)
            if job is None or not await self._build_and_send(job, finished):
                return

    async def _build_and_send(self, job: _Job, finished: list[Receipt]) -> bool:
        """Build, simulate, sign, journal and send one transaction for ``job``.

        Returns True if the source is free again at once (the transaction
        was refused outright), so the next owed job may be tried.
        """
        source = self._keypair.public_key
        try:
            account = await self._rpc("getLedgerEntries", self._api.load_account(source))
        except AccountNotFoundError:
            await self._wait_on_config(
                job, f"the minting account {source} does not exist on this network; fund it"
            )
            return False
        latest = await self._rpc("getLatestLedger", self._api.get_latest_ledger())
        fees = await self._rpc("getFeeStats", self._api.get_fee_stats())
        # Bid what most recent Soroban transactions paid when the network is
        # busy; the total is capped by max_fee below.
        bid = max(self._config.inclusion_fee, fees.soroban_inclusion_fee.p90)
        tx = self._mint_transaction(
            account,
            job.contract,
            job.account,
            job.amount,
            max_time=latest.close_time + self._config.tx_timeout_s,
            inclusion_fee=min(bid, self._config.max_fee),
        )
        sim = await self._rpc("simulateTransaction", self._api.simulate_transaction(tx))
        if sim.error:
            await self._fail(job, f"the network refused the mint: {_short(sim.error)}", finished)
            return True
        if sim.restore_preamble is not None:
            await self._wait_on_config(
                job, "contract state is archived; restore it (stellar contract restore) first"
            )
            return False
        if _needs_other_signer(sim):
            await self._fail(job, "the minting key is not this token's admin", finished)
            return True
        try:
            # With the simulation given, this makes no RPC call.
            prepared = await self._api.prepare_transaction(tx, sim)
        except ValueError as err:
            await self._fail(job, f"the simulation result is unusable: {err}", finished)
            return True
        fee = prepared.transaction.fee
        if fee > self._config.max_fee:
            await self._wait_on_config(
                job, f"the mint would cost {fee} stroops, above max_fee {self._config.max_fee}"
            )
            return False
        prepared.sign(self._keypair)
        tx_hash = prepared.hash_hex()
        envelope = prepared.to_xdr()
        bounds = prepared.transaction.preconditions
        max_time = bounds.time_bounds.max_time if bounds and bounds.time_bounds else 0
        attempt = _Attempt(
            tx_hash=tx_hash,
            job_id=job.id,
            source=source,
            sequence=prepared.transaction.sequence,
            envelope=envelope,
            max_time=max_time,
            signed_ledger=latest.sequence,
            status=_AttemptStatus.SIGNED,
            ledger=None,
            error=None,
        )
        stamp = _timestamp(self._clock())

        def journal(conn: sqlite3.Connection) -> tuple[Receipt, Receipt]:
            before = _job_in(conn, job.id).receipt()
            conn.execute(
                f"INSERT INTO soroban_attempt ({_ATTEMPT_COLUMNS}, created_at, updated_at)"  # noqa: S608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.tx_hash,
                    attempt.job_id,
                    attempt.source,
                    str(attempt.sequence),
                    attempt.envelope,
                    attempt.max_time,
                    attempt.signed_ledger,
                    attempt.status.value,
                    None,
                    None,
                    stamp,
                    stamp,
                ),
            )
            conn.execute(
                "UPDATE soroban_job SET tx_hash = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE id = ?",
                (tx_hash, stamp, job.id),
            )
            return before, _job_in(conn, job.id).receipt()

        # Write-ahead: committed (fsync) before a single byte goes out.
        before, after = await self._db.write(journal)
        self._clean.add(tx_hash)
        self._notify(before, after)
        _LOGGER.debug("Mint %s: signed tx %s (seq %s)", job.key, tx_hash, attempt.sequence)
        refreshed = await self._db.read(lambda conn: _job_in(conn, job.id))
        return await self._send(attempt, refreshed, finished)

    async def _send(self, attempt: _Attempt, job: _Job, finished: list[Receipt]) -> bool:
        """Send ``attempt``'s envelope and record the answer.

        Returns True if the attempt is dead and the source free (refused
        outright), so another transaction may be built at once.
        """
        was_clean = attempt.tx_hash in self._clean
        self._clean.discard(attempt.tx_hash)
        try:
            sent = await self._rpc("sendTransaction", self._api.send_transaction(attempt.envelope))
        except PeerGridConnectionError as err:
            # The outcome is unknown: the attempt stays live and is looked up
            # by hash (and sent again) on the next pass.
            _LOGGER.debug("Sending mint tx %s: outcome unknown: %s", attempt.tx_hash, err)
            await self._update_job(job, {"next_try_at": self._now() + self._poll_interval_s})
            return False
        if sent.status in (SendTransactionStatus.PENDING, SendTransactionStatus.DUPLICATE):
            await self._settle(
                attempt,
                _AttemptStatus.SUBMITTED,
                finished,
                job_changes={"error": None, "backoff": 0},
            )
            return False
        if sent.status is SendTransactionStatus.TRY_AGAIN_LATER:
            # Not accepted; the same envelope is sent again after a pause.
            if was_clean:
                self._clean.add(attempt.tx_hash)
            await self._update_job(
                job,
                {
                    "backoff": job.backoff + 1,
                    "next_try_at": self._now() + self._backoff(job.backoff, self._poll_interval_s),
                },
            )
            return False
        code = _result_code(sent.error_result_xdr)
        if not was_clean:
            # An earlier send may have been accepted and this very envelope
            # may be on the ledger: only its hash or its time bound can tell.
            self._no_resend.add(attempt.tx_hash)
            _LOGGER.debug("Mint tx %s refused (%s) after an unknown send", attempt.tx_hash, code)
            return False
        refusal = f"the network refused the transaction ({code})"
        if code in _CONFIG_REFUSALS:
            message = _CONFIG_REFUSALS[code]
            await self._settle(
                attempt,
                _AttemptStatus.REJECTED,
                finished,
                error=message,
                job_changes=self._config_wait(job, message),
            )
            _LOGGER.warning("Soroban minting waits: %s", message)
            return False
        if code in _REBUILD_REFUSALS:
            await self._settle(
                attempt, _AttemptStatus.REJECTED, finished, error=refusal, job_changes={}
            )
            _LOGGER.debug("Mint tx %s refused (%s); building a new one", attempt.tx_hash, code)
            return True
        if code in _BUSY_REFUSALS:
            delay = self._backoff(job.backoff, self._poll_interval_s)
            await self._settle(
                attempt,
                _AttemptStatus.REJECTED,
                finished,
                error=refusal,
                job_changes={"backoff": job.backoff + 1, "next_try_at": self._now() + delay},
            )
            _LOGGER.debug("Mint tx %s refused (%s); retrying later", attempt.tx_hash, code)
            return False
        await self._settle(
            attempt,
            _AttemptStatus.REJECTED,
            finished,
            error=refusal,
            job_changes={"status": _JobStatus.FAILED.value, "error": refusal},
        )
        _LOGGER.warning("Soroban mint %s failed: %s", job.key, refusal)
        return True

    # ------------------------------------------------------------ journal updates

    async def _settle(
        self,
        attempt: _Attempt,
        status: _AttemptStatus,
        finished: list[Receipt],
        *,
        ledger: int | None = None,
        error: str | None = None,
        job_changes: Mapping[str, object],
    ) -> None:
        """Record ``attempt``'s new status and the job's changes in one transaction."""
        stamp = _timestamp(self._clock())

        def write(conn: sqlite3.Connection) -> tuple[Receipt, Receipt]:
            before = _job_in(conn, attempt.job_id).receipt()
            _update(
                conn,
                "soroban_attempt",
                "tx_hash",
                attempt.tx_hash,
                {"status": status.value, "ledger": ledger, "error": error},
                stamp,
            )
            if job_changes:
                _update(conn, "soroban_job", "id", attempt.job_id, job_changes, stamp)
            return before, _job_in(conn, attempt.job_id).receipt()

        before, after = await self._db.write(write)
        if status.value not in _LIVE:
            self._clean.discard(attempt.tx_hash)
            self._no_resend.discard(attempt.tx_hash)
        self._record(before, after, finished)

    async def _update_job(self, job: _Job, changes: Mapping[str, object]) -> None:
        stamp = _timestamp(self._clock())

        def write(conn: sqlite3.Connection) -> tuple[Receipt, Receipt]:
            before = _job_in(conn, job.id).receipt()
            _update(conn, "soroban_job", "id", job.id, changes, stamp)
            return before, _job_in(conn, job.id).receipt()

        before, after = await self._db.write(write)
        self._notify(before, after)

    async def _fail(self, job: _Job, message: str, finished: list[Receipt]) -> None:
        """Mark ``job`` FAILED for good: nothing was sent for it that could land."""
        stamp = _timestamp(self._clock())

        def write(conn: sqlite3.Connection) -> tuple[Receipt, Receipt]:
            before = _job_in(conn, job.id).receipt()
            changes = {"status": _JobStatus.FAILED.value, "error": message}
            _update(conn, "soroban_job", "id", job.id, changes, stamp)
            return before, _job_in(conn, job.id).receipt()

        before, after = await self._db.write(write)
        self._record(before, after, finished)
        _LOGGER.warning("Soroban mint %s failed: %s", job.key, message)

    async def _wait_on_config(self, job: _Job, message: str) -> None:
        await self._update_job(job, self._config_wait(job, message))
        _LOGGER.warning("Soroban minting waits: %s", message)

    def _config_wait(self, job: _Job, message: str) -> dict[str, object]:
        delay = min(CONFIG_BACKOFF_S * 2**job.backoff, MAX_CONFIG_BACKOFF_S)
        return {"error": message, "backoff": job.backoff + 1, "next_try_at": self._now() + delay}

    def _record(self, before: Receipt, after: Receipt, finished: list[Receipt]) -> None:
        if after.status is not MintStatus.PENDING and before.status is MintStatus.PENDING:
            finished.append(after)
        self._notify(before, after)

    # ------------------------------------------------------------ helpers

    def _mint_transaction(
        self,
        account: Account,
        contract: str,
        to: str,
        amount: int,
        *,
        max_time: int,
        inclusion_fee: int | None = None,
    ) -> TransactionEnvelope:
        """``mint(to, amount)`` on ``contract`` from the minting key, time-bounded."""
        builder = TransactionBuilder(
            account,
            self._config.network_passphrase,
            base_fee=self._config.inclusion_fee if inclusion_fee is None else inclusion_fee,
        )
        envelope: TransactionEnvelope = (
            builder.add_time_bounds(0, max_time)
            .append_invoke_contract_function_op(
                contract, "mint", [scval.to_address(to), scval.to_int128(amount)]
            )
            .build()
        )
        return envelope

    async def _rpc[T](self, method: str, request: Awaitable[T]) -> T:
        """Await one RPC request; transport trouble becomes PeerGridConnectionError."""
        try:
            result: T = await request
        except AccountNotFoundException as err:
            raise AccountNotFoundError(str(err)) from err
        except TimeoutError as err:
            raise PeerGridTimeoutError(f"Stellar RPC {method}: {_describe(err)}") from err
        except (
            BaseRequestError,
            aiohttp.ClientError,
            ValidationError,
            json.JSONDecodeError,
        ) as err:
            raise PeerGridConnectionError(f"Stellar RPC {method}: {_describe(err)}") from err
        return result

    @property
    def _api(self) -> SorobanServerAsync:
        if self._server is None:
            client = self._client
            if client is None:
                self._own_session = aiohttp.ClientSession()
                client = SessionClient(self._own_session, timeout_s=self._request_timeout_s)
            self._server = SorobanServerAsync(self._config.rpc_url, client=client)
        return self._server

    def _lock_for(self, source: str) -> asyncio.Lock:
        lock = self._locks.get(source)
        if lock is None:
            lock = self._locks[source] = asyncio.Lock()
        return lock

    def _now(self) -> float:
        return self._clock().timestamp()

    def _backoff(self, steps: int, base: float) -> float:
        return float(min(base * 2**steps, MAX_BACKOFF_S))

    async def _next_delay(self) -> float:
        """Seconds until the next pass has something to do (a wake comes sooner)."""

        def read(conn: sqlite3.Connection) -> tuple[bool, float | None]:
            live = conn.execute(
                "SELECT 1 FROM soroban_attempt WHERE status IN (?, ?) LIMIT 1", _LIVE
            ).fetchone()
            (next_try_at,) = conn.execute(
                "SELECT min(next_try_at) FROM soroban_job WHERE status = ?",
                (_JobStatus.QUEUED.value,),
            ).fetchone()
            return live is not None, None if next_try_at is None else float(next_try_at)

        live, next_try_at = await self._db.read(read)
        if live:
            return self._poll_interval_s
        if next_try_at is None:
            return IDLE_INTERVAL_S
        return min(max(next_try_at - self._now(), self._poll_interval_s), IDLE_INTERVAL_S)

    def _schedule_wake(self) -> None:
        """Wake :meth:`run` once the caller's transaction is committed.

        Called from the database's executor thread; the worker's next read
        waits for the database lock, which the writer holds until COMMIT.
        """
        loop, event = self._loop, self._wake
        if loop is None or event is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(event.set)


# ---------------------------------------------------------------- XDR helpers


def _update(
    conn: sqlite3.Connection,
    table: str,
    key_column: str,
    key: object,
    changes: Mapping[str, object],
    stamp: str,
) -> None:
    allowed = _JOB_UPDATABLE if table == "soroban_job" else _ATTEMPT_UPDATABLE
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)} of {table}")
    columns = ", ".join(f"{name} = ?" for name in changes)
    conn.execute(
        f"UPDATE {table} SET {columns}, updated_at = ? WHERE {key_column} = ?",  # noqa: S608 - whitelisted names
        (*changes.values(), stamp, key),
    )


def _needs_other_signer(sim: SimulateTransactionResponse) -> bool:
    """Whether the simulation wants an authorisation the envelope signature does not give."""
    for result in sim.results or []:
        for entry_xdr in result.auth or []:
            try:
                entry = sx.SorobanAuthorizationEntry.from_xdr(entry_xdr)
            except (EOFError, ValueError) as err:
                raise PeerGridConnectionError(
                    "the RPC returned an unreadable authorisation entry"
                ) from err
            if (
                entry.credentials.type
                != sx.SorobanCredentialsType.SOROBAN_CREDENTIALS_SOURCE_ACCOUNT
            ):
                return True
    return False


def _result_code(result_xdr: str | None) -> str:
    """Name of the ``TransactionResultCode`` in a base64 ``TransactionResult``."""
    if not result_xdr:
        return "no result"
    try:
        return str(sx.TransactionResult.from_xdr(result_xdr).result.code.name)
    except (EOFError, ValueError):
        return "unreadable result"


def _operation_failure(result_xdr: str | None) -> str:
    """Why an included transaction failed: the host function's result code if any."""
    if not result_xdr:
        return "no result"
    try:
        result = sx.TransactionResult.from_xdr(result_xdr).result
    except (EOFError, ValueError):
        return "unreadable result"
    for operation in result.results or []:
        invoke = operation.tr.invoke_host_function_result if operation.tr else None
        if invoke is not None:
            return str(invoke.code.name)
    return str(result.code.name)


def _diagnostic_text(events_xdr: list[str] | None) -> str | None:
    """The first text a failed call's diagnostic events carry (the host error)."""
    for event_xdr in events_xdr or []:
        try:
            event = sx.DiagnosticEvent.from_xdr(event_xdr)
        except (EOFError, ValueError):
            continue
        body = event.event.body.v0
        if body is not None and body.data.type == sx.SCValType.SCV_STRING and body.data.str:
            return _short(body.data.str.sc_string.decode(errors="replace"))
    return None


def _mint_call(envelope: TransactionEnvelope) -> tuple[str, str, int] | None:
    """``(contract, to, amount)`` if the envelope is exactly one ``mint`` call."""
    operations = envelope.transaction.operations
    if len(operations) != 1 or not isinstance(operations[0], InvokeHostFunction):
        return None
    args = operations[0].host_function.invoke_contract
    if args is None or args.function_name.sc_symbol != b"mint" or len(args.args) != 2:
        return None
    try:
        contract = Address.from_xdr_sc_address(args.contract_address).address
        return contract, scval.from_address(args.args[0]).address, scval.from_int128(args.args[1])
    except ValueError:
        return None
