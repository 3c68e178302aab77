"""The one SQLite file that holds the ledger, with crash-safe transactions.

Every ledger table (the local hash chain, reports, orders, rewards, chain
jobs) lives in one database file so that everything one energy report causes
is committed by one transaction or not at all. The file is opened in WAL mode
with ``synchronous=FULL``: a committed transaction survives a power cut of
the Raspberry Pi or Home Assistant host, which matters more for money than
the small cost of an fsync per commit.

SQLite is blocking; :class:`LedgerDatabase` runs every call in the event
loop's default executor and serialises them with an :class:`asyncio.Lock`,
so one connection is only ever used by one thread at a time and a read never
sees another coroutine's unfinished write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import logging
import os
from pathlib import Path
import sqlite3
from urllib.parse import quote

from .base import LedgerStorageError

_LOGGER = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
"""How long a statement waits for another process's lock before failing."""

# Primary SQLite result codes (the low byte of an extended code) and what
# they mean for the person whose ledger could not be written.
_STORAGE_PROBLEMS: dict[int, str] = {
    5: "the ledger file is locked by another process (SQLITE_BUSY)",
    6: "a table of the ledger is locked (SQLITE_LOCKED)",
    7: "out of memory (SQLITE_NOMEM)",
    8: "the ledger file is read-only (SQLITE_READONLY)",
    10: "disk I/O error (SQLITE_IOERR)",
    11: "the ledger file is corrupt (SQLITE_CORRUPT)",
    13: "disk full or ledger size limit reached (SQLITE_FULL)",
    14: "the ledger file cannot be opened (SQLITE_CANTOPEN)",
    19: "a ledger integrity rule refused the change (SQLITE_CONSTRAINT)",
    26: "the file is not an SQLite database (SQLITE_NOTADB)",
}


def describe_sqlite_error(err: sqlite3.Error) -> str:
    """Return a short human-readable cause for ``err`` (disk full, read-only, ...)."""
    code: int | None = getattr(err, "sqlite_errorcode", None)
    if code is not None and (problem := _STORAGE_PROBLEMS.get(code & 0xFF)):
        return f"{problem}: {err}"
    return f"ledger database error: {err}"


class LedgerDatabase:
    """An SQLite ledger file opened for crash-safe, serialised async access.

    ``read_only=True`` opens an existing file with SQLite's read-only mode
    (a ``file:...?mode=ro`` URI): every write then fails with
    :class:`~.base.LedgerStorageError` and nothing changes, which is what a
    file on a read-only mount does.
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """Remember where the ledger lives; :meth:`open` opens it."""
        self._path = Path(path)
        self._read_only = read_only
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._conn is not None

    async def open(self) -> None:
        """Open (and create unless read-only) the file; WAL, ``synchronous=FULL``.

        Raises :class:`~.base.LedgerStorageError` when the file cannot be
        opened or is not a database. Opening an open database does nothing.
        """
        async with self._lock:
            if self._conn is not None:
                return
            loop = asyncio.get_running_loop()
            self._conn = await loop.run_in_executor(None, self._connect)

    async def close(self) -> None:
        """Close the file after any running call; closing twice does nothing."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, conn.close)

    async def write[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside ``BEGIN IMMEDIATE ... COMMIT`` and return its result.

        Any exception rolls the whole transaction back and propagates; an
        SQLite error propagates as :class:`~.base.LedgerStorageError` that
        says what went wrong. Either everything ``fn`` wrote is committed
        and durable, or nothing is.

        Cancelling the caller cannot stop ``fn`` on its thread: the call then
        waits for the transaction to finish (committed or rolled back)
        before it raises :class:`asyncio.CancelledError` and frees the
        database for the next call.
        """
        return await self._run(fn, write=True)

    async def read[T](self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a read transaction (one consistent snapshot).

        The transaction is always rolled back, so a read can never change
        the ledger even by mistake.
        """
        return await self._run(fn, write=False)

    async def _run[T](self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise LedgerStorageError(f"the ledger database {self._path} is not open")
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(None, _transaction, conn, fn, write)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                # A thread cannot be stopped. Keep the lock until its transaction
                # has committed or rolled back, so that no other call uses the
                # connection meanwhile; then let the cancellation through.
                await wait_until_done(future)
                raise

    def _connect(self) -> sqlite3.Connection:
        try:
            if self._read_only:
                uri = f"file:{quote(str(self._path.absolute()))}?mode=ro"
                conn = sqlite3.connect(
                    uri,
                    uri=True,
                    timeout=BUSY_TIMEOUT_S,
                    check_same_thread=False,
                    autocommit=True,
                )
            else:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self._path,
                    timeout=BUSY_TIMEOUT_S,
                    check_same_thread=False,
                    autocommit=True,
                )
        except (sqlite3.Error, OSError) as err:
            message = describe_sqlite_error(err) if isinstance(err, sqlite3.Error) else str(err)
            raise LedgerStorageError(f"cannot open {self._path}: {message}") from err
        try:
            if not self._read_only:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Fail loudly on a file that is not a database at open, not at the
            # first report.
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.Error as err:
            conn.close()
            raise LedgerStorageError(
                f"cannot open {self._path}: {describe_sqlite_error(err)}"
            ) from err
        return conn


async def wait_until_done[T](future: asyncio.Future[T]) -> None:
    """Wait until ``future`` is done, even through further cancellations.

    For a caller that was cancelled while work it cannot interrupt (a thread,
    a commit and its bookkeeping) was under way: it lets the work finish, then
    re-raises the cancellation itself.
    """
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError:
            continue
    if not future.cancelled():
        # Mark a failure as seen: the cancelled caller will not look at it.
        future.exception()


def _transaction[T](
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], write: bool
) -> T:
    """Run ``fn`` in one transaction on the executor thread (see LedgerDatabase)."""
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
        try:
            result = fn(conn)
            if write:
                conn.execute("COMMIT")
        finally:
            # Reached with the transaction still open only when fn or COMMIT
            # failed (or after a read): undo everything. SQLite may already
            # have rolled back on its own after an I/O error.
            if conn.in_transaction:
                _rollback(conn)
    except sqlite3.Error as err:
        raise LedgerStorageError(describe_sqlite_error(err)) from err
    return result


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        # The original error is what the caller needs; SQLite discards the
        # transaction when the connection is closed in any case.
        _LOGGER.exception("Rolling back a ledger transaction failed")
