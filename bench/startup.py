"""Startup: how long Home Assistant takes to set PeerGrid up with 1, 50 and 500 nodes.

Home Assistant 2025.4 is started in its own process (``python -m
homeassistant``) on a configuration folder prepared as after the config
flows ran: one PeerGrid entry per node plus the grid entry, the recorder on.
The nodes are the real firmware on the simulator, in a child process. The
clock runs from spawning the process to the moment Home Assistant reports
``RUNNING`` *and* every PeerGrid entry is ``loaded`` (each node connected,
authenticated, its first status read, its 18 enabled entities added),
polled every 50 ms over the REST API. A size whose entries fail to set up is
reported as ``ha_<n>_failed`` = 1 (today: more than 64 nodes, see
``docs/benchmarks.md``).

Baselines in the same run:

* ``bare``: the same Home Assistant and configuration with no PeerGrid entry
  (the integration is not loaded at all): what Home Assistant costs by
  itself. ``setup_s`` = ready time minus the bare ready time.
* ``core_connect``: PeerGrid's client alone connecting to the same N nodes
  (TCP, hello, mutual authentication, one ``get_status``), 50 connections
  in flight at a time, in this process: the protocol's share of a node's
  setup. ``per_node_ms`` of Home Assistant against it shows what the
  entry setup (entities, registries, the recorder) adds.

Home Assistant's start time varies by a second or more on a loaded machine:
read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
import statistics
import sys
import tempfile
import time
from typing import Any

from peergrid_core.protocol import NodeClient

from ._home_assistant import HomeAssistantError, NodeAddress, Startup, brief, home_assistant
from ._process import Child
from ._stats import Scale, merge, ratio, spread


async def _start_once(nodes: list[dict[str, Any]]) -> Startup:
    addresses = [NodeAddress(**node) for node in nodes]
    with tempfile.TemporaryDirectory(prefix="peergrid-startup-") as workdir:
        async with home_assistant(
            addresses, workdir=Path(workdir), timeout_s=300 + 1.0 * len(nodes)
        ) as ha:
            return ha.startup


async def _core_connect(nodes: list[dict[str, Any]]) -> float:
    """Seconds for PeerGrid's client to connect, authenticate and read a status from all."""
    limit = asyncio.Semaphore(50)
    clients = [NodeClient(n["host"], n["port"], n["key"].encode()) for n in nodes]

    async def one(client: NodeClient) -> None:
        async with limit:
            await client.connect()
            await client.get_status()

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(client) for client in clients))
        return time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def _with_nodes(count: int, rounds: int) -> tuple[list[Startup], list[float], str | None]:
    """Home Assistant's starts with ``count`` nodes, the core's connects, and any failure."""
    nodes = await Child.start("nodes", "--count", str(count), "--push-s", "5")
    starts: list[Startup] = []
    try:
        listing = (await nodes.read(timeout_s=60 + 0.1 * count))["nodes"]
        core = [await _core_connect(listing) for _ in range(rounds)]
        # Home Assistant leaves every node IDLE and disconnects when it stops,
        # so the same nodes serve every round.
        for _ in range(rounds):
            starts.append(await _start_once(listing))  # noqa: PERF401 - one at a time
    except HomeAssistantError as err:
        return starts, core, str(err)
    finally:
        await nodes.close()
    return starts, core, None


async def measure(scale: Scale) -> dict[str, float]:
    """Bare Home Assistant, then each size; ready times and the per-node slope."""
    sizes = scale.pick((1,), (1, 50), (1, 50, 500))
    rounds = scale.pick(1, 1, 2)
    parts: list[dict[str, float]] = [{"rounds": float(rounds)}]
    bare: list[Startup] = []
    if scale is not Scale.SMOKE:
        bare = [await _start_once([]) for _ in range(rounds)]
        parts += [
            spread("bare_ready_s", [s.ready_s for s in bare]),
            spread("bare_api_s", [s.api_s for s in bare]),
        ]
    ready: dict[int, float] = {}
    for count in sizes:
        starts, core, failure = await _with_nodes(count, rounds)
        parts.append({f"ha_{count}_failed": 0.0 if failure is None else 1.0})
        if failure is not None:
            print(f"   Home Assistant with {count} nodes failed: {brief(failure)}", file=sys.stderr)
            parts.append(spread(f"core_connect_{count}_ms", [c * 1000 for c in core]))
            continue
        ready[count] = statistics.median(s.ready_s for s in starts)
        parts += [
            spread(f"ha_{count}_ready_s", [s.ready_s for s in starts]),
            spread(f"ha_{count}_api_s", [s.api_s for s in starts]),
            spread(f"core_connect_{count}_ms", [c * 1000 for c in core]),
        ]
        if bare:
            bare_ready = statistics.median(s.ready_s for s in bare)
            parts.append({f"ha_{count}_setup_s": ready[count] - bare_ready})
        if count > 1 and 1 in ready:
            per_node = (ready[count] - ready[1]) * 1000 / (count - 1)
            core_per_node = statistics.median(core) * 1000 / count
            parts.append(
                {
                    f"ha_{count}_per_node_ms": per_node,
                    f"core_connect_{count}_per_node_ms": core_per_node,
                    f"ha_{count}_per_node_vs_core_connect": ratio(per_node, core_per_node),
                }
            )
    return merge(*parts)


async def run(full: bool, *, smoke: bool = False) -> dict[str, float]:
    """Entry point for ``python -m bench``."""
    return await measure(Scale.of(full, smoke))


def main() -> None:
    """Run alone: ``python -m bench.startup [--full]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(Scale.of(args.full, args.smoke))), indent=2))


if __name__ == "__main__":
    main()
