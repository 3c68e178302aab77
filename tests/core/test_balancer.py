"""SocBalancer: the pairing rules, proven with hypothesis, and a grid worked by hand."""

from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.balancer import (
    BalancePair,
    BalancePlan,
    BalancePriority,
    NodeSoc,
    SkipReason,
    SocBalancer,
)
from peergrid_core.errors import PeerGridValidationError
from peergrid_core.thresholds import BalanceThresholds

DEFAULT = BalanceThresholds()

# SoCs on a 0.5 % grid make ties (equal SoCs, gaps exactly at a threshold) common.
_socs = st.integers(min_value=0, max_value=200).map(lambda half: half / 2)


@st.composite
def _nodes(draw: st.DrawFn, max_size: int = 16) -> list[NodeSoc]:
    uids = draw(
        st.lists(st.text("ABCDEFGHJK", min_size=1, max_size=3), unique=True, max_size=max_size)
    )
    return [
        NodeSoc(
            uid=uid,
            soc_pct=draw(_socs),
            online=draw(st.sampled_from([True, True, True, False])),
            auto_balance=draw(st.sampled_from([True, True, True, False])),
        )
        for uid in uids
    ]


@st.composite
def _thresholds(draw: st.DrawFn) -> BalanceThresholds:
    critical = draw(st.integers(5, 25))
    low = draw(st.integers(max(15, critical + 1), 50))
    high = draw(st.integers(max(50, low + 5), 85))
    full = draw(st.integers(max(70, high + 1), 100))
    gap = draw(st.integers(5, min(50, high - low)))
    deadband = draw(st.integers(2, 30))
    return BalanceThresholds(
        soc_critical=critical,
        soc_low=low,
        soc_high=high,
        soc_full=full,
        min_transfer_gap=gap,
        balance_deadband=deadband,
    )


def _eligible(nodes: list[NodeSoc]) -> dict[str, NodeSoc]:
    return {node.uid: node for node in nodes if node.online and node.auto_balance}


@settings(max_examples=300, deadline=None)
@given(_nodes(), _thresholds())
def test_plan_invariants(nodes: list[NodeSoc], limits: BalanceThresholds) -> None:
    plan = SocBalancer(limits).plan(nodes)
    eligible = _eligible(nodes)
    used = [uid for pair in plan.pairs for uid in (pair.donor, pair.receiver)]
    # No node in two pairs, and only enabled, online nodes.
    assert len(used) == len(set(used))
    assert set(used) <= set(eligible)
    for pair in plan.pairs:
        donor, receiver = eligible[pair.donor], eligible[pair.receiver]
        assert donor.soc_pct >= limits.soc_high
        assert receiver.soc_pct <= limits.soc_low
        assert pair.gap_pct == donor.soc_pct - receiver.soc_pct
        assert pair.gap_pct >= limits.min_transfer_gap
        critical = receiver.soc_pct <= limits.soc_critical
        assert pair.priority is (BalancePriority.CRITICAL if critical else BalancePriority.NORMAL)
    # Spread and the reason for an empty plan.
    socs = [node.soc_pct for node in eligible.values()]
    spread = max(socs) - min(socs) if len(socs) >= 2 else 0.0
    assert plan.spread_pct == spread
    assert (plan.skipped_reason is None) == bool(plan.pairs)
    if len(socs) >= 2 and spread < limits.balance_deadband:
        assert plan.pairs == ()
        assert plan.skipped_reason is SkipReason.SPREAD_BELOW_DEADBAND


@settings(max_examples=300, deadline=None)
@given(_nodes(), _thresholds())
def test_critical_receivers_are_served_first(
    nodes: list[NodeSoc], limits: BalanceThresholds
) -> None:
    """While a donor is free, no critical receiver waits; and the plan is maximal."""
    plan = SocBalancer(limits).plan(nodes)
    if plan.skipped_reason is SkipReason.SPREAD_BELOW_DEADBAND:
        return
    eligible = _eligible(nodes)
    donors = [n for n in eligible.values() if n.soc_pct >= limits.soc_high]
    receivers = [n for n in eligible.values() if n.soc_pct <= limits.soc_low]
    served = {pair.receiver for pair in plan.pairs}
    critical = [n for n in receivers if n.soc_pct <= limits.soc_critical]
    # Every receiver is served while donors last (any donor/receiver pair
    # has the gap, by the threshold rules), critical ones before the rest.
    assert len(plan.pairs) == min(len(donors), len(receivers))
    if any(n.uid in served for n in receivers if n not in critical):
        assert all(n.uid in served for n in critical)
    assert [pair.priority for pair in plan.pairs] == sorted(
        (pair.priority for pair in plan.pairs),
        key=lambda p: p is not BalancePriority.CRITICAL,
    )
    # Served receivers are the emptiest; their donors the fullest.
    if plan.pairs:
        worst_served = max(eligible[uid].soc_pct for uid in served)
        assert all(n.soc_pct >= worst_served for n in receivers if n.uid not in served)
        given_ = {pair.donor for pair in plan.pairs}
        weakest = min(eligible[uid].soc_pct for uid in given_)
        assert all(n.soc_pct <= weakest for n in donors if n.uid not in given_)


@settings(max_examples=200, deadline=None)
@given(_nodes(), st.randoms(use_true_random=False))
def test_plan_does_not_depend_on_input_order(nodes: list[NodeSoc], rng: object) -> None:
    shuffled = list(nodes)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    balancer = SocBalancer(DEFAULT)
    assert balancer.plan(shuffled) == balancer.plan(nodes)


def test_ten_node_grid_worked_by_hand() -> None:
    """Default thresholds: critical <= 20, low <= 40, high >= 70, gap >= 15, deadband 10."""
    nodes = [
        NodeSoc(uid="N01", soc_pct=95.0),
        NodeSoc(uid="N02", soc_pct=88.0),
        NodeSoc(uid="N03", soc_pct=72.0),
        NodeSoc(uid="N04", soc_pct=99.0, auto_balance=False),  # opted out
        NodeSoc(uid="N05", soc_pct=55.0),  # in the middle band: neither
        NodeSoc(uid="N06", soc_pct=40.0),  # low, but no donor left
        NodeSoc(uid="N07", soc_pct=33.0),
        NodeSoc(uid="N08", soc_pct=18.0),  # critical
        NodeSoc(uid="N09", soc_pct=12.0),  # critical, the emptiest
        NodeSoc(uid="N10", soc_pct=5.0, online=False),  # unreachable
    ]
    plan = SocBalancer(DEFAULT).plan(nodes)
    assert plan == BalancePlan(
        pairs=(
            BalancePair(
                donor="N01", receiver="N09", gap_pct=83.0, priority=BalancePriority.CRITICAL
            ),
            BalancePair(
                donor="N02", receiver="N08", gap_pct=70.0, priority=BalancePriority.CRITICAL
            ),
            BalancePair(donor="N03", receiver="N07", gap_pct=39.0, priority=BalancePriority.NORMAL),
        ),
        spread_pct=83.0,  # 95 - 12: N04 and N10 do not count
        skipped_reason=None,
    )


def test_ties_are_broken_by_uid() -> None:
    nodes = [
        NodeSoc(uid="D2", soc_pct=80.0),
        NodeSoc(uid="D1", soc_pct=80.0),
        NodeSoc(uid="R2", soc_pct=30.0),
        NodeSoc(uid="R1", soc_pct=30.0),
    ]
    pairs = SocBalancer().plan(nodes).pairs
    assert [(p.donor, p.receiver) for p in pairs] == [("D1", "R1"), ("D2", "R2")]


@pytest.mark.parametrize(
    ("socs", "reason"),
    [
        ([], SkipReason.NOT_ENOUGH_NODES),
        ([50.0], SkipReason.NOT_ENOUGH_NODES),
        ([45.0, 54.9], SkipReason.SPREAD_BELOW_DEADBAND),
        ([60.0, 30.0], SkipReason.NO_DONOR),
        ([75.0, 45.0], SkipReason.NO_RECEIVER),
    ],
)
def test_empty_plans_say_why(socs: list[float], reason: SkipReason) -> None:
    nodes = [NodeSoc(uid=f"N{i}", soc_pct=soc) for i, soc in enumerate(socs)]
    plan = SocBalancer().plan(nodes)
    assert plan.pairs == ()
    assert plan.skipped_reason is reason


def test_spread_exactly_at_the_deadband_is_acted_on() -> None:
    limits = BalanceThresholds(balance_deadband=30.0, min_transfer_gap=30.0)
    nodes = [NodeSoc(uid="A", soc_pct=70.0), NodeSoc(uid="B", soc_pct=40.0)]
    plan = SocBalancer(limits).plan(nodes)
    assert [(p.donor, p.receiver, p.gap_pct) for p in plan.pairs] == [("A", "B", 30.0)]


def test_duplicate_uid_is_refused() -> None:
    with pytest.raises(PeerGridValidationError) as err:
        SocBalancer().plan([NodeSoc(uid="A", soc_pct=90.0), NodeSoc(uid="A", soc_pct=10.0)])
    assert err.value.field == "nodes"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"uid": ""}, "uid"),
        ({"soc_pct": -0.1}, "soc_pct"),
        ({"soc_pct": 100.1}, "soc_pct"),
        ({"soc_pct": math.nan}, "soc_pct"),
        ({"soc_pct": True}, "soc_pct"),
    ],
)
def test_node_soc_validation(kwargs: dict[str, object], field: str) -> None:
    values: dict[str, object] = {"uid": "A", "soc_pct": 50.0} | kwargs
    with pytest.raises(PeerGridValidationError) as err:
        NodeSoc(**values)  # type: ignore[arg-type]
    assert err.value.field == field
    assert NodeSoc(uid="A", soc_pct=50).soc_pct == 50.0
