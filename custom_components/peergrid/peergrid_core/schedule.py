"""The scheduler's output for manual transfers: who discharges, who charges.

The specification's scheduler turns the transfers requested from the
frontend into one command per node, published as a ``schedule`` event
(:class:`~.events.ScheduleData`): the sender of a transfer discharges, its
receiver charges and every other node stays idle. :func:`schedule_commands`
does exactly that, with a summary of the grid's state of charge;
:func:`plan_to_schedule` does the same for the pairs of a
:class:`~.balancer.BalancePlan`.

A node can take part in at most one transfer at a time (its relays can only
do one thing), so a schedule naming a node twice is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from .balancer import BalancePlan, NodeSoc
from .errors import PeerGridValidationError
from .events import GridSummary, ScheduleCommand, ScheduleData, SchedulerAction

__all__ = ["grid_summary", "plan_to_schedule", "schedule_commands"]


def soc_spread(nodes: Sequence[NodeSoc]) -> float | None:
    """Highest minus lowest SoC of ``nodes`` in percent; None without nodes.

    Unlike :func:`grid_summary` this has no node-count limit: a grid may
    hold more nodes than one gateway's payload describes.
    """
    return max(n.soc_pct for n in nodes) - min(n.soc_pct for n in nodes) if nodes else None


def grid_summary(nodes: Sequence[NodeSoc]) -> GridSummary:
    """Count, mean SoC and SoC spread (max - min) of ``nodes``.

    Every node counts, online or not: the summary describes what the
    scheduler saw. With no nodes the mean and spread are ``None``.
    """
    if not nodes:
        return GridSummary(node_count=0, avg_soc=None, soc_spread=None)
    socs = [node.soc_pct for node in nodes]
    # The mean of values in 0-100 stays in 0-100; min() guards float rounding.
    avg = min(100.0, sum(socs) / len(socs))
    return GridSummary(node_count=len(nodes), avg_soc=avg, soc_spread=soc_spread(nodes))


def schedule_commands(
    device_id: str,
    nodes: Sequence[NodeSoc],
    transfers: Sequence[tuple[str, str]],
) -> ScheduleData:
    """Build the schedule for ``transfers``, each a ``(sender, receiver)`` pair of uids.

    Every node in ``nodes`` gets one command, in the order given: senders
    ``discharge``, receivers ``charge``, the rest ``idle``.

    Raises :class:`PeerGridValidationError` naming ``nodes`` (a uid twice) or
    ``transfers[i]`` (an unknown node, a node sending to itself, or a node
    already in an earlier transfer), and pydantic's ``ValidationError`` for a
    bad ``device_id`` or uid format.
    """
    known: dict[str, NodeSoc] = {}
    for node in nodes:
        if node.uid in known:
            raise PeerGridValidationError("nodes", f"node {node.uid} appears more than once")
        known[node.uid] = node
    actions: dict[str, SchedulerAction] = {}
    for index, (sender, receiver) in enumerate(transfers):
        where = f"transfers[{index}]"
        if sender == receiver:
            raise PeerGridValidationError(where, f"node {sender} cannot send to itself")
        for uid in (sender, receiver):
            if uid not in known:
                raise PeerGridValidationError(where, f"node {uid} is not in the grid")
            if uid in actions:
                raise PeerGridValidationError(where, f"node {uid} is already in another transfer")
        actions[sender] = SchedulerAction.DISCHARGE
        actions[receiver] = SchedulerAction.CHARGE
    return ScheduleData(
        device_id=device_id,
        commands=tuple(
            ScheduleCommand(uid=uid, action=actions.get(uid, SchedulerAction.IDLE)) for uid in known
        ),
        grid_summary=grid_summary(nodes),
    )


def plan_to_schedule(device_id: str, nodes: Sequence[NodeSoc], plan: BalancePlan) -> ScheduleData:
    """Build the schedule that carries out ``plan``: donors discharge, receivers charge."""
    return schedule_commands(device_id, nodes, [(pair.donor, pair.receiver) for pair in plan.pairs])
