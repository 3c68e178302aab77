"""Profile Home Assistant under a benchmark's load: ``python -m bench._profile``.

Starts N simulated nodes pushing every second (a child process) and Home
Assistant with one PeerGrid entry per node (as the fan-in benchmark does),
then samples Home Assistant's process with py-spy for ``--seconds``, while it
only takes the pushes (``--load fanin``) or while 8 clients also POST node-data
pings (``--load ping``). Writes py-spy's collapsed stacks and prints the
functions with the most samples, inclusive and self::

    .venv/bin/python -m bench._profile --nodes 50 --seconds 10 --load fanin

py-spy reads another process's memory: it runs as root here, elsewhere it
may need ``sudo`` or ``kernel.yama.ptrace_scope=0``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile

import psutil

from ._home_assistant import NodeAddress, home_assistant
from ._process import Child
from .telemetry_fanin import http_load, node_data_ping


def _frame(entry: str) -> str:
    """``func (file.py:12)`` -> ``func file.py``."""
    name, _, where = entry.partition(" (")
    return f"{name} {where.split(':')[0]}".strip()


def summarise(collapsed: Path, top: int = 40) -> str:
    """The functions with the most samples in py-spy's collapsed (``raw``) output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_frame(entry) for entry in stack.split(";")]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{total} samples (busy only)", "-- inclusive"]
    lines += [f"{100 * n / total:5.1f}% {name}" for name, n in inclusive.most_common(top)]
    lines.append("-- self")
    lines += [f"{100 * n / total:5.1f}% {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(lines)


async def profile(nodes: int, seconds: float, load: str, output: Path) -> None:
    """Run the load and sample Home Assistant; writes ``output`` (collapsed stacks)."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (it is in requirements/dev.in)")
    children = await Child.start("nodes", "--count", str(nodes), "--push-s", "1")
    try:
        listing = await children.read(timeout_s=60 + 0.1 * nodes)
        addresses = [NodeAddress(**node) for node in listing["nodes"]]
        with tempfile.TemporaryDirectory(prefix="peergrid-profile-") as workdir:
            async with home_assistant(addresses, workdir=Path(workdir)) as ha:
                await asyncio.sleep(3)
                sampler = await asyncio.create_subprocess_exec(
                    spy,
                    "record",
                    "--pid",
                    str(ha.pid),
                    "--duration",
                    str(round(seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(output),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                if load == "ping":
                    await http_load(
                        ha.session,
                        f"{ha.url}/api/peergrid/iot/ping",
                        node_data_ping(),
                        psutil.Process(ha.pid),
                        duration_s=seconds,
                    )
                await sampler.wait()
    finally:
        await children.close()


def main() -> None:
    """Parse the options, profile, print the summary."""
    parser = argparse.ArgumentParser(prog="python -m bench._profile", description=__doc__)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--load", choices=("fanin", "ping"), default="fanin")
    parser.add_argument("--output", type=Path, default=Path("bench/results/profile.txt"))
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(profile(args.nodes, args.seconds, args.load, args.output))
    print(summarise(args.output))


if __name__ == "__main__":
    main()
