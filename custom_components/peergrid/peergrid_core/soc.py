"""State of charge of a node's Li-ion cell, estimated from its voltage.

Two estimates live here:

* :func:`linear_soc` is the specification's straight line, 3.2 V for an empty
  cell and 4.2 V for a full one. It is kept because the wire protocol and older
  gateways report it, but it reads several points wrong at rest and 20 to 30
  points too low under load.
* :func:`estimate_soc` (the default) first adds back the voltage lost on the
  cell's internal resistance (``V_oc = V_terminal + I * R``, discharge current
  positive) and then inverts a measured open-circuit-voltage curve.

The curve is an :class:`OcvCurve`: an immutable, validated table that is the
single source of truth for both directions. The simulator's cell model uses
:meth:`OcvCurve.ocv_at` to turn its true SoC into a voltage and the node's
estimator uses :meth:`OcvCurve.soc_at` to turn that voltage back into a SoC, so
the two can never drift apart.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import pairwise
import math

from .errors import PeerGridValidationError

SOC_EMPTY_PERCENT = 0.0
"""State of charge of an empty cell."""

SOC_FULL_PERCENT = 100.0
"""State of charge of a full cell."""

LINEAR_EMPTY_VOLTS = 3.2
"""Voltage the specification's linear estimate calls empty (0 %)."""

LINEAR_FULL_VOLTS = 4.2
"""Voltage the specification's linear estimate calls full (100 %)."""

DEFAULT_R_INTERNAL_OHMS = 0.15
"""Resistance between the cell's chemistry and the voltage sensor, in ohms.

About 0.05 ohm for a healthy 18650 plus the INA219's 0.1 ohm shunt, the holder,
the protection MOSFETs and the wiring. Measured circuits land between 0.08 and
0.25 ohm; override it per node when a DC-IR measurement is available.
"""

MAX_R_INTERNAL_OHMS = 1.0
"""Largest accepted series resistance; above this the cell or wiring is broken."""

TERMINAL_VOLTS_RANGE = (0.0, 6.0)
"""Accepted terminal voltage, volts (the same bounds as :data:`units.Volts`)."""

CURRENT_AMPS_RANGE = (-5.0, 5.0)
"""Accepted signed cell current, amperes (the same bounds as :data:`units.Amps`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OcvCurve:
    """An open-circuit-voltage curve: SoC in percent against rest voltage in volts.

    ``points`` are ``(soc_percent, ocv_volts)`` pairs. Both columns must be
    finite and strictly increasing, the first SoC must be 0 and the last 100, so
    that the curve is a bijection between 0-100 % and its voltage span and can be
    inverted without ambiguity. Between points the curve is linear; outside the
    table it is clamped (a cell above the top voltage is full, below the bottom
    one it is empty).

    The default is :data:`DEFAULT_OCV_CURVE` (an NMC 18650); build another for a
    different chemistry, for example LFP, whose curve is much flatter.
    """

    name: str
    """Short label of the chemistry or cell model, for diagnostics."""

    points: tuple[tuple[float, float], ...]
    """``(soc_percent, ocv_volts)`` pairs, both columns strictly increasing."""

    def __post_init__(self) -> None:
        """Check the table and freeze it as a tuple of float pairs."""
        if not self.name:
            raise PeerGridValidationError("name", "an OCV curve needs a name")
        try:
            points = tuple((float(soc), float(volts)) for soc, volts in self.points)
        except (TypeError, ValueError) as err:
            raise PeerGridValidationError(
                "points", "each point must be a (soc_percent, ocv_volts) pair of numbers"
            ) from err
        if len(points) < 2:
            raise PeerGridValidationError("points", "an OCV curve needs at least two points")
        for soc, volts in points:
            if not (math.isfinite(soc) and math.isfinite(volts)):
                raise PeerGridValidationError("points", "every point must be finite")
            if volts <= 0.0:
                raise PeerGridValidationError("points", f"voltage {volts} V is not positive")
        if points[0][0] != SOC_EMPTY_PERCENT or points[-1][0] != SOC_FULL_PERCENT:
            raise PeerGridValidationError("points", "the curve must run from 0 % to 100 % SoC")
        for (soc0, volts0), (soc1, volts1) in pairwise(points):
            if soc1 <= soc0:
                raise PeerGridValidationError(
                    "points", f"SoC must strictly increase ({soc0} % then {soc1} %)"
                )
            if volts1 <= volts0:
                raise PeerGridValidationError(
                    "points",
                    f"voltage must strictly increase ({volts0} V at {soc0} %, {volts1} V at {soc1} %)",
                )
        # Normalise a list or int input into the immutable float form that the
        # type promises; the dataclass is frozen, hence object.__setattr__.
        object.__setattr__(self, "points", points)

    @property
    def empty_volts(self) -> float:
        """Open-circuit voltage at 0 % SoC."""
        return self.points[0][1]

    @property
    def full_volts(self) -> float:
        """Open-circuit voltage at 100 % SoC."""
        return self.points[-1][1]

    def ocv_at(self, soc_percent: float) -> float:
        """Return the rest voltage of a cell at ``soc_percent``, clamped to 0-100 %."""
        if math.isnan(soc_percent):
            raise PeerGridValidationError("soc_percent", "state of charge is NaN")
        soc = min(max(soc_percent, SOC_EMPTY_PERCENT), SOC_FULL_PERCENT)
        index = bisect_left(self.points, soc, key=_soc_of)
        if index == 0:
            return self.points[0][1]
        (soc0, volts0), (soc1, volts1) = self.points[index - 1], self.points[index]
        return volts0 + (volts1 - volts0) * (soc - soc0) / (soc1 - soc0)

    def soc_at(self, ocv_volts: float) -> float:
        """Return the SoC in percent of a cell resting at ``ocv_volts``, clamped."""
        if math.isnan(ocv_volts):
            raise PeerGridValidationError("ocv_volts", "voltage is NaN")
        if ocv_volts <= self.empty_volts:
            return SOC_EMPTY_PERCENT
        if ocv_volts >= self.full_volts:
            return SOC_FULL_PERCENT
        index = bisect_left(self.points, ocv_volts, key=_volts_of)
        (soc0, volts0), (soc1, volts1) = self.points[index - 1], self.points[index]
        soc = soc0 + (soc1 - soc0) * (ocv_volts - volts0) / (volts1 - volts0)
        # Rounding can step a hair outside the segment; keep the result inside it
        # so that the inverse stays monotone across segment boundaries.
        return min(max(soc, soc0), soc1)


def _soc_of(point: tuple[float, float]) -> float:
    return point[0]


def _volts_of(point: tuple[float, float]) -> float:
    return point[1]


DEFAULT_OCV_CURVE = OcvCurve(
    name="18650 NMC (US18650VTC6, C/20 average)",
    # Sony/Murata US18650VTC6 rested 24 h, averaged C/20 charge and discharge
    # curves, decimated from 256 to 22 points (docs/formulas.md has the source).
    points=(
        (0.0, 2.54),
        (3.0, 3.01),
        (5.0, 3.15),
        (10.0, 3.27),
        (15.0, 3.35),
        (20.0, 3.42),
        (25.0, 3.50),
        (30.0, 3.56),
        (35.0, 3.61),
        (40.0, 3.66),
        (45.0, 3.71),
        (50.0, 3.76),
        (55.0, 3.80),
        (60.0, 3.84),
        (65.0, 3.88),
        (70.0, 3.92),
        (75.0, 3.98),
        (80.0, 4.04),
        (85.0, 4.07),
        (90.0, 4.09),
        (95.0, 4.11),
        (100.0, 4.175),
    ),
)
"""The OCV curve of the 18650 cells PeerGrid nodes ship with."""


def ocv_from_soc(soc_percent: float, curve: OcvCurve = DEFAULT_OCV_CURVE) -> float:
    """Return the open-circuit voltage in volts at ``soc_percent`` on ``curve``."""
    return curve.ocv_at(soc_percent)


def soc_from_ocv(ocv_volts: float, curve: OcvCurve = DEFAULT_OCV_CURVE) -> float:
    """Return the SoC in percent of a cell resting at ``ocv_volts`` on ``curve``."""
    return curve.soc_at(ocv_volts)


def linear_soc(terminal_volts: float) -> float:
    """Return the specification's linear SoC estimate in percent.

    3.2 V maps to 0 %, 4.2 V to 100 %, straight in between and clamped outside.
    It ignores load and the cell's real curve; prefer :func:`estimate_soc`.
    """
    volts = _checked("terminal_volts", terminal_volts, TERMINAL_VOLTS_RANGE)
    share = (volts - LINEAR_EMPTY_VOLTS) / (LINEAR_FULL_VOLTS - LINEAR_EMPTY_VOLTS)
    return min(max(share * SOC_FULL_PERCENT, SOC_EMPTY_PERCENT), SOC_FULL_PERCENT)


def compensate_ir(
    terminal_volts: float,
    current_amps: float,
    r_internal_ohms: float = DEFAULT_R_INTERNAL_OHMS,
) -> float:
    """Return the open-circuit voltage behind a loaded terminal voltage.

    ``V_oc = V_terminal + I * R``: a discharging cell (``current_amps`` > 0)
    sits below its rest voltage and a charging one (``current_amps`` < 0) above
    it, both by the drop across the series resistance.
    """
    volts = _checked("terminal_volts", terminal_volts, TERMINAL_VOLTS_RANGE)
    amps = _checked("current_amps", current_amps, CURRENT_AMPS_RANGE)
    ohms = _checked("r_internal_ohms", r_internal_ohms, (0.0, MAX_R_INTERNAL_OHMS))
    return volts + amps * ohms


def estimate_soc(
    terminal_volts: float,
    current_amps: float = 0.0,
    *,
    r_internal_ohms: float = DEFAULT_R_INTERNAL_OHMS,
    curve: OcvCurve = DEFAULT_OCV_CURVE,
) -> float:
    """Return the SoC in percent from a terminal voltage and the current through the cell.

    The voltage is first compensated for the internal-resistance drop
    (:func:`compensate_ir`), then looked up on the OCV ``curve``. With no
    current it is the plain inverse of the curve. The result is in 0-100 %.
    """
    return curve.soc_at(compensate_ir(terminal_volts, current_amps, r_internal_ohms))


def _checked(field: str, value: float, bounds: tuple[float, float]) -> float:
    """Return ``value`` if it is finite and within ``bounds``, else name ``field``."""
    low, high = bounds
    if not math.isfinite(value):
        raise PeerGridValidationError(field, f"{value} is not a finite number")
    if not low <= value <= high:
        raise PeerGridValidationError(field, f"{value} is outside {low}..{high}")
    return value
