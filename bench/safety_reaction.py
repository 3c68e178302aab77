"""Safety reaction: how fast a node stops a transfer on its own, on the simulator's clock.

Every figure is in simulated milliseconds, the node's own ``ticks_ms`` (the
simulator runs at speed-up 1, so they are also wall milliseconds, but they
are read from the node's clock, which is what the firmware's rules use).

* **low voltage**: a node supplies (relay SUPPLY closed) under PeerGrid's
  default rules (cut-off 3300 mV, three samples in a row, 20 ms sampling
  while a relay is closed). An internal short drops the cell's open-circuit
  voltage to 3.20 V at once; the time runs from that crossing to the moment
  the firmware drives the SUPPLY pin low (and its ``trip`` event names
  ``low_voltage``).
* **5 s sampling baseline** (the paper's design: nodes send data every 5 s,
  the server checks the limit and answers with a control message), measured
  in the same run on the same simulator: a controller polls the node's status
  every 5 s and sends IDLE when it sees less than 3300 mV. The node's own
  cut-off is lowered to 3000 mV so that only the controller acts. The drop
  comes at a random moment of the polling cycle.
* **lease expiry**: the controller holds SUPPLY with a 1 s lease and goes
  silent (the connection stays up, nothing is renewed). The time runs from
  the end of the lease to the relay opening (``overshoot``), and from the
  last command to the relay opening (``silence_to_idle``). Home Assistant
  holds nodes with a 30 s lease renewed every 10 s, so a silent Home
  Assistant leaves its nodes IDLE 20-30 s plus this overshoot after its last
  renewal; the paper's design has no lease (a silent server leaves the relay
  on until its energy limit).

Not included: the relay's own release time (a few ms for a small signal
relay) and the INA219's conversion time (the simulated sensor answers with
the latest physics step).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
from typing import Final

from peergrid_core.protocol import Event, Mode, NodeClient, NodePush, TripReason
from peergrid_core.sim import Relay, SimNode, SimulatedGrid

from ._sim import RelayProbe, node_specs, running_grid
from ._stats import Latency, Scale, merge, ratio

CUTOFF_MV: Final = 3300
NODE_FLOOR_MV: Final = 3000
DROP_TO_VOLTS: Final = 3.20
BASELINE_PERIOD_S: Final = 5.0
BENCH_LEASE_S: Final = 1
HA_LEASE_S: Final = 30
HA_RENEW_S: Final = 10
SETTLE_S: Final = 0.3


def _drop(grid: SimulatedGrid, node: SimNode) -> float:
    """Short the cell down to DROP_TO_VOLTS; the simulated ms of the crossing."""
    volts = node.physics.cell.ocv_volts - DROP_TO_VOLTS
    crossed = grid.clock.now_ms()
    grid.inject_voltage_drop(node.uid, volts)
    return crossed


async def _low_voltage_trial(grid: SimulatedGrid, node: SimNode) -> float:
    probe = RelayProbe(grid, node)
    trips: list[TripReason] = []
    tripped = asyncio.Event()

    def on_push(push: NodePush) -> None:
        if isinstance(push, Event):
            trips.append(push.reason)
            tripped.set()

    async with NodeClient(node.host, node.port, node.key_bytes) as client:
        client.listen(on_push)
        await client.command(Mode.SUPPLY, lease_s=30)
        await asyncio.sleep(SETTLE_S)
        opened = probe.expect(Relay.SUPPLY, 0)
        crossed = _drop(grid, node)
        change = await asyncio.wait_for(opened, 10)
        # The trip event follows the relay; wait for it to be sure of the reason.
        await asyncio.wait_for(tripped.wait(), 5)
        if trips[0] is not TripReason.LOW_VOLTAGE:
            raise RuntimeError(f"node {node.uid} tripped for {trips[0]}, not low voltage")
    return change.sim_ms - crossed


async def _baseline_trial(grid: SimulatedGrid, node: SimNode, rng: random.Random) -> float:
    """A controller that samples every 5 s (simulated) and switches off below the cut-off."""
    probe = RelayProbe(grid, node)
    async with NodeClient(node.host, node.port, node.key_bytes) as client:
        # The node's own cut-off at its lowest, so that only the controller acts.
        await client.command(Mode.SUPPLY, lease_s=60, min_mv=NODE_FLOOR_MV)
        await asyncio.sleep(SETTLE_S)
        opened = probe.expect(Relay.SUPPLY, 0)

        async def controller() -> None:
            while True:
                status = await client.get_status()
                if status.mv is not None and status.mv < CUTOFF_MV:
                    await client.command(Mode.IDLE)
                    return
                await grid.sleep(BASELINE_PERIOD_S)

        task = asyncio.create_task(controller())
        try:
            await grid.sleep(rng.uniform(0.0, BASELINE_PERIOD_S))
            crossed = _drop(grid, node)
            change = await asyncio.wait_for(opened, 4 * BASELINE_PERIOD_S)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return change.sim_ms - crossed


async def _lease_trial(grid: SimulatedGrid, node: SimNode, delay_s: float) -> tuple[float, float]:
    """Hold SUPPLY with a short lease, then say nothing: (overshoot, silence_to_idle) in ms."""
    await asyncio.sleep(delay_s)
    probe = RelayProbe(grid, node)
    async with NodeClient(node.host, node.port, node.key_bytes) as client:
        opened = probe.expect(Relay.SUPPLY, 0)
        # The controller's last word is this command; silence starts as it is sent.
        silent_from = grid.clock.now_ms()
        await client.command(Mode.SUPPLY, lease_s=BENCH_LEASE_S)
        # The node's own record of when the lease began (its ticks_ms at the command).
        firmware = node.firmware
        lease_start = float(firmware._lease_start)  # type: ignore[union-attr]  # noqa: SLF001
        change = await asyncio.wait_for(opened, 10 * BENCH_LEASE_S)
    overshoot = change.sim_ms - (lease_start + BENCH_LEASE_S * 1000)
    return overshoot, change.sim_ms - silent_from


async def measure(scale: Scale) -> dict[str, float]:
    """Run the three experiments; results in simulated milliseconds."""
    trials = scale.pick(2, 10, 40)
    rng = random.Random(5)
    low = node_specs(trials, prefix="LOW")
    base = node_specs(trials, prefix="POLL", limits={"min_mv": NODE_FLOOR_MV})
    lease = node_specs(trials, prefix="LEASE")
    speedup = scale.pick(20.0, 1.0, 1.0)
    async with running_grid([*low, *base, *lease], speedup=speedup, seed=11) as grid:
        low_ms = [await _low_voltage_trial(grid, grid.nodes[spec.uid]) for spec in low]
        baseline_ms = await asyncio.gather(
            *(_baseline_trial(grid, grid.nodes[spec.uid], rng) for spec in base)
        )
        lease_pairs = await asyncio.gather(
            *(
                _lease_trial(grid, grid.nodes[spec.uid], index * BENCH_LEASE_S / trials)
                for index, spec in enumerate(lease)
            )
        )
    low_stats = Latency.of(low_ms)
    base_stats = Latency.of(list(baseline_ms))
    overshoot = Latency.of([pair[0] for pair in lease_pairs])
    silence = Latency.of([pair[1] for pair in lease_pairs])
    return merge(
        {"trials": float(trials)},
        low_stats.metrics("low_voltage"),
        base_stats.metrics("poll_5s_baseline"),
        {
            "low_voltage_vs_poll_5s_p50": ratio(low_stats.p50, base_stats.p50),
            "low_voltage_vs_poll_5s_p99": ratio(low_stats.p99, base_stats.p99),
            "low_voltage_vs_5s_period_max": ratio(low_stats.max, BASELINE_PERIOD_S * 1000),
        },
        overshoot.metrics("lease_overshoot"),
        silence.metrics(f"lease_{BENCH_LEASE_S}s_silence_to_idle"),
        {
            "ha_silence_to_idle_worst_ms": HA_LEASE_S * 1000 + overshoot.max,
            "ha_silence_to_idle_best_ms": (HA_LEASE_S - HA_RENEW_S) * 1000 + overshoot.p50,
        },
    )


async def run(full: bool, *, smoke: bool = False) -> dict[str, float]:
    """Entry point for ``python -m bench``."""
    return await measure(Scale.of(full, smoke))


def main() -> None:
    """Run alone: ``python -m bench.safety_reaction [--full]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(Scale.of(args.full, args.smoke))), indent=2))


if __name__ == "__main__":
    main()
