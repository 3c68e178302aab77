"""Command latency: from a controller's command to the relay switched on a simulated node.

What is timed (``time.perf_counter`` in this process, which also runs the
simulated nodes, so the relay's moment is read on the same clock):

* **core**: PeerGrid's :class:`~peergrid_core.protocol.NodeClient` (the code
  the integration uses) sends an authenticated ``cmd`` over loopback TCP to
  a simulated node running the real firmware (HMAC check, sequence check,
  command rules, break-before-make relay switching, signed ack). ``on`` is
  IDLE -> SUPPLY, whose relay closes after the firmware's dead time; ``off``
  is SUPPLY -> IDLE, whose relay opens at once. ``relay`` is the moment the
  firmware drives the pin, ``ack`` the moment the client holds the verified
  acknowledgement.
* **ha**: the same through Home Assistant 2025.4 in its own process: a REST
  ``select.select_option`` on the node's Mode select (``discharge`` /
  ``idle``), through the integration's coordinator and lease keeper to the
  node. ``ack`` is the REST answer (Home Assistant answers once the action has
  completed). ``ha_rest_floor`` is the same REST round trip for an action
  that does nothing but fire an event: what Home Assistant itself costs.
* **baselines** in the same run, same process, same loopback: a raw asyncio
  TCP line echo (the floor), python-socketio events with acknowledgement over
  a WebSocket (the paper's stack shape) and one HTTP POST per message.
  ``one_way`` is the server handler's moment, ``rtt`` the reply's.

The node's dead time is set to 20 ms (the firmware's minimum; default 100 ms)
so that a thousand switch-ons fit in a quick run: ``on`` figures include it,
``off`` figures have no dead time. Not included anywhere: Wi-Fi, the ESP32's
MicroPython speed (docs/protocol.md has a note), a browser or dashboard.

Rounds alternate the stacks so that machine noise hits them alike; the
percentiles pool every sample, ``_lo``/``_hi`` give the per-round range.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
import contextlib
import json
from pathlib import Path
import tempfile
import time
from typing import Final

from peergrid_core.protocol import Mode, NodeClient
from peergrid_core.sim import Relay, SimulatedGrid

from ._baselines import BASELINES, command_body
from ._home_assistant import NodeAddress, RunningHomeAssistant, home_assistant
from ._sim import RelayProbe, node_specs
from ._stats import Scale, merge, percentile, pooled_latency, ratio

PAPER_AVERAGE_MS: Final = 180.0
"""The paper's average end-to-end message latency (ESP8266, Socket.IO, Wi-Fi)."""
DEAD_MS: Final = 20
LEASE_S: Final = 30

type Samples = dict[str, list[float]]


def _ms(start: float, end: float) -> float:
    return (end - start) * 1000.0


async def _switch(
    probe: RelayProbe,
    send: Callable[[], Awaitable[object]],
    level: int,
    samples: Samples,
    name: str,
) -> None:
    switched = probe.expect(Relay.SUPPLY, level)
    started = time.perf_counter()
    await send()
    answered = time.perf_counter()
    change = await asyncio.wait_for(switched, 10)
    samples[f"{name}_relay"].append(_ms(started, change.wall_s))
    samples[f"{name}_ack"].append(_ms(started, answered))


async def _core_round(client: NodeClient, probe: RelayProbe, pairs: int) -> Samples:
    samples: Samples = {"on_relay": [], "on_ack": [], "off_relay": [], "off_ack": []}
    for _ in range(pairs):
        await _switch(probe, lambda: client.command(Mode.SUPPLY, lease_s=LEASE_S), 1, samples, "on")
        await _switch(probe, lambda: client.command(Mode.IDLE), 0, samples, "off")
    return samples


async def _ha_round(
    ha: RunningHomeAssistant, entity_id: str, probe: RelayProbe, pairs: int
) -> Samples:
    samples: Samples = {
        "on_relay": [],
        "on_ack": [],
        "off_relay": [],
        "off_ack": [],
        "rest_floor": [],
    }

    def select(option: str) -> Awaitable[None]:
        return ha.call_service(
            "select", "select_option", {"entity_id": entity_id, "option": option}
        )

    for _ in range(pairs):
        await _switch(probe, lambda: select("discharge"), 1, samples, "on")
        await _switch(probe, lambda: select("idle"), 0, samples, "off")
        started = time.perf_counter()
        async with ha.session.post(f"{ha.url}/api/events/peergrid_bench", json={}) as response:
            await response.read()
        samples["rest_floor"].append(_ms(started, time.perf_counter()))
    return samples


async def _baseline_round(stack_type: type, messages: int) -> Samples:
    samples: Samples = {"one_way": [], "rtt": []}
    async with stack_type() as stack:
        for sequence in range(10):  # warm up connections and caches
            await stack.call(command_body(sequence))
        for sequence in range(messages):
            started = time.perf_counter()
            received = await stack.call(command_body(sequence))
            samples["rtt"].append(_ms(started, time.perf_counter()))
            samples["one_way"].append(_ms(started, received))
    return samples


def _mode_entity(states: list[dict[str, object]], uid: str) -> str:
    wanted = f"select.{uid.lower()}_mode"
    for state in states:
        if state["entity_id"] == wanted:
            return wanted
    raise RuntimeError(f"Home Assistant has no {wanted}")


async def measure(scale: Scale, *, with_home_assistant: bool | None = None) -> dict[str, float]:
    """Run every stack for the scale's rounds; the result dict (see the module docstring)."""
    rounds = scale.pick(1, 5, 10)
    pairs = scale.pick(5, 100, 100)
    ha_pairs = scale.pick(0, 40, 100)
    use_ha = scale is not Scale.SMOKE if with_home_assistant is None else with_home_assistant
    specs = node_specs(2, prefix="LAT", config={"timing": {"dead_ms": DEAD_MS}})
    core: list[Samples] = []
    ha_rounds: list[Samples] = []
    baselines: dict[str, list[Samples]] = {stack.name: [] for stack in BASELINES}
    async with contextlib.AsyncExitStack() as resources:
        grid = await resources.enter_async_context(SimulatedGrid(specs, speedup=1, seed=7))
        core_node, ha_node = grid.nodes[specs[0].uid], grid.nodes[specs[1].uid]
        core_probe = RelayProbe(grid, core_node)
        client = await resources.enter_async_context(
            NodeClient(core_node.host, core_node.port, core_node.key_bytes)
        )
        # Warm-up: the first commands pay for imports and validator builds.
        await _core_round(client, core_probe, 5)
        ha: RunningHomeAssistant | None = None
        entity_id = ""
        ha_probe = RelayProbe(grid, ha_node)
        if use_ha:
            workdir = resources.enter_context(tempfile.TemporaryDirectory(prefix="peergrid-"))
            address = NodeAddress(
                uid=ha_node.uid, host=ha_node.host, port=ha_node.port, key=ha_node.key
            )
            ha = await resources.enter_async_context(
                home_assistant([address], workdir=Path(workdir))
            )
            entity_id = _mode_entity(await ha.states(), ha_node.uid)
            await _ha_round(ha, entity_id, ha_probe, 5)
        for _ in range(rounds):
            for stack in BASELINES:
                baselines[stack.name].append(await _baseline_round(stack, 2 * pairs))
            core.append(await _core_round(client, core_probe, pairs))
            if ha is not None:
                ha_rounds.append(await _ha_round(ha, entity_id, ha_probe, ha_pairs))
    return _results(core, ha_rounds, baselines, pairs=pairs, ha_pairs=ha_pairs, rounds=rounds)


def _series(rounds: list[Samples], key: str) -> list[list[float]]:
    return [samples[key] for samples in rounds]


def _results(
    core: list[Samples],
    ha_rounds: list[Samples],
    baselines: dict[str, list[Samples]],
    *,
    pairs: int,
    rounds: int,
    ha_pairs: int,
) -> dict[str, float]:
    parts: list[dict[str, float]] = [
        {
            "core_commands": float(2 * pairs * rounds),
            "ha_commands": float(2 * ha_pairs * len(ha_rounds)),
            "dead_ms": float(DEAD_MS),
        }
    ]
    for key in ("on_relay", "on_ack", "off_relay", "off_ack"):
        parts.append(pooled_latency(f"core_{key}", _series(core, key)))
        if ha_rounds:
            parts.append(pooled_latency(f"ha_{key}", _series(ha_rounds, key)))
    if ha_rounds:
        parts.append(pooled_latency("ha_rest_floor", _series(ha_rounds, "rest_floor")))
    for name, samples in baselines.items():
        parts.append(pooled_latency(f"{name}_one_way", _series(samples, "one_way")))
        parts.append(pooled_latency(f"{name}_rtt", _series(samples, "rtt")))
    result = merge(*parts)
    ratios: dict[str, float] = {}
    for name in baselines:
        for tag in ("p50", "p99"):
            ratios[f"core_off_relay_vs_{name}_one_way_{tag}"] = ratio(
                result[f"core_off_relay_{tag}_ms"], result[f"{name}_one_way_{tag}_ms"]
            )
            ratios[f"core_off_ack_vs_{name}_rtt_{tag}"] = ratio(
                result[f"core_off_ack_{tag}_ms"], result[f"{name}_rtt_{tag}_ms"]
            )
    everything = [v for samples in core for v in samples["off_relay"]]
    ratios["core_off_relay_mean_vs_paper"] = ratio(
        sum(everything) / len(everything), PAPER_AVERAGE_MS
    )
    if ha_rounds:
        ha_off = [v for samples in ha_rounds for v in samples["off_relay"]]
        ratios["ha_off_relay_mean_vs_paper"] = ratio(sum(ha_off) / len(ha_off), PAPER_AVERAGE_MS)
        ha_on = [v for samples in ha_rounds for v in samples["on_relay"]]
        ratios["ha_on_relay_mean_vs_paper"] = ratio(sum(ha_on) / len(ha_on), PAPER_AVERAGE_MS)
        ratios["ha_off_relay_vs_rest_floor_p50"] = ratio(
            result["ha_off_relay_p50_ms"], result["ha_rest_floor_p50_ms"]
        )
        ratios["ha_off_relay_vs_core_off_relay_p50"] = ratio(
            result["ha_off_relay_p50_ms"], result["core_off_relay_p50_ms"]
        )
        ratios["ha_off_relay_vs_socketio_rtt_p50"] = ratio(
            result["ha_off_relay_p50_ms"], result["socketio_rtt_p50_ms"]
        )
    # A cross-check worth having in the table: the on-relay minus the dead time.
    on = [v for samples in core for v in samples["on_relay"]]
    ratios["core_on_relay_minus_dead_p50_ms"] = percentile(on, 0.5) - DEAD_MS
    return merge(result, ratios)


async def run(full: bool, *, smoke: bool = False) -> dict[str, float]:
    """Entry point for ``python -m bench``."""
    return await measure(Scale.of(full, smoke))


def main() -> None:
    """Run alone: ``python -m bench.command_latency [--full] [--no-ha]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--no-ha", action="store_true", help="leave Home Assistant out")
    args = parser.parse_args()
    scale = Scale.of(args.full, args.smoke)
    result = asyncio.run(measure(scale, with_home_assistant=False if args.no_ha else None))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
