"""DePIN registry rewards and reliability of a gateway, from its heartbeats.

Rewards, in LT (grid reward tokens), all :class:`~decimal.Decimal`:

===============================  ==============================================
registration                     100 LT once
uptime                           10 LT per full 24 h of accumulated uptime
routing                          1 LT per kWh routed (pro rata, rounded down)
uptime bonus                     50 LT per completed 30-day window above 90 %
===============================  ==============================================

Reliability: ``uptime / (now - registered_at) * 100``, in 0-100 %.

**Uptime from heartbeats.** A node is up from each heartbeat until the next
one, but for at most ``2 * heartbeat_interval`` (:attr:`DepinNode.max_gap`): a
node that misses two beats in a row is counted down from the end of that
allowance until it beats again. Registration counts as the first heartbeat (a
node registers while it is online). Uptime is never counted past ``now``.

**Bonus windows.** "Monthly" is read as consecutive 30-day windows starting at
registration, not calendar months: every window has the same length, a node
registered on the 31st is not penalised by a short month, and nobody can earn
the bonus by registering an hour before a month ends. A window pays only once
it has fully elapsed, and only if its uptime is strictly above 90 %.

Every function takes ``now`` explicitly, so the result is a pure function of
the record and the time it is evaluated at; the caller injects its clock.
Heartbeats later than ``now`` are ignored, so past states can be recomputed.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import MAX_PREC, Decimal, localcontext

from .errors import PeerGridValidationError
from .tokens import TOKEN_QUANTUM, DecimalInput, round_down_product, to_decimal

REGISTRATION_REWARD = Decimal(100)
"""LT for registering a node, once."""

DAILY_UPTIME_REWARD = Decimal(10)
"""LT per full 24 h of accumulated uptime."""

ROUTING_REWARD_PER_KWH = Decimal(1)
"""LT per kWh routed through the node."""

UPTIME_BONUS = Decimal(50)
"""LT per bonus window whose uptime is above :data:`UPTIME_BONUS_THRESHOLD_PCT`."""

UPTIME_BONUS_THRESHOLD_PCT = 90
"""Uptime share, percent, that a bonus window must exceed (strictly)."""

UPTIME_DAY = timedelta(hours=24)
"""Accumulated uptime that earns one :data:`DAILY_UPTIME_REWARD`."""

BONUS_WINDOW = timedelta(days=30)
"""Length of one uptime-bonus window, counted from registration."""

DEFAULT_HEARTBEAT_INTERVAL = timedelta(minutes=1)
"""How often a gateway is expected to send a heartbeat."""

MAX_GAP_FACTOR = 2
"""A heartbeat vouches for at most this many heartbeat intervals of uptime."""

type UptimeSpan = tuple[datetime, datetime]
"""A half-open ``[start, end)`` span during which the node was up."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DepinNode:
    """What the registry knows about one node, as an immutable snapshot.

    ``heartbeats`` are aware datetimes in non-decreasing order, none before
    ``registered_at``; ``kwh_routed`` is the node's cumulative routed energy.
    """

    node_id: str
    """The gateway's device id in the registry."""
    registered_at: datetime
    """When the node registered; it counts as its first heartbeat."""
    heartbeats: tuple[datetime, ...] = ()
    """Every heartbeat received since registration, oldest first."""
    kwh_routed: Decimal = Decimal(0)
    """Cumulative energy routed through the node, kWh."""
    heartbeat_interval: timedelta = DEFAULT_HEARTBEAT_INTERVAL
    """How often the node promises to beat; two of them bound one beat's span."""

    def __post_init__(self) -> None:
        """Check the record; a broken record would silently mis-pay rewards."""
        if not self.node_id:
            raise PeerGridValidationError("node_id", "a node needs an id")
        _require_aware("registered_at", self.registered_at)
        heartbeats = tuple(self.heartbeats)
        previous = self.registered_at
        for index, beat in enumerate(heartbeats):
            field = f"heartbeats[{index}]"
            _require_aware(field, beat)
            if beat < previous:
                raise PeerGridValidationError(
                    field, f"{beat.isoformat()} is earlier than {previous.isoformat()}"
                )
            previous = beat
        if self.heartbeat_interval <= timedelta(0):
            raise PeerGridValidationError("heartbeat_interval", "must be positive")
        kwh = to_decimal("kwh_routed", self.kwh_routed)
        if kwh < 0:
            raise PeerGridValidationError("kwh_routed", f"{kwh} kWh is negative")
        # The dataclass is frozen; normalise a list of heartbeats to a tuple.
        object.__setattr__(self, "heartbeats", heartbeats)
        object.__setattr__(self, "kwh_routed", kwh)

    @property
    def max_gap(self) -> timedelta:
        """Longest span one heartbeat vouches for."""
        return self.heartbeat_interval * MAX_GAP_FACTOR

    def with_heartbeat(self, at: datetime) -> DepinNode:
        """Return a copy of the record with one more heartbeat at ``at``."""
        return DepinNode(
            node_id=self.node_id,
            registered_at=self.registered_at,
            heartbeats=(*self.heartbeats, at),
            kwh_routed=self.kwh_routed,
            heartbeat_interval=self.heartbeat_interval,
        )

    def with_routed(self, kwh: DecimalInput) -> DepinNode:
        """Return a copy of the record with ``kwh`` more energy routed."""
        added = to_decimal("kwh", kwh)
        if added < 0:
            raise PeerGridValidationError("kwh", f"{added} kWh is negative")
        # An addition needs at most one more digit than its longest operand;
        # the widest context keeps it exact instead of rounding at 28 digits.
        with localcontext(prec=MAX_PREC):
            kwh_routed = self.kwh_routed + added
        return DepinNode(
            node_id=self.node_id,
            registered_at=self.registered_at,
            heartbeats=self.heartbeats,
            kwh_routed=kwh_routed,
            heartbeat_interval=self.heartbeat_interval,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DepinRewards:
    """A node's rewards as of one moment, itemised, in LT."""

    registration: Decimal
    """The one-off registration reward."""
    uptime: Decimal
    """Rewards for full days of accumulated uptime."""
    routing: Decimal
    """Rewards for energy routed, pro rata."""
    uptime_bonus: Decimal
    """Bonuses for completed 30-day windows above the uptime threshold."""
    full_uptime_days: int
    """Whole 24-hour blocks of accumulated uptime."""
    bonus_windows: int
    """Completed 30-day windows that earned the bonus."""

    @property
    def total(self) -> Decimal:
        """Sum of every item."""
        return self.registration + self.uptime + self.routing + self.uptime_bonus


def uptime_spans(node: DepinNode, *, now: datetime) -> tuple[UptimeSpan, ...]:
    """Return the node's up spans until ``now``, sorted, disjoint and merged."""
    _check_now(node, now)
    beats = (node.registered_at, *node.heartbeats[: bisect_right(node.heartbeats, now)])
    spans: list[UptimeSpan] = []
    for index, start in enumerate(beats):
        following = beats[index + 1] if index + 1 < len(beats) else now
        end = min(following, start + node.max_gap)
        if end <= start:
            continue
        if spans and spans[-1][1] >= start:
            # The previous beat covered up to this one: one continuous span.
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return tuple(spans)


def total_uptime(node: DepinNode, *, now: datetime) -> timedelta:
    """Return the node's accumulated uptime between registration and ``now``."""
    return sum((end - start for start, end in uptime_spans(node, now=now)), timedelta(0))


def reliability_pct(node: DepinNode, *, now: datetime) -> float:
    """Return uptime as a share of the time since registration, 0 to 100 %.

    At the instant of registration no time has passed and nothing has been
    proven, so the reliability is 0 %.
    """
    _check_now(node, now)
    elapsed = now - node.registered_at
    if elapsed <= timedelta(0):
        return 0.0
    share = total_uptime(node, now=now) / elapsed * 100.0
    return min(max(share, 0.0), 100.0)


def depin_rewards(node: DepinNode, *, now: datetime) -> DepinRewards:
    """Return the node's rewards earned from registration until ``now``."""
    spans = uptime_spans(node, now=now)
    uptime = sum((end - start for start, end in spans), timedelta(0))
    full_days = uptime // UPTIME_DAY
    bonus_windows = _bonus_windows(node.registered_at, spans, now)
    routing = round_down_product((node.kwh_routed, ROUTING_REWARD_PER_KWH), TOKEN_QUANTUM)
    return DepinRewards(
        registration=REGISTRATION_REWARD,
        uptime=DAILY_UPTIME_REWARD * full_days,
        routing=routing,
        uptime_bonus=UPTIME_BONUS * bonus_windows,
        full_uptime_days=full_days,
        bonus_windows=bonus_windows,
    )


def _bonus_windows(registered_at: datetime, spans: tuple[UptimeSpan, ...], now: datetime) -> int:
    """Count completed bonus windows whose uptime exceeds the threshold."""
    completed = (now - registered_at) // BONUS_WINDOW
    earned = 0
    first_span = 0
    for window in range(completed):
        window_start = registered_at + BONUS_WINDOW * window
        window_end = window_start + BONUS_WINDOW
        up = timedelta(0)
        # Spans are sorted and disjoint: skip those wholly before this window.
        while first_span < len(spans) and spans[first_span][1] <= window_start:
            first_span += 1
        for start, end in spans[first_span:]:
            if start >= window_end:
                break
            up += min(end, window_end) - max(start, window_start)
        # Compare in whole microseconds (timedelta arithmetic) to stay exact.
        if up * 100 > BONUS_WINDOW * UPTIME_BONUS_THRESHOLD_PCT:
            earned += 1
    return earned


def _require_aware(field: str, moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PeerGridValidationError(field, "needs a timezone (use UTC)")


def _check_now(node: DepinNode, now: datetime) -> None:
    """Reject a naive ``now`` or one before registration."""
    _require_aware("now", now)
    if now < node.registered_at:
        raise PeerGridValidationError(
            "now", f"{now.isoformat()} is before registration at {node.registered_at.isoformat()}"
        )
