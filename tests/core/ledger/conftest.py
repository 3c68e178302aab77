"""Fixtures of the ledger tests: a ledger file in tmp_path, a frozen clock, report builders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
import sqlite3

import pytest

from peergrid_core.ledger import (
    LedgerDatabase,
    LedgerService,
    LocalLedger,
    MarketState,
    PricingConfig,
    TransferEvidence,
)
from peergrid_core.payloads import EnergyReport

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
"""The frozen clock's start."""

BALANCED = MarketState(donors=0, receivers=0)

LEDGER_TABLES = ("entry", "balance", "chain_head", "report", "sell_order", "reward")


@dataclass
class FrozenClock:
    """A clock that moves only when told to."""

    now: datetime = T0
    step: timedelta = field(default=timedelta(0))

    def __call__(self) -> datetime:
        moment = self.now
        self.now += self.step
        return moment

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "peergrid_ledger.db"


@pytest.fixture
def make_service(ledger_path: Path, clock: FrozenClock) -> Callable[..., LedgerService]:
    """Build (not open) a local-only service on the test's ledger file."""

    def build(
        *, path: Path | None = None, read_only: bool = False, pricing: PricingConfig | None = None
    ) -> LedgerService:
        db = LedgerDatabase(path or ledger_path, read_only=read_only)
        return LedgerService(
            db, local=LocalLedger(db, clock=clock), pricing=pricing or PricingConfig(), clock=clock
        )

    return build


@pytest.fixture
async def service(make_service: Callable[..., LedgerService]) -> AsyncIterator[LedgerService]:
    """An open local-only service, closed after the test."""
    ledger = make_service()
    await ledger.open()
    yield ledger
    await ledger.close()


def make_report(
    *,
    kwh: float = 0.005,
    sender: str = "NODE_A",
    receiver: str = "NODE_B",
    avg_voltage: float = 3.92,
    report_id: str | None = None,
) -> EnergyReport:
    """An energy report from gateway ``rpi-4b-prod-01`` (by default the 5 Wh example)."""
    # Validated from plain JSON values, the way a gateway's POST arrives.
    return EnergyReport.model_validate(
        {
            "device_id": "rpi-4b-prod-01",
            "sender_uid": sender,
            "receiver_uid": receiver,
            "kwh_transferred": kwh,
            "duration_seconds": 60.0,
            "avg_voltage": avg_voltage,
            "avg_current": 0.27,
            "report_id": report_id,
        }
    )


def make_evidence(
    *,
    transfer_id: str = "transfer-1",
    sender: str = "NODE_A",
    receiver: str = "NODE_B",
    wh_out: float = 5.0,
    wh_in: float = 4.1,
    discharge_commanded: bool = True,
) -> TransferEvidence:
    """What the grid measured for the transfer (by default the 5 Wh example)."""
    return TransferEvidence(
        transfer_id=transfer_id,
        sender=sender,
        receiver=receiver,
        wh_out=wh_out,
        wh_in=wh_in,
        started_at=T0 - timedelta(minutes=1),
        ended_at=T0,
        discharge_commanded=discharge_commanded,
    )


def row_counts(path: Path) -> dict[str, int]:
    """Rows per ledger table, read with a separate plain connection."""
    conn = sqlite3.connect(path)
    try:
        existing = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in LEDGER_TABLES
            if table in existing
        }
    finally:
        conn.close()
