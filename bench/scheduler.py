"""Scheduler: how long the auto-balance plan takes for 10 to 100,000 nodes, and how it grows.

:meth:`peergrid_core.balancer.SocBalancer.plan` is timed on snapshots of
``n`` nodes with states of charge drawn uniformly from 0-100 % (seeded), 95 %
of them online and 90 % with auto-balance on, so about a third are donors or
receivers and the plan has thousands of pairs at the large sizes. Building the
:class:`~peergrid_core.balancer.NodeSoc` snapshot (validation included) is
timed separately: the integration builds one per plan.

Baseline, same data, same run: ``sorted()`` of the plain SoC floats, the
O(n log n) floor any SoC-ordered plan pays. ``plan_vs_sort`` is how many
such sorts one plan costs. ``growth_exponent`` is the least-squares slope of
log(time) over log(n) from 1,000 nodes up (the small sizes are dominated by
fixed costs): 1.0 is linear, 1.1 is the n log n of a sort at these sizes.

Pure CPU in this process; nothing waits on I/O.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from functools import partial
import json
import random
import statistics
import time
from typing import Final

from peergrid_core.balancer import NodeSoc, SocBalancer

from ._stats import Scale, growth_exponent, merge, ratio, spread

TIME_BUDGET_S: Final = 1.5
"""Time per size and method; at least three repetitions whatever it costs."""


def snapshot(count: int, seed: int = 1) -> list[NodeSoc]:
    """``count`` nodes: uniform SoC, 95 % online, 90 % with auto-balance."""
    rng = random.Random(seed)
    return [
        NodeSoc(
            uid=f"NODE_{index:07d}",
            soc_pct=round(rng.uniform(0.0, 100.0), 1),
            online=rng.random() < 0.95,
            auto_balance=rng.random() < 0.90,
        )
        for index in range(count)
    ]


def _repeat(work: Callable[[], object], budget_s: float, minimum: int = 3) -> list[float]:
    """Seconds per call of ``work()``, repeated for about ``budget_s``."""
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < minimum or (time.perf_counter() < deadline and len(times) < 10_000):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


def measure(scale: Scale) -> dict[str, float]:
    """Time plan, snapshot build and the sort baseline at each size."""
    sizes = scale.pick(
        (10, 1_000), (10, 100, 1_000, 10_000, 100_000), (10, 100, 1_000, 10_000, 100_000, 1_000_000)
    )
    budget = scale.pick(0.05, TIME_BUDGET_S, 2 * TIME_BUDGET_S)
    balancer = SocBalancer()
    parts: list[dict[str, float]] = []
    growth: list[tuple[float, float]] = []
    for count in sizes:
        build = _repeat(partial(snapshot, count), budget / 2, minimum=1)
        nodes = snapshot(count)
        socs = [node.soc_pct for node in nodes]
        plan_s = _repeat(partial(balancer.plan, nodes), budget)
        sort_s = _repeat(partial(sorted, socs), budget / 2)
        plan = balancer.plan(nodes)
        plan_ms = statistics.median(plan_s) * 1000
        if count >= 1_000:
            growth.append((count, plan_ms))
        parts += [
            spread(f"plan_{count}_ms", [t * 1000 for t in plan_s]),
            {
                f"plan_{count}_pairs": float(len(plan.pairs)),
                f"snapshot_{count}_ms": statistics.median(build) * 1000,
                f"sort_baseline_{count}_ms": statistics.median(sort_s) * 1000,
                f"plan_vs_sort_{count}": ratio(plan_ms, statistics.median(sort_s) * 1000),
                f"plan_{count}_us_per_node": plan_ms * 1000 / count,
            },
        ]
    parts.append({"growth_exponent": growth_exponent(growth)})
    return merge(*parts)


async def run(full: bool, *, smoke: bool = False) -> dict[str, float]:
    """Entry point for ``python -m bench`` (CPU only; runs in a worker thread)."""
    return await asyncio.to_thread(measure, Scale.of(full, smoke))


def main() -> None:
    """Run alone: ``python -m bench.scheduler [--full]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    print(json.dumps(measure(Scale.of(args.full, args.smoke)), indent=2))


if __name__ == "__main__":
    main()
