"""Statistics and run sizes shared by the benchmarks.

Conventions of every benchmark's result dict (flat ``name -> float``, so that
``bench/results/latest.json`` stays easy to diff):

* a plain key is the **median** over the rounds of the run (or, for latency
  percentiles, the percentile over every sample of every round);
* ``<key>_lo`` and ``<key>_hi`` are the smallest and largest per-round value,
  the spread the machine's noise caused; the Markdown table shows them as
  ``median (lo-hi)``;
* ``<key>_ratio`` style keys divide a PeerGrid figure by its baseline's,
  measured in the same run (latency and cost: > 1 means PeerGrid is slower;
  throughput keys say which way they point in their name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
import math
import statistics


class Scale(StrEnum):
    """How big a run is: ``smoke`` (CI: does it run?), ``quick`` (default) or ``full``."""

    SMOKE = "smoke"
    QUICK = "quick"
    FULL = "full"

    @classmethod
    def of(cls, full: bool, smoke: bool) -> Scale:
        """The scale a ``run(full, smoke=...)`` call asks for (smoke wins)."""
        if smoke:
            return cls.SMOKE
        return cls.FULL if full else cls.QUICK

    def pick[T](self, smoke: T, quick: T, full: T) -> T:
        """The value for this scale."""
        return {Scale.SMOKE: smoke, Scale.QUICK: quick, Scale.FULL: full}[self]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile (0..1) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of a sample of durations (same unit as the samples)."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        """Summarise ``samples`` (at least one)."""
        return cls(
            count=len(samples),
            p50=percentile(samples, 0.50),
            p90=percentile(samples, 0.90),
            p99=percentile(samples, 0.99),
            mean=statistics.fmean(samples),
            max=max(samples),
        )

    def metrics(self, prefix: str, unit: str = "ms") -> dict[str, float]:
        """``{prefix}_p50_{unit}`` ... as a result dict."""
        return {
            f"{prefix}_p50_{unit}": self.p50,
            f"{prefix}_p99_{unit}": self.p99,
            f"{prefix}_mean_{unit}": self.mean,
            f"{prefix}_max_{unit}": self.max,
        }


def spread(name: str, per_round: Sequence[float]) -> dict[str, float]:
    """``name`` = median of the per-round values, ``name_lo``/``name_hi`` = their range.

    A single value has no range: only ``name`` is reported.
    """
    values = [v for v in per_round if not math.isnan(v)]
    if not values:
        return {name: math.nan}
    if len(values) == 1:
        return {name: values[0]}
    return {name: statistics.median(values), f"{name}_lo": min(values), f"{name}_hi": max(values)}


def pooled_latency(
    prefix: str, rounds: Sequence[Sequence[float]], unit: str = "ms"
) -> dict[str, float]:
    """Percentiles over every sample of every round, plus the per-round spread of p50 and p99."""
    everything = [sample for samples in rounds for sample in samples]
    result = Latency.of(everything).metrics(prefix, unit)
    if len(rounds) > 1:
        for tag, fraction in (("p50", 0.5), ("p99", 0.99)):
            values = [percentile(samples, fraction) for samples in rounds if samples]
            result[f"{prefix}_{tag}_{unit}_lo"] = min(values)
            result[f"{prefix}_{tag}_{unit}_hi"] = max(values)
    return result


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is zero or unknown."""
    if denominator == 0 or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


def growth_exponent(points: Iterable[tuple[float, float]]) -> float:
    """Least-squares slope of ``log(y)`` over ``log(x)``: y grows like x**slope."""
    pairs = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(pairs) < 2:
        return math.nan
    mean_x = statistics.fmean(p[0] for p in pairs)
    mean_y = statistics.fmean(p[1] for p in pairs)
    num = sum((x - mean_x) * (y - mean_y) for x, y in pairs)
    den = sum((x - mean_x) ** 2 for x, _ in pairs)
    return num / den if den else math.nan


def merge(*parts: Mapping[str, float]) -> dict[str, float]:
    """One result dict from several; a repeated key is a bug in the benchmark."""
    result: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            if key in result:
                raise KeyError(f"metric {key!r} reported twice")
            result[key] = float(value)
    return result
