"""The demo's command line, its refusals, its folder handling and its child processes.

The full run (Home Assistant, the gateway, a browser) is ``test_browser.py``;
these tests cover what is decided before anything starts, and the process
helpers on small stand-in children.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import io
from pathlib import Path
import socket
import sys

import pytest

from demo.__main__ import build_parser
from demo.processes import Child, start_child, stop_child
from demo.run import (
    MARKER_FILE,
    DemoError,
    DemoOptions,
    _fresh_directory,
    direct_node_uids,
    gateway_node_uids,
    referenced_entities,
    run_demo,
    start_socs,
)

STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(60)"
)
"""A child that ignores SIGTERM."""


async def _until_up(child: Child) -> None:
    """Until the child has printed ``up`` (it is running its script)."""
    for _ in range(400):
        if "up" in child.log_tail():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{child.name} did not start")


@pytest.fixture
def busy_port(socket_enabled: None) -> Iterator[int]:
    """A port on 127.0.0.1 that something already listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_defaults() -> None:
    """`make demo` with no options: port 8123, four direct nodes, two behind the gateway."""
    args = build_parser().parse_args([])

    assert (args.port, args.nodes, args.gateway_nodes, args.dir) == (8123, 4, 2, Path(".demo"))


def test_node_names() -> None:
    """Direct nodes are named like the simulator's; the gateway's are the garage's."""
    assert direct_node_uids(3) == ("NODE_A", "NODE_B", "NODE_C")
    assert direct_node_uids(28)[-2:] == ("NODE_AA", "NODE_AB")
    assert gateway_node_uids(2) == ("GARAGE_1", "GARAGE_2")
    assert gateway_node_uids(0) == ()


def test_start_socs_spread_from_full_to_empty() -> None:
    """Evenly from high to low, so that there is something to balance."""
    assert start_socs(4, high=88.0, low=22.0) == (88.0, 66.0, 44.0, 22.0)
    assert start_socs(1, high=75.0, low=35.0) == (75.0,)


def test_referenced_entities_finds_cards_conditions_and_scripts() -> None:
    """Entities of cards, entity lists, visibility conditions and scripts behind buttons."""
    config = {
        "cards": [
            {"type": "tile", "entity": "sensor.a"},
            {"type": "history-graph", "entities": ["sensor.b", "sensor.c"]},
            {"visibility": [{"condition": "state", "entity": "sensor.d", "state": "0"}]},
            {"tap_action": {"action": "perform-action", "perform_action": "script.go"}},
            {"tap_action": {"action": "perform-action", "perform_action": "peergrid.auto_balance"}},
        ]
    }

    assert referenced_entities(config) == {
        "sensor.a",
        "sensor.b",
        "sensor.c",
        "sensor.d",
        "script.go",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (DemoOptions(nodes=1), "--nodes 1"),
        (DemoOptions(nodes=9), "--nodes 9"),
        (DemoOptions(gateway_nodes=5), "--gateway-nodes 5"),
        (DemoOptions(gateway_nodes=-1), "--gateway-nodes -1"),
        (DemoOptions(port=0), "--port 0"),
        (DemoOptions(port=70000), "--port 70000"),
    ],
)
async def test_bad_options_are_refused(options: DemoOptions, message: str, tmp_path: Path) -> None:
    """A bad option exits with status 2 and names the option; nothing is created."""
    out = io.StringIO()
    folder = tmp_path / "demo"

    status = await run_demo(
        DemoOptions(
            port=options.port,
            nodes=options.nodes,
            gateway_nodes=options.gateway_nodes,
            directory=folder,
        ),
        out,
    )

    assert status == 2
    assert message in out.getvalue()
    assert not folder.exists()


async def test_a_busy_port_is_refused(busy_port: int, tmp_path: Path) -> None:
    """Another server on the port (another Home Assistant?) stops the demo before it starts."""
    out = io.StringIO()
    folder = tmp_path / "demo"

    status = await run_demo(DemoOptions(port=busy_port, directory=folder), out)

    assert status == 1
    assert f"port {busy_port}" in out.getvalue()
    assert "--port" in out.getvalue()
    assert not folder.exists()


async def test_a_foreign_folder_is_never_deleted(socket_enabled: None, tmp_path: Path) -> None:
    """A non-empty folder the demo did not make (a real configuration?) is left alone."""
    folder = tmp_path / "homeassistant"
    folder.mkdir()
    (folder / "configuration.yaml").write_text("default_config:\n")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = io.StringIO()

    status = await run_demo(DemoOptions(port=port, directory=folder), out)

    assert status == 1
    assert "not made by the demo" in out.getvalue()
    assert (folder / "configuration.yaml").read_text() == "default_config:\n"


def test_the_demos_own_folder_is_recreated(tmp_path: Path) -> None:
    """A folder with the demo's marker is emptied; an empty or missing one is simply used."""
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / MARKER_FILE).write_text("")
    (folder / "old.log").write_text("from the last run")

    _fresh_directory(folder)

    assert sorted(path.name for path in folder.iterdir()) == [MARKER_FILE]
    _fresh_directory(tmp_path / "new")
    assert (tmp_path / "new" / MARKER_FILE).exists()


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    """``--dir`` naming a file is refused."""
    target = tmp_path / "file"
    target.write_text("x")

    with pytest.raises(DemoError, match="not a folder"):
        _fresh_directory(target)


async def test_stop_child_terminates_the_process(tmp_path: Path) -> None:
    """SIGTERM ends a well-behaved child; its output is in its log."""
    child = await start_child(
        "sleeper",
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        log_path=tmp_path / "sleeper.log",
        cwd=tmp_path,
        env={},
    )
    await _until_up(child)

    assert child.running
    status = await stop_child(child, timeout_s=10)

    assert status == -15
    assert not child.running
    assert child.log_tail() == "up"


async def test_stop_child_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    """A child that ignores SIGTERM is killed once the grace period is over."""
    child = await start_child(
        "stubborn",
        [
            sys.executable,
            "-c",
            STUBBORN,
        ],
        log_path=tmp_path / "stubborn.log",
        cwd=tmp_path,
        env={},
    )
    await _until_up(child)

    assert await stop_child(child, timeout_s=0.5) == -9
    # Stopping again is harmless.
    assert await stop_child(child, timeout_s=0.5) == -9


async def test_a_missing_log_reads_as_empty(tmp_path: Path) -> None:
    """A child that exited is reported with whatever log there is, even none."""
    child = await start_child(
        "quick",
        [sys.executable, "-c", "pass"],
        log_path=tmp_path / "quick.log",
        cwd=tmp_path,
        env={},
    )
    assert await child.process.wait() == 0
    (tmp_path / "quick.log").unlink()

    assert child.log_tail() == ""
    assert await stop_child(child, timeout_s=1) == 0
