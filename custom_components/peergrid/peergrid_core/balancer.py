"""SoC-based pair matching: which nodes should share energy with which.

:class:`SocBalancer` turns a snapshot of node states of charge into a
:class:`BalancePlan`, a list of donor/receiver pairs, using the bands of
:class:`~.thresholds.BalanceThresholds`:

1. only nodes that are online and have auto-balance enabled take part;
2. when the spread (highest minus lowest SoC) of those nodes is below the
   deadband, nothing is planned;
3. donors are the nodes at or above ``soc_high``, receivers those at or
   below ``soc_low``;
4. receivers are served in priority order: critical ones (at or below
   ``soc_critical``) first, then by ascending SoC; each gets the fullest
   donor still free, and a pair needs a gap of at least
   ``min_transfer_gap``;
5. no node appears in two pairs.

Ties are broken by uid, so the plan depends only on the set of nodes, never
on their order. Planning costs two sorts, O(n log n).

The balancer only plans; the transfers themselves are
:class:`~.transfer.TransferSession` objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
import math

from .errors import PeerGridValidationError
from .thresholds import DEFAULT_THRESHOLDS, BalanceThresholds

__all__ = [
    "BalancePair",
    "BalancePlan",
    "BalancePriority",
    "NodeSoc",
    "SkipReason",
    "SocBalancer",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSoc:
    """One node as the balancer sees it: identity, SoC and eligibility."""

    uid: str
    """Node identity."""

    soc_pct: float
    """State of charge, percent (0-100)."""

    online: bool = True
    """Whether the node is reachable now; offline nodes never take part."""

    auto_balance: bool = True
    """Whether the user lets the balancer use this node."""

    def __post_init__(self) -> None:
        """Refuse an empty uid and a SoC outside 0-100 %."""
        if not isinstance(self.uid, str) or not self.uid:
            raise PeerGridValidationError("uid", "a node needs a non-empty uid")
        soc = self.soc_pct
        if isinstance(soc, bool) or not isinstance(soc, int | float) or not math.isfinite(soc):
            raise PeerGridValidationError("soc_pct", f"{soc!r} is not a finite number")
        if not 0.0 <= soc <= 100.0:
            raise PeerGridValidationError("soc_pct", f"{soc} % is outside 0..100 %")
        object.__setattr__(self, "soc_pct", float(soc))


class BalancePriority(StrEnum):
    """Why a receiver was chosen."""

    CRITICAL = "critical"
    """At or below ``soc_critical``: the node must receive charge."""

    NORMAL = "normal"
    """At or below ``soc_low``: the node should receive charge."""


class SkipReason(StrEnum):
    """Why a plan has no pairs."""

    NOT_ENOUGH_NODES = "not_enough_nodes"
    """Fewer than two nodes are online with auto-balance enabled."""

    SPREAD_BELOW_DEADBAND = "spread_below_deadband"
    """The eligible nodes are already within the deadband of each other."""

    NO_DONOR = "no_donor"
    """No eligible node is at or above ``soc_high``."""

    NO_RECEIVER = "no_receiver"
    """No eligible node is at or below ``soc_low``."""

    NO_PAIR = "no_pair"
    """Donors and receivers exist, but no pair has ``min_transfer_gap``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancePair:
    """One planned transfer: ``donor`` supplies ``receiver``."""

    donor: str
    receiver: str
    gap_pct: float
    """Donor SoC minus receiver SoC, percentage points."""

    priority: BalancePriority


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancePlan:
    """The outcome of one planning run.

    ``pairs`` are in service order (most urgent receiver first);
    ``spread_pct`` is the spread of the eligible nodes (0 with fewer than
    one); ``skipped_reason`` says why there are no pairs, and is ``None``
    exactly when there are some.
    """

    pairs: tuple[BalancePair, ...]
    spread_pct: float
    skipped_reason: SkipReason | None


class SocBalancer:
    """Plans donor/receiver pairs from node SoCs with the given thresholds."""

    def __init__(self, thresholds: BalanceThresholds = DEFAULT_THRESHOLDS) -> None:
        """Use ``thresholds`` (already validated by construction)."""
        self.thresholds = thresholds

    def plan(self, nodes: Iterable[NodeSoc]) -> BalancePlan:
        """Return the pairs for this snapshot of ``nodes``.

        Raises :class:`PeerGridValidationError` (field ``nodes``) when a uid
        appears twice: two SoCs for one node would make the plan ambiguous.
        """
        limits = self.thresholds
        seen: set[str] = set()
        eligible: list[NodeSoc] = []
        for node in nodes:
            if node.uid in seen:
                raise PeerGridValidationError("nodes", f"node {node.uid} appears more than once")
            seen.add(node.uid)
            if node.online and node.auto_balance:
                eligible.append(node)
        if len(eligible) < 2:
            return BalancePlan(pairs=(), spread_pct=0.0, skipped_reason=SkipReason.NOT_ENOUGH_NODES)
        socs = [node.soc_pct for node in eligible]
        spread = max(socs) - min(socs)
        if spread < limits.balance_deadband:
            return _empty(spread, SkipReason.SPREAD_BELOW_DEADBAND)

        # Fullest donor first; equal SoCs in uid order.
        donors = sorted(
            (node for node in eligible if node.soc_pct >= limits.soc_high),
            key=lambda node: (-node.soc_pct, node.uid),
        )
        # Critical receivers first, then the emptiest; equal SoCs in uid order.
        receivers = sorted(
            (node for node in eligible if node.soc_pct <= limits.soc_low),
            key=lambda node: (node.soc_pct > limits.soc_critical, node.soc_pct, node.uid),
        )
        if not donors:
            return _empty(spread, SkipReason.NO_DONOR)
        if not receivers:
            return _empty(spread, SkipReason.NO_RECEIVER)

        pairs: list[BalancePair] = []
        free = iter(donors)
        donor = next(free, None)
        for receiver in receivers:
            if donor is None:
                break
            gap = donor.soc_pct - receiver.soc_pct
            # The fullest free donor is the best this receiver can get; if
            # even it is too close, no other donor would do.
            if gap < limits.min_transfer_gap:
                continue
            critical = receiver.soc_pct <= limits.soc_critical
            pairs.append(
                BalancePair(
                    donor=donor.uid,
                    receiver=receiver.uid,
                    gap_pct=gap,
                    priority=BalancePriority.CRITICAL if critical else BalancePriority.NORMAL,
                )
            )
            donor = next(free, None)
        if not pairs:
            return _empty(spread, SkipReason.NO_PAIR)
        return BalancePlan(pairs=tuple(pairs), spread_pct=spread, skipped_reason=None)


def _empty(spread: float, reason: SkipReason) -> BalancePlan:
    return BalancePlan(pairs=(), spread_pct=spread, skipped_reason=reason)
