"""Energy tokens and carbon credits for a delivered transfer."""

from __future__ import annotations

from decimal import Decimal, localcontext
import math

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.tokens import (
    KWH_MAX,
    KWH_MIN,
    TOKEN_QUANTUM,
    MintAmounts,
    carbon_credit_kg,
    compute_mint,
    to_decimal,
    tokens_minted,
    validate_kwh,
)

kwhs = st.decimals(min_value=KWH_MIN, max_value=KWH_MAX, allow_nan=False, allow_infinity=False)
factors = st.decimals(min_value=0, max_value=1, allow_nan=False, allow_infinity=False)


def test_specification_report_mints_as_expected() -> None:
    """0.5 kWh at an average of 3.92 V (score 80, factor 0.9) mints 450 tokens."""
    mint = compute_mint(0.5, Decimal("0.9"))
    assert mint == MintAmounts(
        kwh_transferred=Decimal("0.5"),
        quality_factor=Decimal("0.9"),
        tokens_minted=Decimal("450.0000000"),
        carbon_kg=Decimal("0.410000"),
    )


@pytest.mark.parametrize(
    ("kwh", "factor", "expected"),
    [
        (Decimal(1), Decimal(1), Decimal(1000)),
        (Decimal("0.001"), Decimal(1), Decimal(1)),
        (Decimal("10.0"), Decimal("0.9533"), Decimal(9533)),
        (Decimal("0.123456789"), Decimal("0.9999"), Decimal("123.4444433")),  # ...4443211 cut
        (Decimal("0.001"), Decimal(0), Decimal(0)),
    ],
)
def test_tokens_are_kwh_times_1000_times_quality(
    kwh: Decimal, factor: Decimal, expected: Decimal
) -> None:
    """Tokens are the exact product, truncated to seven decimals."""
    minted = tokens_minted(kwh, factor)
    assert minted == expected
    assert minted.as_tuple().exponent == -7


def test_long_products_are_never_rounded_up_by_the_context() -> None:
    """A product longer than the default 28 digits is still truncated, not rounded."""
    kwh = Decimal("9.99999999999999999999999999999")
    factor = Decimal("0.99999999999999999999999999999")
    with localcontext() as context:
        context.prec = 200
        exact = kwh * 1000 * factor
    minted = tokens_minted(kwh, factor)
    assert minted <= exact
    assert minted == Decimal("9999.9999999")


def test_carbon_credit_is_082_kg_per_kwh() -> None:
    """Carbon credit is 0.82 kg per kWh, truncated to a milligram."""
    assert carbon_credit_kg(Decimal("0.5")) == Decimal("0.41")
    assert carbon_credit_kg(Decimal(10)) == Decimal("8.2")
    assert carbon_credit_kg(Decimal("0.0012345")) == Decimal("0.001012")


def test_floats_are_read_as_written() -> None:
    """0.1 kWh from JSON is one tenth, not its binary neighbour."""
    assert validate_kwh(0.1) == Decimal("0.1")
    assert tokens_minted(0.1, 1.0) == Decimal(100)


def test_range_ends_are_accepted() -> None:
    """Both ends of 0.001..10.0 kWh are inside the range."""
    assert validate_kwh("0.001") == KWH_MIN
    assert validate_kwh(10) == KWH_MAX


@pytest.mark.parametrize(
    "kwh", [0, "0.0009", "10.0000001", -1, 11.0, math.nan, math.inf, "NaN", "abc", None, True]
)
def test_kwh_outside_the_range_names_kwh_transferred(kwh: object) -> None:
    """Anything but 0.001..10.0 kWh is refused, naming the report's field."""
    with pytest.raises(PeerGridValidationError) as caught:
        tokens_minted(kwh, 1)  # type: ignore[arg-type]
    assert caught.value.field == "kwh_transferred"


@pytest.mark.parametrize("factor", ["-0.1", "1.0001", math.nan, "x"])
def test_quality_factor_outside_0_to_1_is_refused(factor: object) -> None:
    """A factor above 1 would over-mint; below 0 would be meaningless."""
    with pytest.raises(PeerGridValidationError) as caught:
        tokens_minted(1, factor)  # type: ignore[arg-type]
    assert caught.value.field == "quality_factor"


def test_negative_zero_is_plain_zero() -> None:
    """A "-0" input never surfaces as a negative amount."""
    assert str(to_decimal("quality_factor", "-0")) == "0"
    assert not tokens_minted(1, "-0").is_signed()


@settings(max_examples=200)
@given(kwhs, factors)
def test_tokens_never_exceed_the_exact_product(kwh: Decimal, factor: Decimal) -> None:
    """Rounding only ever takes away, and less than one quantum."""
    with localcontext() as context:
        context.prec = 200
        exact = kwh * 1000 * factor
    minted = tokens_minted(kwh, factor)
    assert minted <= exact < minted + TOKEN_QUANTUM
    assert minted >= 0


@settings(max_examples=150)
@given(kwhs, kwhs, factors)
def test_tokens_are_monotone_in_energy(first: Decimal, second: Decimal, factor: Decimal) -> None:
    """More energy at the same quality never mints fewer tokens."""
    low, high = sorted((first, second))
    assert tokens_minted(low, factor) <= tokens_minted(high, factor)


@settings(max_examples=150)
@given(kwhs, factors, factors)
def test_tokens_are_monotone_in_quality(kwh: Decimal, first: Decimal, second: Decimal) -> None:
    """A better quality factor never mints fewer tokens, and never more than 1000 per kWh."""
    low, high = sorted((first, second))
    assert tokens_minted(kwh, low) <= tokens_minted(kwh, high) <= kwh * 1000


@settings(max_examples=150)
@given(kwhs)
def test_carbon_credit_never_exceeds_the_exact_product(kwh: Decimal) -> None:
    """Carbon credit is truncated too, by less than a milligram."""
    with localcontext() as context:
        context.prec = 200
        exact = kwh * Decimal("0.82")
    credit = carbon_credit_kg(kwh)
    assert credit <= exact < credit + Decimal("0.000001")


def test_a_kwh_longer_than_the_context_is_not_rounded_before_scaling() -> None:
    """kWh * 1000 of a 30-digit kWh keeps every digit before the final cut."""
    # Rounded half-even to 28 digits, 9.99...95 would become 10 and mint 10000.
    kwh = Decimal("9.99999999999999999999999999995")
    assert tokens_minted(kwh, 1) == Decimal("9999.9999999")
