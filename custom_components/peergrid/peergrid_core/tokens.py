"""Energy tokens and carbon credits minted for a delivered transfer.

.. code-block:: text

    tokens    = kWh * 1000 * quality_factor     (rounded down to 1e-7 token)
    carbon_kg = kWh * 0.82                      (rounded down to 1e-6 kg)

All amounts are :class:`~decimal.Decimal` and computed exactly before the one
final rounding, which always goes down: the ledger may under-mint by less than
one quantum, never over-mint. Seven decimals is the precision of a Stellar
asset (one stroop), the chain the ledger settles on.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation, localcontext

from .errors import PeerGridValidationError

KWH_FIELD = "kwh_transferred"
"""Name of the energy field in an energy report, used in validation errors."""

KWH_MIN = Decimal("0.001")
"""Smallest transfer the grid mints for, kWh (one watt-hour)."""

KWH_MAX = Decimal("10.0")
"""Largest transfer one report may claim, kWh."""

TOKENS_PER_KWH = Decimal(1000)
"""Energy tokens per kWh at quality factor 1 (one token per watt-hour)."""

TOKEN_QUANTUM = Decimal("0.0000001")
"""Smallest token amount (seven decimals, one Stellar stroop)."""

CARBON_KG_PER_KWH = Decimal("0.82")
"""Carbon credited per kWh shared instead of drawn from the mains, kg CO2."""

CARBON_QUANTUM = Decimal("0.000001")
"""Precision of carbon credits, kg (one milligram)."""

QUALITY_FACTOR_MIN = Decimal(0)
QUALITY_FACTOR_MAX = Decimal(1)

type DecimalInput = Decimal | int | float | str
"""What the amount functions accept; floats are read through their shortest repr."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MintAmounts:
    """What one accepted energy report mints."""

    kwh_transferred: Decimal
    """The validated energy of the transfer, kWh."""

    quality_factor: Decimal
    """The seller's quality factor applied, 0 to 1."""

    tokens_minted: Decimal
    """Energy tokens for the seller, rounded down to :data:`TOKEN_QUANTUM`."""

    carbon_kg: Decimal
    """Carbon credit, kg CO2, rounded down to :data:`CARBON_QUANTUM`."""


def validate_kwh(kwh_transferred: DecimalInput) -> Decimal:
    """Return ``kwh_transferred`` as a Decimal if it lies in 0.001..10.0 kWh.

    Raises :class:`PeerGridValidationError` naming ``kwh_transferred`` for
    anything else: out of range, NaN, infinite, or not a number.
    """
    kwh = to_decimal(KWH_FIELD, kwh_transferred)
    if not KWH_MIN <= kwh <= KWH_MAX:
        raise PeerGridValidationError(KWH_FIELD, f"{kwh} kWh is outside {KWH_MIN}..{KWH_MAX} kWh")
    return kwh


def tokens_minted(kwh_transferred: DecimalInput, quality_factor: DecimalInput) -> Decimal:
    """Return the tokens minted for ``kwh_transferred`` at ``quality_factor``.

    ``kWh * 1000 * quality_factor``, computed exactly and rounded down to
    :data:`TOKEN_QUANTUM`, so it never exceeds the exact product.
    """
    kwh = validate_kwh(kwh_transferred)
    factor = to_decimal("quality_factor", quality_factor)
    if not QUALITY_FACTOR_MIN <= factor <= QUALITY_FACTOR_MAX:
        raise PeerGridValidationError(
            "quality_factor", f"{factor} is outside {QUALITY_FACTOR_MIN}..{QUALITY_FACTOR_MAX}"
        )
    return round_down_product((kwh, TOKENS_PER_KWH, factor), TOKEN_QUANTUM)


def carbon_credit_kg(kwh_transferred: DecimalInput) -> Decimal:
    """Return the carbon credit in kg CO2 for ``kwh_transferred`` (0.82 kg/kWh)."""
    kwh = validate_kwh(kwh_transferred)
    return round_down_product((kwh, CARBON_KG_PER_KWH), CARBON_QUANTUM)


def compute_mint(kwh_transferred: DecimalInput, quality_factor: DecimalInput) -> MintAmounts:
    """Return everything one energy report mints, validated together."""
    kwh = validate_kwh(kwh_transferred)
    factor = to_decimal("quality_factor", quality_factor)
    return MintAmounts(
        kwh_transferred=kwh,
        quality_factor=factor,
        tokens_minted=tokens_minted(kwh, factor),
        carbon_kg=carbon_credit_kg(kwh),
    )


def to_decimal(field: str, value: DecimalInput) -> Decimal:
    """Return ``value`` as a finite Decimal or raise naming ``field``.

    A float is converted through its shortest round-trip text (``0.1`` becomes
    ``Decimal("0.1")``, not the 55-digit binary expansion), which is the number
    the sender wrote in its JSON. Booleans are refused: ``True`` is not 1 kWh.
    """
    if isinstance(value, bool):
        raise PeerGridValidationError(field, "a boolean is not a number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as err:
        raise PeerGridValidationError(field, f"{value!r} is not a number") from err
    if not number.is_finite():
        raise PeerGridValidationError(field, f"{value!r} is not a finite number")
    # "-0" is a valid zero but must not print as a negative amount downstream.
    return number.copy_abs() if number.is_zero() else number


def round_down_product(factors: tuple[Decimal, ...], quantum: Decimal) -> Decimal:
    """Return the product of ``factors`` rounded down to ``quantum``, with no earlier rounding.

    The default context keeps 28 digits and rounds half-even, which could round
    a long product up before it is quantized. A product has at most as many
    digits as its factors together, so a context that wide multiplies exactly.
    """
    with localcontext() as context:
        context.prec = sum(len(factor.as_tuple().digits) for factor in factors) + 2
        product = Decimal(1)
        for factor in factors:
            product *= factor
        context.prec = max(context.prec, product.adjusted() - quantum.adjusted() + 2)
        return product.quantize(quantum, rounding=ROUND_DOWN)
