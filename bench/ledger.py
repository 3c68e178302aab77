"""Ledger: energy reports per second and their latency; mints per ledger close on Soroban.

**Local ledger.** :class:`~peergrid_core.ledger.LedgerService` with the
:class:`~peergrid_core.ledger.LocalLedger` on a real SQLite file in a temporary
folder (WAL, ``synchronous=FULL``: every report is durable when its call
returns). One report is the whole product path: validation against the
transfer evidence, the quality factor, tokens and carbon credit, price, and
one transaction that writes the report, the two hash-chained ledger entries,
the balances and the sell order. Reports are sent one after the other
(``serial``: the latency a gateway sees) and eight at a time (``concurrent``:
the database serialises them, so this shows the queueing).

Baseline in the same run and the same folder: the durable floor of "one
transaction per report" -- the same SQLite settings, the same executor
thread hop, and one ``INSERT`` of the report's JSON per transaction.

**Soroban.** The same service with the Soroban backend talking in-process to
:class:`~peergrid_core.sim.soroban_rpc.FakeSorobanRpc` (real XDR, real
signatures; no network, no WASM). Reports queue two mints each (energy and
carbon); the worker's passes alternate with ledger closes until every mint
is confirmed. ``mints_per_close`` is what one minting key achieves; the fake,
like Stellar, admits one pending transaction per source account, so 1.0 is
the ceiling, and at 5 s per ledger that is 720 mints (360 reports) an hour.
``pass_ms`` is the worker's time per pass (build, simulate, sign, send,
resolve), i.e. the CPU a close costs the controller.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
import json
from pathlib import Path
import sqlite3
import tempfile
import time
from typing import Final
import uuid

from peergrid_core.ledger import (
    LedgerDatabase,
    LedgerService,
    LocalLedger,
    MarketState,
    MintStatus,
    PricingConfig,
    Token,
    TransferEvidence,
)
from peergrid_core.payloads import EnergyReport

from ._stats import Latency, Scale, merge, ratio, spread

T0: Final = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BALANCED: Final = MarketState(donors=3, receivers=3)
CONCURRENCY: Final = 8


def _report(index: int) -> tuple[EnergyReport, TransferEvidence]:
    report = EnergyReport.model_validate(
        {
            "device_id": "rpi-4b-bench-01",
            "sender_uid": "NODE_A",
            "receiver_uid": "NODE_B",
            "kwh_transferred": 0.005,
            "duration_seconds": 60.0,
            "avg_voltage": 3.92,
            "avg_current": 0.27,
            "report_id": str(uuid.UUID(int=index + 1, version=4)),
        }
    )
    evidence = TransferEvidence(
        transfer_id=f"transfer-{index}",
        sender="NODE_A",
        receiver="NODE_B",
        wh_out=5.0,
        wh_in=4.1,
        started_at=T0 - timedelta(minutes=1),
        ended_at=T0,
        discharge_commanded=True,
    )
    return report, evidence


async def _timed(calls: list[Callable[[], Awaitable[object]]], concurrency: int) -> list[float]:
    """Run the calls ``concurrency`` at a time; each call's latency in ms."""
    latencies: list[float] = []
    queue = list(reversed(calls))

    async def worker() -> None:
        while queue:
            call = queue.pop()
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def _local_round(folder: Path, count: int, offset: int) -> dict[str, list[float]]:
    db = LedgerDatabase(folder / f"ledger-{offset}.db")
    service = LedgerService(db, local=LocalLedger(db), pricing=PricingConfig())
    await service.open()
    try:
        reports = [_report(offset + i) for i in range(2 * count)]

        def call(index: int) -> Callable[[], Awaitable[object]]:
            report, evidence = reports[index]
            return lambda: service.process_report(report, evidence=evidence, market=BALANCED)

        started = time.perf_counter()
        serial = await _timed([call(i) for i in range(count)], 1)
        serial_s = time.perf_counter() - started
        started = time.perf_counter()
        concurrent = await _timed([call(i) for i in range(count, 2 * count)], CONCURRENCY)
        concurrent_s = time.perf_counter() - started
    finally:
        await service.close()
    return {
        "serial": serial,
        "concurrent": concurrent,
        "serial_rate": [count / serial_s],
        "concurrent_rate": [count / concurrent_s],
    }


async def _floor_round(folder: Path, count: int, offset: int) -> dict[str, list[float]]:
    """The durable floor: one INSERT per transaction, same pragmas, same executor hop."""
    db = LedgerDatabase(folder / f"floor-{offset}.db")
    await db.open()
    try:
        await db.write(
            lambda conn: conn.execute(
                "CREATE TABLE IF NOT EXISTS report (report_id TEXT PRIMARY KEY, body TEXT NOT NULL)"
            )
        )
        bodies = [
            (report.report_id or "", report.model_dump_json())
            for report, _ in (_report(offset + i) for i in range(count))
        ]

        def call(row: tuple[str, str]) -> Callable[[], Awaitable[object]]:
            def insert(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO report VALUES (?, ?)", row)

            return lambda: db.write(insert)

        started = time.perf_counter()
        serial = await _timed([call(row) for row in bodies], 1)
        elapsed = time.perf_counter() - started
    finally:
        await db.close()
    return {"serial": serial, "serial_rate": [count / elapsed]}


async def _soroban(folder: Path, reports: int) -> dict[str, float]:
    from stellar_sdk import Keypair, Network

    from peergrid_core.ledger.soroban import SorobanConfig, SorobanLedger
    from peergrid_core.sim.soroban_rpc import FakeRpcClient, FakeSorobanRpc

    admin = Keypair.from_raw_ed25519_seed(bytes([1]) * 32)
    seller = Keypair.from_raw_ed25519_seed(bytes([2]) * 32).public_key
    fake = FakeSorobanRpc(Network.TESTNET_NETWORK_PASSPHRASE)
    fake.create_account(admin.public_key)
    contracts = {
        token: fake.deploy_token(admin.public_key, name=f"PeerGrid {token}", symbol=symbol)
        for token, symbol in ((Token.ENERGY, "PGE"), (Token.CARBON, "PGC"), (Token.REWARD, "LT"))
    }

    def network_now() -> datetime:
        return datetime.fromtimestamp(fake.network_time, UTC)

    config = SorobanConfig(
        rpc_url="https://soroban-testnet.example/rpc",
        network_passphrase=Network.TESTNET_NETWORK_PASSPHRASE,
        secret_key=admin.secret,
        contracts=contracts,
    )
    db = LedgerDatabase(folder / "soroban.db")
    chain = SorobanLedger(db, config, client=FakeRpcClient(fake), clock=network_now)
    service = LedgerService(
        db,
        local=LocalLedger(db, clock=network_now),
        chain=chain,
        pricing=PricingConfig(),
        chain_account=lambda uid: seller,
        clock=network_now,
    )
    await service.open()
    try:
        for index in range(reports):
            report, evidence = _report(900_000 + index)
            await service.process_report(report, evidence=evidence, market=BALANCED)
        passes: list[float] = []
        closes = 0
        first_ledger = fake.ledger
        for _ in range(10 * reports + 10):
            started = time.perf_counter()
            await chain.run_once()
            passes.append((time.perf_counter() - started) * 1000)
            if not await chain.receipts(status=MintStatus.PENDING):
                break
            fake.close_ledger()
            closes += 1
        confirmed = len(await chain.receipts(status=MintStatus.CONFIRMED))
    finally:
        await chain.close()
        await service.close()
    pass_stats = Latency.of(passes)
    return {
        "soroban_reports": float(reports),
        "soroban_mints_confirmed": float(confirmed),
        "soroban_ledger_closes": float(closes or fake.ledger - first_ledger),
        "soroban_mints_per_close": ratio(confirmed, closes),
        "soroban_mints_per_close_vs_ceiling": ratio(ratio(confirmed, closes), 1.0),
        "soroban_reports_per_hour_at_5s_close": ratio(confirmed, closes) / 2 * 720,
        "soroban_pass_p50_ms": pass_stats.p50,
        "soroban_pass_p99_ms": pass_stats.p99,
    }


async def measure(scale: Scale) -> dict[str, float]:
    """Local ledger and floor for the scale's rounds, then the Soroban run."""
    rounds = scale.pick(1, 3, 5)
    count = scale.pick(20, 300, 1000)
    soroban_reports = scale.pick(2, 10, 40)
    local: list[dict[str, list[float]]] = []
    floor: list[dict[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="peergrid-ledger-") as workdir:
        folder = Path(workdir)
        # Warm-up: imports, validator builds, the first file creation.
        await _local_round(folder, 5, 10_000_000)
        for index in range(rounds):
            floor.append(await _floor_round(folder, count, index * 10 * count))
            local.append(await _local_round(folder, count, (index * 10 + 5) * count))
        chain = await _soroban(folder, soroban_reports)
    serial = Latency.of([v for r in local for v in r["serial"]])
    concurrent = Latency.of([v for r in local for v in r["concurrent"]])
    floor_serial = Latency.of([v for r in floor for v in r["serial"]])
    local_rate = [r["serial_rate"][0] for r in local]
    floor_rate = [r["serial_rate"][0] for r in floor]
    return merge(
        {"reports_per_round": float(count), "rounds": float(rounds)},
        spread("local_reports_per_s", local_rate),
        spread("local_concurrent_reports_per_s", [r["concurrent_rate"][0] for r in local]),
        serial.metrics("local_serial"),
        concurrent.metrics("local_concurrent"),
        spread("floor_inserts_per_s", floor_rate),
        floor_serial.metrics("floor_serial"),
        {
            "local_p50_vs_floor": ratio(serial.p50, floor_serial.p50),
            "local_p99_vs_floor": ratio(serial.p99, floor_serial.p99),
            "local_rate_vs_floor": ratio(
                sorted(local_rate)[len(local_rate) // 2], sorted(floor_rate)[len(floor_rate) // 2]
            ),
        },
        chain,
    )


async def run(full: bool, *, smoke: bool = False) -> dict[str, float]:
    """Entry point for ``python -m bench``."""
    return await measure(Scale.of(full, smoke))


def main() -> None:
    """Run alone: ``python -m bench.ledger [--full]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(Scale.of(args.full, args.smoke))), indent=2))


if __name__ == "__main__":
    main()
