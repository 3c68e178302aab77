"""Simulated nodes <-> the edge gateway process <-> a Home Assistant test instance, over real HTTP.

The gateway is the real ``edge`` package with its own aiohttp session, talking
to Home Assistant's HTTP server on 127.0.0.1 with a real access token; the
nodes are the firmware on simulated hardware. The grid runs a hundred times
faster than life and the gateway's clock follows it, so Home Assistant's
keep-alive comes more often than in production (a lease of 30 simulated
seconds is 0.3 s of wall time here).

Between the gateway and Home Assistant sits a TCP relay on 127.0.0.1
(:class:`TcpRelay`): stopping it makes Home Assistant unreachable for the
gateway while Home Assistant itself keeps running (its stores, its clock, its
event streams), and it can lose the answer to one request after Home
Assistant handled it, the case that makes exactly-once delivery necessary.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
import contextlib
from pathlib import Path
import re
from typing import Any

from aiohttp.test_utils import TestClient
from homeassistant.core import Event, HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.setup import async_setup_component
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.peergrid.const import (
    CONF_DEVICE_ID,
    CONF_KIND,
    DOMAIN,
    EVENT_TRANSFER_COMPLETED,
    EntryKind,
)
from custom_components.peergrid.grid import DATA_GRID
from custom_components.peergrid.iot_hub import DATA_IOT_HUB
from custom_components.peergrid.peergrid_core.events import ScheduleData, ScheduleEvent
from edge.config import GatewayConfig, parse_config
from edge.gateway import Gateway
from edge.outbox import RetryPolicy
from peergrid_core.protocol import Backoff
from peergrid_core.sim import NodeSpec, SimulatedGrid

from .helpers import setup_entry, state_value, wait_until

DEVICE_ID = "rpi-e2e-01"
WALLET = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7"
SPEEDUP = 100.0
REPORT_PATH = "/api/peergrid/iot/energy/report"
_REQUEST_LINE = re.compile(rb"(?:GET|POST|PUT|DELETE) (/[^ ?]*)[^ ]* HTTP/1\.1\r\n")


class TcpRelay:
    """A TCP forwarder on 127.0.0.1 in front of Home Assistant's HTTP server.

    :meth:`stop` closes the port and cuts every connection (Home Assistant is
    unreachable); :meth:`start` opens the same port again. :meth:`lose_reply_to`
    makes the relay drop the answer to the next request for a path, after Home
    Assistant received and handled it, and cut that connection.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.requests: Counter[str] = Counter()
        """Requests forwarded, by path."""
        self.replies_lost = 0
        self._lose: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    def lose_reply_to(self, path: str) -> None:
        self._lose[path] += 1

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream}
        losing = False

        async def to_home_assistant() -> None:
            nonlocal losing
            while data := await reader.read(65536):
                for raw in _REQUEST_LINE.findall(data):
                    path = raw.decode()
                    self.requests[path] += 1
                    if self._lose[path] > 0:
                        self._lose[path] -= 1
                        losing = True
                upstream.write(data)
                await upstream.drain()

        async def to_gateway() -> None:
            while data := await upstream_reader.read(65536):
                if losing:
                    self.replies_lost += 1
                    return
                writer.write(data)
                await writer.drain()

        try:
            with contextlib.suppress(OSError):
                # Whichever side ends first ends the connection.
                tasks = [
                    asyncio.create_task(to_home_assistant()),
                    asyncio.create_task(to_gateway()),
                ]
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for side in (writer, upstream):
                side.transport.abort()
                self._writers.discard(side)


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
async def relay(http_client: TestClient) -> AsyncIterator[TcpRelay]:
    """The gateway's way to Home Assistant, which the tests can cut."""
    assert http_client.port is not None
    relay = TcpRelay(http_client.port)
    await relay.start()
    yield relay
    await relay.stop()


@pytest.fixture
def gateway_config(
    grid: SimulatedGrid, relay: TcpRelay, hass_access_token: str, tmp_path: Path
) -> GatewayConfig:
    """The edge gateway's configuration for both nodes, pointed at Home Assistant."""
    return parse_config(
        {
            "home_assistant": {
                "url": relay.url,
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


def _gateway(config: GatewayConfig, grid: SimulatedGrid) -> Gateway:
    return Gateway(
        config,
        sleep=grid.sleep,
        monotonic=lambda: grid.time_s,
        retry=RetryPolicy(initial_s=0.05, maximum_s=0.5),
        reconnect=Backoff(initial=5.0, maximum=20.0),
    )


@pytest.fixture
async def gateway(gateway_config: GatewayConfig, grid: SimulatedGrid) -> AsyncIterator[Gateway]:
    """The edge gateway, running."""
    async with _gateway(gateway_config, grid) as gateway:
        yield gateway


@pytest.fixture
async def gateway_entry(hass: HomeAssistant, http_client: TestClient) -> MockConfigEntry:
    """Home Assistant's config entry for the gateway, set up."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=DEVICE_ID,
        unique_id=f"gateway:{DEVICE_ID}",
        data={CONF_KIND: EntryKind.GATEWAY, CONF_DEVICE_ID: DEVICE_ID},
    )
    await setup_entry(hass, entry)
    return entry


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


def _out_wh(grid: SimulatedGrid, uid: str) -> float:
    return grid.nodes[uid].physical.energy.as_wh()["terminal_out_wh"]


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


def _queued_reports(gateway: Gateway) -> list[dict[str, object]]:
    return [m.body for m in gateway.outbox.pending() if m.kind == "energy_report"]


async def _start_transfer(
    hass: HomeAssistant, entry: MockConfigEntry, gateway: Gateway, energy_wh: float
) -> dict[str, Any]:
    """Start a transfer NODE_A -> NODE_B in Home Assistant, once both nodes are metered."""
    coordinator = entry.runtime_data
    await wait_until(
        hass,
        lambda: all(
            (node := coordinator.nodes.get(uid)) is not None and node.telemetry is not None
            for uid in ("NODE_A", "NODE_B")
        ),
    )
    await wait_until(hass, lambda: gateway.stream_connected)
    started = await hass.services.async_call(
        DOMAIN,
        "start_transfer",
        {"sender": "NODE_A", "receiver": "NODE_B", "energy_wh": energy_wh},
        blocking=True,
        return_response=True,
    )
    assert started is not None
    return dict(started)


async def _transfer_then_lose_home_assistant(
    hass: HomeAssistant,
    grid: SimulatedGrid,
    entry: MockConfigEntry,
    gateway: Gateway,
    relay: TcpRelay,
) -> dict[str, object]:
    """Cut Home Assistant off mid-transfer; return the report the gateway queues meanwhile."""
    hub = hass.data[DATA_IOT_HUB]
    await _start_transfer(hass, entry, gateway, energy_wh=5.0)
    await wait_until(hass, lambda: _out_wh(grid, "NODE_A") > 1.3, max_wait=120)

    await relay.stop()
    # Nothing from Home Assistant for a lease: the gateway lets its nodes go,
    # and the transfer that ended waits in the outbox.
    await wait_until(hass, lambda: _relays(grid, "NODE_A")() == (False, False), max_wait=30)
    assert _relays(grid, "NODE_B")() == (False, False)
    await wait_until(hass, lambda: bool(_queued_reports(gateway)), max_wait=30)
    assert not gateway.online
    assert len(hub.reports) == 0
    # Home Assistant still has the transfer running: it heard nothing since.
    assert hass.data[DATA_GRID].active_count == 1
    (report,) = _queued_reports(gateway)
    return report


async def _transfer_ended(hass: HomeAssistant) -> dict[str, Any]:
    """Home Assistant's record of the transfer, once the gateway's nodes showed it ended."""
    await wait_until(hass, lambda: hass.data[DATA_GRID].active_count == 0, max_wait=30)
    (record,) = hass.data[DATA_GRID].transfers(limit=1)
    return record.model_dump(mode="json")


# ----------------------------------------------------------------- pings and schedules


async def test_gateway_reports_to_home_assistant_and_follows_its_schedule(
    hass: HomeAssistant, grid: SimulatedGrid, gateway: Gateway
) -> None:
    """Pings arrive, a schedule moves the relays and holds them while it stands."""
    hub = hass.data[DATA_IOT_HUB]
    node_data = _events(hass, "peergrid_iot_node_data")

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
    telemetry = detail["NODE_A"].telemetry
    assert telemetry is not None
    assert telemetry.e_out_mwh == 0
    assert telemetry.uptime_s >= 0
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

    # Back to idle: the nodes stop, and the gateway pings at once to say so.
    pings = len(node_data)
    hub.publish(_schedule(NODE_A="idle", NODE_B="idle"))
    await wait_until(hass, lambda: _relays(grid, "NODE_A")() == (False, False))
    await wait_until(
        hass,
        lambda: any(
            [node["state"] for node in ping["nodes_detail"]] == ["IDLE", "IDLE"]
            for ping in node_data[pings:]
        ),
    )


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


# ----------------------------------------------------------------- store and forward


async def test_reports_wait_out_an_outage_and_arrive_exactly_once(
    hass: HomeAssistant,
    grid: SimulatedGrid,
    gateway_entry: MockConfigEntry,
    gateway: Gateway,
    relay: TcpRelay,
) -> None:
    """Unreachable Home Assistant: the report waits; back, it is stored once, a lost answer too."""
    hub = hass.data[DATA_IOT_HUB]
    fired = _events(hass, "peergrid_energy_report")
    report = await _transfer_then_lose_home_assistant(hass, grid, gateway_entry, gateway, relay)

    # Home Assistant comes back; it takes the first delivery, but its answer
    # is lost on the way, so the gateway keeps the report and sends it again.
    relay.lose_reply_to(REPORT_PATH)
    await relay.start()
    await wait_until(hass, lambda: len(hub.reports) == 1, max_wait=30)
    await wait_until(hass, lambda: not _queued_reports(gateway), max_wait=30)

    assert relay.replies_lost == 1
    assert relay.requests[REPORT_PATH] == 2
    (stored,) = hub.reports.reports
    assert stored.report.report_id == report["report_id"]
    assert stored.report.sender_uid == "NODE_A"
    assert stored.report.receiver_uid == "NODE_B"
    assert len(fired) == 1
    # The rest of the outbox went too, and the gateway follows Home Assistant again.
    await wait_until(hass, lambda: len(gateway.outbox) == 0, max_wait=30)
    await wait_until(hass, lambda: gateway.online and gateway.stream_connected)
    assert hub.depin.node(DEVICE_ID) is not None
    # Home Assistant sees the nodes idle and closes its record with what was measured;
    # the standing schedule it replays to the gateway does not start them again.
    record = await _transfer_ended(hass)
    assert record["wh_out"] == pytest.approx(float(stored.report.kwh_transferred) * 1000, abs=0.1)
    assert _relays(grid, "NODE_A")() == (False, False)


async def test_a_gateway_restarted_mid_queue_loses_and_duplicates_nothing(
    hass: HomeAssistant,
    grid: SimulatedGrid,
    gateway_entry: MockConfigEntry,
    gateway_config: GatewayConfig,
    relay: TcpRelay,
) -> None:
    """The queued report survives the gateway process; the new one delivers it once."""
    hub = hass.data[DATA_IOT_HUB]
    fired = _events(hass, "peergrid_energy_report")
    first = _gateway(gateway_config, grid)
    await first.start()
    try:
        report = await _transfer_then_lose_home_assistant(hass, grid, gateway_entry, first, relay)
        queued = [message.body for message in first.outbox.pending()]
    finally:
        await first.stop()

    # A new gateway process on the same outbox file finds everything there.
    async with _gateway(gateway_config, grid) as second:
        assert [message.body for message in second.outbox.pending()] == queued
        await relay.start()
        await wait_until(hass, lambda: len(second.outbox) == 0, max_wait=30)
        await wait_until(hass, lambda: second.stream_connected)
        # The transfer standing in Home Assistant's schedule was ended by the
        # restart: the new gateway does not start it again, and Home Assistant
        # closes its record.
        record = await _transfer_ended(hass)
        assert _relays(grid, "NODE_A")() == (False, False)

    (stored,) = hub.reports.reports
    assert stored.report.model_dump(mode="json") == report
    assert record["wh_out"] == pytest.approx(float(stored.report.kwh_transferred) * 1000, abs=0.1)
    assert relay.requests[REPORT_PATH] == 1
    assert len(fired) == 1
    # Registered once, before and after the restart alike.
    assert relay.requests["/api/peergrid/depin/register"] == 1


# ----------------------------------------------------------------- transfers through the gateway


async def test_transfer_started_in_home_assistant_runs_through_the_gateway(
    hass: HomeAssistant,
    grid: SimulatedGrid,
    gateway: Gateway,
    gateway_entry: MockConfigEntry,
) -> None:
    """peergrid.start_transfer between two gateway nodes: scheduled, metered, stopped at target."""
    hub = hass.data[DATA_IOT_HUB]
    schedules = _events(hass, "peergrid_iot_schedule")
    completed = _events(hass, EVENT_TRANSFER_COMPLETED)
    started = await _start_transfer(hass, gateway_entry, gateway, energy_wh=1.2)
    assert started["state"] == "active"
    # By the time the action returns, the gateway confirmed both nodes.
    assert _relays(grid, "NODE_A")() == (True, False)
    assert _relays(grid, "NODE_B")() == (False, True)
    schedule = schedules[-1]
    assert schedule["device_id"] == DEVICE_ID
    commands = {command["uid"]: command for command in schedule["commands"]}
    # The target plus its margin is the nodes' own budget: they stop even without us.
    assert commands["NODE_A"] == {
        "uid": "NODE_A",
        "action": "discharge",
        "limit_mwh": 1250,
        "min_mv": 3300,
    }
    assert commands["NODE_B"] == {"uid": "NODE_B", "action": "charge", "limit_mwh": 1250}
    a_device = dr.async_get(hass).async_get_device(identifiers={(DOMAIN, "NODE_A")})
    assert a_device is not None
    supply = er.async_get(hass).async_get_entity_id("switch", DOMAIN, f"{DEVICE_ID}_NODE_A_supply")
    assert supply is not None
    await wait_until(hass, lambda: state_value(hass, supply) == "on")

    await wait_until(hass, lambda: bool(completed), max_wait=120)
    (record,) = completed
    assert record["sender"] == "NODE_A"
    assert record["receiver"] == "NODE_B"
    assert record["stop_reason"] == "target_reached"
    assert record["sender_device_id"] == a_device.id
    # Metered from the nodes' own counters, as for a direct transfer.
    assert 1.2 <= record["wh_out"] < 1.3
    assert 0 < record["wh_in"] < record["wh_out"]
    assert record["loss_wh"] == pytest.approx(record["wh_out"] - record["wh_in"], abs=1e-9)
    status = gateway.nodes["NODE_A"].status
    assert status is not None
    assert record["wh_out"] == pytest.approx(status.e_out_mwh / 1000, abs=0.02)
    assert record["avg_voltage_v"] > 3.3

    # Both nodes are released through the gateway, and the gateway reports the transfer.
    await wait_until(hass, lambda: _relays(grid, "NODE_A")() == (False, False))
    await wait_until(hass, lambda: _relays(grid, "NODE_B")() == (False, False))
    assert schedules[-1]["commands"] == [
        {"uid": "NODE_A", "action": "idle"},
        {"uid": "NODE_B", "action": "idle"},
    ]
    await wait_until(hass, lambda: len(hub.reports) == 1, max_wait=30)
    (stored,) = hub.reports.reports
    assert (stored.report.sender_uid, stored.report.receiver_uid) == ("NODE_A", "NODE_B")
    assert float(stored.report.kwh_transferred) * 1000 == pytest.approx(record["wh_out"], abs=0.03)
    # The gateway nodes' sensors show the transfer like a direct node's.
    shared = er.async_get(hass).async_get_entity_id(
        "sensor", DOMAIN, f"{DEVICE_ID}_NODE_A_energy_shared"
    )
    assert shared is not None
    await wait_until(hass, lambda: state_value(hass, shared) != "0.0")
    shown = hass.states.get(shared)
    assert shown is not None
    assert shown.attributes["unit_of_measurement"] == "kWh"
    assert float(shown.state) * 1000 == pytest.approx(record["wh_out"], abs=1e-3)
    assert hass.data[DATA_GRID].active_count == 0
