"""Child processes seen from the benchmark: start, talk JSON lines, read CPU and memory.

:class:`Child` runs ``python -m bench._children KIND`` (see that module) in a
session of its own that dies with the benchmark; :func:`cpu_s` and
:func:`rss_mib` read any process's CPU time and resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
import subprocess
import sys
from typing import Any, Final, Self

import psutil

from ._home_assistant import die_with_parent

ROOT: Final = Path(__file__).resolve().parents[1]
LINE_LIMIT: Final = 1 << 24


class ChildError(RuntimeError):
    """A child process did not start or stopped answering."""


class Child:
    """A ``bench._children`` process: JSON lines on stdout, ``stats`` requests on stdin."""

    def __init__(self, process: asyncio.subprocess.Process, kind: str) -> None:
        """Wrap a started process; use :meth:`start`."""
        self.process = process
        self.kind = kind
        self.ps = psutil.Process(process.pid)

    @classmethod
    async def start(cls, kind: str, *args: str) -> Self:
        """Start ``python -m bench._children KIND ARGS``."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench._children",
            kind,
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            limit=LINE_LIMIT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        return cls(process, kind)

    async def read(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """The next JSON line the child prints."""
        assert self.process.stdout is not None  # noqa: S101 - opened with a pipe
        try:
            async with asyncio.timeout(timeout_s):
                line = await self.process.stdout.readline()
        except TimeoutError as err:
            raise ChildError(f"{self.kind} did not answer within {timeout_s} s") from err
        if not line:
            raise ChildError(f"{self.kind} exited with {await self.process.wait()}")
        body: dict[str, Any] = json.loads(line)
        return body

    async def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        assert self.process.stdin is not None  # noqa: S101 - opened with a pipe
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def stats(self) -> dict[str, Any]:
        """Ask for the child's counters."""
        await self.send("stats")
        return await self.read(30.0)

    async def close(self) -> None:
        """Close stdin (the child's signal to stop), then wait; kill after 20 s."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(20):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def cpu_s(process: psutil.Process) -> float:
    """CPU seconds of every thread of ``process`` so far.

    On Linux the scheduler's own nanosecond counters (``schedstat`` of each
    thread); the tick-based ``cpu_times`` (10 ms steps) is too coarse for a
    receiver that spends a few ms per second.
    """
    tasks = Path(f"/proc/{process.pid}/task")
    if tasks.is_dir():
        total = 0
        for task in tasks.iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    times = process.cpu_times()
    return float(times.user + times.system)


def rss_mib(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / (1 << 20)
