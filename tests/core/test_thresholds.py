"""Auto-balance SoC thresholds: defaults, ranges, ordering and options."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.thresholds import (
    DEFAULT_THRESHOLDS,
    THRESHOLD_RANGES,
    BalanceThresholds,
    clamp_threshold,
)


def test_defaults_are_the_specification_values() -> None:
    """20 / 40 / 70 / 90 %, deadband 10 %, minimum gap 15 %."""
    assert DEFAULT_THRESHOLDS.as_dict() == {
        "soc_critical": 20.0,
        "soc_low": 40.0,
        "soc_high": 70.0,
        "soc_full": 90.0,
        "balance_deadband": 10.0,
        "min_transfer_gap": 15.0,
    }
    assert BalanceThresholds() == DEFAULT_THRESHOLDS


def test_every_field_has_a_range_that_holds_its_default() -> None:
    """The options flow needs a range for every field, and the default is inside it."""
    names = {field.name for field in dataclasses.fields(BalanceThresholds)}
    assert set(THRESHOLD_RANGES) == names
    for name, (low, high) in THRESHOLD_RANGES.items():
        assert low < high
        assert low <= getattr(DEFAULT_THRESHOLDS, name) <= high


def test_ranges_are_read_only() -> None:
    """Nobody can widen a range at run time."""
    with pytest.raises(TypeError):
        THRESHOLD_RANGES["soc_low"] = (0.0, 100.0)  # type: ignore[index]


def test_thresholds_are_immutable() -> None:
    """A threshold cannot be changed in place, only replaced (and revalidated)."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_THRESHOLDS.soc_low = 30.0  # type: ignore[misc]
    changed = dataclasses.replace(DEFAULT_THRESHOLDS, soc_low=30.0)
    assert changed.soc_low == 30.0
    with pytest.raises(PeerGridValidationError, match="soc_low"):
        dataclasses.replace(DEFAULT_THRESHOLDS, soc_low=10.0)


def test_integers_are_stored_as_floats() -> None:
    """Typed as 40 or 40.0, the result is the same value."""
    assert BalanceThresholds(soc_low=40) == DEFAULT_THRESHOLDS
    assert isinstance(BalanceThresholds(soc_low=40).soc_low, float)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"soc_critical": 4.0}, "soc_critical"),
        ({"soc_critical": 31.0}, "soc_critical"),
        ({"soc_low": 51.0}, "soc_low"),
        ({"soc_high": 86.0}, "soc_high"),
        ({"soc_full": 101.0}, "soc_full"),
        ({"balance_deadband": 1.0}, "balance_deadband"),
        ({"min_transfer_gap": 55.0}, "min_transfer_gap"),
        ({"soc_low": math.nan}, "soc_low"),
        ({"soc_full": math.inf}, "soc_full"),
        ({"soc_high": "70"}, "soc_high"),
        ({"soc_high": True}, "soc_high"),
    ],
)
def test_out_of_range_values_name_their_field(overrides: dict[str, object], field: str) -> None:
    """Each field is checked against its own safe range."""
    with pytest.raises(PeerGridValidationError) as caught:
        BalanceThresholds(**overrides)  # type: ignore[arg-type]
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"soc_critical": 25.0, "soc_low": 25.0}, "soc_low"),
        ({"soc_critical": 30.0, "soc_low": 20.0}, "soc_low"),
        ({"soc_low": 50.0, "soc_high": 50.0}, "soc_high"),
        ({"soc_high": 80.0, "soc_full": 75.0}, "soc_full"),
    ],
)
def test_bands_must_be_ordered(overrides: dict[str, float], field: str) -> None:
    """critical < low < high < full; the upper field of a broken pair is named."""
    with pytest.raises(PeerGridValidationError) as caught:
        BalanceThresholds(**overrides)
    assert caught.value.field == field


def test_gap_must_let_a_donor_feed_a_receiver() -> None:
    """A minimum gap wider than soc_high - soc_low would block every normal pair."""
    with pytest.raises(PeerGridValidationError) as caught:
        BalanceThresholds(soc_low=45.0, soc_high=55.0, min_transfer_gap=15.0)
    assert caught.value.field == "min_transfer_gap"
    assert BalanceThresholds(soc_low=45.0, soc_high=60.0, min_transfer_gap=15.0).soc_high == 60.0


def test_from_options_ignores_other_keys_and_fills_defaults() -> None:
    """Options hold other settings too; missing thresholds take their default."""
    thresholds = BalanceThresholds.from_options({"soc_low": 35, "scan_host": "x"})
    assert thresholds == dataclasses.replace(DEFAULT_THRESHOLDS, soc_low=35.0)
    assert BalanceThresholds.from_options(DEFAULT_THRESHOLDS.as_dict()) == DEFAULT_THRESHOLDS


def test_from_options_validates() -> None:
    """Stored options that break a rule are refused, naming the field."""
    with pytest.raises(PeerGridValidationError) as caught:
        BalanceThresholds.from_options({"soc_full": 60})
    assert caught.value.field == "soc_full"


def test_clamp_threshold() -> None:
    """User input is pulled into the field's range."""
    assert clamp_threshold("soc_critical", 1.0) == 5.0
    assert clamp_threshold("soc_full", 120.0) == 100.0
    assert clamp_threshold("soc_low", 33.0) == 33.0


def test_clamp_threshold_rejects_unknown_fields_and_nan() -> None:
    """Only real thresholds and real numbers can be clamped."""
    with pytest.raises(PeerGridValidationError) as caught:
        clamp_threshold("soc_medium", 50.0)
    assert caught.value.field == "soc_medium"
    with pytest.raises(PeerGridValidationError, match="soc_low"):
        clamp_threshold("soc_low", math.nan)


@settings(max_examples=150)
@given(
    st.fixed_dictionaries(
        {name: st.floats(min_value=-50.0, max_value=150.0) for name in THRESHOLD_RANGES}
    )
)
def test_clamped_input_is_valid_exactly_when_the_rules_hold(values: dict[str, float]) -> None:
    """After clamping, only the cross-field rules can fail, and they fail by name."""
    clamped = {name: clamp_threshold(name, value) for name, value in values.items()}
    ordered = (
        clamped["soc_critical"] < clamped["soc_low"] < clamped["soc_high"] < clamped["soc_full"]
    )
    gap_fits = clamped["min_transfer_gap"] <= clamped["soc_high"] - clamped["soc_low"]
    if not (ordered and gap_fits):
        with pytest.raises(PeerGridValidationError) as caught:
            BalanceThresholds(**clamped)
        assert caught.value.field in {"soc_low", "soc_high", "soc_full", "min_transfer_gap"}
        return
    thresholds = BalanceThresholds(**clamped)
    assert thresholds.as_dict() == clamped
