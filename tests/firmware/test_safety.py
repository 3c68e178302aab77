"""Every safety rule of the node, on fake hardware in virtual time.

Time moves only through ``hw.clock.advance``, so "within 100 ms" below is
simulated time measured by the node's own clock, not wall-clock speed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from peergrid_node.relays import IDLE, RECEIVE, SUPPLY

from .conftest import NodeFactory, RunningNode, golden_config


class Observer:
    """Stands in for a session: records what the node pushes to it."""

    authed = True
    closing = False
    closing_ms = None
    task = None

    def __init__(self) -> None:
        """Nothing received yet."""
        self.frames: list[dict[str, Any]] = []
        self.opened_ms = 0
        self.last_rx_ms = 0

    def abort(self) -> None:
        """The node stops."""
        self.closing = True

    def expire(self) -> None:
        """Never reached: tests stay well inside the idle timeout."""
        raise AssertionError("observer expired")

    def push(self, body: dict[str, Any]) -> None:
        """Record a pushed frame."""
        self.frames.append(body)

    def events(self) -> list[str]:
        """The trip reasons received, in order."""
        return [f["reason"] for f in self.frames if f["t"] == "event"]


async def start(start_node: NodeFactory, **overrides: Any) -> tuple[RunningNode, Observer]:
    """A running node in manual time with an observer session attached."""
    rn = await start_node(golden_config(**overrides))
    obs = Observer()
    rn.node.sessions.append(obs)
    await rn.hw.clock.advance(300)
    return rn, obs


async def command(
    rn: RunningNode,
    session: object,
    mode: str,
    *,
    lease_s: int = 60,
    limit_mwh: int = 10000,
    min_mv: int = 3300,
    advance_ms: int = 150,
) -> dict[str, Any]:
    """Issue a command and let the dead time pass; returns the reply body."""
    task = asyncio.create_task(rn.node.command(session, mode, 1, lease_s, limit_mwh, min_mv))
    await rn.hw.clock.advance(advance_ms)
    reply: dict[str, Any] = await task
    return reply


def pins(rn: RunningNode) -> tuple[int, int]:
    """(supply, receive) pin levels."""
    return rn.hw.supply_pin.level, rn.hw.receive_pin.level


async def test_low_voltage_trips_within_100_ms_of_the_crossing(start_node: NodeFactory) -> None:
    """SUPPLY stops well inside 100 ms after the loaded voltage crosses min_mv."""
    for phase_ms in (0, 3, 7, 11, 19):
        rn, obs = await start(start_node)
        ctl = object()
        ack = await command(rn, ctl, SUPPLY)
        assert ack["t"] == "ack", ack
        assert pins(rn) == (1, 0)
        await rn.hw.clock.advance(phase_ms)
        # 1500 mA through 50 mOhm: 3370 mV OCV gives 3295 mV at the terminals.
        rn.hw.cell.ocv_mv = 3370
        crossed = rn.hw.clock.now
        while pins(rn) != (0, 0):
            await rn.hw.clock.advance(1)
            assert rn.hw.clock.now - crossed <= 100
        assert obs.events() == ["low_voltage"]
        assert rn.node.state == "tripped"
        assert rn.node.trip == "low_voltage"
        await rn.stop()


async def test_low_voltage_needs_consecutive_samples(start_node: NodeFactory) -> None:
    """One dip (the inrush when a relay closes) does not trip."""
    rn, obs = await start(start_node)
    ctl = object()
    await command(rn, ctl, SUPPLY)
    rn.hw.cell.ocv_mv = 3300
    await rn.hw.clock.advance(20)
    rn.hw.cell.ocv_mv = 3950
    await rn.hw.clock.advance(500)
    assert pins(rn) == (1, 0)
    assert obs.events() == []


async def test_supply_refused_below_min_mv_but_receive_allowed(start_node: NodeFactory) -> None:
    """A SUPPLY from an already low cell is refused; charging it is fine."""
    rn, _ = await start(start_node)
    rn.hw.cell.ocv_mv = 3250
    await rn.hw.clock.advance(300)
    ctl = object()
    reply = await command(rn, ctl, SUPPLY)
    assert reply["t"] == "err"
    assert reply["code"] == "low_voltage"
    assert pins(rn) == (0, 0)
    reply = await command(rn, ctl, RECEIVE)
    assert reply["t"] == "ack"
    assert pins(rn) == (0, 1)


async def test_energy_limit_trips_and_counters_are_monotonic(start_node: NodeFactory) -> None:
    """The session budget stops the transfer; e_out never decreases."""
    rn, obs = await start(start_node)
    ctl = object()
    ack = await command(rn, ctl, SUPPLY, limit_mwh=5)
    assert ack["limit_mwh"] == 5
    last_out = 0
    for _ in range(80):
        await rn.hw.clock.advance(100)
        out = rn.node.meter.out_mwh
        assert out >= last_out
        last_out = out
        if pins(rn) == (0, 0):
            break
    assert obs.events() == ["energy_limit"]
    # 1500 mA at ~3875 mV is ~5.8 W: 5 mWh after about 3.1 s.
    assert rn.node.meter.session_mwh == 5
    assert rn.node.meter.out_mwh == 5
    assert rn.node.meter.in_mwh == 0
    status = rn.node.status_body()
    assert status["e_session_mwh"] == 5
    assert status["state"] == "tripped"


async def test_energy_is_counted_per_direction(start_node: NodeFactory) -> None:
    """RECEIVE counts into e_in_mwh and its own session energy."""
    rn, _ = await start(start_node)
    ctl = object()
    await command(rn, ctl, RECEIVE)
    await rn.hw.clock.advance(10_000)
    # 900 mA into the cell at ~3995 mV is ~3.6 W: 10 mWh in 10 s.
    assert 9 <= rn.node.meter.in_mwh <= 10
    assert rn.node.meter.session_mwh == rn.node.meter.in_mwh
    assert rn.node.meter.out_mwh == 0


async def test_lease_expiry_drops_to_idle(start_node: NodeFactory) -> None:
    """Without renewal the node goes IDLE by itself when the lease runs out."""
    rn, obs = await start(start_node)
    ctl = object()
    ack = await command(rn, ctl, RECEIVE, lease_s=2)
    assert ack["lease_s"] == 2
    await rn.hw.clock.advance(1700)
    assert pins(rn) == (0, 1)
    assert rn.node.lease_left_s() == 1
    await rn.hw.clock.advance(300)
    assert pins(rn) == (0, 0)
    assert obs.events() == ["lease_expired"]
    assert rn.node.lease_left_s() == 0
    assert rn.node.controller is None


async def test_renewal_restarts_the_lease_and_keeps_the_energy(start_node: NodeFactory) -> None:
    """The same command again renews; the session energy keeps counting."""
    rn, obs = await start(start_node)
    ctl = object()
    await command(rn, ctl, SUPPLY, lease_s=2)
    await rn.hw.clock.advance(1500)
    energy = rn.node.meter.session_mwh
    ack = await command(rn, ctl, SUPPLY, lease_s=2, advance_ms=0)
    assert ack["renewed"] is True
    await rn.hw.clock.advance(1500)
    assert pins(rn) == (1, 0)
    assert rn.node.meter.session_mwh >= energy
    await rn.hw.clock.advance(600)
    assert obs.events() == ["lease_expired"]


async def test_stricter_limit_wins(start_node: NodeFactory) -> None:
    """Lease, energy budget and cut-off voltage: the stricter value applies."""
    rn, _ = await start(
        start_node,
        limits={"min_mv": 3500, "max_mwh": 8000, "max_ma": 2500, "lease_max_s": 120},
    )
    ack = await command(rn, object(), SUPPLY, lease_s=600, limit_mwh=20000, min_mv=3300)
    assert (ack["lease_s"], ack["limit_mwh"], ack["min_mv"]) == (120, 8000, 3500)
    rn2, _ = await start(start_node)
    ack = await command(rn2, object(), SUPPLY, lease_s=10, limit_mwh=100, min_mv=3600)
    assert (ack["lease_s"], ack["limit_mwh"], ack["min_mv"]) == (10, 100, 3600)


async def test_over_current_trips(start_node: NodeFactory) -> None:
    """Current above max_ma while a relay is closed stops the transfer."""
    rn, obs = await start(start_node)
    await command(rn, object(), SUPPLY)
    rn.hw.cell.supply_ma = 2900
    await rn.hw.clock.advance(60)
    assert pins(rn) == (0, 0)
    assert obs.events() == ["over_current"]


async def test_interlock_attempt_is_refused_and_latched(start_node: NodeFactory) -> None:
    """A RECEIVE output that reads back on forbids SUPPLY, forever."""
    rn, obs = await start(start_node)
    rn.hw.receive_pin.stuck = 1
    reply = await command(rn, object(), SUPPLY)
    assert reply["t"] == "err"
    assert reply["code"] == "fault"
    assert rn.hw.supply_pin.level == 0
    assert rn.hw.monitor.both_on == 0
    assert obs.events() == ["interlock"]
    assert rn.node.fault == "interlock"
    rn.hw.receive_pin.stuck = None
    reply = await command(rn, object(), RECEIVE)
    assert reply["code"] == "fault"
    assert pins(rn) == (0, 0)
    assert (await command(rn, object(), IDLE))["t"] == "ack"


async def test_stuck_relay_while_idle_is_detected_and_latched(start_node: NodeFactory) -> None:
    """Current through a welded SUPPLY contact while IDLE raises stuck_relay."""
    rn, obs = await start(start_node)
    rn.hw.cell.welded_supply = True
    await rn.hw.clock.advance(2000)
    assert obs.events() == ["stuck_relay"]
    assert rn.node.fault == "stuck_relay"
    assert pins(rn) == (0, 0)
    rn.hw.cell.welded_supply = False
    await rn.hw.clock.advance(2000)
    reply = await command(rn, object(), SUPPLY)
    assert reply["code"] == "fault"
    assert obs.events() == ["stuck_relay"]


async def test_stuck_relay_contradicting_direction(start_node: NodeFactory) -> None:
    """Charging while SUPPLY is commanded means the RECEIVE path is closed."""
    rn, obs = await start(start_node)
    await command(rn, object(), SUPPLY)
    rn.hw.chip.override_ma = -600
    await rn.hw.clock.advance(1000)
    assert obs.events() == ["stuck_relay"]
    assert pins(rn) == (0, 0)


async def test_no_current_while_supply_when_configured(start_node: NodeFactory) -> None:
    """With supply_min_ma set, a SUPPLY that draws nothing after settling trips."""
    rn, obs = await start(start_node, faults={"supply_min_ma": 20, "supply_settle_ms": 1000})
    await command(rn, object(), SUPPLY)
    rn.hw.chip.override_ma = 0
    await rn.hw.clock.advance(800)
    assert pins(rn) == (1, 0)
    await rn.hw.clock.advance(400)
    assert obs.events() == ["stuck_relay"]
    assert pins(rn) == (0, 0)


async def test_sensor_fault_stops_and_clears_when_it_reads_again(
    start_node: NodeFactory,
) -> None:
    """I2C errors: relays off and SUPPLY refused until the sensor answers."""
    rn, obs = await start(start_node)
    await command(rn, object(), SUPPLY)
    rn.hw.i2c.fail = True
    await rn.hw.clock.advance(60)
    assert pins(rn) == (0, 0)
    assert obs.events() == ["sensor_fault"]
    await rn.hw.clock.advance(2500)
    status = rn.node.status_body()
    assert status["mv"] is None
    assert status["soc"] is None
    assert (await command(rn, object(), SUPPLY))["code"] == "fault"
    rn.hw.i2c.fail = False
    await rn.hw.clock.advance(300)
    assert rn.node.fault is None
    assert (await command(rn, object(), SUPPLY))["t"] == "ack"
    assert obs.events() == ["sensor_fault"]


async def test_implausible_readings_count_as_sensor_fault(start_node: NodeFactory) -> None:
    """An overflowing or absurd reading is treated like a missing sensor."""
    rn, obs = await start(start_node)
    await command(rn, object(), RECEIVE)
    rn.hw.chip.overflow = True
    await rn.hw.clock.advance(100)
    assert obs.events() == ["sensor_fault"]
    assert pins(rn) == (0, 0)


async def test_recalibration_after_a_sensor_reset(start_node: NodeFactory) -> None:
    """A brown-out zeroes the calibration; the node writes it back, no trip."""
    rn, obs = await start(start_node)
    await command(rn, object(), SUPPLY)
    chip = rn.hw.chip
    chip.writes.clear()
    chip.brownout()
    await rn.hw.clock.advance(100)
    assert (0x00, 0x1DDF) in chip.writes
    assert (0x05, 4096) in chip.writes
    assert chip.regs[0x05] == 4096
    assert rn.node.sensor.recalibrations == 1
    assert pins(rn) == (1, 0)
    assert obs.events() == []
    assert rn.node.reading is not None
    assert rn.node.reading.ma == 1500


async def test_watchdog_fed_only_while_healthy(start_node: NodeFactory) -> None:
    """A dead sensor starves the hardware watchdog; recovery feeds it again."""
    rn, _ = await start(start_node)
    wdt = rn.hw.wdt
    assert wdt is not None
    before = wdt.feeds
    await rn.hw.clock.advance(1000)
    assert wdt.feeds > before
    rn.hw.i2c.fail = True
    await rn.hw.clock.advance(2500)
    starved = wdt.feeds
    await rn.hw.clock.advance(3000)
    assert wdt.feeds == starved
    rn.hw.i2c.fail = False
    await rn.hw.clock.advance(1000)
    assert wdt.feeds > starved


async def test_one_controller_and_idle_from_anyone(start_node: NodeFactory) -> None:
    """Another session gets busy for SUPPLY/RECEIVE but may always stop."""
    rn, _ = await start(start_node)
    a, b = object(), object()
    assert (await command(rn, a, SUPPLY))["t"] == "ack"
    reply = await command(rn, b, RECEIVE)
    assert reply["code"] == "busy"
    assert pins(rn) == (1, 0)
    assert (await command(rn, b, IDLE))["t"] == "ack"
    assert pins(rn) == (0, 0)
    assert rn.node.controller is None
    assert (await command(rn, b, RECEIVE))["t"] == "ack"
    assert pins(rn) == (0, 1)


async def test_controller_lost_stops_the_transfer(start_node: NodeFactory) -> None:
    """The controlling connection closing opens the relays."""
    rn, obs = await start(start_node)
    ctl = object()
    await command(rn, ctl, SUPPLY)
    rn.node.session_closed(ctl)
    assert pins(rn) == (0, 0)
    assert obs.events() == ["controller_lost"]


async def test_mode_change_goes_through_idle(start_node: NodeFactory) -> None:
    """SUPPLY to RECEIVE: both open for the dead time, then RECEIVE closes."""
    rn, _ = await start(start_node)
    ctl = object()
    await command(rn, ctl, SUPPLY)
    task = asyncio.create_task(rn.node.command(ctl, RECEIVE, 2, 60, 10000, 3300))
    await rn.hw.clock.advance(50)
    assert pins(rn) == (0, 0)
    assert rn.node.mode == IDLE
    await rn.hw.clock.advance(60)
    assert (await task)["t"] == "ack"
    assert pins(rn) == (0, 1)
    assert rn.node.meter.session_mwh == 0


async def test_trip_during_dead_time_wins(start_node: NodeFactory) -> None:
    """A trip while the make is pending: the relay never closes."""
    rn, obs = await start(start_node)
    ctl = object()
    task = asyncio.create_task(rn.node.command(ctl, SUPPLY, 1, 60, 10000, 3300))
    await rn.hw.clock.advance(40)
    rn.node.session_closed(ctl)
    await rn.hw.clock.advance(200)
    reply = await task
    assert reply["code"] == "busy"
    assert rn.hw.supply_pin.writes.count(1) == 0
    assert obs.events() == ["controller_lost"]


async def test_stop_opens_the_relays(start_node: NodeFactory) -> None:
    """``stop()`` is synchronous and leaves both relays open."""
    rn, _ = await start(start_node)
    await command(rn, object(), SUPPLY)
    rn.node.stop()
    assert pins(rn) == (0, 0)
    await asyncio.wait_for(rn.task, 5)


async def test_ticks_wrap_around(start_node: NodeFactory) -> None:
    """Leases and energy work across the 2**30 ms tick wrap."""
    from .fakes import FakeClock, FakeHw

    hw = FakeHw(clock=FakeClock(start_ms=(1 << 30) - 1500))
    rn = await start_node(golden_config(), hw=hw)
    obs = Observer()
    rn.node.sessions.append(obs)
    await hw.clock.advance(300)
    await command(rn, object(), SUPPLY, lease_s=3)
    await hw.clock.advance(2500)
    assert pins(rn) == (1, 0)
    assert rn.node.meter.out_mwh >= 3
    await hw.clock.advance(600)
    assert obs.events() == ["lease_expired"]


async def test_long_uptime_beyond_the_tick_window(start_node: NodeFactory) -> None:
    """After a week (ticks wrap every 12.4 days, ticks_diff every 6.2) all still works."""
    rn, obs = await start(start_node)
    for _ in range(17):
        await rn.hw.clock.jump(10 * 3600 * 1000)
    assert rn.node.status_body()["uptime_s"] == 17 * 36000
    rn.hw.cell.welded_supply = True
    await rn.hw.clock.advance(2000)
    assert obs.events() == ["stuck_relay"]
