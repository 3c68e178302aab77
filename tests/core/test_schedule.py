"""The scheduler's output: one command per node, and the grid summary."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from pydantic import ValidationError
import pytest

from peergrid_core.balancer import NodeSoc, SocBalancer
from peergrid_core.errors import PeerGridValidationError
from peergrid_core.events import ScheduleEvent, SchedulerAction, parse_sse
from peergrid_core.payloads import NodeState
from peergrid_core.schedule import grid_summary, plan_to_schedule, schedule_commands

NODES = [
    NodeSoc(uid="NODE_A", soc_pct=72.4),
    NodeSoc(uid="NODE_B", soc_pct=28.1),
    NodeSoc(uid="NODE_C", soc_pct=55.0, online=False),
]


def test_manual_transfer_schedule() -> None:
    data = schedule_commands("rpi-4b-prod-01", NODES, [("NODE_A", "NODE_B")])
    assert data.device_id == "rpi-4b-prod-01"
    assert [(c.uid, c.action) for c in data.commands] == [
        ("NODE_A", SchedulerAction.DISCHARGE),
        ("NODE_B", SchedulerAction.CHARGE),
        ("NODE_C", SchedulerAction.IDLE),
    ]
    assert data.node_commands() == {
        "NODE_A": NodeState.SUPPLY,
        "NODE_B": NodeState.RECEIVE,
        "NODE_C": NodeState.IDLE,
    }
    summary = data.grid_summary
    assert summary.node_count == 3
    assert summary.avg_soc == pytest.approx((72.4 + 28.1 + 55.0) / 3)
    assert summary.soc_spread == pytest.approx(72.4 - 28.1)
    # It is a valid schedule event as published to frontends.
    event = parse_sse(ScheduleEvent(data=data).to_sse())
    assert event.data == data


def test_no_transfers_means_everyone_idles() -> None:
    data = schedule_commands("gw-1", NODES, [])
    assert {c.action for c in data.commands} == {SchedulerAction.IDLE}


def test_empty_grid() -> None:
    data = schedule_commands("gw-1", [], [])
    assert data.commands == ()
    assert data.grid_summary.node_count == 0
    assert data.grid_summary.avg_soc is None
    assert data.grid_summary.soc_spread is None
    one = grid_summary([NodeSoc(uid="A", soc_pct=40.0)])
    assert one.soc_spread == 0.0


@pytest.mark.parametrize(
    ("transfers", "field", "text"),
    [
        ([("NODE_A", "NODE_A")], "transfers[0]", "itself"),
        ([("NODE_A", "NODE_X")], "transfers[0]", "not in the grid"),
        ([("NODE_A", "NODE_B"), ("NODE_C", "NODE_B")], "transfers[1]", "another transfer"),
        ([("NODE_A", "NODE_B"), ("NODE_A", "NODE_C")], "transfers[1]", "another transfer"),
    ],
)
def test_conflicting_transfers_are_refused(
    transfers: list[tuple[str, str]], field: str, text: str
) -> None:
    with pytest.raises(PeerGridValidationError) as err:
        schedule_commands("gw-1", NODES, transfers)
    assert err.value.field == field
    assert text in err.value.message


def test_duplicate_node_is_refused() -> None:
    with pytest.raises(PeerGridValidationError) as err:
        schedule_commands("gw-1", [*NODES, NodeSoc(uid="NODE_A", soc_pct=10.0)], [])
    assert err.value.field == "nodes"


def test_bad_device_id_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        schedule_commands("bad id with spaces", NODES, [])


def test_plan_to_schedule() -> None:
    nodes = [
        NodeSoc(uid="A", soc_pct=90.0),
        NodeSoc(uid="B", soc_pct=50.0),
        NodeSoc(uid="C", soc_pct=10.0),
    ]
    plan = SocBalancer().plan(nodes)
    data = plan_to_schedule("gw-1", nodes, plan)
    assert {c.uid: c.action for c in data.commands} == {
        "A": SchedulerAction.DISCHARGE,
        "B": SchedulerAction.IDLE,
        "C": SchedulerAction.CHARGE,
    }


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.integers(0, 100).map(float),
        min_size=0,
        max_size=20,
    )
)
def test_balancer_plans_always_make_valid_schedules(socs: list[float]) -> None:
    nodes = [NodeSoc(uid=f"N{i}", soc_pct=soc) for i, soc in enumerate(socs)]
    plan = SocBalancer().plan(nodes)
    data = plan_to_schedule("gw-1", nodes, plan)
    actions = [c.action for c in data.commands]
    assert len(data.commands) == len(nodes)
    assert actions.count(SchedulerAction.DISCHARGE) == len(plan.pairs)
    assert actions.count(SchedulerAction.CHARGE) == len(plan.pairs)
    if nodes:
        assert data.grid_summary.soc_spread == max(socs) - min(socs)


def test_soc_spread_has_no_node_limit() -> None:
    """A grid larger than one gateway's payload still has a spread (100 nodes here)."""
    from peergrid_core.balancer import NodeSoc
    from peergrid_core.schedule import soc_spread

    nodes = [NodeSoc(uid=f"N{i}", soc_pct=float(i % 90), online=True) for i in range(100)]
    assert soc_spread(nodes) == 89.0
    assert soc_spread([]) is None
