"""The INA219 driver against the register-level fake."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_node.ina219 import CONFIG_16V_320MV_8X, INA219, SensorError

from .fakes import FakeCell, FakeHw


def make(cell: FakeCell | None = None) -> tuple[FakeHw, INA219]:
    """A fake board and a configured driver."""
    hw = FakeHw(cell=cell or FakeCell())
    driver = INA219(hw.i2c)
    driver.configure()
    return hw, driver


def test_calibration_for_the_0_1_ohm_shunt() -> None:
    """16 V, PGA /8, 100 uA LSB: calibration 4096 and configuration 0x1DDF."""
    hw, driver = make()
    assert driver.cal == 4096
    assert CONFIG_16V_320MV_8X == 0x1DDF
    assert hw.chip.writes == [(0x00, 0x1DDF), (0x05, 4096)]


def test_reading_adds_the_shunt_voltage_back() -> None:
    """3.90 V at the cell and 1.5 A out: bus reads 150 mV low, the driver corrects."""
    hw, driver = make(FakeCell(ocv_mv=3900, r_mohm=0, supply_ma=1500))
    hw.supply_pin.value(1)
    r = driver.read()
    assert r is not None
    # The bus register has a 4 mV LSB: 3750 mV reads as 3748.
    assert (r.bus_mv, r.shunt_uv, r.ma, r.mv) == (3748, 150000, 1500, 3898)


def test_charging_current_is_negative() -> None:
    """Current into the cell reads negative and the bus reads above the cell."""
    hw, driver = make(FakeCell(ocv_mv=3700, r_mohm=0, receive_ma=800))
    hw.receive_pin.value(1)
    r = driver.read()
    assert r is not None
    assert r.ma == -800
    assert r.bus_mv > r.mv - 4


def test_brownout_is_recalibrated() -> None:
    """A chip reset zeroes the calibration; the next read writes it back."""
    hw, driver = make(FakeCell(supply_ma=1000))
    hw.supply_pin.value(1)
    hw.chip.brownout()
    assert driver.read() is None
    assert driver.recalibrations == 1
    assert hw.chip.regs[0x05] == 4096
    assert hw.chip.regs[0x00] == 0x1DDF
    r = driver.read()
    assert r is not None
    assert r.ma == 1000


def test_bus_errors_propagate_as_oserror() -> None:
    """A missing sensor surfaces as OSError for the caller's fault counter."""
    hw, driver = make()
    hw.i2c.fail = True
    with pytest.raises(OSError, match="ENODEV"):
        driver.read()


def test_overflow_is_a_sensor_error() -> None:
    """The OVF bit means current and power are invalid."""
    hw, driver = make()
    hw.chip.overflow = True
    with pytest.raises(SensorError):
        driver.read()


@settings(max_examples=150, deadline=None)
@given(
    ocv_mv=st.integers(min_value=2600, max_value=4300),
    ma=st.integers(min_value=-3000, max_value=3000),
)
def test_readings_match_the_cell(ocv_mv: int, ma: int) -> None:
    """Voltage within one bus LSB (4 mV) and current within 0.1 mA of the truth."""
    hw, driver = make(FakeCell(ocv_mv=ocv_mv, r_mohm=40))
    hw.chip.override_ma = ma
    r = driver.read()
    assert r is not None
    assert abs(r.ma - ma) <= 1
    assert abs(r.mv - hw.cell.terminal_mv(ma)) <= 4
