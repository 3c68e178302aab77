"""Dynamic energy price and the sell orders created for minted tokens.

Every accepted energy report puts the seller's new tokens up for sale at the
grid's current price per kWh:

.. code-block:: text

    n         = donors + receivers + 1
    imbalance = (receivers - donors) / n                 (-1 < imbalance < 1)
    demand    = 1 + demand_weight * imbalance            (0 <= demand_weight <= 1)
    raw       = base_price * quality_factor * demand     (exact rational)
    price     = clamp(round_half_even(raw, 0.0001), min_price, max_price)

``donors`` are the nodes at or above the ``soc_high`` threshold and
``receivers`` those at or below ``soc_low`` (:meth:`MarketState.from_soc`).
The ``+ 1`` keeps an empty grid at the base price and damps the swing a single
node causes in a small grid. docs/formulas.md has the reasoning and a worked
example.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from fractions import Fraction
import math
from typing import Annotated, Final, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from ..errors import PeerGridValidationError
from ..thresholds import BalanceThresholds
from ..tokens import DecimalInput, to_decimal

PRICE_QUANTUM: Final = Decimal("0.0001")
"""Precision of a price per kWh."""

TOTAL_QUANTUM: Final = Decimal("0.0000001")
"""Precision of an order total and of a price per token (one stroop)."""

QUALITY_FACTOR_FIELD: Final = "quality_factor"

type Price = Annotated[Decimal, Field(ge=0, le=1_000_000, decimal_places=4, allow_inf_nan=False)]
"""A price per kWh in the market's currency, at most four decimals."""

type Amount = Annotated[Decimal, Field(ge=0, decimal_places=7, allow_inf_nan=False)]
"""An exact amount with at most seven decimals (kWh, tokens, money)."""


class OrderStatus(StrEnum):
    """Life cycle of a sell order."""

    OPEN = "open"
    """On offer."""
    FILLED = "filled"
    """Bought; ``buyer`` says by whom."""
    CANCELLED = "cancelled"
    """Withdrawn by the seller or the grid operator; final."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MarketState:
    """Supply and demand on the grid at one moment, as node counts."""

    donors: int
    """Nodes that can give energy (SoC at or above ``soc_high``)."""
    receivers: int
    """Nodes that need energy (SoC at or below ``soc_low``)."""

    def __post_init__(self) -> None:
        """Refuse counts that are not non-negative integers, naming the field."""
        for name in ("donors", "receivers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PeerGridValidationError(name, f"{value!r} is not a whole number of nodes")
            if value < 0:
                raise PeerGridValidationError(name, f"{value} is negative")

    @classmethod
    def from_soc(cls, soc_pct: Iterable[float], thresholds: BalanceThresholds) -> MarketState:
        """Count donors and receivers among state-of-charge readings, percent.

        Uses the same inclusive thresholds as the balancer, so the price
        reacts to exactly the nodes the balancer would pair.
        """
        donors = receivers = 0
        for index, soc in enumerate(soc_pct):
            if not math.isfinite(soc) or not 0.0 <= soc <= 100.0:
                raise PeerGridValidationError(f"soc_pct[{index}]", f"{soc} is outside 0..100 %")
            if soc >= thresholds.soc_high:
                donors += 1
            elif soc <= thresholds.soc_low:
                receivers += 1
        return cls(donors=donors, receivers=receivers)


class PricingConfig(BaseModel):
    """Tunables of :func:`price_per_kwh`; every price is per kWh in ``currency``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_price: Price = Decimal("0.25")
    """Price of perfect-quality energy on a balanced grid."""
    min_price: Price = Decimal("0.05")
    """Floor: no energy is offered below this."""
    max_price: Price = Decimal("1.00")
    """Ceiling: no energy is offered above this."""
    demand_weight: Annotated[Decimal, Field(ge=0, le=1, decimal_places=4)] = Decimal("0.5")
    """How strongly the receiver/donor imbalance moves the price (0: not at all)."""
    currency: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{2,11}$")] = "EUR"
    """ISO 4217 code or asset code the prices are in (``EUR``, ``USDC``)."""

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        if self.min_price > self.max_price:
            raise ValueError(f"min_price {self.min_price} is above max_price {self.max_price}")
        if not self.min_price <= self.base_price <= self.max_price:
            raise ValueError(
                f"base_price {self.base_price} is outside {self.min_price}..{self.max_price}"
            )
        return self


def price_per_kwh(
    state: MarketState, quality_factor: DecimalInput, config: PricingConfig
) -> Decimal:
    """Return the price per kWh for energy of ``quality_factor`` in ``state``.

    Non-decreasing in ``state.receivers`` and in ``quality_factor``,
    non-increasing in ``state.donors``, always within
    ``config.min_price..config.max_price`` and a multiple of 0.0001.
    Raises :class:`PeerGridValidationError` naming ``quality_factor`` when it
    is outside 0..1.
    """
    factor = to_decimal(QUALITY_FACTOR_FIELD, quality_factor)
    if not Decimal(0) <= factor <= Decimal(1):
        raise PeerGridValidationError(QUALITY_FACTOR_FIELD, f"{factor} is outside 0..1")
    nodes = state.donors + state.receivers + 1
    demand = 1 + Fraction(config.demand_weight) * Fraction(state.receivers - state.donors, nodes)
    raw = Fraction(config.base_price) * Fraction(factor) * demand
    # round() of a Fraction is exact and rounds half to even: one rounding only.
    price = Decimal(round(raw / Fraction(PRICE_QUANTUM))) * PRICE_QUANTUM
    return min(max(price, config.min_price), config.max_price).quantize(PRICE_QUANTUM)


def order_total(kwh: Decimal, price: Decimal) -> Decimal:
    """Return what a buyer pays for ``kwh`` at ``price`` per kWh, to one stroop.

    Exact when ``kwh`` has at most three decimals; otherwise rounded half to
    even to 0.0000001.
    """
    return _round_half_even(Fraction(kwh) * Fraction(price), TOTAL_QUANTUM)


def price_per_token(total: Decimal, tokens: Decimal) -> Decimal:
    """Return ``total / tokens`` rounded half to even to 0.0000001 (the event's ``sell_price``)."""
    if tokens <= 0:
        raise PeerGridValidationError("tokens", f"{tokens} must be positive to price a token")
    return _round_half_even(Fraction(total) / Fraction(tokens), TOTAL_QUANTUM)


def _round_half_even(value: Fraction, quantum: Decimal) -> Decimal:
    steps = round(value / Fraction(quantum))
    return (Decimal(steps) * quantum).quantize(quantum, rounding=ROUND_HALF_EVEN)


class SellOrder(BaseModel):
    """An offer of a seller's minted tokens, created with the mint of a report.

    ``total_price`` is authoritative (what the buyer pays); it is
    ``kwh * price_per_kwh`` (see :func:`order_total`). ``buyer`` is set
    exactly when the order is filled.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: Annotated[str, Field(min_length=1, max_length=64)]
    report_id: Annotated[str, Field(min_length=1, max_length=64)]
    """The energy report whose mint created the order."""
    seller: Annotated[str, Field(min_length=1, max_length=128)]
    """The node uid that delivered the energy and holds the tokens."""
    kwh: Amount
    tokens: Amount
    price_per_kwh: Price
    total_price: Amount
    currency: str
    status: OrderStatus
    created_at: AwareDatetime
    updated_at: AwareDatetime
    """When the status last changed (``created_at`` for a fresh order)."""
    buyer: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        expected = order_total(self.kwh, self.price_per_kwh)
        if self.total_price != expected:
            raise ValueError(f"total_price must be {expected} for this kWh and price")
        if (self.status is OrderStatus.FILLED) != (self.buyer is not None):
            raise ValueError("buyer is set exactly when the order is filled")
        if self.buyer == self.seller:
            raise ValueError("a seller cannot buy its own order")
        if self.updated_at < self.created_at:
            raise ValueError("updated_at is before created_at")
        return self

    @property
    def price_per_token(self) -> Decimal:
        """The order's price per energy token, to one stroop."""
        return price_per_token(self.total_price, self.tokens)

    def with_status(self, status: OrderStatus, *, at: datetime, buyer: str | None = None) -> Self:
        """Return the order in ``status`` (validated again), changed at ``at``."""
        return self.model_validate(
            {**self.model_dump(), "status": status, "buyer": buyer, "updated_at": at}
        )
