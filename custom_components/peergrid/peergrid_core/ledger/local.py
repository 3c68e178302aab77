"""The local ledger: an append-only, hash-chained record of every mint and retirement.

Each entry is one row of the ``entry`` table and carries the SHA-256 hash of
its own fields together with the previous entry's hash, so editing, removing
or reordering any past entry breaks the chain at that point. Triggers refuse
``UPDATE`` and ``DELETE`` on the table, which stops mistakes and ordinary
tools; anyone who can rewrite the file can still drop the triggers, which is
why :meth:`LocalLedger.verify` re-derives everything from the rows instead of
trusting them.

.. code-block:: text

    hash = sha256(canonical_json({seq, prev_hash, key, kind, token, account,
                                  amount, detail, created_at}))
    canonical_json = sorted keys, no spaces, UTF-8, amounts as decimal text
    prev_hash of entry 1 = 64 zeros

Two small mutable tables sit beside the chain and are checked against it:
``balance`` (the balance per token and account, a cache rebuildable from the
entries) and ``chain_head`` (the sequence number and hash of the last entry,
so a removed *last* entry, which leaves a shorter but consistent chain, is
still noticed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
import hashlib
import json
import sqlite3
from typing import Final

from ..errors import PeerGridValidationError
from .base import I128_MAX, IdempotencyConflictError, MintStatus, Receipt, Token, VerifyResult
from .db import LedgerDatabase

GENESIS_HASH: Final = "0" * 64
"""``prev_hash`` of the first entry."""

BACKEND_NAME: Final = "local"

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS entry (
        seq INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        token TEXT NOT NULL,
        account TEXT NOT NULL,
        amount TEXT NOT NULL,
        detail TEXT NOT NULL,
        created_at TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS entry_no_update BEFORE UPDATE ON entry
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END
    """,
    """
    CREATE TRIGGER IF NOT EXISTS entry_no_delete BEFORE DELETE ON entry
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END
    """,
    """
    CREATE TABLE IF NOT EXISTS balance (
        token TEXT NOT NULL,
        account TEXT NOT NULL,
        amount TEXT NOT NULL,
        PRIMARY KEY (token, account)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS chain_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    )
    """,
)

_ENTRY_COLUMNS: Final = (
    "seq, key, kind, token, account, amount, detail, created_at, prev_hash, hash"
)


class EntryKind(StrEnum):
    """What an entry does to a balance."""

    MINT = "mint"
    """Adds ``amount`` to the account."""
    RETIRE = "retire"
    """Removes ``amount`` for good (a carbon credit claimed, a token burnt)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerEntry:
    """One row of the hash chain, as stored."""

    seq: int
    key: str
    kind: EntryKind
    token: Token
    account: str
    amount: int
    """Base units."""
    detail: Mapping[str, str]
    created_at: datetime
    prev_hash: str
    hash: str

    @property
    def signed_amount(self) -> int:
        """The entry's effect on the balance: positive for a mint, negative for a retirement."""
        return self.amount if self.kind is EntryKind.MINT else -self.amount

    def receipt(self) -> Receipt:
        """The receipt of this entry (local entries are final when written)."""
        return Receipt(
            key=self.key,
            token=self.token,
            account=self.account,
            amount=self.amount,
            status=MintStatus.CONFIRMED,
            backend=BACKEND_NAME,
            ref=self.hash,
            ledger=self.seq,
        )


def canonical_json(value: object) -> str:
    """Return ``value`` as canonical JSON: sorted keys, no blanks, non-ASCII kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(
    *,
    seq: int,
    prev_hash: str,
    key: str,
    kind: str,
    token: str,
    account: str,
    amount: str,
    detail: Mapping[str, str],
    created_at: str,
) -> str:
    """Return the hex SHA-256 of an entry's fields (the chain formula above)."""
    body = canonical_json(
        {
            "seq": seq,
            "prev_hash": prev_hash,
            "key": key,
            "kind": kind,
            "token": token,
            "account": account,
            "amount": amount,
            "detail": dict(detail),
            "created_at": created_at,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class LocalLedger:
    """The default ledger backend: the hash chain in the shared SQLite file.

    Writes (:meth:`mint_in`, :meth:`retire_in`) are synchronous and take the
    connection of a transaction opened by :meth:`LedgerDatabase.write`, so a
    caller can combine them with its own rows in one atomic commit. Reads
    are async and go through the database's executor.
    """

    name: str = BACKEND_NAME

    def __init__(self, db: LedgerDatabase, *, clock: Callable[[], datetime] = utcnow) -> None:
        """Use ``db``; ``clock`` stamps ``created_at`` (must return aware datetimes)."""
        self._db = db
        self._clock = clock

    @property
    def db(self) -> LedgerDatabase:
        """The database the chain lives in."""
        return self._db

    # ------------------------------------------------------------ schema

    def create_schema(self, conn: sqlite3.Connection) -> None:
        """Create the chain, the balance cache and the head record if missing."""
        for statement in _SCHEMA:
            conn.execute(statement)

    # ------------------------------------------------------------ writes (sync, in a transaction)

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
        """Append a mint of ``amount`` base units of ``token`` to ``account``.

        Idempotent by ``key``: the same key with the same arguments returns
        the stored receipt, with other arguments raises
        :class:`~.base.IdempotencyConflictError`.
        """
        return self._append(conn, EntryKind.MINT, token, account, amount, key=key, detail=detail)

    def retire_in(
        self,
        conn: sqlite3.Connection,
        token: Token,
        account: str,
        amount: int,
        *,
        key: str,
        detail: Mapping[str, str],
    ) -> Receipt:
        """Append a retirement of ``amount`` base units of ``token`` from ``account``.

        Refused with :class:`PeerGridValidationError` (field ``amount``) when
        it would make the balance negative. Idempotent by ``key`` like
        :meth:`mint_in`.
        """
        return self._append(conn, EntryKind.RETIRE, token, account, amount, key=key, detail=detail)

    def rebuild_balances_in(self, conn: sqlite3.Connection) -> None:
        """Recompute the balance cache from the entries (after :meth:`verify` found drift).

        The cache is derived data; the chain is the record. Rebuilding does
        not touch a single entry.
        """
        totals: dict[tuple[str, str], int] = {}
        for entry in self.entries_in(conn):
            slot = (entry.token.value, entry.account)
            totals[slot] = totals.get(slot, 0) + entry.signed_amount
        conn.execute("DELETE FROM balance")
        conn.executemany(
            "INSERT INTO balance (token, account, amount) VALUES (?, ?, ?)",
            [(token, account, str(amount)) for (token, account), amount in totals.items()],
        )

    def _append(
        self,
        conn: sqlite3.Connection,
        kind: EntryKind,
        token: Token,
        account: str,
        amount: int,
        *,
        key: str,
        detail: Mapping[str, str],
    ) -> Receipt:
        token = _checked_token(token)
        _check_text("account", account)
        _check_text("key", key)
        _check_amount(amount)
        detail = _checked_detail(detail)

        existing = self._entry_by_key(conn, key)
        if existing is not None:
            differences = [
                name
                for name, stored, asked in (
                    ("kind", existing.kind, kind),
                    ("token", existing.token, token),
                    ("account", existing.account, account),
                    ("amount", existing.amount, amount),
                    ("detail", dict(existing.detail), detail),
                )
                if stored != asked
            ]
            if differences:
                raise IdempotencyConflictError(
                    f"key {key!r} was already used with a different {', '.join(differences)}"
                )
            return existing.receipt()

        balance = _cached_balance(conn, token, account)
        new_balance = balance + amount if kind is EntryKind.MINT else balance - amount
        if new_balance < 0:
            raise PeerGridValidationError(
                "amount", f"retiring {amount} would leave {account} with a negative {token} balance"
            )
        if new_balance > I128_MAX:
            raise PeerGridValidationError("amount", f"the {token} balance would exceed i128")

        head = conn.execute("SELECT seq, hash FROM entry ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (1, GENESIS_HASH) if head is None else (int(head[0]) + 1, str(head[1]))
        created_at = _timestamp(self._clock())
        digest = entry_hash(
            seq=seq,
            prev_hash=prev_hash,
            key=key,
            kind=kind.value,
            token=token.value,
            account=account,
            amount=str(amount),
            detail=detail,
            created_at=created_at,
        )
        conn.execute(
            f"INSERT INTO entry ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant column list
            (
                seq,
                key,
                kind.value,
                token.value,
                account,
                str(amount),
                canonical_json(detail),
                created_at,
                prev_hash,
                digest,
            ),
        )
        conn.execute(
            "INSERT INTO balance (token, account, amount) VALUES (?, ?, ?) "
            "ON CONFLICT (token, account) DO UPDATE SET amount = excluded.amount",
            (token.value, account, str(new_balance)),
        )
        conn.execute(
            "INSERT INTO chain_head (id, seq, hash) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            (seq, digest),
        )
        return Receipt(
            key=key,
            token=token,
            account=account,
            amount=amount,
            status=MintStatus.CONFIRMED,
            backend=BACKEND_NAME,
            ref=digest,
            ledger=seq,
        )

    # ------------------------------------------------------------ reads (sync, in a transaction)

    def entries_in(self, conn: sqlite3.Connection, *, after_seq: int = 0) -> Iterator[LedgerEntry]:
        """Yield the entries after ``after_seq`` in chain order (see :func:`read_entries`)."""
        return read_entries(conn, after_seq=after_seq)

    def receipt_in(self, conn: sqlite3.Connection, key: str) -> Receipt | None:
        """The receipt stored under ``key``, or None."""
        entry = self._entry_by_key(conn, key)
        return None if entry is None else entry.receipt()

    def balances_in(self, conn: sqlite3.Connection) -> dict[tuple[Token, str], int]:
        """Every cached balance, keyed by token and account."""
        return {
            (Token(token), str(account)): int(amount)
            for token, account, amount in conn.execute("SELECT token, account, amount FROM balance")
        }

    def _entry_by_key(self, conn: sqlite3.Connection, key: str) -> LedgerEntry | None:
        row = conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entry WHERE key = ?",  # noqa: S608 - constant column list
            (key,),
        ).fetchone()
        return None if row is None else _entry_from_row(row)

    # ------------------------------------------------------------ async API (LedgerBackend)

    async def balance(self, token: Token, account: str) -> int:
        """The cached balance of ``account`` in ``token``, base units (0 if none)."""
        token = _checked_token(token)
        return await self._db.read(lambda conn: _cached_balance(conn, token, account))

    async def receipt(self, key: str) -> Receipt | None:
        """The receipt stored under ``key``, or None."""
        return await self._db.read(lambda conn: self.receipt_in(conn, key))

    async def reconcile(self) -> list[Receipt]:
        """Nothing to do: a local entry is final when its transaction commits."""
        return []

    async def rebuild_balances(self) -> None:
        """Recompute the balance cache from the chain, in one transaction."""
        await self._db.write(self.rebuild_balances_in)

    async def verify(self) -> VerifyResult:
        """Walk the whole chain and report every inconsistency found.

        Recomputes each entry's hash (an edited field), checks that sequence
        numbers are contiguous (a deleted row) and that each ``prev_hash``
        is the previous entry's hash (a broken link), that the head record
        matches the last entry (a deleted last row), that no balance ever
        goes negative, and that the balance cache equals the sums of the
        entries (cache drift). Each problem is one line naming the entry or
        the balance.
        """
        return await self._db.read(_verify_in)


def read_entries(conn: sqlite3.Connection, *, after_seq: int = 0) -> Iterator[LedgerEntry]:
    """Yield the entries after ``after_seq`` in chain order.

    Raises :class:`ValueError` for a row that cannot be read back (only a
    tampered file has one); :meth:`LocalLedger.verify` reports those instead.
    """
    cursor = conn.execute(
        f"SELECT {_ENTRY_COLUMNS} FROM entry WHERE seq > ? ORDER BY seq",  # noqa: S608 - constant column list
        (after_seq,),
    )
    for row in cursor:
        yield _entry_from_row(row)


# ---------------------------------------------------------------- verification


def _verify_in(conn: sqlite3.Connection) -> VerifyResult:
    problems: list[str] = []
    totals: dict[tuple[str, str], int] = {}
    expected_seq = 1
    prev_hash = GENESIS_HASH
    entries = 0
    last: tuple[int, str] | None = None
    cursor = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM entry ORDER BY seq")  # noqa: S608 - constant column list
    for row in cursor:
        entries += 1
        seq = int(row[0])
        stored_hash = str(row[9])
        label = f"entry {seq} ({row[1]})"
        if seq != expected_seq:
            missing = (
                f"entry {expected_seq}"
                if seq == expected_seq + 1
                else f"entries {expected_seq}-{seq - 1}"
            )
            problems.append(f"{missing} missing: sequence jumps from {expected_seq - 1} to {seq}")
        if row[8] != prev_hash:
            problems.append(
                f"{label}: broken link, prev_hash {str(row[8])[:12]}... does not match"
                f" the previous entry's hash {prev_hash[:12]}..."
            )
        try:
            entry = _entry_from_row(row)
        except ValueError as err:
            problems.append(f"{label}: unreadable row ({err})")
        else:
            recomputed = entry_hash(
                seq=entry.seq,
                prev_hash=entry.prev_hash,
                key=entry.key,
                kind=entry.kind.value,
                token=entry.token.value,
                account=entry.account,
                amount=str(row[5]),
                detail=entry.detail,
                created_at=str(row[7]),
            )
            if recomputed != stored_hash:
                problems.append(
                    f"{label}: hash mismatch, the entry was altered after it was written"
                    f" (amount now {entry.amount}, account {entry.account}, {entry.kind})"
                )
            slot = (entry.token.value, entry.account)
            totals[slot] = totals.get(slot, 0) + entry.signed_amount
            if totals[slot] < 0:
                problems.append(
                    f"{label}: {entry.token} balance of {entry.account} goes negative"
                    f" ({totals[slot]})"
                )
        expected_seq = seq + 1
        prev_hash = stored_hash
        last = (seq, stored_hash)

    head = conn.execute("SELECT seq, hash FROM chain_head WHERE id = 1").fetchone()
    if head is None:
        if last is not None:
            problems.append("chain head record is missing")
    elif last is None or (int(head[0]), str(head[1])) != last:
        at = "no entries" if last is None else f"entry {last[0]}"
        problems.append(
            f"chain head says entry {head[0]} but the chain ends at {at}:"
            " the last entries were removed"
        )

    cached: dict[tuple[str, str], str] = {
        (str(token), str(account)): str(amount)
        for token, account, amount in conn.execute("SELECT token, account, amount FROM balance")
    }
    for slot in sorted(set(cached) | set(totals)):
        expected = totals.get(slot, 0)
        stored = cached.get(slot)
        if stored is None:
            if expected:
                problems.append(
                    f"balance cache drift: {slot[0]} {slot[1]} has no cached balance,"
                    f" entries sum to {expected}"
                )
        elif stored != str(expected):
            problems.append(
                f"balance cache drift: {slot[0]} {slot[1]} cached {stored},"
                f" entries sum to {expected}"
            )
    return VerifyResult(ok=not problems, entries=entries, problems=tuple(problems))


# ---------------------------------------------------------------- helpers


def _entry_from_row(row: tuple[object, ...]) -> LedgerEntry:
    """Read a stored row back; ValueError (incl. a JSON error) when it was tampered with."""
    seq, key, kind, token, account, amount, detail, created_at, prev_hash, digest = row
    parsed_detail = json.loads(str(detail))
    if not isinstance(parsed_detail, dict) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in parsed_detail.items()
    ):
        raise ValueError("detail is not an object of strings")
    amount_units = int(str(amount))
    if str(amount_units) != str(amount) or amount_units <= 0:
        raise ValueError(f"amount {amount!r} is not a positive integer")
    return LedgerEntry(
        seq=int(str(seq)),
        key=str(key),
        kind=EntryKind(str(kind)),
        token=Token(str(token)),
        account=str(account),
        amount=amount_units,
        detail=parsed_detail,
        created_at=datetime.fromisoformat(str(created_at)),
        prev_hash=str(prev_hash),
        hash=str(digest),
    )


def _cached_balance(conn: sqlite3.Connection, token: Token, account: str) -> int:
    row = conn.execute(
        "SELECT amount FROM balance WHERE token = ? AND account = ?", (token.value, account)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PeerGridValidationError("created_at", "the ledger clock must return aware datetimes")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _checked_token(token: Token) -> Token:
    try:
        return Token(token)
    except ValueError as err:
        raise PeerGridValidationError("token", f"{token!r} is not a ledger token") from err


def _check_text(field: str, value: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise PeerGridValidationError(field, f"{value!r} must be a non-empty string without blanks")


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise PeerGridValidationError("amount", f"{amount!r} is not an integer of base units")
    if amount <= 0:
        raise PeerGridValidationError("amount", f"{amount} must be positive")
    if amount > I128_MAX:
        raise PeerGridValidationError("amount", f"{amount} exceeds the i128 range")


def _checked_detail(detail: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in detail.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise PeerGridValidationError("detail", f"{name!r}: {value!r} is not text to text")
        checked[name] = value
    return checked
