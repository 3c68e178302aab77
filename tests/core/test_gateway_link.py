"""Nodes behind a gateway: their payload extensions, GatewayNodes and transfers through them.

:class:`FakeGateway` plays the edge gateway in memory: it applies each
schedule :class:`GatewayNodes` publishes and answers with a node-data ping, as
the real gateway does after applying one, and moves energy between the nodes
when the test says so. A :class:`TransferSession` then runs over
:class:`GatewayNodeLink` exactly as it runs over a direct node's link.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings, strategies as st
from pydantic import ValidationError
import pytest

from peergrid_core.errors import PeerGridConnectionError, PeerGridError, PeerGridTimeoutError
from peergrid_core.events import ScheduleCommand, ScheduleData
from peergrid_core.gateway_link import GatewayNodeLink, GatewayNodes, NodeCommand, node_status
from peergrid_core.payloads import NodeDataPing, NodeDetail, parse_ping
from peergrid_core.protocol import ConnectionState, Mode, NodePush, NodeState, Status, TripReason
from peergrid_core.transfer import StopReason, TransferRequest, TransferSession, TransferState

GATEWAY = "rpi-4b-prod-01"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC_PING = Path(__file__).parents[1] / "fixtures/spec_payloads/ping_node_data.json"


@dataclass(kw_only=True)
class SimNode:
    """One node as the fake gateway keeps it."""

    uid: str
    mv: int
    soc: int
    mode: Mode = Mode.IDLE
    e_out_mwh: int = 0
    e_in_mwh: int = 0
    uptime_s: int = 100
    trip: TripReason | None = None
    limit_mwh: int | None = None
    reachable: bool = True


@dataclass(kw_only=True)
class FakeGateway:
    """Applies schedules to its nodes and pings back, like the edge gateway."""

    nodes: dict[str, SimNode]
    control: GatewayNodes | None = None
    schedules: list[ScheduleData] = field(default_factory=list)
    deaf: bool = False
    """Ignore schedules (an event stream that is down)."""

    refuse: set[str] = field(default_factory=set)
    """Nodes that refuse every command but IDLE."""

    def publish(self, schedule: ScheduleData) -> None:
        self.schedules.append(schedule)
        if self.deaf:
            return
        for command in schedule.commands:
            node = self.nodes[command.uid]
            mode = Mode(command.node_command.value)
            if mode is not Mode.IDLE and command.uid in self.refuse:
                continue
            if mode is not node.mode:
                node.trip = None
                node.limit_mwh = command.limit_mwh if mode is not Mode.IDLE else None
            node.mode = mode
        asyncio.get_running_loop().call_soon(self.ping)

    def ping(self) -> None:
        assert self.control is not None
        self.control.observe(ping_of(*(n for n in self.nodes.values() if n.reachable)))

    def move(self, mwh: int) -> None:
        """The supplying node gives ``mwh``; charging nodes take 90 % of it."""
        for node in self.nodes.values():
            if node.mode is Mode.SUPPLY:
                node.e_out_mwh += mwh
            elif node.mode is Mode.RECEIVE:
                node.e_in_mwh += mwh * 9 // 10
        self.ping()


def detail(node: SimNode) -> dict[str, Any]:
    return {
        "uid": node.uid,
        "ip": "192.168.1.10",
        "voltage": node.mv / 1000,
        "soc": node.soc / 10,
        "state": node.mode.value,
        "telemetry": {
            "e_out_mwh": node.e_out_mwh,
            "e_in_mwh": node.e_in_mwh,
            "uptime_s": node.uptime_s,
            "ma": 1480 if node.mode is Mode.SUPPLY else 0,
            "mw": 5803 if node.mode is Mode.SUPPLY else 0,
            "trip": node.trip,
            "limit_mwh": node.limit_mwh,
        },
    }


def ping_of(*nodes: SimNode, device_id: str = GATEWAY) -> NodeDataPing:
    details = [detail(node) for node in nodes]
    first = details[0] if details else {"voltage": 3.9, "soc": 50.0, "state": "IDLE"}
    return NodeDataPing.model_validate(
        {
            "device_id": device_id,
            "voltage": first["voltage"],
            "battery_level": first["soc"],
            "state": first["state"],
            "source": "rpi_energy_grid",
            "timestamp": "2026-03-01T12:00:00Z",
            "connected_nodes_count": len(details),
            "connected_nodes": [{"uid": d["uid"], "voltage": d["voltage"]} for d in details],
            "nodes_detail": details,
        }
    )


@pytest.fixture
def fake() -> FakeGateway:
    """NODE_A full, NODE_B empty, NODE_C idle, behind one gateway that has pinged once."""
    gateway = FakeGateway(
        nodes={
            "NODE_A": SimNode(uid="NODE_A", mv=3950, soc=850),
            "NODE_B": SimNode(uid="NODE_B", mv=3600, soc=250),
            "NODE_C": SimNode(uid="NODE_C", mv=3800, soc=600),
        }
    )
    gateway.control = GatewayNodes(
        GATEWAY, gateway.publish, command_timeout_s=0.5, clock=lambda: T0
    )
    gateway.ping()
    return gateway


def control_of(fake: FakeGateway) -> GatewayNodes:
    assert fake.control is not None
    return fake.control


def commands_of(schedule: ScheduleData) -> dict[str, tuple[str, int | None, int | None]]:
    return {c.uid: (c.action.value, c.limit_mwh, c.min_mv) for c in schedule.commands}


# ----------------------------------------------------------------- payload extensions


def test_the_specifications_ping_reads_and_writes_as_before() -> None:
    """Without telemetry a node's detail is the specification's, in and out."""
    raw = json.loads(SPEC_PING.read_text(encoding="utf-8"))
    ping = parse_ping(raw)
    assert isinstance(ping, NodeDataPing)
    assert all(node.telemetry is None for node in ping.nodes_detail)
    assert ping.model_dump(mode="json") == raw
    assert json.loads(ping.model_dump_json()) == raw


def test_telemetry_is_validated_at_its_field() -> None:
    """The extension follows the payload policy: typed, bounded, unknown keys refused."""
    node = SimNode(uid="NODE_A", mv=3900, soc=700, e_out_mwh=1520, trip=TripReason.ENERGY_LIMIT)
    good = ping_of(node).model_dump(mode="json")
    assert good["nodes_detail"][0]["telemetry"]["trip"] == "energy_limit"
    for key, value, kind in (
        ("e_out_mwh", -1, "greater_than_equal"),
        ("e_in_mwh", 1.5, "int_type"),
        ("ma", 9000, "less_than_equal"),
        ("trip", "melted", "enum"),
        ("limit_mwh", 0, "greater_than_equal"),
        ("relay", "on", "extra_forbidden"),
    ):
        bad = json.loads(json.dumps(good))
        bad["nodes_detail"][0]["telemetry"][key] = value
        with pytest.raises(ValidationError) as caught:
            parse_ping(bad)
        (error,) = caught.value.errors()
        assert error["loc"] == ("nodes_detail", 0, "telemetry", key)
        assert error["type"] == kind


def test_schedule_extensions_are_optional_and_checked() -> None:
    """Limits and the issue time are left out when absent and refused out of range."""
    bare = ScheduleCommand(uid="NODE_A", action="discharge")  # type: ignore[arg-type]
    assert bare.model_dump(mode="json") == {"uid": "NODE_A", "action": "discharge"}
    full = ScheduleCommand.model_validate(
        {"uid": "NODE_A", "action": "discharge", "limit_mwh": 1250, "min_mv": 3300}
    )
    assert full.model_dump(mode="json")["limit_mwh"] == 1250
    for key, value in (("limit_mwh", 100_001), ("min_mv", 2_900), ("min_mv", "3300")):
        with pytest.raises(ValidationError) as caught:
            ScheduleCommand.model_validate({"uid": "NODE_A", "action": "charge", key: value})
        assert caught.value.errors()[0]["loc"] == (key,)
    schedule = {
        "device_id": GATEWAY,
        "commands": [],
        "grid_summary": {"node_count": 0, "avg_soc": None, "soc_spread": None},
    }
    assert "issued_at" not in ScheduleData.model_validate(schedule).model_dump(mode="json")
    stamped = ScheduleData.model_validate(schedule | {"issued_at": "2026-03-01T12:00:00Z"})
    assert stamped.model_dump(mode="json")["issued_at"] == "2026-03-01T12:00:00Z"
    with pytest.raises(ValidationError) as caught:
        ScheduleData.model_validate(schedule | {"issued_at": 1_772_366_400})
    assert caught.value.errors()[0]["loc"] == ("issued_at",)


# ----------------------------------------------------------------- the status behind a ping


def test_node_status_from_a_detail() -> None:
    """The status carries the ping's readings in the protocol's units; trips read as tripped."""
    node = SimNode(uid="NODE_A", mv=3921, soc=724, mode=Mode.SUPPLY, e_out_mwh=1520)
    (metered,) = ping_of(node).nodes_detail
    status = node_status(metered)
    assert status is not None
    assert (status.mode, status.state) == (Mode.SUPPLY, NodeState.SUPPLYING)
    assert (status.mv, status.soc, status.ma, status.mw) == (3921, 724, 1480, 5803)
    assert (status.e_out_mwh, status.e_in_mwh, status.uptime_s) == (1520, 0, 100)
    assert status.last_trip is None

    node.mode, node.trip = Mode.IDLE, TripReason.LOW_VOLTAGE
    tripped = node_status(ping_of(node).nodes_detail[0])
    assert tripped is not None
    assert (tripped.state, tripped.last_trip) == (NodeState.TRIPPED, TripReason.LOW_VOLTAGE)


def test_node_status_needs_telemetry_and_a_protocol_uid() -> None:
    """A spec-only detail, or a uid no node could announce, gives no status."""
    spec = NodeDetail.model_validate(
        {"uid": "NODE_A", "ip": "10.0.0.2", "voltage": 3.9, "soc": 70.0, "state": "IDLE"}
    )
    assert node_status(spec) is None
    dotted = NodeDetail.model_validate(detail(SimNode(uid="node.a", mv=3900, soc=700)))
    assert node_status(dotted) is None


@settings(max_examples=80)
@given(
    mv=st.integers(min_value=0, max_value=6000),
    soc=st.integers(min_value=0, max_value=1000),
    e_out=st.integers(min_value=0, max_value=10**12),
)
def test_readings_survive_the_gateways_units(mv: int, soc: int, e_out: int) -> None:
    """Volts and percent from the gateway's division come back as the node's integers."""
    node = SimNode(uid="NODE_A", mv=mv, soc=soc, e_out_mwh=e_out)
    wire = json.loads(ping_of(node).model_dump_json())
    status = node_status(parse_ping(wire).nodes_detail[0])  # type: ignore[union-attr]
    assert status is not None
    assert (status.mv, status.soc, status.e_out_mwh) == (mv, soc, e_out)


# ----------------------------------------------------------------- commands


async def test_command_publishes_the_whole_schedule_and_waits_for_the_ping(
    fake: FakeGateway,
) -> None:
    """Every reported node is in the schedule; the command returns on the confirming ping."""
    control = control_of(fake)
    confirmed = await control.command("NODE_A", Mode.SUPPLY, limit_mwh=1250, min_mv=3300)
    assert confirmed.state == "SUPPLY"
    (schedule,) = fake.schedules
    assert schedule.device_id == GATEWAY
    assert schedule.issued_at == T0
    assert commands_of(schedule) == {
        "NODE_A": ("discharge", 1250, 3300),
        "NODE_B": ("idle", None, None),
        "NODE_C": ("idle", None, None),
    }
    assert schedule.grid_summary.node_count == 3
    assert control.commands == {
        "NODE_A": NodeCommand(mode=Mode.SUPPLY, limit_mwh=1250, min_mv=3300)
    }

    # A charge carries no cut-off; the discharge keeps standing beside it.
    await control.command("NODE_B", Mode.RECEIVE, limit_mwh=1250, min_mv=3300)
    assert commands_of(fake.schedules[-1])["NODE_A"] == ("discharge", 1250, 3300)
    assert commands_of(fake.schedules[-1])["NODE_B"] == ("charge", 1250, None)

    # Asking again for what stands publishes nothing; a release does not wait.
    await control.command("NODE_A", Mode.SUPPLY, limit_mwh=1250, min_mv=3300)
    assert len(fake.schedules) == 2
    control.release("NODE_B")
    assert commands_of(fake.schedules[-1])["NODE_B"] == ("idle", None, None)
    control.release("NODE_B")
    assert len(fake.schedules) == 3


async def test_command_for_an_unreachable_node_publishes_nothing(fake: FakeGateway) -> None:
    """A node the gateway does not report cannot be commanded."""
    control = control_of(fake)
    with pytest.raises(PeerGridConnectionError, match="NODE_Z"):
        await control.command("NODE_Z", Mode.SUPPLY)
    control.set_offline()
    with pytest.raises(PeerGridConnectionError):
        await control.command("NODE_A", Mode.SUPPLY)
    assert fake.schedules == []


async def test_an_unconfirmed_command_is_withdrawn(fake: FakeGateway) -> None:
    """No ping shows the node in the mode: the command times out and the node is asked idle."""
    control = control_of(fake)
    fake.refuse.add("NODE_A")
    with pytest.raises(PeerGridTimeoutError, match="NODE_A"):
        await control.command("NODE_A", Mode.SUPPLY)
    assert control.commands == {}
    assert [commands_of(s)["NODE_A"][0] for s in fake.schedules] == ["discharge", "idle"]

    # A gateway that missed the schedule hears it again when the same command is retried.
    fake.refuse.clear()
    fake.deaf = True
    waiting = asyncio.create_task(control.command("NODE_A", Mode.SUPPLY))
    await asyncio.sleep(0)
    assert commands_of(fake.schedules[-1])["NODE_A"][0] == "discharge"
    fake.ping()  # a ping from before the gateway applied it changes nothing
    assert control.commands["NODE_A"].mode is Mode.SUPPLY
    fake.deaf = False
    retry = asyncio.create_task(control.command("NODE_A", Mode.SUPPLY))
    with pytest.raises(PeerGridError, match="superseded"):
        await waiting
    await retry
    assert fake.nodes["NODE_A"].mode is Mode.SUPPLY


async def test_a_node_that_leaves_its_mode_loses_its_command(fake: FakeGateway) -> None:
    """After a trip the command is dropped and the gateway told, so it is never restarted."""
    control = control_of(fake)
    await control.command("NODE_A", Mode.SUPPLY)
    fake.nodes["NODE_A"].mode = Mode.IDLE
    fake.nodes["NODE_A"].trip = TripReason.LOW_VOLTAGE
    fake.ping()
    assert control.commands == {}
    assert commands_of(fake.schedules[-1])["NODE_A"][0] == "idle"


async def test_reachability_follows_the_pings_and_the_gateway(fake: FakeGateway) -> None:
    """A node left out of a ping, or a gateway gone silent, disconnects the links."""
    control = control_of(fake)
    link = control.link("NODE_A")
    states: list[ConnectionState] = []
    unsubscribe = link.listen_connection(states.append)
    await control.command("NODE_A", Mode.SUPPLY)
    assert link.online

    fake.nodes["NODE_A"].reachable = False
    fake.ping()
    assert not link.online
    assert link.status is None
    assert control.commands == {}
    fake.nodes["NODE_A"].reachable = True
    fake.ping()
    assert link.online

    await control.command("NODE_A", Mode.SUPPLY)
    waiting = asyncio.create_task(control.command("NODE_C", Mode.RECEIVE))
    fake.deaf = True
    await asyncio.sleep(0)
    control.set_offline()
    with pytest.raises(PeerGridConnectionError, match="offline"):
        await waiting
    assert control.commands == {}
    assert not link.online
    control.set_offline()  # no change: nothing happens
    assert not control.online
    fake.ping()  # the gateway is heard again
    unsubscribe()
    fake.ping()
    assert states == [
        ConnectionState.DISCONNECTED,
        ConnectionState.CONNECTED,
        ConnectionState.DISCONNECTED,
        ConnectionState.CONNECTED,
    ]
    assert control.online
    assert link.online


async def test_another_gateways_ping_is_ignored(fake: FakeGateway) -> None:
    """Each GatewayNodes follows one gateway."""
    control = control_of(fake)
    control.observe(ping_of(SimNode(uid="NODE_X", mv=3900, soc=500), device_id="rpi-other"))
    assert set(control.details) == {"NODE_A", "NODE_B", "NODE_C"}
    assert not control.reachable("NODE_X")


async def test_release_all_and_a_failing_listener(
    fake: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Releasing everything publishes an all-idle schedule; one bad listener harms nobody."""
    control = control_of(fake)

    def broken(push: NodePush) -> None:
        raise RuntimeError("listener bug")

    seen: list[NodePush] = []
    control.link("NODE_A").listen(broken)
    control.link("NODE_A").listen(seen.append)
    await control.command("NODE_A", Mode.SUPPLY)
    assert seen
    control.release_all()
    assert {c.action.value for c in fake.schedules[-1].commands} == {"idle"}
    control.publish_schedule()  # the same again, for a gateway that must hear it again
    assert fake.schedules[-1].commands == fake.schedules[-2].commands
    assert "Gateway node listener failed" in caplog.text


# ----------------------------------------------------------------- transfers through a gateway


async def _session(fake: FakeGateway, energy_wh: float = 1.0) -> TransferSession:
    control = control_of(fake)
    return TransferSession(
        TransferRequest(sender="NODE_A", receiver="NODE_B", energy_wh=energy_wh),
        control.link("NODE_A"),
        control.link("NODE_B"),
        clock=lambda: T0,
    )


async def test_transfer_through_a_gateway_is_metered_and_stops_at_its_target(
    fake: FakeGateway,
) -> None:
    """The session commands through schedules and meters from the pings' counters."""
    fake.nodes["NODE_A"].e_out_mwh = 5_000  # counters since boot: only the growth counts
    fake.ping()
    session = await _session(fake)
    record = await session.start()
    assert record.state is TransferState.ACTIVE
    assert commands_of(fake.schedules[-1]) == {
        "NODE_A": ("discharge", 1050, 3300),
        "NODE_B": ("charge", 1050, None),
        "NODE_C": ("idle", None, None),
    }
    for _ in range(9):
        fake.move(100)
    assert session.active
    fake.move(100)
    final = await session.wait()
    assert final.stop_reason is StopReason.TARGET_REACHED
    assert (final.wh_out, final.wh_in) == (1.0, 0.9)
    assert final.loss_wh == pytest.approx(0.1)
    assert final.avg_voltage_v == pytest.approx(3.95)
    assert final.avg_current_a == pytest.approx(1.48)
    # Released receiver first, then the sender.
    assert [commands_of(s)["NODE_B"][0] for s in fake.schedules[-2:]] == ["idle", "idle"]
    assert commands_of(fake.schedules[-2])["NODE_A"][0] == "discharge"
    assert commands_of(fake.schedules[-1])["NODE_A"][0] == "idle"
    assert fake.nodes["NODE_A"].mode is Mode.IDLE


async def test_a_trip_reported_by_the_gateway_ends_the_transfer(fake: FakeGateway) -> None:
    """The sender's low-voltage trip arrives in the ping's telemetry."""
    session = await _session(fake)
    await session.start()
    fake.move(200)
    sender = fake.nodes["NODE_A"]
    sender.mode, sender.trip = Mode.IDLE, TripReason.LOW_VOLTAGE
    fake.ping()
    final = await session.wait()
    assert final.stop_reason is StopReason.SENDER_LOW_VOLTAGE
    assert final.trip_reason is TripReason.LOW_VOLTAGE
    assert final.wh_out == 0.2


async def test_a_rebooted_receiver_and_a_lost_gateway(fake: FakeGateway) -> None:
    """A smaller uptime is a reboot; a gateway that goes silent loses both nodes."""
    session = await _session(fake)
    await session.start()
    fake.move(100)
    fake.nodes["NODE_B"].uptime_s = 3
    fake.ping()
    assert (await session.wait()).stop_reason is StopReason.RECEIVER_LOST

    fake.nodes["NODE_B"].uptime_s = 200
    fake.ping()
    second = await _session(fake)
    await second.start()
    control_of(fake).set_offline()
    final = await second.wait()
    assert final.stop_reason is StopReason.SENDER_LOST


async def test_a_gateway_that_does_not_confirm_refuses_the_start(fake: FakeGateway) -> None:
    """The receiver never switches: the start fails and the sender is released."""
    fake.refuse.add("NODE_B")
    session = await _session(fake)
    with pytest.raises(PeerGridTimeoutError):
        await session.start()
    assert not session.active
    assert control_of(fake).commands == {}
    assert fake.nodes["NODE_A"].mode is Mode.IDLE


async def test_the_link_acknowledges_with_the_nodes_budget(fake: FakeGateway) -> None:
    """hold() answers like a node's ack: the mode and the budget the node applies."""
    link: GatewayNodeLink = control_of(fake).link("NODE_C")
    assert link.uid == "NODE_C"
    assert link.device_id == GATEWAY
    status = link.status
    assert isinstance(status, Status)
    ack = await link.hold(Mode.RECEIVE, limit_mwh=800, min_mv=3300)
    assert (ack.mode, ack.limit_mwh, ack.min_mv) == (Mode.RECEIVE, 800, None)
    idle = await link.hold(Mode.IDLE)
    assert (idle.mode, idle.limit_mwh) == (Mode.IDLE, None)
    await link.release()
    assert fake.nodes["NODE_C"].mode is Mode.IDLE
