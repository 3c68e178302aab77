"""Energy integrated from sampled power, split into energy out of and into a cell.

``E [Wh] = P [W] * t [s] / 3600``. Power is signed like current in
:mod:`peergrid_core.units`: positive flows out of the cell (SUPPLY, discharge),
negative flows in (RECEIVE, charge).

:class:`EnergyMeter` integrates consecutive samples with the trapezoid rule:
the INA219 reports instantaneous power, and a ramp between two readings (the
taper of a charger, the sag of a loaded cell) is captured exactly by a
trapezoid, where a rectangle would be off by half the change on every step.
When the sign flips between two samples, the interval is split at the
interpolated zero crossing so that each counter receives only its own side.

Counters are floats in Wh. Energy is a measurement with sensor noise of a few
per cent, far coarser than a double's 16 digits; exact decimals are kept for
the ledger (:mod:`peergrid_core.tokens`). Additions are compensated (Neumaier)
so that millions of tiny steps do not drift.

The meter never raises on sample data, because a sensor stream is noisy by
nature; each sample gets a :class:`SampleOutcome` that callers may count for
diagnostics, and the counters can only grow.
"""

from __future__ import annotations

from enum import StrEnum
import math

from .errors import PeerGridValidationError

SECONDS_PER_HOUR = 3600.0

DEFAULT_MAX_GAP_SECONDS = 60.0
"""Longest interval integrated; across a longer silence nothing is assumed."""

DEFAULT_MAX_POWER_WATTS = 30.0
"""Largest plausible power of a one-cell node (the ``MilliWatts`` wire bound)."""


def interval_energy_wh(power_watts: float, seconds: float) -> float:
    """Return the energy in Wh of ``power_watts`` held for ``seconds`` (a rectangle).

    Signed like the power. Raises :class:`PeerGridValidationError` for a
    non-finite power or a negative or non-finite duration.
    """
    if not math.isfinite(power_watts):
        raise PeerGridValidationError("power_watts", f"{power_watts} is not a finite number")
    if not math.isfinite(seconds) or seconds < 0.0:
        raise PeerGridValidationError("seconds", f"{seconds} is not a finite, non-negative time")
    return power_watts * seconds / SECONDS_PER_HOUR


def trapezoid_energy_wh(
    start_watts: float, end_watts: float, seconds: float
) -> tuple[float, float]:
    """Return ``(out_wh, in_wh)`` for power ramping linearly over ``seconds``.

    Both parts are non-negative. If the power changes sign, the ramp is split
    at its zero crossing: the part above zero is energy out, the part below is
    energy in.
    """
    for field, watts in (("start_watts", start_watts), ("end_watts", end_watts)):
        if not math.isfinite(watts):
            raise PeerGridValidationError(field, f"{watts} is not a finite number")
    if not math.isfinite(seconds) or seconds < 0.0:
        raise PeerGridValidationError("seconds", f"{seconds} is not a finite, non-negative time")
    hours = seconds / SECONDS_PER_HOUR
    if start_watts >= 0.0 and end_watts >= 0.0:
        return (start_watts + end_watts) / 2.0 * hours, 0.0
    if start_watts <= 0.0 and end_watts <= 0.0:
        return 0.0, -(start_watts + end_watts) / 2.0 * hours
    # Opposite signs: the crossing sits at share |start| / (|start| + |end|) of
    # the interval, and each side is a triangle.
    crossing = abs(start_watts) / (abs(start_watts) + abs(end_watts))
    first = abs(start_watts) / 2.0 * hours * crossing
    second = abs(end_watts) / 2.0 * hours * (1.0 - crossing)
    if start_watts > 0.0:
        return first, second
    return second, first


class SampleOutcome(StrEnum):
    """What :meth:`EnergyMeter.add_sample` did with a sample."""

    FIRST = "first"
    """The first usable sample: it becomes the baseline, nothing is counted."""

    INTEGRATED = "integrated"
    """The interval since the previous sample was added to the counters."""

    DUPLICATE = "duplicate"
    """Same timestamp as the baseline: ignored, the baseline is kept."""

    NOT_FINITE = "not_finite"
    """Power or timestamp is NaN or infinite: ignored, the baseline is kept."""

    OUT_OF_RANGE = "out_of_range"
    """Power beyond the meter's plausible maximum: ignored, the baseline is kept."""

    CLOCK_BACKWARDS = "clock_backwards"
    """Timestamp earlier than the baseline: it becomes the new baseline, nothing counted."""

    GAP = "gap"
    """Longer silence than ``max_gap_seconds``: it becomes the new baseline, nothing counted."""


class _Counter:
    """A growing float total with Neumaier compensation.

    Compensation keeps millions of tiny steps from drifting; the high-water
    mark makes "never decreases" a guarantee rather than a rounding argument.
    """

    __slots__ = ("_compensation", "_high", "_sum")

    def __init__(self, start: float) -> None:
        self._sum = start
        self._compensation = 0.0
        self._high = start

    def add(self, value: float) -> None:
        total = self._sum + value
        if abs(self._sum) >= abs(value):
            self._compensation += (self._sum - total) + value
        else:
            self._compensation += (value - total) + self._sum
        self._sum = total
        self._high = max(self._high, self._sum + self._compensation)

    @property
    def value(self) -> float:
        return self._high


class EnergyMeter:
    """Integrates a stream of ``(timestamp, power)`` samples into two counters.

    ``energy_out_wh`` counts energy that left the cell and ``energy_in_wh``
    energy that entered it, both in Wh and both never decreasing, which makes
    them fit for ``TOTAL_INCREASING`` energy sensors. Timestamps are seconds on
    any clock that the caller injects; a monotonic clock is best, and the
    meter tolerates a wall clock that jumps by re-basing instead of counting
    the jump.

    Pass the previous totals to ``energy_out_wh`` and ``energy_in_wh`` to resume
    after a restart.
    """

    __slots__ = (
        "_energy_in",
        "_energy_out",
        "_last_time",
        "_last_watts",
        "_max_gap",
        "_max_power",
    )

    def __init__(
        self,
        *,
        energy_out_wh: float = 0.0,
        energy_in_wh: float = 0.0,
        max_gap_seconds: float = DEFAULT_MAX_GAP_SECONDS,
        max_power_watts: float = DEFAULT_MAX_POWER_WATTS,
    ) -> None:
        """Start the counters at the given totals with the given limits."""
        for field, value in (("energy_out_wh", energy_out_wh), ("energy_in_wh", energy_in_wh)):
            if not math.isfinite(value) or value < 0.0:
                raise PeerGridValidationError(field, f"{value} is not a finite, non-negative Wh")
        for field, value in (
            ("max_gap_seconds", max_gap_seconds),
            ("max_power_watts", max_power_watts),
        ):
            if not math.isfinite(value) or value <= 0.0:
                raise PeerGridValidationError(field, f"{value} is not a finite, positive limit")
        self._energy_out = _Counter(energy_out_wh)
        self._energy_in = _Counter(energy_in_wh)
        self._max_gap = max_gap_seconds
        self._max_power = max_power_watts
        self._last_time: float | None = None
        self._last_watts = 0.0

    @property
    def energy_out_wh(self) -> float:
        """Energy that left the cell so far, Wh."""
        return self._energy_out.value

    @property
    def energy_in_wh(self) -> float:
        """Energy that entered the cell so far, Wh."""
        return self._energy_in.value

    @property
    def max_gap_seconds(self) -> float:
        """Longest interval between two samples that is still integrated, seconds."""
        return self._max_gap

    @property
    def last_sample_time(self) -> float | None:
        """Timestamp of the baseline sample, or ``None`` before the first one."""
        return self._last_time

    def add_sample(self, timestamp: float, power_watts: float) -> SampleOutcome:
        """Integrate the interval from the previous sample to this one.

        ``timestamp`` is in seconds, ``power_watts`` signed (positive out of the
        cell). The returned outcome says whether and why a sample was skipped.
        """
        if not (math.isfinite(timestamp) and math.isfinite(power_watts)):
            return SampleOutcome.NOT_FINITE
        if abs(power_watts) > self._max_power:
            return SampleOutcome.OUT_OF_RANGE
        last_time = self._last_time
        if last_time is None:
            self._rebase(timestamp, power_watts)
            return SampleOutcome.FIRST
        elapsed = timestamp - last_time
        if elapsed == 0.0:
            return SampleOutcome.DUPLICATE
        if elapsed < 0.0:
            self._rebase(timestamp, power_watts)
            return SampleOutcome.CLOCK_BACKWARDS
        if elapsed > self._max_gap:
            self._rebase(timestamp, power_watts)
            return SampleOutcome.GAP
        out_wh, in_wh = trapezoid_energy_wh(self._last_watts, power_watts, elapsed)
        self._energy_out.add(out_wh)
        self._energy_in.add(in_wh)
        self._rebase(timestamp, power_watts)
        return SampleOutcome.INTEGRATED

    def _rebase(self, timestamp: float, power_watts: float) -> None:
        self._last_time = timestamp
        self._last_watts = power_watts
