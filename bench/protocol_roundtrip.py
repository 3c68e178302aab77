"""Command round trip of the node protocol over loopback: client command -> ack.

The node is the real firmware (``peergrid_node``) run in-process by the
simulator, authenticated with a key, so every round trip covers the whole
path: the client numbers and signs the command, the firmware checks layout,
MAC, JSON and sequence, applies the command and signs the ack, and the client
verifies it. The command is a lease renewal of an active SUPPLY
(``cmd SUPPLY lease_s=30``), which moves no relay, so the figure is the
protocol's cost and not the 100 ms break-before-make dead time of a mode
change. ``*_vs_echo`` divides by a raw asyncio TCP line echo timed in the
same run (``bench/_baselines.py``): the floor of any request and reply over
loopback in Python.

Run alone: ``.venv/bin/python -m bench.protocol_roundtrip [--count N]``, or
through ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from peergrid_core.protocol import Mode, NodeClient
from peergrid_core.sim.grid import NodeSpec, SimulatedGrid

from ._baselines import EchoStack, command_body

COMMANDS = {
    "renew": "cmd SUPPLY lease_s=30, renewing an active SUPPLY (node sampling every 20 ms)",
    "idle": "cmd IDLE while idle (node at rest, sampling every 250 ms)",
}


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _summary(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_ms": _percentile(samples, 0.50),
        "p99_ms": _percentile(samples, 0.99),
        "mean_ms": statistics.fmean(samples),
        "max_ms": samples[-1],
    }


async def _time(count: int, mode: Mode, client: NodeClient) -> list[float]:
    lease = None if mode is Mode.IDLE else 30
    for _ in range(20):  # warm up caches and the firmware's sample loop
        await client.command(mode, lease_s=lease)
    samples: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        await client.command(mode, lease_s=lease)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def _echo(count: int) -> list[float]:
    samples: list[float] = []
    async with EchoStack() as echo:
        for sequence in range(20):
            await echo.call(command_body(sequence))
        for sequence in range(count):
            started = time.perf_counter()
            await echo.call(command_body(sequence))
            samples.append((time.perf_counter() - started) * 1000)
    return samples


async def measure(count: int) -> dict[str, float]:
    """Time ``count`` round trips of each command; milliseconds (p50, p99, mean, max)."""
    spec = NodeSpec(uid="BENCH_NODE", key="bench-roundtrip-key-01", soc_percent=80)
    async with SimulatedGrid([spec], speedup=1, seed=1) as grid:
        host, port = grid.node("BENCH_NODE").address
        async with NodeClient(host, port, spec.key.encode() if spec.key else None) as client:
            renew = await _time(count, Mode.SUPPLY, client)
            idle = await _time(count, Mode.IDLE, client)
    echo = await _echo(count)
    result = {"count": float(count)}
    for name, samples in (("renew", renew), ("idle", idle), ("echo", echo)):
        result |= {f"{name}_{metric}": value for metric, value in _summary(samples).items()}
    for name in ("renew", "idle"):
        for metric in ("p50_ms", "p99_ms"):
            result[f"{name}_{metric}_vs_echo"] = (
                result[f"{name}_{metric}"] / result[f"echo_{metric}"]
            )
    return result


async def run(full: bool, *, smoke: bool = False) -> dict[str, float]:
    """Entry point for ``python -m bench``: 1000 round trips, 10000 with ``--full``."""
    return await measure(20 if smoke else 10_000 if full else 1_000)


def main() -> None:
    """Measure and print the round trip."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000, help="round trips to time")
    args = parser.parse_args()
    result = asyncio.run(measure(args.count))
    for name, command in COMMANDS.items():
        print(f"command: {command}")
        print(
            f"  N={int(result['count'])}  p50={result[f'{name}_p50_ms']:.3f} ms  "
            f"p99={result[f'{name}_p99_ms']:.3f} ms  mean={result[f'{name}_mean_ms']:.3f} ms  "
            f"max={result[f'{name}_max_ms']:.3f} ms"
        )


if __name__ == "__main__":
    main()
