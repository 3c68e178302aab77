"""Tests of the simulated INA219, I2C bus, pins, clock and the ``hw`` object."""

from __future__ import annotations

import random
import statistics
import struct

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.sim.hardware import TICKS_PERIOD, SimClock, SimHardware, ticks_add, ticks_diff
from peergrid_core.sim.ina219 import (
    CONFIG_POWER_ON,
    REG_BUS,
    REG_CALIBRATION,
    REG_CONFIG,
    REG_CURRENT,
    REG_POWER,
    REG_SHUNT,
    Ina219Chip,
    SimI2C,
)
from peergrid_core.sim.physics import GridPhysics, NodeParams, PhysicalMode, Relay
from peergrid_node.ina219 import INA219

CONFIG_16V_320MV_8X = 0x1DDF
CAL_100UA = 4096


class FakeTime:
    """A hand-driven monotonic clock for the chip and SimClock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _chip(
    volts: float, amps: float, *, noise: float = 0.0, seed: int = 1
) -> tuple[Ina219Chip, SimI2C, FakeTime, list[float]]:
    clock = FakeTime()
    truth = [volts, amps]
    chip = Ina219Chip(
        sample=lambda: (truth[0], truth[1]),
        now_ms=clock,
        rng=random.Random(seed),
        noise_volts=noise,
        noise_amps=noise,
    )
    return chip, SimI2C(chip), clock, truth


def _write(i2c: SimI2C, reg: int, value: int) -> None:
    i2c.writeto_mem(0x40, reg, struct.pack(">H", value))


def _read(i2c: SimI2C, reg: int, *, signed: bool = False) -> int:
    value: int = struct.unpack(">h" if signed else ">H", i2c.readfrom_mem(0x40, reg, 2))[0]
    return value


def _calibrate(i2c: SimI2C) -> None:
    _write(i2c, REG_CONFIG, CONFIG_16V_320MV_8X)
    _write(i2c, REG_CALIBRATION, CAL_100UA)


def test_datasheet_arithmetic_for_a_discharging_cell() -> None:
    """3.75 V at VIN-, 1.5 A out of the cell: the numbers of the research note."""
    _, i2c, _clock, _truth = _chip(3.7505, 1.5)
    _calibrate(i2c)
    raw_bus = _read(i2c, REG_BUS)
    assert (raw_bus >> 3) * 4 == 3752
    assert raw_bus & 0x2  # CNVR: a fresh conversion
    assert not raw_bus & 0x1  # no overflow
    assert _read(i2c, REG_SHUNT, signed=True) * 10 == 150_000  # uV
    assert _read(i2c, REG_CURRENT, signed=True) == 15_000  # 100 uA LSB -> 1500 mA
    assert _read(i2c, REG_POWER) * 2 == 5628  # 2 mW LSB
    assert not _read(i2c, REG_BUS) & 0x2  # reading power cleared CNVR


def test_charging_current_is_negative() -> None:
    _, i2c, _clock, _truth = _chip(4.1, -0.8)
    _calibrate(i2c)
    assert _read(i2c, REG_SHUNT, signed=True) == -8000
    assert _read(i2c, REG_CURRENT, signed=True) == -8000
    assert _read(i2c, REG_POWER) == 8000 * 1025 // 5000  # magnitude only


def test_uncalibrated_chip_reads_zero_current_and_power() -> None:
    chip, i2c, _clock, _truth = _chip(3.8, 1.0)
    assert _read(i2c, REG_CONFIG) == CONFIG_POWER_ON
    assert _read(i2c, REG_CALIBRATION) == 0
    assert _read(i2c, REG_SHUNT, signed=True) == 10_000
    assert _read(i2c, REG_CURRENT) == 0
    assert _read(i2c, REG_POWER) == 0
    assert chip.resets == 0


def test_brownout_reset_clears_calibration_until_rewritten() -> None:
    chip, i2c, clock, _truth = _chip(3.8, 1.0)
    _calibrate(i2c)
    assert _read(i2c, REG_CURRENT, signed=True) == 10_000
    chip.reset()
    assert _read(i2c, REG_CALIBRATION) == 0
    assert _read(i2c, REG_CONFIG) == CONFIG_POWER_ON
    assert _read(i2c, REG_CURRENT) == 0
    _write(i2c, REG_CALIBRATION, CAL_100UA)
    # The chip computes current at the end of a conversion, not on the read.
    assert _read(i2c, REG_CURRENT) == 0
    clock.now += 10.0
    assert _read(i2c, REG_CURRENT, signed=True) == 10_000
    assert chip.resets == 1


def test_software_reset_bit() -> None:
    chip, i2c, _clock, _truth = _chip(3.8, 1.0)
    _calibrate(i2c)
    _write(i2c, REG_CONFIG, 0x8000)
    assert _read(i2c, REG_CALIBRATION) == 0
    assert _read(i2c, REG_CONFIG) == CONFIG_POWER_ON
    assert chip.resets == 1


def test_calibration_bit0_is_read_only() -> None:
    _, i2c, _clock, _truth = _chip(3.8, 0.0)
    _write(i2c, REG_CALIBRATION, 0x1001)
    assert _read(i2c, REG_CALIBRATION) == 0x1000


def test_shunt_saturates_at_the_pga_range_and_flags_overflow() -> None:
    _, i2c, _clock, _truth = _chip(3.5, 4.0)
    _calibrate(i2c)  # PGA /8: +-320 mV = +-3.2 A
    assert _read(i2c, REG_SHUNT, signed=True) == 32_000
    assert _read(i2c, REG_BUS) & 0x1
    _, i2c2, _clock2, _truth2 = _chip(3.5, 1.0)
    _write(i2c2, REG_CONFIG, CONFIG_16V_320MV_8X & ~0x1800)  # PGA /1: +-40 mV
    assert _read(i2c2, REG_SHUNT, signed=True) == 4_000
    assert _read(i2c2, REG_BUS) & 0x1


def test_conversion_holds_until_the_next_is_due() -> None:
    _, i2c, clock, truth = _chip(3.8, 0.5)
    _calibrate(i2c)
    first = _read(i2c, REG_SHUNT, signed=True)
    truth[1] = 1.0
    assert _read(i2c, REG_SHUNT, signed=True) == first  # same conversion
    clock.now += 8.6  # 8-sample bus + shunt conversion: 2 x 4.26 ms
    assert _read(i2c, REG_SHUNT, signed=True) == 10_000


def test_triggered_and_power_down_modes() -> None:
    _, i2c, clock, truth = _chip(3.8, 0.5)
    _write(i2c, REG_CALIBRATION, CAL_100UA)
    _write(i2c, REG_CONFIG, (CONFIG_16V_320MV_8X & ~0x7) | 0x3)  # triggered
    assert _read(i2c, REG_SHUNT, signed=True) == 5_000
    truth[1] = 1.0
    clock.now += 1000.0
    assert _read(i2c, REG_SHUNT, signed=True) == 5_000  # held until re-triggered
    _write(i2c, REG_CONFIG, CONFIG_16V_320MV_8X & ~0x7)  # power-down
    clock.now += 1000.0
    assert _read(i2c, REG_SHUNT, signed=True) == 5_000


def test_noise_is_seeded_and_of_the_configured_size() -> None:
    def readings(seed: int) -> list[int]:
        _, i2c, clock, _truth = _chip(3.8, 1.0, noise=0.002, seed=seed)
        _calibrate(i2c)
        values = []
        for _ in range(400):
            clock.now += 10.0
            values.append(_read(i2c, REG_CURRENT, signed=True))
        return values

    first = readings(7)
    assert first == readings(7)
    assert first != readings(8)
    milliamps = [value / 10 for value in first]
    assert statistics.mean(milliamps) == pytest.approx(1000.0, abs=0.5)
    assert 1.5 < statistics.stdev(milliamps) < 2.5


def test_i2c_faults_and_addressing() -> None:
    _, i2c, _clock, _truth = _chip(3.8, 0.5)
    with pytest.raises(OSError, match="no I2C device"):
        i2c.readfrom_mem(0x41, REG_BUS, 2)
    i2c.fault = True
    with pytest.raises(OSError, match="timeout") as err:
        i2c.readfrom_mem(0x40, REG_BUS, 2)
    assert err.value.errno == SimI2C.ETIMEDOUT
    with pytest.raises(OSError, match="timeout"):
        _write(i2c, REG_CALIBRATION, CAL_100UA)
    assert i2c.scan() == []
    i2c.fault = False
    assert i2c.scan() == [0x40]
    assert i2c.failed_transfers == 3
    with pytest.raises(OSError, match="no such register"):
        i2c.readfrom_mem(0x40, 0x09, 2)
    with pytest.raises(OSError, match="two bytes"):
        i2c.writeto_mem(0x40, REG_CALIBRATION, b"\x10")


def test_pointer_style_access_and_long_reads() -> None:
    _, i2c, _clock, _truth = _chip(3.8, 0.5)
    i2c.writeto(0x40, bytes([REG_CALIBRATION, 0x10, 0x00]))
    i2c.writeto(0x40, bytes([REG_CALIBRATION]))
    assert i2c.readfrom(0x40, 2) == b"\x10\x00"
    assert i2c.readfrom_mem(0x40, REG_CALIBRATION, 4) == b"\x10\x00\x10\x00"
    assert i2c.readfrom_mem(0x40, REG_CALIBRATION, 0) == b""
    buf = bytearray(2)
    i2c.readfrom_mem_into(0x40, REG_CALIBRATION, buf)
    assert bytes(buf) == b"\x10\x00"
    # Writes to measurement registers are ignored, as on the chip.
    _write(i2c, REG_SHUNT, 0x1234)
    assert _read(i2c, REG_SHUNT) != 0x1234


def test_firmware_driver_reads_the_simulated_chip() -> None:
    """The node's own INA219 driver agrees with the model, brown-out included."""
    chip, i2c, clock, _truth = _chip(3.75, 1.5)
    driver = INA219(i2c)
    assert driver.read() is None  # first read finds no calibration and writes it
    clock.now += 10.0
    reading = driver.read()
    assert (reading.mv, reading.ma, reading.bus_mv) == (3902, 1500, 3752)
    chip.reset()
    assert driver.read() is None
    assert driver.recalibrations == 2


# ------------------------------------------------------------------ hardware
def _hardware(seed: int | None = 3, speedup: float = 10.0) -> tuple[SimHardware, FakeTime]:
    wall = FakeTime()
    clock = SimClock(speedup, monotonic=wall)
    grid = GridPhysics()
    node = grid.add_node("NODE_A", NodeParams(), 60.0)
    return SimHardware(node=node, clock=clock, fw_version="0.1.0", seed=seed), wall


def test_pins_drive_the_relay_coils() -> None:
    hw, _wall = _hardware()
    node = hw.node
    assert hw.supply_pin.value() == 0
    hw.supply_pin.value(1)
    modes = [node.mode]
    hw.supply_pin(0)
    hw.receive_pin.on()
    modes.append(node.mode)
    hw.receive_pin.off()
    modes.append(node.mode)
    hw.supply_pin.value(True)
    hw.power_off()
    modes.append(node.mode)
    assert modes == [
        PhysicalMode.SUPPLY,
        PhysicalMode.RECEIVE,
        PhysicalMode.IDLE,
        PhysicalMode.IDLE,
    ]
    assert hw.supply_pin.value() == 0
    assert hw.supply_pin.writes == 3


def test_welded_contact_ignores_the_pin() -> None:
    hw, _wall = _hardware()
    hw.node.weld(Relay.RECEIVE)
    hw.receive_pin.value(0)
    assert hw.node.receive_closed


def test_simulated_clock_runs_faster_than_the_wall() -> None:
    hw, wall = _hardware(speedup=10.0)
    start = hw.ticks_ms()
    wall.now += 1.5
    assert hw.ticks_diff(hw.ticks_ms(), start) == 15_000
    assert hw.clock.wall_seconds(20.0) == 2.0


async def test_sleep_ms_returns() -> None:
    wall_clock = SimClock(1000.0)
    grid = GridPhysics()
    node = grid.add_node("NODE_A", NodeParams(), 60.0)
    hw = SimHardware(node=node, clock=wall_clock, fw_version="x")
    start = hw.ticks_ms()
    await hw.sleep_ms(50)
    assert hw.ticks_diff(hw.ticks_ms(), start) >= 50


def test_ticks_wrap_like_micropython() -> None:
    assert ticks_diff(5, TICKS_PERIOD - 5) == 10
    assert ticks_diff(TICKS_PERIOD - 5, 5) == -10
    assert ticks_add(TICKS_PERIOD - 1, 2) == 1
    hw, wall = _hardware(speedup=1.0)
    wall.now = (TICKS_PERIOD + 1234) / 1000.0
    assert hw.ticks_ms() == 1234


@settings(max_examples=50, deadline=None)
@given(a=st.integers(0, TICKS_PERIOD - 1), delta=st.integers(-(2**28), 2**28))
def test_ticks_add_and_diff_are_inverse(a: int, delta: int) -> None:
    assert ticks_diff(ticks_add(a, delta), a) == delta


def test_urandom_is_reproducible_only_with_a_seed() -> None:
    first, _ = _hardware(seed=5)
    second, _ = _hardware(seed=5)
    assert first.urandom(16) == second.urandom(16)
    unseeded_a, _ = _hardware(seed=None)
    unseeded_b, _ = _hardware(seed=None)
    assert len(unseeded_a.urandom(8)) == 8
    assert unseeded_a.urandom(16) != unseeded_b.urandom(16)


def test_hw_reads_the_node_through_the_sensor() -> None:
    hw, wall = _hardware(seed=None)
    hw.ina219.noise_volts = hw.ina219.noise_amps = 0.0
    grid_node = hw.node
    grid_node.powered = True
    physics = GridPhysics()
    physics.nodes[grid_node.uid] = grid_node
    physics.step(1.0)
    _calibrate(hw.i2c)
    wall.now += 1.0
    bus_mv = (_read(hw.i2c, REG_BUS) >> 3) * 4
    current = _read(hw.i2c, REG_CURRENT, signed=True)
    assert bus_mv == pytest.approx(grid_node.last.terminal_volts * 1000, abs=4)
    assert current / 10 == pytest.approx(grid_node.last.cell_amps * 1000, abs=0.2)
    assert -80 < hw.rssi() < -30
    assert hw.wdt.feeds == 0
    hw.wdt.feed()
    assert hw.wdt.feeds == 1
    assert hw.wdt.last_feed_ms == hw.clock.now_ms()


def test_clock_rejects_a_bad_speedup() -> None:
    with pytest.raises(PeerGridValidationError) as err:
        SimClock(0.0)
    assert err.value.field == "speedup"


def test_clock_slips_instead_of_jumping_past_its_limit() -> None:
    wall = FakeTime()
    clock = SimClock(10.0, monotonic=wall)
    limit = [1.0]
    clock.bind_limit(lambda: limit[0])
    wall.now = 0.05
    assert clock.now_s() == pytest.approx(0.5)
    wall.now = 10.0  # the host stalled for ten seconds
    assert clock.now_s() == 1.0  # held at the limit, not 100 s
    assert clock.slipped_s == pytest.approx(99.0)
    limit[0] = 50.0
    wall.now = 10.5
    assert clock.now_s() == pytest.approx(6.0)  # continues from the limit at full speed
    clock.bind_limit(None)
    wall.now = 11.0
    assert clock.now_s() == pytest.approx(11.0)


async def test_clock_sleep_waits_for_simulated_time() -> None:
    clock = SimClock(500.0)
    start = clock.now_s()
    await clock.sleep(5.0)
    assert clock.now_s() - start >= 5.0
