"""A real Home Assistant with the PeerGrid integration, in a child process, for the benchmarks.

Home Assistant runs the way a person runs it (``python -m homeassistant
--config DIR``), in its own process, so that its CPU time and memory can be
read from outside and the load generator or the simulated nodes (in the
benchmark's process) do not share its event loop. The configuration folder is
prepared before the start:

* ``configuration.yaml`` with only ``http`` (127.0.0.1), ``api``, ``config``
  and, unless turned off, ``recorder`` (SQLite, as in a default install);
* an owner account and a long-lived access token, created with Home
  Assistant's own auth manager in a bare core (as its ``--script auth`` does),
  and onboarding marked done;
* ``.storage/core.config_entries`` with one PeerGrid node entry per simulated
  node and the grid entry, as after the config flows ran;
* ``custom_components/peergrid``, a link to the repository's integration.

:func:`home_assistant` starts it, waits until Home Assistant reports
``RUNNING`` and every PeerGrid entry is ``loaded``, and stops it afterwards
(SIGTERM to the process group it started, SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
import contextlib
import ctypes
import ctypes.util
from dataclasses import dataclass
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Final

import aiohttp

ROOT: Final = Path(__file__).resolve().parents[1]
INTEGRATION: Final = ROOT / "custom_components" / "peergrid"
HOST: Final = "127.0.0.1"
READY_TIMEOUT_S: Final = 300.0
STOP_TIMEOUT_S: Final = 60.0
_POLL_S: Final = 0.05
_PR_SET_PDEATHSIG: Final = 1
# Loaded before any fork: the child must not load libraries between fork and exec.
_LIBC: Final = (
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if sys.platform.startswith("linux")
    else None
)


class HomeAssistantError(RuntimeError):
    """Home Assistant did not start, or an entry failed; the message says where to look."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeAddress:
    """Where Home Assistant reaches one node, and its key."""

    uid: str
    host: str
    port: int
    key: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Startup:
    """How long the start took, seconds from spawning the process."""

    api_s: float
    """Until the REST API answered with the token."""
    ready_s: float
    """Until Home Assistant was RUNNING and every PeerGrid entry loaded."""


@dataclass(kw_only=True, slots=True)
class RunningHomeAssistant:
    """A started Home Assistant: its URL, token, process and an authorised session."""

    url: str
    token: str
    process: subprocess.Popen[bytes]
    config_dir: Path
    session: aiohttp.ClientSession
    startup: Startup

    @property
    def pid(self) -> int:
        """Process id of Home Assistant (the core runs in this one process)."""
        return self.process.pid

    async def states(self) -> list[dict[str, Any]]:
        """Every entity state, as ``GET /api/states`` returns them."""
        async with self.session.get(f"{self.url}/api/states") as response:
            response.raise_for_status()
            body: list[dict[str, Any]] = await response.json()
        return body

    async def call_service(self, domain: str, service: str, data: dict[str, Any]) -> None:
        """Call an action and wait until it has completed (the REST API blocks on it)."""
        async with self.session.post(
            f"{self.url}/api/services/{domain}/{service}", json=data
        ) as response:
            if response.status != 200:
                raise HomeAssistantError(
                    f"{domain}.{service} failed: {response.status} {await response.text()}"
                )
            await response.read()


def brief(message: str) -> str:
    """The first line of a failure and the last line of the log it quotes."""
    lines = [line for line in message.splitlines() if line.strip()]
    if len(lines) <= 2:
        return " | ".join(lines)
    return f"{lines[0][:400]} ... {lines[-1].strip()[:400]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _configuration_yaml(port: int, *, recorder: bool) -> str:
    lines = [
        "# Written by the PeerGrid benchmarks (bench/_home_assistant.py).",
        "homeassistant:",
        "  name: PeerGrid bench",
        "  latitude: 52.52",
        "  longitude: 13.405",
        "  elevation: 34",
        "  unit_system: metric",
        "  currency: EUR",
        "  country: DE",
        "  time_zone: UTC",
        "http:",
        f"  server_host: {HOST}",
        f"  server_port: {port}",
        "api:",
        "config:",
        "logger:",
        "  default: warning",
    ]
    if recorder:
        lines += ["recorder:", "  commit_interval: 5"]
    return "\n".join(lines) + "\n"


async def _write_storage(config_dir: Path, nodes: Sequence[NodeAddress]) -> str:
    """Create the owner, its token, onboarding and the config entries; return the token."""
    # Imported here: only the benchmarks that run Home Assistant pay for it.
    from homeassistant.auth import auth_manager_from_config
    from homeassistant.auth.const import GROUP_ID_ADMIN
    from homeassistant.auth.models import TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN
    from homeassistant.components.onboarding.const import STEPS
    from homeassistant.config_entries import (
        SOURCE_SYSTEM,
        SOURCE_USER,
        STORAGE_KEY,
        STORAGE_VERSION,
        STORAGE_VERSION_MINOR,
        ConfigEntry,
    )
    from homeassistant.core import HomeAssistant
    from homeassistant.helpers.storage import Store

    from custom_components.peergrid.const import (
        CONF_KEY,
        CONF_KIND,
        DOMAIN,
        GRID_UNIQUE_ID,
        EntryKind,
    )

    hass = HomeAssistant(str(config_dir))
    hass.auth = await auth_manager_from_config(hass, [{"type": "homeassistant"}], [])
    user = await hass.auth.async_create_user("Bench", group_ids=[GROUP_ID_ADMIN])
    refresh = await hass.auth.async_create_refresh_token(
        user,
        client_name="PeerGrid benchmarks",
        token_type=TOKEN_TYPE_LONG_LIVED_ACCESS_TOKEN,
    )
    token = hass.auth.async_create_access_token(refresh)

    def entry(title: str, unique_id: str, data: dict[str, Any], source: str) -> dict[str, Any]:
        return ConfigEntry(
            domain=DOMAIN,
            title=title,
            unique_id=unique_id,
            data=data,
            options={},
            source=source,
            version=1,
            minor_version=1,
            discovery_keys={},  # type: ignore[arg-type]  # stored as a plain mapping
            subentries_data=None,
        ).as_dict()

    entries = [
        entry(
            node.uid,
            node.uid,
            {
                CONF_KIND: EntryKind.NODE.value,
                "host": node.host,
                "port": node.port,
                CONF_KEY: node.key,
            },
            SOURCE_USER,
        )
        for node in nodes
    ]
    if nodes:
        entries.append(
            entry("PeerGrid grid", GRID_UNIQUE_ID, {CONF_KIND: EntryKind.GRID.value}, SOURCE_SYSTEM)
        )
    await Store[dict[str, Any]](hass, 4, "onboarding", private=True).async_save(
        {"done": list(STEPS)}
    )
    await Store[dict[str, Any]](
        hass, STORAGE_VERSION, STORAGE_KEY, minor_version=STORAGE_VERSION_MINOR
    ).async_save({"entries": entries})
    # The auth store is written by the final-write stage of the stop; this
    # core never ran, so the stop has to be forced.
    await hass.async_stop(force=True)
    return token


def _write_files(config_dir: Path, *, port: int, recorder: bool) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(
        _configuration_yaml(port, recorder=recorder), encoding="utf-8"
    )
    custom = config_dir / "custom_components"
    custom.mkdir(exist_ok=True)
    (custom / "peergrid").symlink_to(INTEGRATION, target_is_directory=True)


async def prepare_config_dir(
    config_dir: Path, nodes: Sequence[NodeAddress], *, port: int, recorder: bool
) -> str:
    """Fill the empty ``config_dir``; return the access token."""
    await asyncio.to_thread(_write_files, config_dir, port=port, recorder=recorder)
    # Home Assistant's core takes over the loop it runs on: a fresh loop in a thread.
    return await asyncio.to_thread(asyncio.run, _write_storage(config_dir, nodes))


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel for SIGTERM should the benchmark die without stopping us."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _spawn(config_dir: Path) -> subprocess.Popen[bytes]:
    log = (config_dir / "console.log").open("ab")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERGRID_")}
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "homeassistant",
                "--config",
                str(config_dir),
                "--skip-pip",
                "--log-no-color",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=config_dir,
            env=env,
            start_new_session=True,
            # prctl is one system call: safe between fork and exec.
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
    finally:
        log.close()


def _log_tail(config_dir: Path, lines: int = 30) -> str:
    for name in ("home-assistant.log", "console.log"):
        path = config_dir / name
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace")
            return f"{path}:\n" + "\n".join(text.splitlines()[-lines:])
    return "(no log)"


async def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group we started, wait, then SIGKILL what is left of it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await asyncio.to_thread(process.wait)


async def _wait_ready(
    session: aiohttp.ClientSession,
    url: str,
    process: subprocess.Popen[bytes],
    config_dir: Path,
    *,
    entries: int,
    spawned: float,
    timeout_s: float,
) -> Startup:
    api_s: float | None = None
    deadline = spawned + timeout_s
    while True:
        if process.poll() is not None:
            raise HomeAssistantError(
                f"Home Assistant exited with {process.returncode}; {_log_tail(config_dir)}"
            )
        if time.perf_counter() > deadline:
            raise HomeAssistantError(
                f"Home Assistant not ready in {timeout_s:.0f} s; {_log_tail(config_dir)}"
            )
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with session.get(f"{url}/api/config") as response:
                if response.status == 200:
                    if api_s is None:
                        api_s = time.perf_counter() - spawned
                    config = await response.json()
                    if config.get("state") == "RUNNING" and await _entries_loaded(
                        session, url, entries, config_dir
                    ):
                        return Startup(api_s=api_s, ready_s=time.perf_counter() - spawned)
        await asyncio.sleep(_POLL_S)


async def _entries_loaded(
    session: aiohttp.ClientSession, url: str, expected: int, config_dir: Path
) -> bool:
    if expected == 0:
        return True
    async with session.get(
        f"{url}/api/config/config_entries/entry", params={"domain": "peergrid"}
    ) as response:
        response.raise_for_status()
        entries: list[dict[str, Any]] = await response.json()
    failed = [e for e in entries if e.get("state") in ("setup_error", "migration_error")]
    if failed:
        raise HomeAssistantError(
            f"PeerGrid entries failed: {[(e['title'], e['state']) for e in failed][:5]}; "
            f"{_log_tail(config_dir)}"
        )
    return len(entries) >= expected and all(e.get("state") == "loaded" for e in entries)


@contextlib.asynccontextmanager
async def home_assistant(
    nodes: Sequence[NodeAddress],
    *,
    workdir: Path,
    recorder: bool = True,
    timeout_s: float = READY_TIMEOUT_S,
) -> AsyncIterator[RunningHomeAssistant]:
    """Start Home Assistant with one PeerGrid entry per node; stop it on leaving.

    ``workdir`` must be an empty folder (its ``config`` subfolder becomes the
    configuration folder). Yields once Home Assistant is RUNNING and every
    PeerGrid entry (the nodes' and the grid's) is loaded.
    """
    config_dir = workdir / "config"
    port = free_port()
    token = await prepare_config_dir(config_dir, nodes, port=port, recorder=recorder)
    url = f"http://{HOST}:{port}"
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=60),
        connector=connector,
    ) as session:
        spawned = time.perf_counter()
        process = _spawn(config_dir)
        try:
            startup = await _wait_ready(
                session,
                url,
                process,
                config_dir,
                entries=len(nodes) + (1 if nodes else 0),
                spawned=spawned,
                timeout_s=timeout_s,
            )
            yield RunningHomeAssistant(
                url=url,
                token=token,
                process=process,
                config_dir=config_dir,
                session=session,
                startup=startup,
            )
        finally:
            await _stop(process)
