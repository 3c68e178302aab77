"""Telemetry fan-in: status pushes one process carries from 10, 100 and 1,000 nodes.

Every node is the real firmware on the simulator, pushing a signed status
every second (``push_s = 1``), all of them in one child process
(``python -m bench._children nodes``). Three receivers take the same pushes,
each in a process of its own, one after the other:

* ``floor``: authenticates like any controller, then only splits lines and
  decodes their JSON: the least a receiver of these frames does;
* ``core``: PeerGrid's :class:`~peergrid_core.protocol.NodeClient` per node,
  the integration's own client: every frame's MAC and sequence checked and
  parsed into a typed ``Status``;
* ``ha``: Home Assistant 2025.4 with one PeerGrid entry per node, the
  recorder on (SQLite, as a default install has it): each status becomes
  the coordinator's data, the states of the node's 18 enabled entities and
  the recorder's rows.

Home Assistant runs at 50 nodes as well, so that its per-node slopes exist
while grids of more than 64 nodes fail to set up (``ha_<n>_failed`` = 1: the
grid summary refuses more than 64 nodes; reported to the lead).

For each, over a window split into intervals (5 s for Home Assistant, one
recorder commit each; 2.5 s for the others): pushes per second delivered
(counted by the nodes, for authenticated sessions), the receiver process's
CPU share (100 % = one core) and CPU time per push, and its resident memory.
``mem_per_node_kib`` is the slope of memory between the sizes and
``marginal_cpu_us_per_push`` the slope of CPU time, so fixed costs cancel.
``est_nodes_per_core`` = 10^6 / marginal CPU µs per push: the nodes at 1 Hz
one core could carry if nothing else limits. ``sessions`` at the end shows
whether the receiver kept up: a node drops a session whose reader lags 16
frames behind.

The HTTP ping endpoint (``POST /api/peergrid/iot/ping``, a specification
node-data payload with two nodes, a Home Assistant token) is loaded for a few
seconds by 8 concurrent aiohttp clients in this process. Baselines: Home
Assistant's own ``POST /api/events/<type>`` (same auth, JSON body, fires an
event: Home Assistant's floor for an authenticated JSON POST) and a bare
aiohttp JSON handler in a child process (the HTTP stack's floor).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
import json
from pathlib import Path
import statistics
import sys
import tempfile
import time
from typing import Any, Final

import aiohttp
import psutil

from ._home_assistant import HomeAssistantError, NodeAddress, brief, home_assistant
from ._process import Child, ChildError, cpu_s, rss_mib
from ._stats import Latency, Scale, merge, ratio, spread

PUSH_S: Final = 1
HTTP_CONCURRENCY: Final = 8


@dataclass(kw_only=True)
class Window:
    """Per-interval figures of one receiver at one size."""

    pushes_per_s: list[float] = field(default_factory=list)
    cpu_share: list[float] = field(default_factory=list)
    cpu_us_per_push: list[float] = field(default_factory=list)
    received_per_s: list[float] = field(default_factory=list)
    node_cpu_share: list[float] = field(default_factory=list)
    rss_mib: float = 0.0
    sessions: int = 0
    slipped_s: float = 0.0


async def _window(
    nodes: Child,
    receiver: psutil.Process,
    *,
    intervals: int,
    interval_s: float,
    received: Callable[[], Awaitable[int]] | None = None,
) -> Window:
    window = Window()
    stats = await nodes.stats()
    before = (
        time.perf_counter(),
        stats["pushed"],
        cpu_s(receiver),
        cpu_s(nodes.ps),
        await received() if received else 0,
    )
    for _ in range(intervals):
        await asyncio.sleep(interval_s)
        stats = await nodes.stats()
        now = (
            time.perf_counter(),
            stats["pushed"],
            cpu_s(receiver),
            cpu_s(nodes.ps),
            await received() if received else 0,
        )
        elapsed = now[0] - before[0]
        pushes = now[1] - before[1]
        cpu = now[2] - before[2]
        window.pushes_per_s.append(pushes / elapsed)
        window.cpu_share.append(100 * cpu / elapsed)
        window.cpu_us_per_push.append(1e6 * cpu / pushes if pushes else float("nan"))
        window.node_cpu_share.append(100 * (now[3] - before[3]) / elapsed)
        if received:
            window.received_per_s.append((now[4] - before[4]) / elapsed)
        before = now
    window.rss_mib = rss_mib(receiver)
    window.sessions = int(stats["sessions"])
    window.slipped_s = float(stats["slipped_s"])
    return window


def _window_metrics(name: str, count: int, window: Window) -> dict[str, float]:
    result = merge(
        spread(f"{name}_{count}_pushes_per_s", window.pushes_per_s),
        spread(f"{name}_{count}_cpu_pct", window.cpu_share),
        spread(f"{name}_{count}_cpu_us_per_push", window.cpu_us_per_push),
        {
            f"{name}_{count}_rss_mib": window.rss_mib,
            f"{name}_{count}_sessions": float(window.sessions),
            f"{name}_{count}_nodes_cpu_pct": statistics.median(window.node_cpu_share),
            f"{name}_{count}_nodes_clock_slip_s": window.slipped_s,
        },
    )
    if window.received_per_s:
        result[f"{name}_{count}_received_per_s"] = statistics.median(window.received_per_s)
    return result


# ---------------------------------------------------------------- HTTP load


def node_data_ping() -> dict[str, Any]:
    """The specification's node-data ping, stamped now."""
    return {
        "device_id": "rpi-4b-bench-01",
        "voltage": 3.921,
        "battery_level": 72.4,
        "state": "IDLE",
        "source": "rpi_energy_grid",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "connected_nodes_count": 2,
        "connected_nodes": [
            {"uid": "NODE_A", "voltage": 3.921},
            {"uid": "NODE_B", "voltage": 3.610},
        ],
        "nodes_detail": [
            {
                "uid": "NODE_A",
                "ip": "192.168.1.101",
                "voltage": 3.921,
                "soc": 72.4,
                "state": "IDLE",
            },
            {
                "uid": "NODE_B",
                "ip": "192.168.1.102",
                "voltage": 3.610,
                "soc": 28.1,
                "state": "IDLE",
            },
        ],
    }


@dataclass(kw_only=True)
class HttpLoad:
    """One load run: requests per second, latencies, server CPU share."""

    requests_per_s: float
    latencies_ms: list[float]
    server_cpu_pct: float
    client_cpu_pct: float


async def http_load(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    server: psutil.Process,
    *,
    duration_s: float,
) -> HttpLoad:
    latencies: list[float] = []
    failures: list[int] = []
    me = psutil.Process()
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with session.post(url, json=body) as response:
                await response.read()
                if response.status != 200:
                    failures.append(response.status)
            latencies.append((time.perf_counter() - started) * 1000)

    cpu_server, cpu_client, started = cpu_s(server), cpu_s(me), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(HTTP_CONCURRENCY)))
    elapsed = time.perf_counter() - started
    if failures:
        raise ChildError(f"{url} answered {sorted(set(failures))} to {len(failures)} requests")
    return HttpLoad(
        requests_per_s=len(latencies) / elapsed,
        latencies_ms=latencies,
        server_cpu_pct=100 * (cpu_s(server) - cpu_server) / elapsed,
        client_cpu_pct=100 * (cpu_s(me) - cpu_client) / elapsed,
    )


def _http_metrics(name: str, runs: Sequence[HttpLoad]) -> dict[str, float]:
    latency = Latency.of([v for run in runs for v in run.latencies_ms])
    return merge(
        spread(f"{name}_requests_per_s", [run.requests_per_s for run in runs]),
        {
            f"{name}_p50_ms": latency.p50,
            f"{name}_p99_ms": latency.p99,
            f"{name}_server_cpu_pct": statistics.median(run.server_cpu_pct for run in runs),
            f"{name}_client_cpu_pct": statistics.median(run.client_cpu_pct for run in runs),
        },
    )


async def _ping_benchmark(
    ha_session: aiohttp.ClientSession, ha_url: str, ha_pid: int, *, rounds: int, duration_s: float
) -> dict[str, float]:
    floor = await Child.start("http-floor")
    ha_process = psutil.Process(ha_pid)
    try:
        port = (await floor.read())["port"]
        body = node_data_ping()
        ping_url = f"{ha_url}/api/peergrid/iot/ping"
        events_url = f"{ha_url}/api/events/peergrid_bench"
        floor_url = f"http://127.0.0.1:{port}/ping"
        runs: dict[str, list[HttpLoad]] = {"ping": [], "ha_events": [], "aiohttp_floor": []}
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=HTTP_CONCURRENCY)
        ) as plain:
            # Warm-up: connections, validators, the first event listener.
            await http_load(ha_session, ping_url, body, ha_process, duration_s=0.3)
            await http_load(plain, floor_url, body, floor.ps, duration_s=0.3)
            for _ in range(rounds):
                runs["ping"].append(
                    await http_load(ha_session, ping_url, body, ha_process, duration_s=duration_s)
                )
                runs["ha_events"].append(
                    await http_load(ha_session, events_url, body, ha_process, duration_s=duration_s)
                )
                runs["aiohttp_floor"].append(
                    await http_load(plain, floor_url, body, floor.ps, duration_s=duration_s)
                )
    finally:
        await floor.close()
    result = merge(*(_http_metrics(name, loads) for name, loads in runs.items()))
    result["ping_rps_vs_ha_events"] = ratio(
        result["ping_requests_per_s"], result["ha_events_requests_per_s"]
    )
    result["ping_rps_vs_aiohttp_floor"] = ratio(
        result["ping_requests_per_s"], result["aiohttp_floor_requests_per_s"]
    )
    result["ping_p50_vs_ha_events"] = ratio(result["ping_p50_ms"], result["ha_events_p50_ms"])
    return result


# ---------------------------------------------------------------- fan-in


async def _receiver_window(
    mode: str,
    nodes: Child,
    listing: dict[str, Any],
    *,
    intervals: int,
    interval_s: float,
    settle_s: float,
) -> Window:
    receiver = await Child.start("receiver", "--mode", mode)
    try:
        await receiver.send(json.dumps(listing))
        await receiver.read(timeout_s=60 + 0.2 * len(listing["nodes"]))
        await asyncio.sleep(settle_s)

        async def received() -> int:
            return int((await receiver.stats())["received"])

        return await _window(
            nodes, receiver.ps, intervals=intervals, interval_s=interval_s, received=received
        )
    finally:
        await receiver.close()


async def _size(
    count: int,
    *,
    receivers: Sequence[str],
    with_ha: bool,
    intervals: int,
    interval_s: float,
    settle_s: float,
    ping: dict[str, float] | None,
) -> tuple[dict[str, Window], str | None]:
    """The windows of every receiver at ``count`` nodes, and why Home Assistant failed (if)."""
    windows: dict[str, Window] = {}
    failure: str | None = None
    nodes = await Child.start("nodes", "--count", str(count), "--push-s", str(PUSH_S))
    try:
        listing = await nodes.read(timeout_s=60 + 0.1 * count)
        for mode in receivers:
            windows[mode] = await _receiver_window(
                mode,
                nodes,
                listing,
                intervals=intervals,
                # No recorder in these receivers: half-length intervals suffice.
                interval_s=interval_s / 2,
                settle_s=settle_s,
            )
        if with_ha:
            addresses = [NodeAddress(**node) for node in listing["nodes"]]
            with tempfile.TemporaryDirectory(prefix="peergrid-fanin-") as workdir:
                try:
                    async with home_assistant(
                        addresses, workdir=Path(workdir), timeout_s=300 + 1.0 * count
                    ) as ha:
                        await asyncio.sleep(settle_s)
                        windows["ha"] = await _window(
                            nodes,
                            psutil.Process(ha.pid),
                            intervals=intervals,
                            interval_s=interval_s,
                        )
                        if ping is not None:
                            ping.update(
                                await _ping_benchmark(
                                    ha.session,
                                    ha.url,
                                    ha.pid,
                                    rounds=2 if intervals > 1 else 1,
                                    duration_s=min(interval_s, 3.0),
                                )
                            )
                except HomeAssistantError as err:
                    failure = str(err)
    finally:
        await nodes.close()
    return windows, failure


def _slopes(windows: dict[int, dict[str, Window]]) -> dict[str, float]:
    """Memory and CPU per node between each receiver's smallest and largest size."""
    result: dict[str, float] = {}
    for name in ("floor", "core", "ha"):
        sizes = sorted(count for count, by_name in windows.items() if name in by_name)
        if len(sizes) < 2:
            continue
        low, high = sizes[0], sizes[-1]
        a, b = windows[low][name], windows[high][name]
        cpu_a = statistics.median(a.cpu_share) / 100
        cpu_b = statistics.median(b.cpu_share) / 100
        push_a = statistics.median(a.pushes_per_s)
        push_b = statistics.median(b.pushes_per_s)
        marginal = 1e6 * (cpu_b - cpu_a) / (push_b - push_a) if push_b > push_a else float("nan")
        result[f"{name}_mem_per_node_kib"] = (b.rss_mib - a.rss_mib) * 1024 / (high - low)
        result[f"{name}_marginal_cpu_us_per_push"] = marginal
        result[f"{name}_est_nodes_per_core"] = ratio(1e6, marginal) * PUSH_S
    for name in ("core", "ha"):
        if (
            f"{name}_marginal_cpu_us_per_push" in result
            and "floor_marginal_cpu_us_per_push" in result
        ):
            result[f"{name}_cpu_per_push_vs_floor"] = ratio(
                result[f"{name}_marginal_cpu_us_per_push"], result["floor_marginal_cpu_us_per_push"]
            )
    if "ha_marginal_cpu_us_per_push" in result and "core_marginal_cpu_us_per_push" in result:
        result["ha_cpu_per_push_vs_core"] = ratio(
            result["ha_marginal_cpu_us_per_push"], result["core_marginal_cpu_us_per_push"]
        )
    return result


async def measure(scale: Scale, *, with_home_assistant: bool | None = None) -> dict[str, float]:
    """Every receiver at every size of the scale, then the HTTP ping load.

    Home Assistant runs at 50 nodes too (besides the issue's 10, 100 and
    1,000) so that its per-node slopes exist while larger grids fail to set up.
    """
    receiver_sizes = scale.pick((5,), (10, 100), (10, 100, 1000))
    ha_sizes = scale.pick((), (10, 50, 100), (10, 50, 100, 1000))
    if with_home_assistant is False:
        ha_sizes = ()
    elif with_home_assistant and not ha_sizes:
        ha_sizes = receiver_sizes
    intervals = scale.pick(1, 2, 4)
    # Five seconds: Home Assistant's recorder commits every 5 s, so each
    # interval carries one commit and the intervals compare.
    interval_s = scale.pick(0.5, 5.0, 5.0)
    settle_s = scale.pick(0.2, 2.5, 3.0)
    windows: dict[int, dict[str, Window]] = {}
    ping: dict[str, float] = {}
    failures: dict[str, float] = {}
    for count in sorted({*receiver_sizes, *ha_sizes}):
        windows[count], failure = await _size(
            count,
            receivers=("floor", "core") if count in receiver_sizes else (),
            with_ha=count in ha_sizes,
            intervals=intervals,
            interval_s=interval_s,
            settle_s=settle_s,
            ping=ping if count in ha_sizes and not ping else None,
        )
        if count in ha_sizes:
            failures[f"ha_{count}_failed"] = 0.0 if failure is None else 1.0
        if failure is not None:
            print(f"   Home Assistant with {count} nodes failed: {brief(failure)}", file=sys.stderr)
    return merge(
        {"push_period_s": float(PUSH_S)},
        failures,
        *(
            _window_metrics(name, count, window)
            for count, by_name in windows.items()
            for name, window in by_name.items()
        ),
        _slopes(windows),
        ping,
    )


async def run(full: bool, *, smoke: bool = False) -> dict[str, float]:
    """Entry point for ``python -m bench``."""
    return await measure(Scale.of(full, smoke))


def main() -> None:
    """Run alone: ``python -m bench.telemetry_fanin [--full] [--no-ha]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-ha", action="store_true", help="leave Home Assistant out")
    args = parser.parse_args()
    scale = Scale.of(args.full, args.smoke)
    with contextlib.suppress(KeyboardInterrupt):
        result = asyncio.run(measure(scale, with_home_assistant=False if args.no_ha else None))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
