"""DePIN rewards and reliability from a node's heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.depin import (
    BONUS_WINDOW,
    DepinNode,
    depin_rewards,
    reliability_pct,
    total_uptime,
    uptime_spans,
)
from peergrid_core.errors import PeerGridValidationError

REGISTERED = datetime(2026, 2, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def steady(minutes: int, *, every: timedelta = MINUTE) -> tuple[datetime, ...]:
    """Heartbeats every ``every`` for ``minutes`` minutes after registration."""
    count = int(timedelta(minutes=minutes) / every)
    return tuple(REGISTERED + every * step for step in range(1, count + 1))


def node(
    heartbeats: tuple[datetime, ...] = (),
    *,
    kwh_routed: Decimal = Decimal(0),
    heartbeat_interval: timedelta = MINUTE,
) -> DepinNode:
    """A node registered at ``REGISTERED`` with the given record."""
    return DepinNode(
        node_id="rpi-4b-prod-01",
        registered_at=REGISTERED,
        heartbeats=heartbeats,
        kwh_routed=kwh_routed,
        heartbeat_interval=heartbeat_interval,
    )


def test_a_new_node_earns_the_registration_reward_only() -> None:
    """At registration: 100 LT, nothing else, reliability 0 %."""
    fresh = node()
    rewards = depin_rewards(fresh, now=REGISTERED)
    assert rewards.total == Decimal(100)
    assert rewards.registration == Decimal(100)
    assert rewards.uptime == rewards.routing == rewards.uptime_bonus == Decimal(0)
    assert reliability_pct(fresh, now=REGISTERED) == 0.0


def test_registration_vouches_for_one_max_gap() -> None:
    """Registering counts as a heartbeat: up for two intervals, then down."""
    fresh = node()
    assert total_uptime(fresh, now=REGISTERED + timedelta(hours=1)) == 2 * MINUTE
    assert reliability_pct(fresh, now=REGISTERED + 4 * MINUTE) == pytest.approx(50.0)


def test_steady_heartbeats_are_fully_up() -> None:
    """A node beating every minute is up all the time, until the last beat's allowance."""
    beating = node(steady(60 * 24))
    now = REGISTERED + timedelta(hours=24)
    assert total_uptime(beating, now=now) == timedelta(hours=24)
    assert reliability_pct(beating, now=now) == 100.0
    assert uptime_spans(beating, now=now) == ((REGISTERED, now),)


def test_a_missed_stretch_counts_only_the_allowance() -> None:
    """Beats at 0, 1, 2 min then 10 min: up 0-4 min and from 10 min on."""
    beats = (REGISTERED + MINUTE, REGISTERED + 2 * MINUTE, REGISTERED + 10 * MINUTE)
    now = REGISTERED + 11 * MINUTE
    assert uptime_spans(node(beats), now=now) == (
        (REGISTERED, REGISTERED + 4 * MINUTE),
        (REGISTERED + 10 * MINUTE, now),
    )
    assert total_uptime(node(beats), now=now) == 5 * MINUTE
    assert reliability_pct(node(beats), now=now) == pytest.approx(5 / 11 * 100)


def test_heartbeats_after_now_are_ignored() -> None:
    """Evaluating the past gives the same answer as the past did."""
    beats = steady(120)
    early = REGISTERED + timedelta(minutes=30)
    assert total_uptime(node(beats), now=early) == total_uptime(node(beats[:30]), now=early)


def test_daily_uptime_reward_counts_full_days() -> None:
    """10 LT per full 24 h of uptime; 47 h 59 min is one day."""
    beating = node(steady(60 * 48 - 1))
    rewards = depin_rewards(beating, now=REGISTERED + timedelta(hours=47, minutes=59))
    assert rewards.full_uptime_days == 1
    assert rewards.uptime == Decimal(10)
    rewards = depin_rewards(node(steady(60 * 48)), now=REGISTERED + timedelta(hours=48))
    assert rewards.uptime == Decimal(20)


def test_uptime_need_not_be_contiguous() -> None:
    """Two separate 12-hour stretches make one full day."""
    first = steady(60 * 12)
    second_start = REGISTERED + timedelta(hours=20)
    second = tuple(second_start + MINUTE * step for step in range(60 * 12 + 1))
    rewards = depin_rewards(node(first + second), now=second_start + timedelta(hours=12))
    assert rewards.full_uptime_days == 1


def test_routing_reward_is_one_per_kwh() -> None:
    """1 LT per kWh routed, pro rata, truncated to seven decimals."""
    routed = node(kwh_routed=Decimal("2.123456789"))
    assert depin_rewards(routed, now=REGISTERED).routing == Decimal("2.1234567")
    assert routed.with_routed("0.876543211").kwh_routed == Decimal("3.000000000")


def test_bonus_for_a_window_above_90_percent() -> None:
    """A 30-day window with uptime above 90 % pays 50 LT once it has ended."""
    every = timedelta(minutes=30)
    beating = node(steady(60 * 24 * 30, every=every), heartbeat_interval=every)
    end = REGISTERED + BONUS_WINDOW
    assert depin_rewards(beating, now=end - MINUTE).bonus_windows == 0
    rewards = depin_rewards(beating, now=end)
    assert rewards.bonus_windows == 1
    assert rewards.uptime_bonus == Decimal(50)
    assert rewards.full_uptime_days == 30
    assert rewards.total == Decimal(100 + 300 + 50)


def test_no_bonus_at_exactly_90_percent() -> None:
    """Uptime must be above 90 %, not equal to it."""
    # With a 12 h interval each daily beat vouches for 24 h (two intervals), so
    # beats on days 1..27 keep the node up from registration to day 28: 28/30.
    interval = timedelta(hours=12)
    beats = tuple(REGISTERED + timedelta(days=day) for day in range(1, 28))
    up_28 = node(beats, heartbeat_interval=interval)
    assert depin_rewards(up_28, now=REGISTERED + BONUS_WINDOW).bonus_windows == 1
    # Up to day 27 exactly: 27/30 = 90 %, not above.
    up_27 = node(beats[:-1], heartbeat_interval=interval)
    assert total_uptime(up_27, now=REGISTERED + BONUS_WINDOW) == timedelta(days=27)
    assert depin_rewards(up_27, now=REGISTERED + BONUS_WINDOW).bonus_windows == 0


def test_bonus_windows_are_judged_separately() -> None:
    """A strong first window and a silent second one earn one bonus."""
    every = timedelta(hours=1)
    beating = node(steady(60 * 24 * 30, every=every), heartbeat_interval=every)
    rewards = depin_rewards(beating, now=REGISTERED + 2 * BONUS_WINDOW + timedelta(days=3))
    assert rewards.bonus_windows == 1


def test_with_heartbeat_appends_and_validates() -> None:
    """A heartbeat is appended in order; an earlier one is refused."""
    beating = node().with_heartbeat(REGISTERED + MINUTE)
    assert beating.heartbeats == (REGISTERED + MINUTE,)
    with pytest.raises(PeerGridValidationError) as caught:
        beating.with_heartbeat(REGISTERED)
    assert caught.value.field == "heartbeats[1]"


def test_timezones_other_than_utc_are_fine() -> None:
    """Aware datetimes in any zone compare correctly."""
    plus_two = timezone(timedelta(hours=2))
    beat = (REGISTERED + MINUTE).astimezone(plus_two)
    assert total_uptime(node((beat,)), now=REGISTERED + 3 * MINUTE) == 3 * MINUTE


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"node_id": ""}, "node_id"),
        ({"registered_at": datetime(2026, 2, 1)}, "registered_at"),  # noqa: DTZ001
        ({"heartbeats": (datetime(2026, 2, 2),)}, "heartbeats[0]"),  # noqa: DTZ001
        ({"heartbeats": (REGISTERED - MINUTE,)}, "heartbeats[0]"),
        ({"heartbeats": (REGISTERED + 2 * MINUTE, REGISTERED + MINUTE)}, "heartbeats[1]"),
        ({"heartbeat_interval": timedelta(0)}, "heartbeat_interval"),
        ({"kwh_routed": Decimal(-1)}, "kwh_routed"),
        ({"kwh_routed": Decimal("NaN")}, "kwh_routed"),
    ],
)
def test_invalid_records_name_the_field(kwargs: dict[str, object], field: str) -> None:
    """A broken record is refused before it can mis-pay."""
    values: dict[str, object] = {"node_id": "n", "registered_at": REGISTERED} | kwargs
    with pytest.raises(PeerGridValidationError) as caught:
        DepinNode(**values)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_now_must_be_aware_and_after_registration() -> None:
    """The evaluation time is checked like every other input."""
    with pytest.raises(PeerGridValidationError, match="now"):
        depin_rewards(node(), now=REGISTERED - MINUTE)
    with pytest.raises(PeerGridValidationError, match="now"):
        reliability_pct(node(), now=datetime(2026, 3, 1))  # noqa: DTZ001


def test_with_routed_rejects_negative_energy() -> None:
    """Routed energy only accumulates."""
    with pytest.raises(PeerGridValidationError, match="kwh"):
        node().with_routed(-0.5)


offsets = st.lists(st.integers(min_value=0, max_value=90 * 24 * 60), max_size=60)


@settings(max_examples=100)
@given(offsets, st.integers(min_value=0, max_value=90 * 24 * 60))
def test_reliability_stays_between_0_and_100(beat_minutes: list[int], now_minute: int) -> None:
    """Whatever the heartbeats, reliability is a percentage and uptime fits the elapsed time."""
    record = node(tuple(REGISTERED + MINUTE * m for m in sorted(beat_minutes)))
    now = REGISTERED + MINUTE * now_minute
    assert 0.0 <= reliability_pct(record, now=now) <= 100.0
    assert timedelta(0) <= total_uptime(record, now=now) <= now - REGISTERED


@settings(max_examples=100)
@given(offsets, st.integers(min_value=0, max_value=90 * 24 * 60), st.integers(0, 90 * 24 * 60))
def test_rewards_never_shrink_as_time_passes(
    beat_minutes: list[int], first: int, second: int
) -> None:
    """Evaluated later, a node has at least the uptime and rewards it had earlier."""
    record = node(tuple(REGISTERED + MINUTE * m for m in sorted(beat_minutes)))
    early, late = (REGISTERED + MINUTE * m for m in sorted((first, second)))
    assert total_uptime(record, now=early) <= total_uptime(record, now=late)
    assert depin_rewards(record, now=early).total <= depin_rewards(record, now=late).total


@settings(max_examples=100)
@given(offsets, st.integers(min_value=0, max_value=90 * 24 * 60))
def test_more_heartbeats_never_mean_less_uptime(beat_minutes: list[int], extra: int) -> None:
    """An additional heartbeat can only add uptime."""
    beats = sorted(beat_minutes)
    now = REGISTERED + timedelta(days=91)
    before = node(tuple(REGISTERED + MINUTE * m for m in beats))
    after = node(tuple(REGISTERED + MINUTE * m for m in sorted([*beats, extra])))
    assert total_uptime(before, now=now) <= total_uptime(after, now=now)
    assert depin_rewards(before, now=now).total <= depin_rewards(after, now=now).total
