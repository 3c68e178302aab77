"""State-of-charge estimates: the linear line, the OCV curve and IR compensation."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.soc import (
    DEFAULT_OCV_CURVE,
    DEFAULT_R_INTERNAL_OHMS,
    OcvCurve,
    compensate_ir,
    estimate_soc,
    linear_soc,
    ocv_from_soc,
    soc_from_ocv,
)

socs = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
volts = st.floats(min_value=0.0, max_value=6.0, allow_nan=False)
amps = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False)


@pytest.mark.parametrize(
    ("terminal", "expected"),
    [(3.2, 0.0), (3.7, 50.0), (4.2, 100.0), (3.45, 25.0), (2.9, 0.0), (4.35, 100.0), (0.0, 0.0)],
)
def test_linear_soc_follows_the_specification(terminal: float, expected: float) -> None:
    """3.2 V is empty, 4.2 V is full, linear between and clamped outside."""
    assert linear_soc(terminal) == pytest.approx(expected)


def test_default_curve_is_the_22_point_18650_table() -> None:
    """The curve holds the measured table point for point."""
    assert len(DEFAULT_OCV_CURVE.points) == 22
    assert DEFAULT_OCV_CURVE.points[0] == (0.0, 2.54)
    assert DEFAULT_OCV_CURVE.points[9] == (40.0, 3.66)
    assert DEFAULT_OCV_CURVE.points[-1] == (100.0, 4.175)
    assert DEFAULT_OCV_CURVE.empty_volts == 2.54
    assert DEFAULT_OCV_CURVE.full_volts == 4.175


@pytest.mark.parametrize(
    ("soc", "expected"),
    [(0.0, 2.54), (3.0, 3.01), (42.5, 3.685), (50.0, 3.76), (97.5, 4.1425), (100.0, 4.175)],
)
def test_ocv_from_soc_interpolates_the_table(soc: float, expected: float) -> None:
    """On a point it returns the point; between points it is linear."""
    assert ocv_from_soc(soc) == pytest.approx(expected)


@pytest.mark.parametrize(("soc", "expected"), [(-5.0, 2.54), (120.0, 4.175)])
def test_ocv_from_soc_clamps(soc: float, expected: float) -> None:
    """Outside 0-100 % the voltage of the nearest end is returned."""
    assert ocv_from_soc(soc) == expected


@pytest.mark.parametrize(
    # The rest-voltage comparison of the research note: the table's reading,
    # rounded to whole percent, at each tenth of a volt.
    ("ocv", "expected_percent"),
    [
        (3.2, 7),
        (3.3, 12),
        (3.4, 19),
        (3.5, 25),
        (3.6, 34),
        (3.7, 44),
        (3.8, 55),
        (3.9, 68),
        (4.0, 77),
        (4.2, 100),
    ],
)
def test_soc_from_ocv_matches_reference_readings(ocv: float, expected_percent: int) -> None:
    """The inverse reproduces the reference SoC at rest within half a point."""
    assert soc_from_ocv(ocv) == pytest.approx(expected_percent, abs=0.5)


def test_soc_from_ocv_clamps_outside_the_table() -> None:
    """Below the bottom voltage the cell is empty, above the top it is full."""
    assert soc_from_ocv(2.0) == 0.0
    assert soc_from_ocv(4.3) == 100.0


def test_ir_compensation_adds_the_resistive_drop() -> None:
    """Discharging at 1.8 A through 0.15 ohm hides 0.27 V; charging adds it."""
    assert compensate_ir(3.40, 1.8) == pytest.approx(3.67)
    assert compensate_ir(4.00, -1.0) == pytest.approx(3.85)
    assert compensate_ir(3.7, 0.0) == 3.7
    assert compensate_ir(3.4, 1.0, r_internal_ohms=0.0) == 3.4


def test_estimate_soc_reads_a_loaded_cell_correctly() -> None:
    """A cell at 40 % sagging under 1.8 A reads 40 %, where the line says 20 %."""
    terminal = ocv_from_soc(40.0) - 1.8 * DEFAULT_R_INTERNAL_OHMS
    assert estimate_soc(terminal, 1.8) == pytest.approx(40.0)
    assert linear_soc(terminal) == pytest.approx(19.0)


def test_estimate_soc_at_rest_is_the_curve_inverse() -> None:
    """With no current the estimate is the plain table lookup."""
    assert estimate_soc(3.76) == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"terminal_volts": math.nan, "current_amps": 0.0}, "terminal_volts"),
        ({"terminal_volts": -0.1, "current_amps": 0.0}, "terminal_volts"),
        ({"terminal_volts": 7.0, "current_amps": 0.0}, "terminal_volts"),
        ({"terminal_volts": 3.7, "current_amps": math.inf}, "current_amps"),
        ({"terminal_volts": 3.7, "current_amps": 9.0}, "current_amps"),
        ({"terminal_volts": 3.7, "current_amps": 1.0, "r_internal_ohms": -0.1}, "r_internal_ohms"),
        ({"terminal_volts": 3.7, "current_amps": 1.0, "r_internal_ohms": 2.0}, "r_internal_ohms"),
    ],
)
def test_estimate_soc_rejects_bad_input(kwargs: dict[str, Any], field: str) -> None:
    """Every bad reading names its field."""
    with pytest.raises(PeerGridValidationError) as caught:
        estimate_soc(**kwargs)
    assert caught.value.field == field


def test_linear_soc_rejects_nan() -> None:
    """NaN is not a voltage."""
    with pytest.raises(PeerGridValidationError, match="terminal_volts"):
        linear_soc(math.nan)


def test_curve_lookups_reject_nan() -> None:
    """NaN never silently becomes 0 % or an empty-cell voltage."""
    with pytest.raises(PeerGridValidationError, match="soc_percent"):
        ocv_from_soc(math.nan)
    with pytest.raises(PeerGridValidationError, match="ocv_volts"):
        soc_from_ocv(math.nan)


def test_curve_is_immutable_and_normalised() -> None:
    """A list input is frozen into float tuples and cannot be reassigned."""
    curve = OcvCurve(name="lfp", points=[(0, 2.5), (10, 3.2), (90, 3.3), (100, 3.6)])  # type: ignore[arg-type]
    assert curve.points == ((0.0, 2.5), (10.0, 3.2), (90.0, 3.3), (100.0, 3.6))
    assert all(isinstance(value, float) for point in curve.points for value in point)
    with pytest.raises(dataclasses.FrozenInstanceError):
        curve.points = ()  # type: ignore[misc]


def test_custom_curve_is_used_by_estimate() -> None:
    """Another chemistry's curve drives the estimate when passed in."""
    curve = OcvCurve(name="flat", points=((0.0, 3.0), (100.0, 3.4)))
    assert estimate_soc(3.2, curve=curve) == pytest.approx(50.0)
    assert curve.ocv_at(25.0) == pytest.approx(3.1)


@pytest.mark.parametrize(
    ("name", "points"),
    [
        ("one", ((0.0, 3.0),)),
        ("start", ((1.0, 3.0), (100.0, 4.0))),
        ("end", ((0.0, 3.0), (99.0, 4.0))),
        ("soc order", ((0.0, 3.0), (50.0, 3.5), (50.0, 3.6), (100.0, 4.0))),
        ("volt order", ((0.0, 3.0), (50.0, 3.5), (60.0, 3.5), (100.0, 4.0))),
        ("falling", ((0.0, 4.0), (100.0, 3.0))),
        ("nan", ((0.0, 3.0), (50.0, math.nan), (100.0, 4.0))),
        ("negative", ((0.0, -1.0), (100.0, 4.0))),
        ("shape", ((0.0,), (100.0, 4.0))),
        ("text", ((0.0, "x"), (100.0, 4.0))),
    ],
)
def test_curve_rejects_invalid_tables(name: str, points: object) -> None:
    """A table that is not a strictly increasing 0-100 % bijection is refused."""
    with pytest.raises(PeerGridValidationError) as caught:
        OcvCurve(name=name, points=points)  # type: ignore[arg-type]
    assert caught.value.field == "points"


def test_curve_needs_a_name() -> None:
    """The name shows up in diagnostics, so it may not be empty."""
    with pytest.raises(PeerGridValidationError, match="name"):
        OcvCurve(name="", points=((0.0, 3.0), (100.0, 4.0)))


@settings(max_examples=150)
@given(socs)
def test_curve_round_trips(soc: float) -> None:
    """Voltage back to SoC returns the SoC the voltage was made from."""
    assert soc_from_ocv(ocv_from_soc(soc)) == pytest.approx(soc, abs=1e-9)


@settings(max_examples=150)
@given(volts, volts)
def test_soc_is_monotone_in_voltage(first: float, second: float) -> None:
    """A higher voltage never reads a lower SoC, for both estimates."""
    low, high = sorted((first, second))
    assert 0.0 <= soc_from_ocv(low) <= soc_from_ocv(high) <= 100.0
    assert 0.0 <= linear_soc(low) <= linear_soc(high) <= 100.0
    assert estimate_soc(low) <= estimate_soc(high)


@settings(max_examples=150)
@given(socs, socs)
def test_ocv_is_monotone_in_soc(first: float, second: float) -> None:
    """A fuller cell never rests at a lower voltage, and stays on the table's span."""
    low, high = sorted((first, second))
    assert 2.54 <= ocv_from_soc(low) <= ocv_from_soc(high) <= 4.175


@settings(max_examples=150)
@given(volts, amps, amps)
def test_estimate_is_monotone_in_discharge_current(
    terminal: float, first: float, second: float
) -> None:
    """At the same terminal voltage, more discharge current means a fuller cell behind it."""
    low, high = sorted((first, second))
    assert 0.0 <= estimate_soc(terminal, low) <= estimate_soc(terminal, high) <= 100.0
