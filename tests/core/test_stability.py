"""Voltage stability score and the seller quality factor."""

from __future__ import annotations

from decimal import Decimal
import math

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.stability import (
    QUALITY_FLOOR,
    quality_factor,
    quality_factor_from_voltage,
    voltage_stability_score,
)

volts = st.floats(min_value=0.0, max_value=6.0, allow_nan=False)
scores = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


def test_score_of_the_specification_example_payload() -> None:
    """The ping payload: primary 3.921 V, nodes NODE_A 3.921 V and NODE_B 3.610 V.

    count     = 1 + 2 = 3
    average   = (3.921 + 3.921 + 3.610) / 3 = 11.452 / 3 = 3.817333...
    deviation = |3.817333... - 3.85| = 0.032666...
    score     = 100 - 0.032666... / 0.35 * 100 = 100 - 9.3333... = 90.6666...
    """
    score = voltage_stability_score(3.921, [3.921, 3.610])
    assert score == pytest.approx(90.666666666, abs=1e-6)
    assert quality_factor(score) == Decimal("0.9533")


@pytest.mark.parametrize(
    ("primary", "nodes", "expected"),
    [
        (3.85, [], 100.0),
        (3.85, [3.85, 3.85], 100.0),
        (4.2, [], 0.0),  # deviation 0.35 V: exactly zero
        (3.5, [], 0.0),
        (4.025, [], 50.0),  # deviation 0.175 V: half
        (3.675, [], 50.0),
        (4.2, [3.5], 100.0),  # the average sits on 3.85 V
        (0.0, [], 0.0),  # far below: clamped, not negative
        (6.0, [6.0], 0.0),
    ],
)
def test_score_examples(primary: float, nodes: list[float], expected: float) -> None:
    """Known averages give known scores; the score is clamped at 0."""
    assert voltage_stability_score(primary, nodes) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("primary", "nodes", "field"),
    [
        (math.nan, [], "primary_voltage"),
        (-0.5, [], "primary_voltage"),
        (3.9, [3.9, math.inf], "node_voltages[1]"),
        (3.9, [7.0], "node_voltages[0]"),
    ],
)
def test_score_rejects_bad_voltages(primary: float, nodes: list[float], field: str) -> None:
    """A reading that is not a voltage names the reading."""
    with pytest.raises(PeerGridValidationError) as caught:
        voltage_stability_score(primary, nodes)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (100.0, Decimal("1.0000")),
        (0.0, Decimal("0.5000")),
        (50.0, Decimal("0.7500")),
        (80.0, Decimal("0.9000")),
        (33.33333, Decimal("0.6666")),  # 0.66666665 rounded down
    ],
)
def test_quality_factor_mapping(score: float, expected: Decimal) -> None:
    """F = 0.5 + 0.5 * score / 100, four decimals, rounded down."""
    assert quality_factor(score) == expected


@pytest.mark.parametrize("score", [-0.1, 100.1, math.nan, math.inf])
def test_quality_factor_rejects_scores_outside_the_scale(score: float) -> None:
    """Only a 0-100 score maps to a factor."""
    with pytest.raises(PeerGridValidationError, match="score"):
        quality_factor(score)


def test_quality_factor_from_a_reports_average_voltage() -> None:
    """An energy report's single average voltage is scored on its own."""
    assert quality_factor_from_voltage(3.85) == Decimal("1.0000")
    assert quality_factor_from_voltage(3.92) == Decimal("0.9000")  # score 80
    assert quality_factor_from_voltage(3.0) == QUALITY_FLOOR


def test_quality_factor_from_voltage_names_avg_voltage() -> None:
    """The error points at the report's field, not the scoring internals."""
    with pytest.raises(PeerGridValidationError) as caught:
        quality_factor_from_voltage(math.nan)
    assert caught.value.field == "avg_voltage"


@settings(max_examples=150)
@given(volts, st.lists(volts, max_size=8))
def test_score_stays_on_the_scale(primary: float, nodes: list[float]) -> None:
    """Whatever the readings, the score is within 0..100."""
    assert 0.0 <= voltage_stability_score(primary, nodes) <= 100.0


@settings(max_examples=150)
@given(st.floats(min_value=0.0, max_value=2.0), st.floats(min_value=0.0, max_value=2.0))
def test_score_decreases_with_deviation(first: float, second: float) -> None:
    """A reading farther from 3.85 V never scores higher, on either side."""
    near, far = sorted((first, second))
    for sign in (1.0, -1.0):
        assert voltage_stability_score(3.85 + sign * near) >= voltage_stability_score(
            3.85 + sign * far
        )


@settings(max_examples=150)
@given(scores, scores)
def test_quality_factor_is_monotone_and_bounded(first: float, second: float) -> None:
    """A better score never earns a lower factor; the factor stays in 0.5..1."""
    low, high = sorted((first, second))
    assert QUALITY_FLOOR <= quality_factor(low) <= quality_factor(high) <= Decimal(1)


@settings(max_examples=150)
@given(scores)
def test_quality_factor_never_rounds_up(score: float) -> None:
    """The quantized factor is at most the exact mapping, by less than 0.0001."""
    exact = Decimal("0.5") + Decimal("0.5") * Decimal(score) / Decimal(100)
    factor = quality_factor(score)
    assert factor <= exact < factor + Decimal("0.0001")
