"""Command line of the simulator: ``python -m peergrid_core.sim``.

Starts a :class:`~.grid.SimulatedGrid`, prints each node's address and key,
then one line per node every ``--interval`` seconds (state of charge,
voltage, current, relay contacts, the firmware's mode and energy counters),
until Ctrl-C, SIGTERM or ``--duration`` simulated seconds. Relays are opened
and servers closed before it exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import contextlib
import json
import random
import signal
import sys
from typing import Any, TextIO

from ..errors import PeerGridError, PeerGridValidationError
from .grid import DEFAULT_HOST, DEFAULT_STEP_S, FirmwareNotFoundError, NodeSpec, SimulatedGrid
from .physics import JOULES_PER_WH

EXIT_OK = 0
EXIT_USAGE = 2


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from err


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="python -m peergrid_core.sim",
        description=(
            "Run virtual PeerGrid nodes: the node firmware on simulated batteries, "
            "each behind a TCP server."
        ),
    )
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    parser.add_argument(
        "--capacity",
        type=_float_list,
        default=[2.5],
        metavar="AH[,AH...]",
        help="cell capacity in Ah: one value for all nodes or one per node (default 2.5)",
    )
    parser.add_argument(
        "--soc",
        default="20-90",
        metavar="PCT[,PCT...]|LOW-HIGH",
        help="start state of charge: a list (one per node, or one for all) or a "
        "random range LOW-HIGH drawn with --seed (default 20-90)",
    )
    parser.add_argument(
        "--speedup",
        type=float,
        default=1.0,
        help="simulated seconds per wall-clock second (default 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed for noise, keys and --soc ranges"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=0,
        help="node i listens on BASE+i; 0 picks free ports (default)",
    )
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--key", default=None, help="one pre-shared key (16-64 bytes) for every node")
    auth.add_argument(
        "--no-auth", action="store_true", help="run the nodes without a key (bench protocol)"
    )
    parser.add_argument(
        "--bench-mode",
        action="store_true",
        help="accept plain-text SUPPLY/RECEIVE/IDLE lines (only with --no-auth)",
    )
    parser.add_argument(
        "--step", type=float, default=DEFAULT_STEP_S, help="physics step in simulated seconds"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="wall-clock seconds between summaries"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many simulated seconds (default: run until interrupted)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print machine-readable JSON lines instead of text"
    )
    return parser


def _start_socs(text: str, count: int, seed: int | None) -> list[float]:
    """Parse ``--soc``: ``a,b,c`` (one per node or one for all) or ``low-high``."""
    low_high = text.split("-")
    if len(low_high) == 2 and "," not in text:
        try:
            low, high = float(low_high[0]), float(low_high[1])
        except ValueError as err:
            raise PeerGridValidationError("soc", f"{text!r} is not LOW-HIGH") from err
        if not 0.0 <= low <= high <= 100.0:
            raise PeerGridValidationError("soc", f"{text!r} must satisfy 0 <= LOW <= HIGH <= 100")
        rng = random.Random(f"{seed}/soc") if seed is not None else random.Random()
        return [round(rng.uniform(low, high), 1) for _ in range(count)]
    try:
        values = _float_list(text)
    except argparse.ArgumentTypeError as err:
        raise PeerGridValidationError("soc", str(err)) from err
    return _per_node("soc", values, count)


def _per_node(field: str, values: list[float], count: int) -> list[float]:
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise PeerGridValidationError(field, f"give one value or {count}, not {len(values)}")
    return values


def _uid(index: int) -> str:
    """``NODE_A`` ... ``NODE_Z``, then ``NODE_AA`` ..."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return f"NODE_{letters}"


def specs_from_args(args: argparse.Namespace) -> list[NodeSpec]:
    """Turn parsed arguments into node specs; bad values name their option."""
    count: int = args.nodes
    if not 1 <= count <= 64:
        raise PeerGridValidationError("nodes", f"{count} is outside 1..64")
    if args.bench_mode and not args.no_auth:
        raise PeerGridValidationError("bench_mode", "plain-text commands need --no-auth")
    if args.base_port and not 1 <= args.base_port <= 65535 - count:
        raise PeerGridValidationError("base_port", f"{args.base_port} leaves no room for {count}")
    capacities = _per_node("capacity", args.capacity, count)
    socs = _start_socs(args.soc, count, args.seed)
    key: str | None = "" if args.no_auth else args.key
    return [
        NodeSpec(
            uid=_uid(i),
            key=key,
            capacity_ah=capacities[i],
            soc_percent=socs[i],
            port=args.base_port + i if args.base_port else 0,
            bench_mode=args.bench_mode,
        )
        for i in range(count)
    ]


def _node_row(grid: SimulatedGrid, uid: str) -> dict[str, Any]:
    node = grid.nodes[uid]
    state = node.physical
    energy = state.energy
    return {
        "uid": uid,
        "port": node.port,
        "running": node.running,
        "mode": node.mode,
        "contacts": state.mode.value,
        "soc_percent": round(state.soc_percent, 2),
        "terminal_volts": round(state.terminal_volts, 3),
        "cell_amps": round(state.cell_amps, 3),
        "charger": state.charger_state.value,
        "converter": state.converter_state.value,
        "out_wh": round(energy.terminal_out_j / JOULES_PER_WH, 4),
        "in_wh": round(energy.terminal_in_j / JOULES_PER_WH, 4),
        "losses_wh": round(energy.losses_j / JOULES_PER_WH, 4),
    }


def _print_header(grid: SimulatedGrid, args: argparse.Namespace, out: TextIO) -> None:
    nodes = [
        {
            "uid": node.uid,
            "host": node.host,
            "port": node.port,
            "key": node.key,
            "capacity_ah": node.physics.params.cell.capacity_ah,
            "soc_percent": node.spec.soc_percent,
        }
        for node in grid.nodes.values()
    ]
    if args.json:
        body = {"event": "started", "speedup": grid.speedup, "seed": grid.seed, "nodes": nodes}
        print(json.dumps(body), file=out, flush=True)
        return
    print(
        f"PeerGrid simulator: {len(nodes)} nodes, speed-up x{grid.speedup:g}, "
        f"seed {grid.seed}; Ctrl-C stops.",
        file=out,
    )
    for row in nodes:
        key = row["key"] or "(no key)"
        print(
            f"  {row['uid']:<8} {row['host']}:{row['port']:<5}  key {key}  "
            f"{row['capacity_ah']:g} Ah  start {row['soc_percent']:.1f} %",
            file=out,
        )
    out.flush()


def _print_summary(grid: SimulatedGrid, args: argparse.Namespace, out: TextIO, event: str) -> None:
    rows = [_node_row(grid, uid) for uid in grid.nodes]
    if args.json:
        body = {"event": event, "time_s": round(grid.time_s, 1), "nodes": rows}
        print(json.dumps(body), file=out, flush=True)
        return
    for row in rows:
        print(
            f"t={grid.time_s:9.1f}s {row['uid']:<8} SoC {row['soc_percent']:6.2f} % "
            f"{row['terminal_volts']:6.3f} V {row['cell_amps']:+6.3f} A "
            f"{row['contacts']:<7} fw={row['mode'] or 'off':<7} "
            f"out {row['out_wh']:7.3f} Wh in {row['in_wh']:7.3f} Wh loss {row['losses_wh']:7.3f} Wh",
            file=out,
        )
    out.flush()


async def run(args: argparse.Namespace, *, out: TextIO = sys.stdout) -> int:
    """Run the grid described by ``args`` until a signal or ``--duration``."""
    specs = specs_from_args(args)
    if not 0.05 <= args.interval <= 3600:
        raise PeerGridValidationError("interval", f"{args.interval} is outside 0.05..3600")
    if args.duration is not None and args.duration <= 0:
        raise PeerGridValidationError("duration", "must be positive")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        grid = SimulatedGrid(
            specs, speedup=args.speedup, seed=args.seed, step_s=args.step, host=args.host
        )
        async with grid:
            _print_header(grid, args, out)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.interval):
                        await stop.wait()
                _print_summary(grid, args, out, "summary")
                if args.duration is not None and grid.time_s >= args.duration:
                    break
        _print_summary(grid, args, out, "stopped")
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run(args))
    except FirmwareNotFoundError as err:
        sys.stderr.write(f"error: {err}\n")
        return EXIT_USAGE
    except PeerGridValidationError as err:
        sys.stderr.write(f"error: --{err.field.replace('_', '-')}: {err.message}\n")
        return EXIT_USAGE
    except PeerGridError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
