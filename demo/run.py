"""Run the demo: simulated nodes, Home Assistant, the edge gateway; stop all of it on a signal.

Order matters both ways. Starting: the nodes listen first, the configuration
folder names them, Home Assistant starts and serves its API, then the gateway
connects to it (a gateway that found Home Assistant down would back off for
a while). Stopping (Ctrl-C, SIGTERM, or a child that died): the gateway
releases its nodes, Home Assistant leaves every node IDLE, and only then do
the simulated nodes stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
import contextlib
from dataclasses import dataclass
from datetime import datetime
import json
import os
from pathlib import Path
import shutil
import signal
import socket
import stat
import sys
from typing import Any, Final, TextIO

import aiohttp
import yaml

from custom_components.peergrid.const import DOMAIN
from peergrid_core.errors import PeerGridError
from peergrid_core.sim import NodeSpec, SimulatedGrid

from .config_dir import DemoNode, HomeAssistantSetup, prepare_config_dir
from .dashboard import (
    DASHBOARD_URL_PATH,
    DEMO_GATEWAY,
    GRID_ENTITIES,
    VIEW_PATH,
    dashboard,
    node_entity,
)
from .processes import Child, start_child, stop_child

__all__ = [
    "DEMO_PASSWORD",
    "DEMO_USERNAME",
    "MARKER_FILE",
    "STATE_FILE",
    "DemoError",
    "DemoOptions",
    "direct_node_uids",
    "gateway_node_uids",
    "referenced_entities",
    "run_demo",
    "start_socs",
]

DEMO_USERNAME: Final = "demo"
DEMO_PASSWORD: Final = "peergrid"  # noqa: S105 - the printed login of a loopback-only demo
DEMO_DISPLAY_NAME: Final = "Demo"
MARKER_FILE: Final = ".peergrid-demo"
"""Marks a folder as the demo's own: only such a folder is ever deleted."""
STATE_FILE: Final = "demo.json"
"""Written once everything is up: URL, login, token, nodes and process ids (for tests)."""

_HOST: Final = "127.0.0.1"
_READY_TIMEOUT_S: Final = 240.0
_API_POLL_S: Final = 0.5
_STATUS_EVERY_S: Final = 30.0
_STOP_GATEWAY_S: Final = 15.0
_STOP_HOME_ASSISTANT_S: Final = 60.0
_GATEWAY_CYCLE_S: Final = 5.0
_NOT_READY: Final = frozenset({"unavailable", "unknown"})
_FAILED_ENTRY_STATES: Final = frozenset({"setup_error", "migration_error", "failed_unload"})


class DemoError(Exception):
    """The demo cannot start or went down; the message says why."""


class _StopRequestedError(Exception):
    """Ctrl-C or SIGTERM arrived while the demo was starting."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoOptions:
    """What ``python -m demo`` was asked for."""

    port: int = 8123
    nodes: int = 4
    gateway_nodes: int = 2
    directory: Path = Path(".demo")
    ready_timeout_s: float = _READY_TIMEOUT_S


def _letters(index: int) -> str:
    """``A`` ... ``Z``, ``AA`` ..., as the simulator names its nodes."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def direct_node_uids(count: int) -> tuple[str, ...]:
    """The uids of the nodes Home Assistant reaches directly: ``NODE_A``, ``NODE_B``, ..."""
    return tuple(f"NODE_{_letters(i)}" for i in range(count))


def gateway_node_uids(count: int) -> tuple[str, ...]:
    """The uids of the gateway's nodes: ``GARAGE_1``, ``GARAGE_2``, ..."""
    return tuple(f"GARAGE_{i + 1}" for i in range(count))


def start_socs(count: int, *, high: float, low: float) -> tuple[float, ...]:
    """Start SoCs spread evenly from ``high`` down to ``low``: something to balance."""
    if count == 1:
        return (high,)
    step = (high - low) / (count - 1)
    return tuple(round(high - i * step, 1) for i in range(count))


def referenced_entities(config: Any) -> set[str]:
    """Every entity id a dashboard configuration refers to (cards, badges, conditions, scripts)."""
    found: set[str] = set()
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key == "entity" and isinstance(value, str):
                found.add(value)
            elif key == "entities" and isinstance(value, list):
                found.update(item for item in value if isinstance(item, str))
            elif key == "perform_action" and str(value).startswith("script."):
                found.add(str(value))
            found |= referenced_entities(value)
    elif isinstance(config, list):
        for item in config:
            found |= referenced_entities(item)
    return found


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((_HOST, port))
        except OSError:
            return False
    return True


def _fresh_directory(directory: Path) -> None:
    """Empty the demo's folder; refuse a folder the demo did not create."""
    if directory.exists():
        if not directory.is_dir():
            raise DemoError(f"{directory} exists and is not a folder")
        if any(directory.iterdir()) and not (directory / MARKER_FILE).exists():
            raise DemoError(
                f"{directory} is not empty and was not made by the demo; "
                "choose another folder with --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER_FILE).write_text(
        "Made by `python -m demo`; deleted and re-created on every run.\n", encoding="utf-8"
    )


def _write_private(path: Path, text: str) -> None:
    """Write a file that holds secrets, readable by its owner only."""
    path.touch(mode=stat.S_IRUSR | stat.S_IWUSR)
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_text(text, encoding="utf-8")


def _child_env() -> dict[str, str]:
    """The children's environment, without overrides meant for a real gateway."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PEERGRID_")}


class Demo:
    """One run of the demo; :meth:`run` owns every resource it starts."""

    def __init__(self, options: DemoOptions, out: TextIO) -> None:
        """Validate the options; nothing starts yet."""
        if not 2 <= options.nodes <= 8:
            raise DemoError(f"--nodes {options.nodes}: the demo runs 2 to 8 direct nodes")
        if not 0 <= options.gateway_nodes <= 4:
            raise DemoError(
                f"--gateway-nodes {options.gateway_nodes}: the gateway runs 0 to 4 nodes"
            )
        if not 1 <= options.port <= 65535:
            raise DemoError(f"--port {options.port}: not a TCP port")
        self.options = options
        self.out = out
        self.directory = options.directory.resolve()
        self.config_dir = self.directory / "homeassistant"
        self.gateway_dir = self.directory / "gateway"
        self.url = f"http://{_HOST}:{options.port}"
        self.stop_requested = asyncio.Event()
        self.grids: list[SimulatedGrid] = []
        self.direct: SimulatedGrid | None = None
        self.garage: SimulatedGrid | None = None
        self.home_assistant: Child | None = None
        self.gateway: Child | None = None

    # ------------------------------------------------------------ output

    def say(self, text: str = "") -> None:
        """One line for the person at the terminal."""
        self.out.write(text + "\n")
        self.out.flush()

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Start everything, run until a signal or a failure, stop everything; the exit status."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop_requested.set)
        try:
            status = await self._run_until_stopped()
        finally:
            await self._stop_all()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        self.say("PeerGrid demo stopped; nothing is left running.")
        return status

    async def _run_until_stopped(self) -> int:
        try:
            await self._start()
        except _StopRequestedError:
            self.say("Stopping before the demo was ready.")
            return 0
        except (DemoError, PeerGridError, aiohttp.ClientError, OSError) as err:
            self.say(f"The demo could not start: {err}")
            return 1
        return await self._watch()

    async def _start(self) -> None:
        options = self.options
        if not _port_is_free(options.port):
            raise DemoError(
                f"port {options.port} on {_HOST} is in use (another Home Assistant?); "
                "choose another with --port"
            )
        _fresh_directory(self.directory)
        self.gateway_dir.mkdir()
        self.say(f"Starting the PeerGrid demo in {self.directory} ...")

        direct_uids = direct_node_uids(options.nodes)
        self.direct = await self._start_grid(
            direct_uids, start_socs(len(direct_uids), high=88.0, low=22.0)
        )
        garage_uids = gateway_node_uids(options.gateway_nodes)
        if garage_uids:
            self.garage = await self._start_grid(
                garage_uids, start_socs(len(garage_uids), high=75.0, low=35.0)
            )
        self.say(f"  {len(direct_uids) + len(garage_uids)} simulated nodes listen on {_HOST}")

        setup = HomeAssistantSetup(
            config_dir=self.config_dir,
            port=options.port,
            username=DEMO_USERNAME,
            password=DEMO_PASSWORD,
            display_name=DEMO_DISPLAY_NAME,
            nodes=tuple(
                DemoNode(uid=node.uid, host=node.host, port=node.port, key=node.key or "")
                for node in self.direct.nodes.values()
            ),
            gateway_device_id=DEMO_GATEWAY if garage_uids else None,
            gateway_nodes=garage_uids,
        )
        token = await self._until_stopped(prepare_config_dir(setup))
        self.say(f"  Home Assistant configuration written to {self.config_dir}")

        self.home_assistant = await start_child(
            "Home Assistant",
            [
                sys.executable,
                "-m",
                "homeassistant",
                "--config",
                str(self.config_dir),
                "--skip-pip",
                "--log-no-color",
            ],
            log_path=self.directory / "home-assistant.console.log",
            cwd=self.directory,
            env=_child_env(),
        )
        self.say(f"  Home Assistant is starting on {self.url} (pid {self.home_assistant.pid}) ...")
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as session:
            try:
                async with asyncio.timeout(options.ready_timeout_s):
                    await self._until_stopped(self._wait_for_api(session))
                    if garage_uids:
                        self.gateway = await self._start_gateway(token)
                    await self._until_stopped(self._wait_for_entities(session, setup))
            except TimeoutError as err:
                raise DemoError(
                    f"Home Assistant was not ready within {options.ready_timeout_s:.0f} s; "
                    f"see {self.config_dir / 'home-assistant.log'}"
                ) from err
            missing = referenced_entities(dashboard(setup.layout)) - await self._entity_ids(session)
        if missing:
            self.say(
                f"  warning: the dashboard names entities that do not exist: {sorted(missing)}"
            )
        self._write_state(setup, token)
        self._print_ready(setup)

    async def _start_grid(self, uids: Sequence[str], socs: Sequence[float]) -> SimulatedGrid:
        grid = SimulatedGrid(
            [NodeSpec(uid=uid, soc_percent=soc) for uid, soc in zip(uids, socs, strict=True)],
            host=_HOST,
        )
        await grid.start()
        self.grids.append(grid)
        return grid

    async def _start_gateway(self, token: str) -> Child:
        assert self.garage is not None  # noqa: S101 - started with gateway nodes only
        config = {
            "home_assistant": {"url": self.url, "token": token},
            "device_id": DEMO_GATEWAY,
            "nodes": [
                {"uid": node.uid, "host": node.host, "port": node.port, "key": node.key}
                for node in self.garage.nodes.values()
            ],
            "cycle_s": _GATEWAY_CYCLE_S,
            "lease_s": 30,
            "outbox_path": str(self.gateway_dir / "outbox.sqlite3"),
            # Announcing on the LAN is what a real gateway does; the demo stays on loopback.
            "zeroconf": False,
        }
        config_path = self.gateway_dir / "gateway.yaml"
        _write_private(config_path, yaml.safe_dump(config, sort_keys=False))
        child = await start_child(
            "edge gateway",
            [sys.executable, "-m", "edge", "--config", str(config_path)],
            log_path=self.gateway_dir / "gateway.log",
            cwd=self.directory,
            env=_child_env(),
        )
        self.say(f"  edge gateway {DEMO_GATEWAY} started (pid {child.pid})")
        return child

    async def _until_stopped[T](self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless a stop is requested or a child dies first."""
        work = asyncio.ensure_future(awaitable)
        watchers: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.stop_requested.wait())]
        watchers += [
            asyncio.ensure_future(child.process.wait())
            for child in self._children()
            if child.running
        ]
        everything: list[asyncio.Future[Any]] = [work, *watchers]
        try:
            await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when this wait itself is cancelled (a deadline): nothing outlives it.
            for future in everything:
                if not future.done():
                    future.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
        if not work.cancelled():
            return work.result()
        if self.stop_requested.is_set():
            raise _StopRequestedError
        raise self._child_died()

    def _children(self) -> list[Child]:
        return [child for child in (self.gateway, self.home_assistant) if child is not None]

    def _child_died(self) -> DemoError:
        for child in self._children():
            if not child.running:
                return DemoError(
                    f"{child.name} exited with status {child.process.returncode}; "
                    f"the end of {child.log_path}:\n{child.log_tail()}"
                )
        return DemoError("a process of the demo exited")

    async def _wait_for_api(self, session: aiohttp.ClientSession) -> None:
        """Until Home Assistant's REST API answers with the demo's token."""
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/api/") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(_API_POLL_S)

    async def _states(self, session: aiohttp.ClientSession) -> dict[str, str]:
        async with session.get(f"{self.url}/api/states") as response:
            response.raise_for_status()
            body: list[dict[str, Any]] = await response.json()
        return {item["entity_id"]: item["state"] for item in body}

    async def _entity_ids(self, session: aiohttp.ClientSession) -> set[str]:
        return set(await self._states(session))

    async def _wait_for_entities(
        self, session: aiohttp.ClientSession, setup: HomeAssistantSetup
    ) -> None:
        """Until every node's battery and voltage (and the grid's sensors) have values."""
        wanted = [
            node_entity("sensor", uid, name)
            for uid in (*setup.layout.nodes, *setup.layout.gateway_nodes)
            for name in ("Battery", "Voltage")
        ]
        wanted += GRID_ENTITIES
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._raise_for_failed_entries(session)
                states = await self._states(session)
                if all(states.get(entity, "unknown") not in _NOT_READY for entity in wanted):
                    return
            await asyncio.sleep(_API_POLL_S)

    async def _raise_for_failed_entries(self, session: aiohttp.ClientSession) -> None:
        """Fail at once when a PeerGrid entry cannot be set up (waiting would not help).

        ``setup_retry`` is not a failure: Home Assistant retries a node it
        could not reach yet by itself.
        """
        async with session.get(
            f"{self.url}/api/config/config_entries/entry", params={"domain": DOMAIN}
        ) as response:
            response.raise_for_status()
            entries: list[dict[str, Any]] = await response.json()
        failed = [entry for entry in entries if entry.get("state") in _FAILED_ENTRY_STATES]
        if failed:
            problems = "; ".join(
                f"{entry.get('title')}: {entry.get('state')} {entry.get('reason') or ''}".strip()
                for entry in failed
            )
            raise DemoError(
                f"PeerGrid could not be set up ({problems}); "
                f"see {self.config_dir / 'home-assistant.log'}"
            )

    def _write_state(self, setup: HomeAssistantSetup, token: str) -> None:
        assert self.home_assistant is not None  # noqa: S101 - started above
        state = {
            "url": self.url,
            "dashboard_url": f"{self.url}/{DASHBOARD_URL_PATH}/{VIEW_PATH}",
            "username": setup.username,
            "password": setup.password,
            "token": token,
            "config_dir": str(self.config_dir),
            "nodes": [
                {"uid": node.uid, "host": node.host, "port": node.port, "key": node.key}
                for grid in self.grids
                for node in grid.nodes.values()
            ],
            "direct_nodes": list(setup.layout.nodes),
            "gateway_nodes": list(setup.layout.gateway_nodes),
            "pids": {child.name: child.pid for child in self._children()},
            "demo_pid": os.getpid(),
        }
        _write_private(self.directory / STATE_FILE, json.dumps(state, indent=2) + "\n")

    def _print_ready(self, setup: HomeAssistantSetup) -> None:
        self.say()
        self.say("PeerGrid demo is ready.")
        self.say()
        self.say(f"  Open    {self.url}/{DASHBOARD_URL_PATH}/{VIEW_PATH}")
        self.say(f"  Log in  user {setup.username!r}, password {setup.password!r}")
        self.say()
        if self.direct is not None:
            self.say("  Nodes Home Assistant controls directly:")
            for node in self.direct.nodes.values():
                self.say(
                    f"    {node.uid:<8} {node.host}:{node.port:<6} "
                    f"SoC {node.physical.soc_percent:5.1f} %  key {node.key}"
                )
        if self.garage is not None:
            self.say(f"  Nodes behind the edge gateway {DEMO_GATEWAY}:")
            for node in self.garage.nodes.values():
                self.say(
                    f"    {node.uid:<8} {node.host}:{node.port:<6} SoC {node.physical.soc_percent:5.1f} %"
                )
        self.say()
        self.say(f"  Home Assistant log: {self.config_dir / 'home-assistant.log'}")
        self.say()
        self.say("Ctrl-C stops everything.")

    # ------------------------------------------------------------ running

    async def _watch(self) -> int:
        """Print the batteries now and then until a stop is requested or a child dies."""
        while True:
            try:
                await self._until_stopped(asyncio.sleep(_STATUS_EVERY_S))
            except _StopRequestedError:
                self.say("Stopping ...")
                return 0
            except DemoError as err:
                self.say(f"The demo went down: {err}")
                return 1
            self.say(self._status_line())

    def _status_line(self) -> str:
        parts = []
        for grid in self.grids:
            for node in grid.nodes.values():
                state = node.physical
                parts.append(f"{node.uid} {state.soc_percent:.1f} % {state.mode}")
        return f"{datetime.now().astimezone():%H:%M:%S}  " + " | ".join(parts)

    async def _stop_all(self) -> None:
        """Gateway, Home Assistant, then the nodes; each step runs even if one before failed."""
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if self.gateway is not None:
            gateway = self.gateway
            steps.append(("edge gateway", lambda: stop_child(gateway, timeout_s=_STOP_GATEWAY_S)))
        if self.home_assistant is not None:
            home_assistant = self.home_assistant
            steps.append(
                (
                    "Home Assistant",
                    lambda: stop_child(home_assistant, timeout_s=_STOP_HOME_ASSISTANT_S),
                )
            )
        steps.extend(("simulated nodes", grid.stop) for grid in reversed(self.grids))
        for name, step in steps:
            try:
                await step()
            except Exception as err:  # noqa: BLE001 - keep stopping the rest
                self.say(f"  stopping {name} failed: {err!r}")
        self.grids.clear()


async def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the demo until Ctrl-C or SIGTERM; return the process exit status."""
    try:
        demo = Demo(options, out)
    except DemoError as err:
        out.write(f"{err}\n")
        return 2
    return await demo.run()
