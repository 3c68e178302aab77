"""Child processes of the demo: started in their own session, stopped in order, never left behind.

Each child gets its own process group (Ctrl-C in the terminal reaches only the
demo, which then stops the children in the right order) and, on Linux, asks
the kernel to send it SIGTERM should the demo itself die without cleaning up.
Stopping sends SIGTERM to the whole group, waits, and kills what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
import contextlib
import ctypes
import ctypes.util
from dataclasses import dataclass
import os
from pathlib import Path
import signal
import subprocess
import sys
from typing import Final

__all__ = ["Child", "start_child", "stop_child"]

_PR_SET_PDEATHSIG: Final = 1
# Loaded before any fork: the child must not load libraries between fork and exec.
_LIBC: Final = (
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if sys.platform.startswith("linux")
    else None
)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel for SIGTERM when the demo (our parent) exits."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Child:
    """A running child process and where its output goes."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id)."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the child has not exited yet."""
        return self.process.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the child's output, for an error message."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


async def start_child(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str],
) -> Child:
    """Start ``argv`` with its output in ``log_path``, in a session of its own."""
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            # prctl is one system call: safe between fork and exec.
            preexec_fn=_die_with_parent,
        )
    return Child(name=name, process=process, log_path=log_path)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def stop_child(child: Child, *, timeout_s: float) -> int:
    """SIGTERM the child's group, wait up to ``timeout_s``, then SIGKILL; return its exit status."""
    if child.running:
        _signal_group(child.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                await child.process.wait()
        except TimeoutError:
            _signal_group(child.pid, signal.SIGKILL)
            await child.process.wait()
        # Anything the child started in its group goes with it.
        _signal_group(child.pid, signal.SIGKILL)
    returncode = child.process.returncode
    assert returncode is not None  # noqa: S101 - waited for above
    return returncode
