"""The demo for real: `python -m demo`, logged into with headless Chromium, a transfer from the page.

Nothing is faked: the demo starts its simulated nodes, the edge gateway and
Home Assistant 2025.4 as it does for a person; the browser is Debian's
Chromium driven by Playwright; the relays are read back from the simulated
nodes over PeerGrid's own protocol. Screenshots go to ``artifacts/demo/``.

The test needs ``/usr/bin/chromium`` (``.ci/run`` installs it) and fails,
rather than skips, without it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
import json
import os
from pathlib import Path
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from playwright.sync_api import Locator, Page, Route, expect, sync_playwright
import pytest

from peergrid_core.protocol import Mode, NodeClient

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "artifacts" / "demo"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NODES = ("NODE_A", "NODE_B", "NODE_C")
GATEWAY_NODES = ("GARAGE_1",)
READY_WITHIN_S = 150.0
STOPPED_WITHIN_S = 90.0
UI_TIMEOUT_MS = 30_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the parenthesised command name.
    return stat.rpartition(")")[2].split()[0] != "Z"


def _processes_using(folder: Path) -> list[str]:
    """Processes whose command line names ``folder`` (the demo's children do)."""
    found = []
    for cmdline_file in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = cmdline_file.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if str(folder) in cmdline and int(cmdline_file.parent.name) != os.getpid():
            found.append(f"{cmdline_file.parent.name}: {cmdline}")
    return found


def _demo_env() -> dict[str, str]:
    """The test's environment without coverage's subprocess hooks.

    The demo's processes load the integration from a temporary configuration
    folder; measuring them there would record files outside the repository.
    """
    return {name: value for name, value in os.environ.items() if not name.startswith("COV_CORE_")}


class RunningDemo:
    """``python -m demo`` in a subprocess, with its state file once it is ready."""

    def __init__(self, folder: Path, port: int, log_path: Path) -> None:
        """Start the demo (it prepares ``folder`` and serves Home Assistant on ``port``)."""
        self.folder = folder
        self.port = port
        self.log_path = log_path
        self.state: dict[str, Any] = {}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "demo",
                    "--port",
                    str(port),
                    "--dir",
                    str(folder),
                    "--nodes",
                    str(len(NODES)),
                    "--gateway-nodes",
                    str(len(GATEWAY_NODES)),
                ],
                cwd=ROOT,
                env=_demo_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def output(self) -> str:
        """What the demo printed so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> dict[str, Any]:
        """Wait for the state file the demo writes once everything is up."""
        state_file = self.folder / "demo.json"
        deadline = time.monotonic() + READY_WITHIN_S
        while not state_file.exists():
            assert self.process.poll() is None, f"the demo exited early:\n{self.output}"
            assert time.monotonic() < deadline, f"the demo was not ready in time:\n{self.output}"
            time.sleep(0.5)
        self.state = json.loads(state_file.read_text())
        return self.state

    def stop(self) -> int:
        """Ctrl-C, as a person would; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=STOPPED_WITHIN_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the demo did not stop within {STOPPED_WITHIN_S} s:\n{self.output}")


@pytest.fixture
def demo(socket_enabled: None, tmp_path: Path) -> Iterator[RunningDemo]:
    """A running demo (stopped afterwards whatever happens)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Debian's Chromium is missing ({CHROMIUM}): the demo's browser test needs it. "
            "Install it with `apt-get install chromium` (.ci/run does so in CI)."
        )
    running = RunningDemo(tmp_path / "demo", _free_port(), tmp_path / "demo.out")
    try:
        yield running
    finally:
        running.stop()


def _node_modes(state: dict[str, Any], uids: tuple[str, ...]) -> dict[str, Mode]:
    """Ask the simulated nodes themselves, over PeerGrid's protocol, what their relays do."""
    nodes = {node["uid"]: node for node in state["nodes"]}

    async def ask() -> dict[str, Mode]:
        modes = {}
        for uid in uids:
            node = nodes[uid]
            client = NodeClient(node["host"], node["port"], node["key"].encode())
            try:
                await client.connect()
                modes[uid] = (await client.get_status()).mode
            finally:
                await client.close()
        return modes

    # Playwright's synchronous API keeps a loop running in this thread, so the
    # client gets a loop of its own in a short-lived thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="node-status") as pool:
        return pool.submit(asyncio.run, ask()).result(timeout=30)


def _wait_for(what: str, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _relays_become(state: dict[str, Any], expected: dict[str, Mode]) -> None:
    uids = tuple(expected)
    _wait_for(f"relays {expected}", lambda: _node_modes(state, uids) == expected)


def _loopback_only(url: str) -> Callable[[Route], None]:
    """Let the page reach the demo only (no brand images or fonts from the internet)."""

    def route(route: Route) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            route.abort()

    return route


def _section(page: Page, uid: str) -> Locator:
    """The dashboard section whose heading is ``uid``."""
    return page.locator("hui-grid-section").filter(
        has=page.locator("hui-heading-card", has_text=uid)
    )


def _log_in(page: Page, state: dict[str, Any]) -> None:
    page.goto(state["dashboard_url"])
    page.wait_for_url("**/auth/authorize**")
    page.locator("input[name=username]").fill(state["username"])
    page.locator("input[name=password]").fill(state["password"])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "login.png")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(state["dashboard_url"] + "*")


def test_demo_dashboard_in_chromium(demo: RunningDemo) -> None:
    """Log in, see every node, start and stop transfers and auto-balance; Ctrl-C stops it all."""
    state = demo.wait_ready()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            _drive_dashboard(browser.new_page(viewport={"width": 1600, "height": 1000}), state)
        finally:
            browser.close()

    assert demo.stop() == 0, demo.output
    assert "nothing is left running" in demo.output
    for name, pid in state["pids"].items():
        assert not _alive(pid), f"{name} (pid {pid}) is still running"
    assert _processes_using(demo.folder) == []
    assert _port_is_free(demo.port)
    for node in state["nodes"]:
        assert _port_is_free(node["port"]), f"{node['uid']} still listens"


def _no_warnings(page: Page) -> None:
    """Every entity the dashboard names exists and fits its card."""
    expect(page.locator("hui-warning")).to_have_count(0)
    expect(page.get_by_text("Entity not found")).to_have_count(0)
    expect(page.get_by_text("not available")).to_have_count(0)


def _drive_dashboard(page: Page, state: dict[str, Any]) -> None:
    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    page.route("**/*", _loopback_only(state["url"]))
    _log_in(page, state)

    # Every node's section shows its state of charge and voltage.
    for uid in (*NODES, *GATEWAY_NODES):
        section = _section(page, uid)
        expect(section.locator("hui-gauge-card")).to_contain_text("%")
        expect(section.locator("hui-tile-card", has_text="Voltage")).to_contain_text(" V")
    for uid in NODES:
        expect(_section(page, uid).locator("hui-tile-card", has_text="Mode")).to_contain_text(
            "Idle"
        )
    expect(page.locator("hui-tile-card", has_text="Nodes online")).to_contain_text(str(len(NODES)))
    _no_warnings(page)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    # The form's defaults: the fullest node sends to the emptiest.
    sender, receiver = NODES[0], NODES[-1]
    page.locator("hui-button-card", has_text="Start transfer").click()
    _relays_become(state, {sender: Mode.SUPPLY, receiver: Mode.RECEIVE, NODES[1]: Mode.IDLE})
    expect(page.locator("hui-tile-card", has_text="Active transfers")).to_contain_text("1")
    expect(_section(page, sender).locator("hui-tile-card", has_text="Mode")).to_contain_text(
        "Discharge"
    )
    for uid in (sender, receiver):
        expect(page.locator("hui-gauge-card", has_text=f"{uid} progress")).to_be_visible()
    _no_warnings(page)
    page.screenshot(path=ARTIFACTS / "transfer.png", full_page=True)

    page.locator("hui-button-card", has_text="Stop all transfers").click()
    _relays_become(state, {sender: Mode.IDLE, receiver: Mode.IDLE})
    expect(page.locator("hui-tile-card", has_text="Active transfers")).to_contain_text("0")

    # Auto-balance pairs the fullest donor with the emptiest receiver.
    page.locator("hui-button-card", has_text="Auto-balance").click()
    _relays_become(state, {sender: Mode.SUPPLY, receiver: Mode.RECEIVE})
    page.locator("hui-button-card", has_text="Stop all transfers").click()
    _relays_become(state, {sender: Mode.IDLE, receiver: Mode.IDLE})
