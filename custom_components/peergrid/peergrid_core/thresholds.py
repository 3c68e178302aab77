"""State-of-charge thresholds of the automatic balancer, as one validated object.

The balancer sorts nodes by SoC into bands and pairs donors with receivers:

=====================  =======  ==========================================
field                  default  meaning
=====================  =======  ==========================================
``soc_critical``       20 %     at or below: the node must receive charge
``soc_low``            40 %     at or below: the node should receive charge
``soc_high``           70 %     at or above: the node can donate
``soc_full``           90 %     at or above: the node should donate
``balance_deadband``   10 %     grid spread below this: nothing to do
``min_transfer_gap``   15 %     smallest SoC gap between a donor and receiver
=====================  =======  ==========================================

Every field has a safe range in :data:`THRESHOLD_RANGES`, published as data so
that the integration's options flow can clamp user input to exactly the bounds
enforced here. Beyond the per-field ranges, the bands must be ordered
(``critical < low < high < full``) and a donor at ``soc_high`` must be able to
feed a receiver at ``soc_low`` (``min_transfer_gap <= soc_high - soc_low``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from itertools import pairwise
import math
from types import MappingProxyType
from typing import Final

from .errors import PeerGridValidationError

THRESHOLD_RANGES: Final[Mapping[str, tuple[float, float]]] = MappingProxyType(
    {
        # Below 5 % an 18650 is close to its protection cut-off; above 30 % a
        # "critical" node would be pulled from healthy neighbours too eagerly.
        "soc_critical": (5.0, 30.0),
        "soc_low": (15.0, 50.0),
        "soc_high": (50.0, 85.0),
        # Up to 100 % so a grid can decide to donate only from full cells.
        "soc_full": (70.0, 100.0),
        # Under 2 % the balancer would chase sensor noise (the SoC estimate
        # jitters by a point or two); above 30 % it would rarely act at all.
        "balance_deadband": (2.0, 30.0),
        # A transfer loses about half its energy end to end, so a tiny gap is
        # not worth moving; above 50 % only extreme pairs would ever match.
        "min_transfer_gap": (5.0, 50.0),
    }
)
"""Inclusive ``(min, max)`` in percent for every :class:`BalanceThresholds` field."""

_ORDER: Final = ("soc_critical", "soc_low", "soc_high", "soc_full")


@dataclass(frozen=True, slots=True, kw_only=True)
class BalanceThresholds:
    """The auto-balance SoC thresholds, all in percent; immutable and always valid.

    Build one with the defaults, with keyword overrides, or from stored options
    with :meth:`from_options`; change one with :func:`dataclasses.replace`,
    which validates again. Invalid values raise
    :class:`PeerGridValidationError` naming the offending field.
    """

    soc_critical: float = 20.0
    """At or below this SoC a node must receive charge."""

    soc_low: float = 40.0
    """At or below this SoC a node should receive charge."""

    soc_high: float = 70.0
    """At or above this SoC a node can donate."""

    soc_full: float = 90.0
    """At or above this SoC a node should donate."""

    balance_deadband: float = 10.0
    """If the spread between the fullest and emptiest node is below this, do nothing."""

    min_transfer_gap: float = 15.0
    """Smallest SoC difference between a donor and its receiver."""

    def __post_init__(self) -> None:
        """Check every range, then the ordering and the gap rule."""
        for name, (low, high) in THRESHOLD_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PeerGridValidationError(name, f"{value!r} is not a number")
            if not math.isfinite(value):
                raise PeerGridValidationError(name, f"{value} is not a finite number")
            if not low <= value <= high:
                raise PeerGridValidationError(name, f"{value} % is outside {low}..{high} %")
            # Store ints as floats so equality and hashing do not depend on how
            # the value was typed into the options form.
            object.__setattr__(self, name, float(value))
        for lower, upper in pairwise(_ORDER):
            if getattr(self, upper) <= getattr(self, lower):
                raise PeerGridValidationError(
                    upper,
                    f"{upper} ({getattr(self, upper)} %) must be above "
                    f"{lower} ({getattr(self, lower)} %)",
                )
        if self.min_transfer_gap > self.soc_high - self.soc_low:
            raise PeerGridValidationError(
                "min_transfer_gap",
                f"{self.min_transfer_gap} % is wider than soc_high - soc_low "
                f"({self.soc_high - self.soc_low} %), so a node that can donate "
                "could never feed a node that should receive",
            )

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> BalanceThresholds:
        """Build thresholds from a mapping such as a config entry's options.

        Keys that are not threshold fields are ignored (the options hold other
        settings too); missing fields take their defaults.
        """
        known = {field.name for field in fields(cls)}
        values = {key: value for key, value in options.items() if key in known}
        return cls(**values)  # type: ignore[arg-type]  # __post_init__ checks every type

    def as_dict(self) -> dict[str, float]:
        """Return the thresholds as a plain mapping, the shape of stored options."""
        return asdict(self)


def clamp_threshold(field: str, value: float) -> float:
    """Return ``value`` clamped into the safe range of threshold ``field``.

    Only the per-field range is applied; the cross-field rules are checked when
    the clamped values are turned into :class:`BalanceThresholds`.
    """
    try:
        low, high = THRESHOLD_RANGES[field]
    except KeyError as err:
        raise PeerGridValidationError(field, "is not a balance threshold") from err
    if math.isnan(value):
        raise PeerGridValidationError(field, "value is NaN")
    return min(max(value, low), high)


DEFAULT_THRESHOLDS = BalanceThresholds()
"""The thresholds of the specification."""
