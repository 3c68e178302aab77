"""Physical quantities with their unit and accepted range, as pydantic types.

Every number that crosses a boundary of the core carries its unit in its type
name and its plausible range in its constraints, so that a payload with a
negative voltage, a NaN or a thousand-percent battery is rejected at the edge
and names the field that was wrong.

Ranges are those of a single-cell Li-ion node (an 18650 with an INA219 on a
0.1 ohm shunt, which reads at most 3.2 A) with head-room for sensor noise, not
the limits of physics.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field

# Floating-point physical values (the HTTP payloads of the specification).
type Volts = Annotated[float, Field(ge=0.0, le=6.0, allow_inf_nan=False)]
"""Cell or bus voltage in volts; a one-cell node never sees more than 6 V."""

type Amps = Annotated[float, Field(ge=-5.0, le=5.0, allow_inf_nan=False)]
"""Signed current in amperes (positive out of the cell)."""

type AbsAmps = Annotated[float, Field(ge=0.0, le=5.0, allow_inf_nan=False)]
"""Magnitude of a current in amperes."""

type Percent = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
"""A share in percent, 0 to 100 (state of charge, uptime share)."""

type Seconds = Annotated[float, Field(ge=0.0, le=10 * 365 * 24 * 3600.0, allow_inf_nan=False)]
"""A duration in seconds, at most ten years."""

type KilowattHours = Annotated[float, Field(ge=0.0, le=1_000.0, allow_inf_nan=False)]
"""Energy in kWh as reported by a gateway; the ledger narrows the range."""

type Score = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
"""A dimensionless 0-100 score (voltage stability)."""

# Exact ledger amounts.
type TokenAmount = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
"""Energy or reward tokens, exact decimal, never negative."""

# Integer wire units of the node protocol.
type MilliVolts = Annotated[int, Field(ge=0, le=6_000)]
type MilliAmps = Annotated[int, Field(ge=-5_000, le=5_000)]
type MilliWatts = Annotated[int, Field(ge=-30_000, le=30_000)]
type MilliWattHours = Annotated[int, Field(ge=0, le=10**12)]
type PerMille = Annotated[int, Field(ge=0, le=1_000)]
