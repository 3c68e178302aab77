"""Energy integration from sampled power."""

from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.energy import EnergyMeter, SampleOutcome, interval_energy_wh, trapezoid_energy_wh
from peergrid_core.errors import PeerGridValidationError

watts = st.floats(min_value=-30.0, max_value=30.0, allow_nan=False)


def test_interval_energy_is_power_times_time_over_3600() -> None:
    """E[Wh] = P[W] * t[s] / 3600, signed like the power."""
    assert interval_energy_wh(3.6, 3600.0) == pytest.approx(3.6)
    assert interval_energy_wh(9.0, 1800.0) == pytest.approx(4.5)
    assert interval_energy_wh(-2.0, 36.0) == pytest.approx(-0.02)
    assert interval_energy_wh(5.0, 0.0) == 0.0


@pytest.mark.parametrize(
    ("power", "seconds", "field"),
    [
        (math.nan, 1.0, "power_watts"),
        (math.inf, 1.0, "power_watts"),
        (1.0, -1.0, "seconds"),
        (1.0, math.nan, "seconds"),
    ],
)
def test_interval_energy_rejects_bad_input(power: float, seconds: float, field: str) -> None:
    """A non-finite power or a negative duration names the input."""
    with pytest.raises(PeerGridValidationError) as caught:
        interval_energy_wh(power, seconds)
    assert caught.value.field == field


def test_trapezoid_of_a_ramp() -> None:
    """A ramp from 2 W to 4 W over an hour is 3 Wh out."""
    assert trapezoid_energy_wh(2.0, 4.0, 3600.0) == pytest.approx((3.0, 0.0))
    assert trapezoid_energy_wh(-2.0, -4.0, 3600.0) == pytest.approx((0.0, 3.0))


def test_trapezoid_splits_a_sign_change_at_the_crossing() -> None:
    """From +3 W to -1 W over 3600 s the crossing is at 2700 s: 1.125 Wh out, 0.125 Wh in."""
    assert trapezoid_energy_wh(3.0, -1.0, 3600.0) == pytest.approx((1.125, 0.125))
    assert trapezoid_energy_wh(-1.0, 3.0, 3600.0) == pytest.approx((1.125, 0.125))


@pytest.mark.parametrize(
    ("start", "end", "seconds", "field"),
    [
        (math.nan, 1.0, 1.0, "start_watts"),
        (1.0, math.inf, 1.0, "end_watts"),
        (1.0, 1.0, -0.1, "seconds"),
    ],
)
def test_trapezoid_rejects_bad_input(start: float, end: float, seconds: float, field: str) -> None:
    """The pure function refuses what the meter would skip."""
    with pytest.raises(PeerGridValidationError) as caught:
        trapezoid_energy_wh(start, end, seconds)
    assert caught.value.field == field


def test_meter_integrates_a_supply_session() -> None:
    """Half an hour at a steady 1.8 W out, sampled every 10 s, is 0.9 Wh out."""
    meter = EnergyMeter()
    assert meter.add_sample(0.0, 1.8) is SampleOutcome.FIRST
    for step in range(1, 181):
        assert meter.add_sample(step * 10.0, 1.8) is SampleOutcome.INTEGRATED
    assert meter.energy_out_wh == pytest.approx(0.9)
    assert meter.energy_in_wh == 0.0
    assert meter.last_sample_time == 1800.0


def test_meter_keeps_out_and_in_apart() -> None:
    """Charging counts into energy in; a later discharge into energy out."""
    meter = EnergyMeter()
    meter.add_sample(0.0, -3.6)
    meter.add_sample(10.0, -3.6)  # 0.01 Wh in
    meter.add_sample(20.0, 3.6)  # crossing at 15 s: 0.0025 in, 0.0025 out
    meter.add_sample(30.0, 3.6)  # 0.01 Wh out
    assert meter.energy_in_wh == pytest.approx(0.0125)
    assert meter.energy_out_wh == pytest.approx(0.0125)


def test_meter_ignores_non_finite_samples_and_keeps_the_baseline() -> None:
    """A NaN reading is skipped; the next good one integrates from the last good one."""
    meter = EnergyMeter()
    meter.add_sample(0.0, 3.6)
    assert meter.add_sample(5.0, math.nan) is SampleOutcome.NOT_FINITE
    assert meter.add_sample(math.inf, 3.6) is SampleOutcome.NOT_FINITE
    assert meter.add_sample(10.0, 3.6) is SampleOutcome.INTEGRATED
    assert meter.energy_out_wh == pytest.approx(0.01)


def test_meter_ignores_implausible_power() -> None:
    """A reading beyond the node's maximum is a glitch, not energy."""
    meter = EnergyMeter(max_power_watts=10.0)
    meter.add_sample(0.0, 1.0)
    assert meter.add_sample(1.0, 500.0) is SampleOutcome.OUT_OF_RANGE
    assert meter.add_sample(2.0, 1.0) is SampleOutcome.INTEGRATED
    assert meter.energy_out_wh == pytest.approx(2.0 / 3600.0)


def test_meter_ignores_duplicate_timestamps() -> None:
    """A repeated timestamp adds nothing and does not move the baseline."""
    meter = EnergyMeter()
    meter.add_sample(0.0, 1.0)
    assert meter.add_sample(0.0, 20.0) is SampleOutcome.DUPLICATE
    meter.add_sample(3.6, 1.0)
    assert meter.energy_out_wh == pytest.approx(0.001)


def test_meter_rebases_when_the_clock_goes_backwards() -> None:
    """A backwards jump counts nothing and later samples integrate from the new time."""
    meter = EnergyMeter()
    meter.add_sample(1000.0, 3.6)
    meter.add_sample(1010.0, 3.6)
    assert meter.add_sample(5.0, 3.6) is SampleOutcome.CLOCK_BACKWARDS
    assert meter.energy_out_wh == pytest.approx(0.01)
    assert meter.add_sample(15.0, 3.6) is SampleOutcome.INTEGRATED
    assert meter.energy_out_wh == pytest.approx(0.02)


def test_meter_does_not_bridge_a_long_silence() -> None:
    """After a gap longer than the maximum nothing is assumed about the gap."""
    meter = EnergyMeter(max_gap_seconds=30.0)
    assert meter.max_gap_seconds == 30.0
    meter.add_sample(0.0, 3.6)
    assert meter.add_sample(3600.0, 3.6) is SampleOutcome.GAP
    assert meter.energy_out_wh == 0.0
    assert meter.add_sample(3610.0, 3.6) is SampleOutcome.INTEGRATED
    assert meter.energy_out_wh == pytest.approx(0.01)


def test_meter_resumes_from_stored_totals() -> None:
    """After a restart the counters continue from the stored totals."""
    meter = EnergyMeter(energy_out_wh=12.5, energy_in_wh=3.25)
    assert meter.last_sample_time is None
    meter.add_sample(0.0, 3.6)
    meter.add_sample(10.0, 3.6)
    assert meter.energy_out_wh == pytest.approx(12.51)
    assert meter.energy_in_wh == 3.25


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"energy_out_wh": -1.0}, "energy_out_wh"),
        ({"energy_in_wh": math.nan}, "energy_in_wh"),
        ({"max_gap_seconds": 0.0}, "max_gap_seconds"),
        ({"max_power_watts": math.inf}, "max_power_watts"),
    ],
)
def test_meter_rejects_bad_settings(kwargs: dict[str, float], field: str) -> None:
    """Settings are checked when the meter is built."""
    with pytest.raises(PeerGridValidationError) as caught:
        EnergyMeter(**kwargs)
    assert caught.value.field == field


def test_many_small_steps_do_not_drift() -> None:
    """100 000 steps of 10 ms at 3.6 W on top of a 1 MWh total add exactly 1 Wh.

    Each step is 1e-5 Wh, about 1e5 ulps of the total; uncompensated, the
    rounding of every addition would leave an error near 1e-5 relative.
    """
    meter = EnergyMeter(energy_out_wh=1e6)
    meter.add_sample(0.0, 3.6)
    for step in range(1, 100_001):
        meter.add_sample(step / 100.0, 3.6)
    assert meter.energy_out_wh - 1e6 == pytest.approx(1.0, rel=1e-9)


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-100.0, max_value=100.0) | st.just(math.nan),
            st.floats(min_value=-1_000.0, max_value=1_000.0)
            | st.sampled_from([math.nan, -math.inf]),
        ),
        max_size=40,
    )
)
def test_counters_never_decrease(samples: list[tuple[float, float]]) -> None:
    """Whatever the stream, with jumps, NaNs and spikes, counters only grow."""
    meter = EnergyMeter(max_gap_seconds=20.0)
    time = 0.0
    previous = (0.0, 0.0)
    for step, power in samples:
        time += step
        meter.add_sample(time, power)
        current = (meter.energy_out_wh, meter.energy_in_wh)
        assert current[0] >= previous[0]
        assert current[1] >= previous[1]
        previous = current


@settings(max_examples=150)
@given(watts, watts, st.floats(min_value=0.0, max_value=3600.0))
def test_trapezoid_parts_add_up(start: float, end: float, seconds: float) -> None:
    """Out minus in is the signed trapezoid; out plus in bounds it; both are non-negative."""
    out_wh, in_wh = trapezoid_energy_wh(start, end, seconds)
    signed = (start + end) / 2.0 * seconds / 3600.0
    assert out_wh >= 0.0
    assert in_wh >= 0.0
    assert out_wh - in_wh == pytest.approx(signed, abs=1e-9)
    assert out_wh + in_wh <= max(abs(start), abs(end)) * seconds / 3600.0 + 1e-9


@settings(max_examples=150)
@given(
    watts, st.floats(min_value=0.0, max_value=3600.0), st.floats(min_value=0.0, max_value=3600.0)
)
def test_interval_energy_is_monotone_in_time(power: float, first: float, second: float) -> None:
    """Holding a power longer moves the energy further from zero, never back."""
    short, long = sorted((first, second))
    assert abs(interval_energy_wh(power, short)) <= abs(interval_energy_wh(power, long))
