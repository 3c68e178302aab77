"""The gateway end to end: real firmware nodes (simulated batteries) and a fake Home Assistant.

The grid runs up to 100x faster than real time, and the gateway's cycles,
leases and silence watch run on the grid's simulated clock, as do the nodes'
leases. Home Assistant is an aiohttp application on 127.0.0.1 implementing the
contract's endpoints (``fake_backend``). Waits are bounded polls on outcomes;
no assertion is about how long anything took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
import re
from typing import Any

import pytest

from edge.config import GatewayConfig, parse_config
from edge.gateway import Gateway
from edge.outbox import RetryPolicy
from peergrid_core.events import ScheduleData
from peergrid_core.protocol import Backoff, Mode
from peergrid_core.sim import NodeSpec, SimulatedGrid

from .fake_backend import TOKEN, FakeHomeAssistant

pytestmark = pytest.mark.usefixtures("socket_enabled")

SPEEDUP = 100.0
LEASE_S = 30
CYCLE_S = 5.0
DEVICE_ID = "rpi-test-01"
WALLET = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``predicate`` (wall clock, generous bound); fail naming ``what``."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - the state is spread over several objects
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
async def fake_ha() -> AsyncIterator[FakeHomeAssistant]:
    fake = FakeHomeAssistant(keepalive_s=0.05)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def grid() -> AsyncIterator[SimulatedGrid]:
    specs = [NodeSpec(uid="NODE_A", soc_percent=90), NodeSpec(uid="NODE_B", soc_percent=20)]
    async with SimulatedGrid(specs, speedup=SPEEDUP, seed=11) as sim:
        yield sim


def make_config(
    grid: SimulatedGrid, fake: FakeHomeAssistant, tmp_path: Path, **changes: Any
) -> GatewayConfig:
    data: dict[str, Any] = {
        "home_assistant": {
            "url": fake.url,
            "token": TOKEN,
            "request_timeout_s": 2.0,
            "stream_timeout_s": 1.0,
        },
        "device_id": DEVICE_ID,
        "nodes": [
            {"uid": node.uid, "host": node.host, "port": node.port, "key": node.key}
            for node in grid.nodes.values()
        ],
        "cycle_s": CYCLE_S,
        "lease_s": LEASE_S,
        "outbox_path": str(tmp_path / "outbox.sqlite3"),
        "zeroconf": False,
    }
    data.update(changes)
    return parse_config(data, env={})


def make_gateway(config: GatewayConfig, grid: SimulatedGrid) -> Gateway:
    return Gateway(
        config,
        sleep=grid.sleep,
        monotonic=lambda: grid.time_s,
        retry=RetryPolicy(initial_s=0.05, maximum_s=0.5),
        reconnect=Backoff(initial=5.0, maximum=20.0),
    )


def schedule(**actions: str) -> ScheduleData:
    return ScheduleData.model_validate(
        {
            "device_id": DEVICE_ID,
            "commands": [{"uid": uid, "action": action} for uid, action in actions.items()],
            "grid_summary": {"node_count": 2, "avg_soc": 55.0, "soc_spread": 70.0},
        }
    )


def relays(grid: SimulatedGrid, uid: str) -> tuple[bool, bool]:
    state = grid.nodes[uid].physical
    return state.supply_closed, state.receive_closed


async def start_transfer(gateway: Gateway, fake: FakeHomeAssistant, grid: SimulatedGrid) -> None:
    await until(lambda: gateway.stream_connected, "the event stream")
    await until(
        lambda: all(h.status is not None for h in gateway.nodes.values()), "both nodes' status"
    )
    fake.publish_schedule(schedule(NODE_A="discharge", NODE_B="charge"))
    await until(
        lambda: relays(grid, "NODE_A") == (True, False) and relays(grid, "NODE_B") == (False, True),
        "A supplying and B receiving",
    )
    await until(
        lambda: (
            gateway.nodes["NODE_A"].keeper.mode is Mode.SUPPLY
            and gateway.nodes["NODE_B"].keeper.mode is Mode.RECEIVE
        ),
        "the gateway holding both",
    )


async def enough_energy(gateway: Gateway) -> None:
    """Let the transfer run until the sender moved well over the 1 Wh minimum."""

    def moved() -> bool:
        status = gateway.nodes["NODE_A"].status
        return status is not None and status.e_session_mwh >= 1_200

    await until(moved, "1.2 Wh out of NODE_A", timeout_s=60)


# ---------------------------------------------------------------- pings and DePIN


async def test_heartbeat_then_node_data_every_cycle(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    config = make_config(grid, fake_ha, tmp_path, depin={"wallet_address": WALLET})
    async with make_gateway(config, grid) as gateway:
        await until(lambda: len(fake_ha.node_data) >= 3, "three node-data pings")
        await until(lambda: len(fake_ha.depin_heartbeats) >= 2, "DePIN heartbeats")
        assert gateway.online
    assert fake_ha.log[0] == "heartbeat"
    assert fake_ha.heartbeats == [{"device_id": DEVICE_ID, "status": "heartbeat"}]

    ping = fake_ha.node_data[-1]
    assert ping["device_id"] == DEVICE_ID
    assert ping["source"] == "rpi_energy_grid"
    assert ping["connected_nodes_count"] == 2
    assert [n["uid"] for n in ping["connected_nodes"]] == ["NODE_A", "NODE_B"]
    details = {n["uid"]: n for n in ping["nodes_detail"]}
    for uid, soc in (("NODE_A", 90), ("NODE_B", 20)):
        physical = grid.nodes[uid].physical
        assert details[uid]["ip"] == "127.0.0.1"
        assert details[uid]["state"] == "IDLE"
        assert details[uid]["voltage"] == pytest.approx(physical.terminal_volts, abs=0.05)
        assert details[uid]["soc"] == pytest.approx(soc, abs=3)
    # The primary reading is the first node's.
    assert ping["voltage"] == details["NODE_A"]["voltage"]
    assert ping["battery_level"] == details["NODE_A"]["soc"]
    assert ping["state"] == "IDLE"

    # DePIN: one registration, then heartbeats (after it, in order).
    assert len(fake_ha.registrations) == 1
    registration = fake_ha.registrations[0]
    assert registration["device_id"] == DEVICE_ID
    assert registration["wallet_address"] == WALLET
    assert registration["firmware_version"] == "0.1.0"
    assert fake_ha.log.index("register") < fake_ha.log.index("depin_heartbeat")
    assert fake_ha.depin_heartbeats[-1]["routed_kwh"] == 0

    # A restart does not register again.
    async with make_gateway(config, grid):
        await until(lambda: len(fake_ha.heartbeats) >= 2, "the second boot's heartbeat")
        await until(lambda: len(fake_ha.depin_heartbeats) >= 4, "more DePIN heartbeats")
    assert len(fake_ha.registrations) == 1


async def test_heartbeat_again_after_home_assistant_restarts(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await until(lambda: gateway.stream_connected and bool(fake_ha.node_data), "first contact")
        assert gateway.heartbeats_sent == 1
        await fake_ha.stop()
        await until(lambda: not gateway.online, "the gateway noticing")
        assert not gateway.stream_connected
        pings_before = len(fake_ha.node_data)
        mark = len(fake_ha.log)
        await fake_ha.start()
        await until(lambda: len(fake_ha.heartbeats) == 2, "a heartbeat after the restart")
        await until(lambda: gateway.stream_connected, "the stream back")
        await until(lambda: len(fake_ha.node_data) > pings_before, "node data again")
    # The restarted Home Assistant heard the heartbeat before anything else.
    assert fake_ha.log[mark] == "heartbeat"
    assert fake_ha.stream_connects >= 2


# ---------------------------------------------------------------- schedules and leases


async def test_schedule_moves_relays_holds_leases_and_reports_the_transfer(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await start_transfer(gateway, fake_ha, grid)
        assert gateway.nodes["NODE_A"].keeper.mode is Mode.SUPPLY
        assert gateway.nodes["NODE_B"].keeper.mode is Mode.RECEIVE
        # Several leases long: the gateway keeps renewing while the command stands.
        await grid.sleep(4 * LEASE_S)
        assert relays(grid, "NODE_A") == (True, False)
        assert relays(grid, "NODE_B") == (False, True)
        await until(lambda: fake_ha.node_data[-1]["state"] == "SUPPLY", "SUPPLY in node data")
        await enough_energy(gateway)

        # Back to idle: no command at all means IDLE for every node.
        fake_ha.publish_schedule(schedule())
        await until(
            lambda: (
                relays(grid, "NODE_A") == (False, False)
                and relays(grid, "NODE_B") == (False, False)
            ),
            "both relays open",
        )
        await until(lambda: len(fake_ha.reports) == 1, "the energy report")
        final_a = gateway.nodes["NODE_A"].status
        assert final_a is not None
    (report_id, report), *_ = fake_ha.reports.items()
    assert UUID4.match(report_id)
    assert report["device_id"] == DEVICE_ID
    assert report["sender_uid"] == "NODE_A"
    assert report["receiver_uid"] == "NODE_B"
    # The energy is the sender's own counter: everything it supplied since boot.
    assert report["kwh_transferred"] * 1_000_000 == pytest.approx(final_a.e_out_mwh, abs=2)
    assert report["kwh_transferred"] >= 0.0012
    assert report["duration_seconds"] > 4 * LEASE_S
    assert 3.3 < report["avg_voltage"] < 4.3
    assert 0.5 < report["avg_current"] < 3.2
    assert len(fake_ha.report_posts) == 1


@pytest.mark.parametrize("outage", ["stopped", "silent"])
async def test_home_assistant_gone_longer_than_the_lease_releases_the_nodes(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path, outage: str
) -> None:
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await start_transfer(gateway, fake_ha, grid)
        if outage == "stopped":
            await fake_ha.stop()
        else:
            # Streams stay open (and new ones are accepted) but carry nothing.
            fake_ha.silent = True
        await until(
            lambda: (
                relays(grid, "NODE_A") == (False, False)
                and relays(grid, "NODE_B") == (False, False)
            ),
            "the nodes back to IDLE",
        )
        assert gateway.nodes["NODE_A"].keeper.mode is Mode.IDLE
        assert gateway.nodes["NODE_B"].keeper.mode is Mode.IDLE
        assert grid.nodes["NODE_A"].mode == "IDLE"


async def test_a_short_stream_outage_keeps_the_command(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    config = make_config(grid, fake_ha, tmp_path, lease_s=600)
    async with make_gateway(config, grid) as gateway:
        await start_transfer(gateway, fake_ha, grid)
        connects = fake_ha.stream_connects
        fake_ha.drop_streams()
        await until(lambda: fake_ha.stream_connects > connects, "the stream reconnecting")
        await until(lambda: gateway.stream_connected, "the stream back")
        await grid.sleep(60)
        assert relays(grid, "NODE_A") == (True, False)
        assert relays(grid, "NODE_B") == (False, True)


# ---------------------------------------------------------------- store and forward


async def test_report_queued_while_down_is_delivered_once(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await start_transfer(gateway, fake_ha, grid)
        await enough_energy(gateway)
        # Home Assistant goes away: the silence watch ends the transfer, whose
        # report must wait in the outbox.
        await fake_ha.stop()
        await until(lambda: len(gateway.outbox) == 1, "the report queued")
        queued = gateway.outbox.pending()[0]
        assert queued.kind == "energy_report"
        assert fake_ha.reports == {}
        await fake_ha.start()
        await until(lambda: len(fake_ha.reports) == 1, "the report delivered")
        await until(lambda: len(gateway.outbox) == 0, "the outbox emptied")
    assert list(fake_ha.reports) == [queued.body["report_id"]]
    assert len(fake_ha.report_posts) == 1


async def test_gateway_restart_mid_queue_loses_and_duplicates_nothing(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    config = make_config(grid, fake_ha, tmp_path)
    async with make_gateway(config, grid) as gateway:
        await start_transfer(gateway, fake_ha, grid)
        await enough_energy(gateway)
        await fake_ha.stop()
        await until(lambda: len(gateway.outbox) == 1, "the report queued")
        queued = gateway.outbox.pending()[0]
    # The gateway is gone; the report is in the file.
    async with make_gateway(config, grid) as second:
        assert [m.body for m in second.outbox.pending()] == [queued.body]
        await fake_ha.start()
        await until(lambda: len(fake_ha.reports) == 1, "the report delivered")
        await until(lambda: len(second.outbox) == 0, "the outbox emptied")
    assert list(fake_ha.reports.values()) == [queued.body]
    assert len(fake_ha.report_posts) == 1


async def test_refused_report_is_dropped(
    grid: SimulatedGrid,
    fake_ha: FakeHomeAssistant,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await until(lambda: gateway.online, "first contact")
        gateway.outbox.enqueue("energy_report", "iot/energy/report", {"device_id": DEVICE_ID})
        gateway._wake.set()
        await until(lambda: len(gateway.outbox) == 0, "the refused report dropped")
        assert fake_ha.reports == {}
    assert "refused energy_report" in caplog.text


# ---------------------------------------------------------------- odd situations


async def test_schedules_for_others_unknown_nodes_and_offline_nodes(
    grid: SimulatedGrid,
    fake_ha: FakeHomeAssistant,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await until(lambda: gateway.stream_connected, "the event stream")
        await until(
            lambda: all(h.status is not None for h in gateway.nodes.values()), "node status"
        )
        other = ScheduleData.model_validate(
            schedule(NODE_A="discharge").model_dump() | {"device_id": "someone-else"}
        )
        await gateway.apply_schedule(other)
        assert not gateway.last_schedule  # ignored: not this gateway's
        assert relays(grid, "NODE_A") == (False, False)

        await grid.stop_node("NODE_B")
        await until(lambda: not gateway.nodes["NODE_B"].online, "NODE_B offline")
        await gateway.apply_schedule(
            ScheduleData.model_validate(
                {
                    "device_id": DEVICE_ID,
                    "commands": [
                        {"uid": "NODE_A", "action": "idle"},
                        {"uid": "NODE_B", "action": "charge"},
                        {"uid": "NODE_Z", "action": "discharge"},
                    ],
                    "grid_summary": {"node_count": 3, "avg_soc": 50.0, "soc_spread": 70.0},
                }
            )
        )
        assert gateway.last_schedule is not None
        assert relays(grid, "NODE_A") == (False, False)
        assert gateway.nodes["NODE_B"].keeper.mode is Mode.IDLE
        # Node data now lists only the node that is there.
        await until(
            lambda: (
                bool(fake_ha.node_data)
                and [n["uid"] for n in fake_ha.node_data[-1]["nodes_detail"]] == ["NODE_A"]
            ),
            "node data without NODE_B",
        )
    assert "NODE_Z" in caplog.text
    assert "Cannot switch node NODE_B to RECEIVE: it is offline" in caplog.text


async def test_wrong_key_wrong_uid_and_host_names(
    grid: SimulatedGrid,
    fake_ha: FakeHomeAssistant,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = grid.nodes["NODE_A"], grid.nodes["NODE_B"]
    nodes = [
        # A host name instead of an address: the ping carries the resolved address.
        {"uid": "NODE_A", "host": "localhost", "port": a.port, "key": a.key},
        # NODE_B's address, but a different uid: not used.
        {"uid": "NODE_X", "host": b.host, "port": b.port, "key": b.key},
        # NODE_B again (a second session) with a wrong key: refused, not retried.
        {"uid": "NODE_B", "host": b.host, "port": b.port, "key": "not-the-right-key-0000"},
    ]
    config = make_config(grid, fake_ha, tmp_path, nodes=nodes)
    async with make_gateway(config, grid) as gateway:
        await until(lambda: len(fake_ha.node_data) >= 2, "node data")
        await until(lambda: "refused the gateway's key" in caplog.text, "the key refusal")
        assert gateway.nodes["NODE_A"].online
        assert not gateway.nodes["NODE_X"].online
        assert not gateway.nodes["NODE_B"].online
        assert gateway.nodes["NODE_X"].status is None
    ping = fake_ha.node_data[-1]
    assert [n["uid"] for n in ping["nodes_detail"]] == ["NODE_A"]
    assert ping["nodes_detail"][0]["ip"] in {"127.0.0.1", "::1"}
    assert "announces itself as NODE_B, not NODE_X" in caplog.text


async def test_server_errors_count_as_home_assistant_gone(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await until(lambda: bool(fake_ha.node_data), "first node data")
        fake_ha.fail_with = 503
        await until(lambda: not gateway.online, "the gateway noticing")
        fake_ha.fail_with = None
        await until(lambda: len(fake_ha.heartbeats) >= 2, "a heartbeat on recovery")
        await until(lambda: gateway.online, "online again")


# ---------------------------------------------------------------- what Home Assistant meters with


def schedule_with(
    commands: list[dict[str, Any]], issued_at: datetime | None = None
) -> ScheduleData:
    data: dict[str, Any] = {
        "device_id": DEVICE_ID,
        "commands": commands,
        "grid_summary": {"node_count": 2, "avg_soc": 55.0, "soc_spread": 70.0},
    }
    if issued_at is not None:
        data["issued_at"] = issued_at.isoformat()
    return ScheduleData.model_validate(data)


def detail_of(ping: dict[str, Any], uid: str) -> dict[str, Any]:
    return next(node for node in ping["nodes_detail"] if node["uid"] == uid)


async def test_node_data_carries_telemetry_and_a_schedules_limits_reach_the_node(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    """Counters, current and the applied budget travel in the ping; the node stops at the budget."""
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await until(lambda: gateway.stream_connected and bool(fake_ha.node_data), "first contact")
        idle = detail_of(fake_ha.node_data[-1], "NODE_A")["telemetry"]
        status = gateway.nodes["NODE_A"].status
        assert status is not None
        assert idle["e_out_mwh"] == status.e_out_mwh
        assert idle["e_in_mwh"] == status.e_in_mwh
        assert idle["uptime_s"] <= status.uptime_s
        assert idle["trip"] is None
        assert idle["limit_mwh"] is None

        commands = [
            {"uid": "NODE_A", "action": "discharge", "limit_mwh": 800, "min_mv": 3400},
            {"uid": "NODE_B", "action": "charge", "limit_mwh": 800},
        ]
        fake_ha.publish_schedule(schedule_with(commands))
        await until(lambda: gateway.nodes["NODE_A"].held_limit_mwh == 800, "A holding 800 mWh")
        await until(
            lambda: detail_of(fake_ha.node_data[-1], "NODE_A")["state"] == "SUPPLY",
            "SUPPLY in node data",
        )
        supplying = detail_of(fake_ha.node_data[-1], "NODE_A")["telemetry"]
        assert supplying["limit_mwh"] == 800
        assert supplying["ma"] > 0

        # The node's own budget ends the transfer: it trips, and the ping says why.
        await until(lambda: relays(grid, "NODE_A") == (False, False), "A stopped at 800 mWh")
        await until(
            lambda: (
                detail_of(fake_ha.node_data[-1], "NODE_A")["telemetry"]["trip"] == "energy_limit"
            ),
            "the trip in node data",
        )
        tripped = detail_of(fake_ha.node_data[-1], "NODE_A")
        assert tripped["state"] == "IDLE"
        assert 800 <= tripped["telemetry"]["e_out_mwh"] < 900
        assert tripped["telemetry"]["limit_mwh"] is None

        # The same schedule again does not restart what the node stopped...
        fake_ha.publish_schedule(schedule_with(commands))
        await grid.sleep(3 * CYCLE_S)
        assert relays(grid, "NODE_A") == (False, False)
        # ...a new command (after idle) does.
        fake_ha.publish_schedule(schedule())
        fake_ha.publish_schedule(schedule(NODE_A="discharge"))
        await until(lambda: relays(grid, "NODE_A") == (True, False), "A supplying again")
        # Without a budget in the schedule, the node applies its own.
        await until(lambda: gateway.nodes["NODE_A"].held_limit_mwh == 10_000, "its own budget")


async def test_a_ping_follows_each_schedule_without_waiting_for_the_cycle(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    """With an hour-long cycle, Home Assistant still sees a command take effect at once."""
    config = make_config(grid, fake_ha, tmp_path, cycle_s=3600)
    async with make_gateway(config, grid) as gateway:
        await until(lambda: gateway.stream_connected and bool(fake_ha.node_data), "first contact")
        await until(
            lambda: all(h.status is not None for h in gateway.nodes.values()), "node status"
        )
        seen = len(fake_ha.node_data)
        fake_ha.publish_schedule(schedule(NODE_A="discharge", NODE_B="charge"))
        await until(
            lambda: any(
                [n["state"] for n in ping["nodes_detail"]] == ["SUPPLY", "RECEIVE"]
                for ping in fake_ha.node_data[seen:]
            ),
            "node data showing the schedule applied",
        )
        seen = len(fake_ha.node_data)
        fake_ha.publish_schedule(schedule())
        await until(
            lambda: any(
                [n["state"] for n in ping["nodes_detail"]] == ["IDLE", "IDLE"]
                for ping in fake_ha.node_data[seen:]
            ),
            "node data showing both idle",
        )


async def test_a_schedule_from_before_the_start_is_not_started_again(
    grid: SimulatedGrid, fake_ha: FakeHomeAssistant, tmp_path: Path
) -> None:
    """The schedule standing when the gateway connects asked for what its restart ended."""
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as gateway:
        await start_transfer(gateway, fake_ha, grid)
        started = datetime.now(UTC)
    async with make_gateway(make_config(grid, fake_ha, tmp_path), grid) as second:
        await until(lambda: second.stream_connected, "the event stream")
        await until(lambda: all(h.status is not None for h in second.nodes.values()), "status")
        before = schedule_with(
            [{"uid": "NODE_A", "action": "discharge"}, {"uid": "NODE_B", "action": "charge"}],
            issued_at=started - timedelta(seconds=5),
        )
        await second.apply_schedule(before)
        assert relays(grid, "NODE_A") == (False, False)
        assert relays(grid, "NODE_B") == (False, False)
        assert second.nodes["NODE_A"].keeper.mode is Mode.IDLE

        # What Home Assistant asks from now on is carried out.
        await second.apply_schedule(schedule_with([], issued_at=datetime.now(UTC)))
        await second.apply_schedule(
            schedule_with(
                [{"uid": "NODE_A", "action": "discharge"}, {"uid": "NODE_B", "action": "charge"}],
                issued_at=datetime.now(UTC),
            )
        )
        assert relays(grid, "NODE_A") == (True, False)
        assert relays(grid, "NODE_B") == (False, True)
