"""The ledger database: atomic transactions and honest storage errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
import sqlite3
import threading

import pytest

from peergrid_core.ledger import LedgerDatabase, LedgerStorageError
from peergrid_core.ledger.db import describe_sqlite_error


async def _table_rows(db: LedgerDatabase) -> list[tuple[int]]:
    return await db.read(lambda conn: conn.execute("SELECT x FROM t ORDER BY x").fetchall())


@pytest.fixture
async def db(ledger_path: Path):
    database = LedgerDatabase(ledger_path)
    await database.open()
    await database.write(lambda conn: conn.execute("CREATE TABLE t (x INTEGER, pad TEXT)"))
    yield database
    await database.close()


async def test_open_creates_the_folder_and_uses_wal_with_full_sync(ledger_path: Path) -> None:
    database = LedgerDatabase(ledger_path)
    was_open = database.is_open
    await database.open()
    await database.open()  # opening twice is harmless
    assert (was_open, database.is_open) == (False, True)
    assert database.path == ledger_path
    mode, sync = await database.read(
        lambda conn: (
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
        )
    )
    assert (mode, sync) == ("wal", 2)  # 2 = FULL
    await database.close()
    await database.close()
    assert await asyncio.to_thread(ledger_path.exists)


async def test_write_commits_and_returns_the_result(db: LedgerDatabase) -> None:
    result = await db.write(lambda conn: conn.execute("INSERT INTO t (x) VALUES (1)").rowcount)
    assert result == 1
    assert await _table_rows(db) == [(1,)]


async def test_an_exception_rolls_back_everything(db: LedgerDatabase) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (x) VALUES (1)")
        conn.execute("INSERT INTO t (x) VALUES (2)")
        raise KeyError("refused")

    with pytest.raises(KeyError, match="refused"):
        await db.write(half_then_fail)
    assert await _table_rows(db) == []


async def test_a_read_cannot_change_the_file(db: LedgerDatabase) -> None:
    await db.read(lambda conn: conn.execute("INSERT INTO t (x) VALUES (1)"))
    assert await _table_rows(db) == []


async def test_writes_are_serialised(db: LedgerDatabase) -> None:
    def increment(conn: sqlite3.Connection) -> None:
        (current,) = conn.execute("SELECT coalesce(max(x), 0) FROM t").fetchone()
        conn.execute("INSERT INTO t (x) VALUES (?)", (current + 1,))

    await asyncio.gather(*(db.write(increment) for _ in range(20)))
    assert await _table_rows(db) == [(n,) for n in range(1, 21)]


async def test_sqlite_errors_become_storage_errors(db: LedgerDatabase) -> None:
    with pytest.raises(LedgerStorageError, match="no such table") as caught:
        await db.write(lambda conn: conn.execute("INSERT INTO missing VALUES (1)"))
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


async def test_disk_full_rolls_back_and_names_the_cause(db: LedgerDatabase) -> None:
    await db.write(lambda conn: conn.execute("INSERT INTO t (x) VALUES (0)"))
    # No more pages than the file has now: the next page needed is "disk full".
    await db.read(
        lambda conn: conn.execute(
            "PRAGMA max_page_count = " + str(conn.execute("PRAGMA page_count").fetchone()[0])
        )
    )

    def fill(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO t (x, pad) VALUES (?, ?)", [(n, "x" * 1000) for n in range(1, 50)]
        )

    with pytest.raises(LedgerStorageError, match=r"disk full .*SQLITE_FULL"):
        await db.write(fill)
    assert await _table_rows(db) == [(0,)]
    # Once space is back, the same write succeeds: nothing was left half-done.
    await db.read(lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
    await db.write(fill)
    assert len(await _table_rows(db)) == 50


async def test_read_only_file_refuses_writes(db: LedgerDatabase, ledger_path: Path) -> None:
    await db.write(lambda conn: conn.execute("INSERT INTO t (x) VALUES (7)"))
    await db.close()
    # SQLite's read-only open mode, not chmod: the tests may run as root,
    # which ignores file permissions.
    read_only = LedgerDatabase(ledger_path, read_only=True)
    await read_only.open()
    try:
        assert await _table_rows(read_only) == [(7,)]
        with pytest.raises(LedgerStorageError, match=r"read-only .*SQLITE_READONLY"):
            await read_only.write(lambda conn: conn.execute("INSERT INTO t (x) VALUES (8)"))
        assert await _table_rows(read_only) == [(7,)]
    finally:
        await read_only.close()


async def test_read_only_open_of_a_missing_file_fails(tmp_path: Path) -> None:
    database = LedgerDatabase(tmp_path / "absent.db", read_only=True)
    with pytest.raises(LedgerStorageError, match="cannot open"):
        await database.open()
    assert not database.is_open


async def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an SQLite file, just text that fills a page" * 100)
    database = LedgerDatabase(path)
    with pytest.raises(LedgerStorageError, match=r"not an SQLite database|SQLITE_NOTADB"):
        await database.open()
    assert not database.is_open


async def test_calls_on_a_closed_database_fail_cleanly(ledger_path: Path) -> None:
    database = LedgerDatabase(ledger_path)
    with pytest.raises(LedgerStorageError, match="not open"):
        await database.read(lambda conn: None)
    with pytest.raises(LedgerStorageError, match="not open"):
        await database.write(lambda conn: None)


def test_error_descriptions() -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13
    assert describe_sqlite_error(full).startswith("disk full")
    read_only = sqlite3.OperationalError("attempt to write a readonly database")
    read_only.sqlite_errorcode = 8 | (1 << 8)  # an extended code
    assert describe_sqlite_error(read_only).startswith("the ledger file is read-only")
    plain = sqlite3.OperationalError("something else")
    assert describe_sqlite_error(plain) == "ledger database error: something else"


async def test_a_cancelled_write_finishes_before_the_next_call(db: LedgerDatabase) -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (x) VALUES (1)")
        started.set()
        release.wait(timeout=30)
        conn.execute("INSERT INTO t (x) VALUES (2)")

    first = asyncio.create_task(db.write(slow))
    try:
        await asyncio.to_thread(started.wait, 30)
        first.cancel()
        second = asyncio.create_task(
            db.write(lambda conn: conn.execute("INSERT INTO t (x) VALUES (3)"))
        )
        await asyncio.sleep(0)
        assert not second.done()
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    # The thread could not be stopped, so its transaction committed whole, and the
    # next write waited for it instead of sharing the connection mid-transaction.
    assert await _table_rows(db) == [(1,), (2,), (3,)]
