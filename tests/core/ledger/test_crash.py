"""Crash safety: a process killed anywhere while processing a report leaves all or nothing.

A child process opens the ledger, processes one report and dies with
``os._exit`` (no cleanup, no rollback, no close: what a power cut or a
``kill -9`` leaves) at a chosen point. The parent then reopens the file and
finds either no trace of the report or all of it: both mints, the report
row and the sell order, with an intact hash chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import os
from pathlib import Path
import sys
import textwrap

import pytest

from peergrid_core.ledger import LedgerService, OrderStatus, Token

from .conftest import BALANCED, make_evidence, make_report, row_counts

REPORT_ID = "2d6f8a10-3b4c-4d5e-8f90-a1b2c3d4e5f6"
CRASH_EXIT = 17
REPO = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import asyncio
    import os
    import sys
    from datetime import UTC, datetime, timedelta

    from peergrid_core.ledger import (
        LedgerDatabase, LedgerService, LocalLedger, MarketState, PricingConfig, Token,
        TransferEvidence,
    )
    from peergrid_core.ledger import db as db_module
    from peergrid_core.payloads import EnergyReport

    path, point = sys.argv[1], sys.argv[2]
    CRASH = 17


    def die(conn):
        # Say what the open transaction holds, then die without any cleanup.
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("report", "entry", "sell_order")
        }
        print(counts, flush=True)
        os._exit(CRASH)

    if point == "before_commit":
        # Every row of the report is written; the process dies before COMMIT.
        transaction = db_module._transaction

        def dying_transaction(conn, fn, write):
            def body(c):
                result = fn(c)
                if write and c.execute("SELECT count(*) FROM report").fetchone()[0]:
                    die(c)
                return result
            return transaction(conn, body, write)

        db_module._transaction = dying_transaction
    elif point == "between_mints":
        # The report row and the ENERGY entry are written; dies on the CARBON mint.
        mint_in = LocalLedger.mint_in

        def dying_mint(self, conn, token, *args, **kwargs):
            if token is Token.CARBON:
                die(conn)
            return mint_in(self, conn, token, *args, **kwargs)

        LocalLedger.mint_in = dying_mint
    elif point == "after_commit":
        # COMMIT returned; the process dies before anything else happens.
        write = LedgerDatabase.write
        state = {"writes": 0}

        async def dying_write(self, fn):
            result = await write(self, fn)
            state["writes"] += 1
            if state["writes"] == 2:  # the first write is the schema
                os._exit(CRASH)
            return result

        LedgerDatabase.write = dying_write
    elif point != "none":
        raise SystemExit(f"unknown crash point {point}")


    async def main() -> None:
        db = LedgerDatabase(path)
        service = LedgerService(db, local=LocalLedger(db), pricing=PricingConfig())
        await service.open()
        t0 = datetime(2025, 6, 1, 12, tzinfo=UTC)
        await service.process_report(
            EnergyReport(
                device_id="rpi-4b-prod-01", sender_uid="NODE_A", receiver_uid="NODE_B",
                kwh_transferred=0.005, duration_seconds=60.0, avg_voltage=3.92,
                avg_current=0.27, report_id=sys.argv[3],
            ),
            evidence=TransferEvidence(
                transfer_id="transfer-1", sender="NODE_A", receiver="NODE_B", wh_out=5.0,
                wh_in=4.1, started_at=t0 - timedelta(minutes=1), ended_at=t0,
                discharge_commanded=True,
            ),
            market=MarketState(donors=0, receivers=0),
        )
        await service.close()


    asyncio.run(main())
    """
)

NOTHING = {"entry": 0, "balance": 0, "chain_head": 0, "report": 0, "sell_order": 0, "reward": 0}
EVERYTHING = {"entry": 2, "balance": 2, "chain_head": 1, "report": 1, "sell_order": 1, "reward": 0}


async def _run_child(tmp_path: Path, ledger_path: Path, point: str) -> tuple[int, str]:
    script = tmp_path / "child.py"
    await asyncio.to_thread(script.write_text, CHILD)
    # The repository root holds the `peergrid_core` link; the integration folder
    # itself must never be on the path (its select.py would shadow the stdlib).
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(ledger_path),
        point,
        REPORT_ID,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode in (0, CRASH_EXIT), stderr.decode()
    return process.returncode, stdout.decode().strip()


@pytest.mark.parametrize(
    ("point", "exit_code", "inside", "survives"),
    [
        # What the dying transaction held: part of the report, then all of it.
        ("between_mints", CRASH_EXIT, "{'report': 1, 'entry': 1, 'sell_order': 0}", False),
        ("before_commit", CRASH_EXIT, "{'report': 1, 'entry': 2, 'sell_order': 1}", False),
        ("after_commit", CRASH_EXIT, "", True),
        ("none", 0, "", True),
    ],
)
async def test_a_killed_process_leaves_all_or_nothing(
    tmp_path: Path,
    ledger_path: Path,
    make_service: Callable[..., LedgerService],
    point: str,
    exit_code: int,
    inside: str,
    survives: bool,
) -> None:
    await asyncio.to_thread(ledger_path.parent.mkdir, parents=True, exist_ok=True)
    assert await _run_child(tmp_path, ledger_path, point) == (exit_code, inside)

    service = make_service()
    await service.open()
    try:
        assert row_counts(ledger_path) == (EVERYTHING if survives else NOTHING)
        result = await service.verify()
        assert result.ok, result.problems
        assert result.entries == (2 if survives else 0)
        assert service.totals().reports == (1 if survives else 0)
        # The gateway retries the report: it is minted now, or answered as a duplicate.
        outcome = await service.process_report(
            make_report(report_id=REPORT_ID), evidence=make_evidence(), market=BALANCED
        )
        assert outcome.duplicate is survives
        assert outcome.energy.amount == 45_000_000
        assert outcome.carbon.amount == 41_000
        assert outcome.order.status is OrderStatus.OPEN
        assert row_counts(ledger_path) == EVERYTHING
        assert service.balance(Token.ENERGY, "NODE_A") == 4.5
        assert (await service.verify()).ok
    finally:
        await service.close()
