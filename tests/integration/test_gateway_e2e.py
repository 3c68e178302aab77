"""Simulated nodes <-> the edge gateway process <-> a Home Assistant test instance, over real HTTP.

The gateway is the real ``edge`` package with its own aiohttp session, talking
to Home Assistant's HTTP server on 127.0.0.1 with a real access token; the
nodes are the firmware on simulated hardware. The grid runs a hundred times
faster than life and the gateway's clock follows it, so Home Assistant's
keep-alive comes more often than in production (a lease of 30 simulated
seconds is 0.3 s of wall time here).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from homeassistant.core import Event, HomeAssistant
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.peergrid.const import DOMAIN
from custom_components.peergrid.iot_hub import DATA_IOT_HUB
from custom_components.peergrid.peergrid_core.events import ScheduleData, ScheduleEvent
from edge.config import parse_config
from edge.gateway import Gateway
from edge.outbox import RetryPolicy
from peergrid_core.protocol import Backoff
from peergrid_core.sim import NodeSpec, SimulatedGrid

from .helpers import wait_until

DEVICE_ID = "rpi-e2e-01"
WALLET = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7"
SPEEDUP = 100.0


@pytest.fixture
async def grid(socket_enabled: None) -> AsyncIterator[SimulatedGrid]:
    """A full and an empty node, a hundred times faster than life."""
    specs = [NodeSpec(uid="NODE_A", soc_percent=90.0), NodeSpec(uid="NODE_B", soc_percent=20.0)]
    async with SimulatedGrid(specs, speedup=SPEEDUP, seed=5) as sim:
        yield sim


@pytest.fixture
async def http_client(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, monkeypatch: pytest.MonkeyPatch
) -> TestClient:
    """Home Assistant with PeerGrid, serving HTTP on 127.0.0.1."""
    monkeypatch.setattr("custom_components.peergrid.http_api.SSE_KEEPALIVE_SECONDS", 0.05)
    assert await async_setup_component(hass, DOMAIN, {})
    return await hass_client()


@pytest.fixture
async def gateway(
    hass: HomeAssistant,
    grid: SimulatedGrid,
    http_client: TestClient,
    hass_access_token: str,
    tmp_path: Path,
) -> AsyncIterator[Gateway]:
    """The edge gateway for both nodes, pointed at the test instance."""
    config = parse_config(
        {
            "home_assistant": {
                "url": str(http_client.make_url("/")).rstrip("/"),
                "token": hass_access_token,
                "request_timeout_s": 5.0,
                "stream_timeout_s": 5.0,
            },
            "device_id": DEVICE_ID,
            "nodes": [
                {"uid": node.uid, "host": node.host, "port": node.port, "key": node.key}
                for node in grid.nodes.values()
            ],
            "cycle_s": 5.0,
            "lease_s": 30,
            "outbox_path": str(tmp_path / "outbox.sqlite3"),
            "zeroconf": False,
            "depin": {"wallet_address": WALLET, "hardware_model": "Raspberry Pi 4B"},
        },
        env={},
    )
    gateway = Gateway(
        config,
        sleep=grid.sleep,
        monotonic=lambda: grid.time_s,
        retry=RetryPolicy(initial_s=0.05, maximum_s=0.5),
        reconnect=Backoff(initial=5.0, maximum=20.0),
    )
    async with gateway:
        yield gateway


def _events(hass: HomeAssistant, name: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def _record(event: Event) -> None:
        seen.append(dict(event.data))

    hass.bus.async_listen(name, _record)
    return seen


def _relays(grid: SimulatedGrid, uid: str) -> Callable[[], tuple[bool, bool]]:
    def read() -> tuple[bool, bool]:
        state = grid.nodes[uid].physical
        return state.supply_closed, state.receive_closed

    return read


def _schedule(**actions: str) -> ScheduleEvent:
    return ScheduleEvent(
        data=ScheduleData.model_validate(
            {
                "device_id": DEVICE_ID,
                "commands": [{"uid": uid, "action": action} for uid, action in actions.items()],
                "grid_summary": {"node_count": 2, "avg_soc": 55.0, "soc_spread": 70.0},
            }
        )
    )


async def test_gateway_reports_to_home_assistant_and_follows_its_schedule(
    hass: HomeAssistant, grid: SimulatedGrid, gateway: Gateway
) -> None:
    """Pings arrive, a schedule moves the relays, and the finished transfer is reported once."""
    hub = hass.data[DATA_IOT_HUB]
    reports = _events(hass, "peergrid_energy_report")

    # Heartbeat on boot, then node data with the nodes' own readings.
    await wait_until(
        hass, lambda: (s := hub.gateway(DEVICE_ID)) is not None and s.node_data is not None
    )
    state = hub.gateway(DEVICE_ID)
    assert state is not None
    assert state.last_heartbeat_at is not None
    assert state.node_data is not None
    detail = {node.uid: node for node in state.node_data.nodes_detail}
    assert set(detail) == {"NODE_A", "NODE_B"}
    assert detail["NODE_A"].voltage == pytest.approx(
        grid.nodes["NODE_A"].physical.terminal_volts, abs=0.05
    )
    assert detail["NODE_A"].soc > detail["NODE_B"].soc
    # Registered in the DePIN registry through the gateway's outbox.
    await wait_until(hass, lambda: [n.device_id for n in hub.depin.nodes().nodes] == [DEVICE_ID])

    # Home Assistant's schedule reaches the nodes through the gateway.
    await wait_until(hass, lambda: gateway.stream_connected)
    hub.publish(_schedule(NODE_A="discharge", NODE_B="charge"))
    await wait_until(hass, lambda: _relays(grid, "NODE_A")() == (True, False))
    await wait_until(hass, lambda: _relays(grid, "NODE_B")() == (False, True))

    # Leases are renewed while the command stands: still supplying after several leases.
    start = grid.time_s
    await wait_until(hass, lambda: grid.time_s > start + 4 * 30, max_wait=30)
    assert _relays(grid, "NODE_A")() == (True, False)

    # Wait for at least 1 Wh (the smallest report), then back to idle: one report, once.
    await wait_until(
        hass,
        lambda: grid.nodes["NODE_A"].physical.energy.as_wh()["terminal_out_wh"] > 1.3,
        max_wait=120,
    )
    hub.publish(_schedule(NODE_A="idle", NODE_B="idle"))
    await wait_until(hass, lambda: _relays(grid, "NODE_A")() == (False, False))
    await wait_until(hass, lambda: len(hub.reports.reports) == 1, max_wait=30)
    (stored,) = hub.reports.reports
    assert stored.report.sender_uid == "NODE_A"
    assert stored.report.receiver_uid == "NODE_B"
    assert stored.report.kwh_transferred >= 0.001
    assert len(reports) == 1
    assert reports[0]["report_id"] == stored.report.report_id


async def test_silent_home_assistant_drops_the_nodes_to_idle(
    hass: HomeAssistant, grid: SimulatedGrid, gateway: Gateway, http_client: TestClient
) -> None:
    """When Home Assistant goes away, the gateway stops holding its nodes: they go IDLE."""
    hub = hass.data[DATA_IOT_HUB]
    await wait_until(hass, lambda: gateway.stream_connected)
    hub.publish(_schedule(NODE_A="discharge", NODE_B="charge"))
    await wait_until(hass, lambda: _relays(grid, "NODE_A")() == (True, False))

    hub.async_shutdown()  # Home Assistant stopping ends its streams...
    await http_client.close()  # ...and its HTTP server goes away
    await wait_until(hass, lambda: _relays(grid, "NODE_A")() == (False, False), max_wait=30)
    assert _relays(grid, "NODE_B")() == (False, False)
    assert not gateway.online
