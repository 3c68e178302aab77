"""The local ledger: an append-only hash chain whose tampering verify() finds and names."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
import hashlib
import json
from pathlib import Path
import sqlite3

import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.ledger import (
    IdempotencyConflictError,
    LedgerDatabase,
    LedgerStorageError,
    LocalLedger,
    MintStatus,
    Receipt,
    Token,
)
from peergrid_core.ledger.local import GENESIS_HASH, EntryKind

from .conftest import FrozenClock

DETAIL: Mapping[str, str] = {"report_id": "r1"}


@pytest.fixture
async def ledger(ledger_path: Path, clock: FrozenClock) -> AsyncIterator[LocalLedger]:
    db = LedgerDatabase(ledger_path)
    await db.open()
    local = LocalLedger(db, clock=clock)
    await db.write(local.create_schema)
    await db.write(local.create_schema)  # idempotent
    yield local
    await db.close()


async def _mint(ledger: LocalLedger, token: Token, account: str, amount: int, key: str) -> Receipt:
    return await ledger.db.write(
        lambda conn: ledger.mint_in(conn, token, account, amount, key=key, detail=DETAIL)
    )


async def _retire(ledger: LocalLedger, account: str, amount: int, key: str) -> Receipt:
    return await ledger.db.write(
        lambda conn: ledger.retire_in(conn, Token.CARBON, account, amount, key=key, detail={})
    )


async def _three_entries(ledger: LocalLedger) -> None:
    await _mint(ledger, Token.ENERGY, "NODE_A", 45_000_000, "k1")
    await _mint(ledger, Token.ENERGY, "NODE_A", 10_000_000, "k2")
    await _mint(ledger, Token.CARBON, "NODE_B", 41_000, "k3")


async def _tamper(ledger: LocalLedger, *statements: str) -> None:
    """Rewrite the file the way an attacker with file access would: triggers first."""

    def run(conn: sqlite3.Connection) -> None:
        conn.execute("DROP TRIGGER entry_no_update")
        conn.execute("DROP TRIGGER entry_no_delete")
        for statement in statements:
            conn.execute(statement)

    await ledger.db.write(run)


async def test_first_entry_hash_is_the_documented_formula(ledger: LocalLedger) -> None:
    receipt = await _mint(ledger, Token.ENERGY, "NODE_A", 45_000_000, "report:r1:energy")
    body = (
        '{"account":"NODE_A","amount":"45000000","created_at":"2025-06-01T12:00:00.000000+00:00",'
        '"detail":{"report_id":"r1"},"key":"report:r1:energy","kind":"mint",'
        f'"prev_hash":"{"0" * 64}","seq":1,"token":"energy"}}'
    )
    assert receipt == Receipt(
        key="report:r1:energy",
        token=Token.ENERGY,
        account="NODE_A",
        amount=45_000_000,
        status=MintStatus.CONFIRMED,
        backend="local",
        ref=hashlib.sha256(body.encode()).hexdigest(),
        ledger=1,
    )
    second = await _mint(ledger, Token.ENERGY, "NODE_A", 1, "k2")
    entries = await ledger.db.read(lambda conn: list(ledger.entries_in(conn)))
    assert [entry.seq for entry in entries] == [1, 2]
    assert entries[0].prev_hash == GENESIS_HASH
    assert entries[1].prev_hash == receipt.ref
    assert entries[1].hash == second.ref
    assert entries[0].created_at.isoformat() == "2025-06-01T12:00:00+00:00"


async def test_balances_follow_mints_and_retirements(ledger: LocalLedger) -> None:
    await _mint(ledger, Token.CARBON, "NODE_A", 41_000, "c1")
    await _mint(ledger, Token.CARBON, "NODE_A", 9_000, "c2")
    retired = await _retire(ledger, "NODE_A", 50_000, "r1")
    assert retired.amount == 50_000
    assert await ledger.balance(Token.CARBON, "NODE_A") == 0
    assert await ledger.balance(Token.ENERGY, "NODE_A") == 0
    kinds = await ledger.db.read(lambda conn: [e.kind for e in ledger.entries_in(conn)])
    assert kinds == [EntryKind.MINT, EntryKind.MINT, EntryKind.RETIRE]
    assert (await ledger.verify()).ok


async def test_retiring_more_than_the_balance_is_refused(ledger: LocalLedger) -> None:
    await _mint(ledger, Token.CARBON, "NODE_A", 41_000, "c1")
    with pytest.raises(PeerGridValidationError) as caught:
        await _retire(ledger, "NODE_A", 41_001, "r1")
    assert caught.value.field == "amount"
    assert await ledger.balance(Token.CARBON, "NODE_A") == 41_000
    assert await ledger.receipt("r1") is None


async def test_same_key_same_arguments_returns_the_stored_receipt(ledger: LocalLedger) -> None:
    first = await _mint(ledger, Token.ENERGY, "NODE_A", 45_000_000, "k1")
    again = await _mint(ledger, Token.ENERGY, "NODE_A", 45_000_000, "k1")
    assert again == first
    assert await ledger.balance(Token.ENERGY, "NODE_A") == 45_000_000
    assert await ledger.receipt("k1") == first
    assert await ledger.receipt("unknown") is None
    assert await ledger.reconcile() == []


@pytest.mark.parametrize(
    ("kind", "token", "account", "amount", "detail", "named"),
    [
        ("mint", Token.ENERGY, "NODE_A", 45_000_001, DETAIL, "amount"),
        ("mint", Token.CARBON, "NODE_A", 45_000_000, DETAIL, "token"),
        ("mint", Token.ENERGY, "NODE_B", 45_000_000, DETAIL, "account"),
        ("mint", Token.ENERGY, "NODE_A", 45_000_000, {"report_id": "r2"}, "detail"),
        ("retire", Token.ENERGY, "NODE_A", 45_000_000, DETAIL, "kind"),
    ],
)
async def test_same_key_other_arguments_is_a_conflict(
    ledger: LocalLedger,
    kind: str,
    token: Token,
    account: str,
    amount: int,
    detail: Mapping[str, str],
    named: str,
) -> None:
    await _mint(ledger, Token.ENERGY, "NODE_A", 45_000_000, "k1")
    append = ledger.mint_in if kind == "mint" else ledger.retire_in
    with pytest.raises(IdempotencyConflictError, match=named):
        await ledger.db.write(
            lambda conn: append(conn, token, account, amount, key="k1", detail=detail)
        )
    assert await ledger.db.read(lambda conn: len(list(ledger.entries_in(conn)))) == 1


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 1.0}, "amount"),
        ({"amount": 2**127}, "amount"),
        ({"account": ""}, "account"),
        ({"account": " NODE_A"}, "account"),
        ({"key": ""}, "key"),
        ({"token": "gold"}, "token"),
        ({"detail": {"kwh": 0.5}}, "detail"),
    ],
)
async def test_bad_arguments_name_the_field(
    ledger: LocalLedger, arguments: dict[str, object], field: str
) -> None:
    call: dict[str, object] = {
        "token": Token.ENERGY,
        "account": "NODE_A",
        "amount": 1,
        "key": "k1",
        "detail": DETAIL,
    }
    call.update(arguments)
    with pytest.raises(PeerGridValidationError) as caught:
        await ledger.db.write(lambda conn: ledger.mint_in(conn, **call))  # type: ignore[arg-type]
    assert caught.value.field == field
    assert await ledger.db.read(lambda conn: len(list(ledger.entries_in(conn)))) == 0


async def test_triggers_refuse_update_and_delete(ledger: LocalLedger) -> None:
    await _three_entries(ledger)
    with pytest.raises(LedgerStorageError, match="append-only"):
        await ledger.db.write(lambda conn: conn.execute("UPDATE entry SET amount = '1'"))
    with pytest.raises(LedgerStorageError, match="append-only"):
        await ledger.db.write(lambda conn: conn.execute("DELETE FROM entry WHERE seq = 2"))
    result = await ledger.verify()
    assert result.ok
    assert result.entries == 3
    assert result.problems == ()


async def test_verify_finds_an_edited_amount(ledger: LocalLedger) -> None:
    await _three_entries(ledger)
    await _tamper(ledger, "UPDATE entry SET amount = '99000000' WHERE seq = 2")
    result = await ledger.verify()
    assert not result.ok
    assert result.problems == (
        (
            "entry 2 (k2): hash mismatch, the entry was altered after it was written"
            " (amount now 99000000, account NODE_A, mint)"
        ),
        "balance cache drift: energy NODE_A cached 55000000, entries sum to 144000000",
    )


async def test_verify_finds_a_deleted_row(ledger: LocalLedger) -> None:
    await _three_entries(ledger)
    first = await ledger.receipt("k1")
    assert first is not None
    await _tamper(ledger, "DELETE FROM entry WHERE seq = 2")
    result = await ledger.verify()
    assert not result.ok
    assert result.entries == 2
    assert result.problems[0] == "entry 2 missing: sequence jumps from 1 to 3"
    assert result.problems[1].startswith("entry 3 (k3): broken link, prev_hash ")
    assert result.problems[1].endswith(f"the previous entry's hash {first.ref[:12]}...")
    assert result.problems[2] == (
        "balance cache drift: energy NODE_A cached 55000000, entries sum to 45000000"
    )


async def test_verify_finds_a_broken_link(ledger: LocalLedger) -> None:
    """An attacker edits entry 2 and recomputes its hash: entry 3's link breaks."""
    await _three_entries(ledger)
    entries = await ledger.db.read(lambda conn: list(ledger.entries_in(conn)))
    edited = entries[1]
    forged_body = json.dumps(
        {
            "seq": 2,
            "prev_hash": edited.prev_hash,
            "key": edited.key,
            "kind": "mint",
            "token": "energy",
            "account": "NODE_A",
            "amount": "1",
            "detail": dict(edited.detail),
            "created_at": "2025-06-01T12:00:00.000000+00:00",
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    forged = hashlib.sha256(forged_body.encode()).hexdigest()
    await _tamper(
        ledger,
        f"UPDATE entry SET amount = '1', hash = '{forged}' WHERE seq = 2",  # noqa: S608
        "UPDATE balance SET amount = '45000001' WHERE token = 'energy'",
    )
    result = await ledger.verify()
    assert result.problems == (
        (
            f"entry 3 (k3): broken link, prev_hash {edited.hash[:12]}... does not match"
            f" the previous entry's hash {forged[:12]}..."
        ),
    )


async def test_verify_finds_a_removed_last_entry(ledger: LocalLedger) -> None:
    await _three_entries(ledger)
    await _tamper(
        ledger,
        "DELETE FROM entry WHERE seq = 3",
        "DELETE FROM balance WHERE token = 'carbon'",
    )
    result = await ledger.verify()
    assert result.problems == (
        "chain head says entry 3 but the chain ends at entry 2: the last entries were removed",
    )


async def test_verify_finds_cache_drift_and_rebuild_repairs_it(ledger: LocalLedger) -> None:
    await _three_entries(ledger)
    await ledger.db.write(
        lambda conn: conn.execute(
            "UPDATE balance SET amount = '1' WHERE token = 'carbon' AND account = 'NODE_B'"
        )
    )
    await ledger.db.write(
        lambda conn: conn.execute(
            "INSERT INTO balance (token, account, amount) VALUES ('reward', 'ghost', '5')"
        )
    )
    result = await ledger.verify()
    assert result.problems == (
        "balance cache drift: carbon NODE_B cached 1, entries sum to 41000",
        "balance cache drift: reward ghost cached 5, entries sum to 0",
    )
    await ledger.rebuild_balances()
    assert (await ledger.verify()).ok
    assert await ledger.balance(Token.CARBON, "NODE_B") == 41_000
    assert await ledger.balance(Token.REWARD, "ghost") == 0


async def test_verify_reports_an_unreadable_row(ledger: LocalLedger) -> None:
    await _three_entries(ledger)
    await _tamper(ledger, "UPDATE entry SET amount = 'lots' WHERE seq = 1")
    result = await ledger.verify()
    assert not result.ok
    assert result.problems[0].startswith("entry 1 (k1): unreadable row")


async def test_a_missing_cache_row_is_drift(ledger: LocalLedger) -> None:
    await _three_entries(ledger)
    await ledger.db.write(lambda conn: conn.execute("DELETE FROM balance WHERE token = 'carbon'"))
    result = await ledger.verify()
    assert result.problems == (
        "balance cache drift: carbon NODE_B has no cached balance, entries sum to 41000",
    )


async def test_an_empty_ledger_verifies(ledger: LocalLedger) -> None:
    result = await ledger.verify()
    assert result.ok
    assert result.entries == 0
