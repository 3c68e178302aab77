"""A chain backend for the service tests: an outbox table, confirmed by reconcile().

It keeps the one promise the service relies on: ``mint_in`` writes only
through the connection of the service's transaction, so its job commits or
rolls back together with the local entries.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import sqlite3

from peergrid_core.ledger import (
    IdempotencyConflictError,
    LedgerDatabase,
    MintRejectedError,
    MintStatus,
    Receipt,
    Token,
    VerifyResult,
)


class FakeChain:
    """Records mints as PENDING jobs; ``reconcile`` confirms them all."""

    name = "fakechain"

    def __init__(self, db: LedgerDatabase) -> None:
        self.db = db
        self.reject_accounts: set[str] = set()
        self.reconcile_calls = 0
        self.verify_problems: tuple[str, ...] = ()

    def create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS fake_job (seq INTEGER PRIMARY KEY, key TEXT UNIQUE,"
            " token TEXT, account TEXT, amount TEXT, detail TEXT, status TEXT)"
        )

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
        if account in self.reject_accounts:
            raise MintRejectedError(f"{account} cannot hold {token}")
        row = conn.execute(
            "SELECT token, account, amount, detail FROM fake_job WHERE key = ?", (key,)
        ).fetchone()
        arguments = (token.value, account, str(amount), json.dumps(dict(detail), sort_keys=True))
        if row is not None:
            if tuple(row) != arguments:
                raise IdempotencyConflictError(f"key {key} reused")
            return self._receipt_in(conn, key)
        conn.execute(
            "INSERT INTO fake_job (key, token, account, amount, detail, status)"
            " VALUES (?, ?, ?, ?, ?, 'pending')",
            (key, *arguments),
        )
        return self._receipt_in(conn, key)

    def _receipt_in(self, conn: sqlite3.Connection, key: str) -> Receipt:
        seq, token, account, amount, status = conn.execute(
            "SELECT seq, token, account, amount, status FROM fake_job WHERE key = ?", (key,)
        ).fetchone()
        confirmed = status == MintStatus.CONFIRMED
        return Receipt(
            key=key,
            token=Token(token),
            account=account,
            amount=int(amount),
            status=MintStatus(status),
            backend=self.name,
            ref=f"tx{seq:04d}" if confirmed else "",
            ledger=1000 + seq if confirmed else None,
        )

    async def balance(self, token: Token, account: str) -> int:
        rows = await self.db.read(
            lambda conn: conn.execute(
                "SELECT amount FROM fake_job WHERE token = ? AND account = ? AND status = ?",
                (token.value, account, MintStatus.CONFIRMED.value),
            ).fetchall()
        )
        return sum(int(amount) for (amount,) in rows)

    async def receipt(self, key: str) -> Receipt | None:
        def find(conn: sqlite3.Connection) -> Receipt | None:
            exists = conn.execute("SELECT 1 FROM fake_job WHERE key = ?", (key,)).fetchone()
            return None if exists is None else self._receipt_in(conn, key)

        return await self.db.read(find)

    async def reconcile(self) -> list[Receipt]:
        self.reconcile_calls += 1

        def confirm(conn: sqlite3.Connection) -> list[Receipt]:
            keys = [
                key
                for (key,) in conn.execute(
                    "SELECT key FROM fake_job WHERE status = 'pending' ORDER BY seq"
                )
            ]
            conn.execute("UPDATE fake_job SET status = 'confirmed' WHERE status = 'pending'")
            return [self._receipt_in(conn, key) for key in keys]

        return await self.db.write(confirm)

    async def verify(self) -> VerifyResult:
        return VerifyResult(ok=not self.verify_problems, entries=0, problems=self.verify_problems)
