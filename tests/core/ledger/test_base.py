"""Base units: exact conversion between Decimal amounts and integer stroops."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import PeerGridError
from peergrid_core.ledger import (
    DECIMALS,
    IdempotencyConflictError,
    LedgerConfigError,
    LedgerError,
    LedgerStorageError,
    MintRejectedError,
    from_base_units,
    to_base_units,
)
from peergrid_core.ledger.base import I128_MAX


def test_seven_decimals_like_a_stellar_stroop() -> None:
    assert DECIMALS == 7
    assert to_base_units(Decimal(1)) == 10_000_000
    assert to_base_units(Decimal(450)) == 4_500_000_000
    assert to_base_units(Decimal("0.0000001")) == 1
    assert to_base_units(Decimal("4.5000000")) == 45_000_000
    assert to_base_units(Decimal("0.41")) == 4_100_000
    assert to_base_units(Decimal(0)) == 0
    assert to_base_units(Decimal("-0")) == 0
    assert to_base_units(Decimal("1E+3")) == 10_000_000_000


def test_from_base_units_is_exact_with_seven_places() -> None:
    assert from_base_units(45_000_000) == Decimal("4.5")
    assert str(from_base_units(45_000_000)) == "4.5000000"
    assert str(from_base_units(1)) == "1E-7"
    # 39 digits: beyond the default 28-digit context, still exact.
    assert str(from_base_units(I128_MAX)) == "17014118346046923173168730371588.4105727"


def test_i128_bounds_are_exact() -> None:
    largest = Decimal("17014118346046923173168730371588.4105727")
    assert to_base_units(largest) == I128_MAX
    with pytest.raises(ValueError, match="i128"):
        # One stroop more (written out: Decimal arithmetic would round at 28 digits).
        to_base_units(Decimal("17014118346046923173168730371588.4105728"))


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (Decimal("0.00000001"), "more than 7 decimals"),
        (Decimal("1.23456789"), "more than 7 decimals"),
        (Decimal(-1), "negative"),
        (Decimal("-0.0000001"), "negative"),
        (Decimal("NaN"), "not finite"),
        (Decimal("sNaN"), "not finite"),
        (Decimal("Infinity"), "not finite"),
        (Decimal("-Infinity"), "not finite"),
        (Decimal("1E+40"), "i128"),
    ],
)
def test_to_base_units_refuses(amount: Decimal, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_base_units(amount)


def test_types_are_checked() -> None:
    with pytest.raises(TypeError):
        to_base_units(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        from_base_units(True)
    with pytest.raises(TypeError):
        from_base_units(1.0)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=I128_MAX))
def test_round_trip_from_units(units: int) -> None:
    assert to_base_units(from_base_units(units)) == units


@settings(max_examples=200)
@given(
    st.decimals(
        min_value=0, max_value=Decimal("1e20"), places=7, allow_nan=False, allow_infinity=False
    )
)
def test_round_trip_from_decimal(amount: Decimal) -> None:
    assert from_base_units(to_base_units(amount)) == amount


def test_error_tree() -> None:
    for error in (
        IdempotencyConflictError,
        LedgerStorageError,
        LedgerConfigError,
        MintRejectedError,
    ):
        assert issubclass(error, LedgerError)
    assert issubclass(LedgerError, PeerGridError)
