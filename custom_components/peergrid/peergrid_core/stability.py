"""Voltage stability score of a gateway's nodes and the seller quality factor.

After each telemetry report the grid rates how close the reported cell voltages
sit to the middle of the useful Li-ion range:

.. code-block:: text

    count     = 1 + len(node_voltages)
    average   = (primary_voltage + sum(node_voltages)) / count
    deviation = |average - 3.85|
    score     = clamp(100 - deviation / 0.35 * 100, 0, 100)

``count`` is the number of voltages summed: the gateway's primary reading plus
one per connected node. The primary reading is counted even when it repeats a
node's voltage (in the specification's example the primary 3.921 V is node A's
reading), because that is what the formula sums.

The score feeds :func:`quality_factor`, the multiplier on minted energy tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal, localcontext
import math

from .errors import PeerGridValidationError

NOMINAL_VOLTS = 3.85
"""Centre of the scored band: the midpoint of the 3.5-4.2 V working range."""

FULL_DEVIATION_VOLTS = 0.35
"""Deviation from :data:`NOMINAL_VOLTS` at which the score reaches 0."""

SCORE_MIN = 0.0
SCORE_MAX = 100.0

VOLTS_RANGE = (0.0, 6.0)
"""Accepted voltage readings, volts (the same bounds as :data:`units.Volts`)."""

QUALITY_FLOOR = Decimal("0.5")
"""Quality factor of the worst seller (score 0)."""

QUALITY_QUANTUM = Decimal("0.0001")
"""Precision of the quality factor; it is rounded down to this step."""


def voltage_stability_score(primary_voltage: float, node_voltages: Sequence[float] = ()) -> float:
    """Return the voltage stability score, 0 to 100, of one telemetry report.

    ``primary_voltage`` is the gateway's own reading and ``node_voltages`` the
    readings of its connected nodes, all in volts. 100 means the average sits
    exactly on 3.85 V; every 3.5 mV of deviation costs one point.
    """
    total = _checked_volts("primary_voltage", primary_voltage)
    for index, volts in enumerate(node_voltages):
        total += _checked_volts(f"node_voltages[{index}]", volts)
    average = total / (1 + len(node_voltages))
    deviation = abs(average - NOMINAL_VOLTS)
    score = SCORE_MAX - deviation / FULL_DEVIATION_VOLTS * SCORE_MAX
    return min(max(score, SCORE_MIN), SCORE_MAX)


def quality_factor(score: float) -> Decimal:
    """Return the seller quality factor for a stability ``score`` (0 to 100).

    The mapping is linear from :data:`QUALITY_FLOOR` at score 0 to exactly 1 at
    score 100, ``F = 0.5 + 0.5 * score / 100``, rounded down to four decimals.
    It is monotone, never exceeds 1 (so quality never mints more than the
    energy delivered), and never drops to zero (a seller whose cells sag still
    delivered measured energy and keeps half of its reward). docs/formulas.md
    gives the reasoning.
    """
    if not math.isfinite(score):
        raise PeerGridValidationError("score", f"{score} is not a finite number")
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise PeerGridValidationError("score", f"{score} is outside {SCORE_MIN}..{SCORE_MAX}")
    # Decimal(float) is exact; every later step rounds down, so the factor can
    # only fall short of the exact mapping, never exceed it.
    with localcontext() as context:
        context.rounding = ROUND_DOWN
        share = Decimal(score) / Decimal(100)
        factor = QUALITY_FLOOR + (Decimal(1) - QUALITY_FLOOR) * share
        return factor.quantize(QUALITY_QUANTUM)


def quality_factor_from_voltage(avg_voltage: float) -> Decimal:
    """Return the quality factor of a transfer from its average cell voltage.

    An energy report carries one ``avg_voltage``; it is scored as a report with
    that single reading and no nodes.
    """
    try:
        score = voltage_stability_score(avg_voltage)
    except PeerGridValidationError as err:
        raise PeerGridValidationError("avg_voltage", err.message) from err
    return quality_factor(score)


def _checked_volts(field: str, volts: float) -> float:
    low, high = VOLTS_RANGE
    if not math.isfinite(volts):
        raise PeerGridValidationError(field, f"{volts} is not a finite number")
    if not low <= volts <= high:
        raise PeerGridValidationError(field, f"{volts} V is outside {low}..{high} V")
    return volts
