"""Register-level INA219 driver over a ``machine.I2C``-like bus.

The node measures its cell with a high-side INA219 and a 0.1 ohm shunt in
series with the cell, so one sensor sees both directions: positive current
leaves the cell (SUPPLY, discharge), negative current enters it (RECEIVE).

Calibration for that shunt: 16 V bus range, PGA /8 (+-320 mV, +-3.2 A),
current LSB 100 uA, calibration word 4096 and 8-sample averaging on both ADCs
(configuration word 0x1DDF). A brown-out resets the chip to its power-on
defaults, which zeroes the calibration register; every read checks it and
writes the calibration back when it is wrong.
"""

import struct

REG_CONFIG = 0x00
REG_SHUNT = 0x01
REG_BUS = 0x02
REG_POWER = 0x03
REG_CURRENT = 0x04
REG_CAL = 0x05

# BRNG 0 (16 V) | PG 11 (/8) | BADC 1011 (8 samples) | SADC 1011 | MODE 111
CONFIG_16V_320MV_8X = 0x1DDF

BUS_OVF = 0x0001


class SensorError(Exception):
    """A reading that cannot be trusted (math overflow, implausible values)."""


class Reading:
    """One measurement of the cell.

    ``mv`` is the cell voltage (bus + shunt), ``ma`` the signed cell current
    (positive = out of the cell), ``bus_mv`` and ``shunt_uv`` the raw parts.
    """

    def __init__(self, mv, ma, bus_mv, shunt_uv):
        self.mv = mv
        self.ma = ma
        self.bus_mv = bus_mv
        self.shunt_uv = shunt_uv

    def __repr__(self):
        return "Reading(mv=%d, ma=%d, bus_mv=%d, shunt_uv=%d)" % (
            self.mv,
            self.ma,
            self.bus_mv,
            self.shunt_uv,
        )


class INA219:
    """Driver for one INA219 at ``addr`` on ``i2c``.

    ``shunt_mohm`` and ``current_lsb_ua`` define the calibration word:
    ``cal = 0.04096 / (current_lsb * r_shunt)``, computed here in integers.
    Bus errors surface as ``OSError`` from the I2C object and are left to the
    caller, which treats them as a sensor fault.
    """

    def __init__(
        self,
        i2c,
        addr=0x40,
        shunt_mohm=100,
        current_lsb_ua=100,
        config=CONFIG_16V_320MV_8X,
    ):
        self.i2c = i2c
        self.addr = addr
        self.config = config
        self.shunt_mohm = shunt_mohm
        self.current_lsb_ua = current_lsb_ua
        # 0.04096 / (lsb_ua * 1e-6 * mohm * 1e-3) == 40_960_000 / (lsb_ua * mohm);
        # bit 0 of the register is read-only zero.
        self.cal = (40960000 // (current_lsb_ua * shunt_mohm)) & 0xFFFE
        self.recalibrations = 0

    def _write(self, reg, value):
        self.i2c.writeto_mem(self.addr, reg, struct.pack(">H", value))

    def _read_u16(self, reg):
        return struct.unpack(">H", self.i2c.readfrom_mem(self.addr, reg, 2))[0]

    def _read_s16(self, reg):
        return struct.unpack(">h", self.i2c.readfrom_mem(self.addr, reg, 2))[0]

    def configure(self):
        """Write the configuration and calibration registers."""
        self._write(REG_CONFIG, self.config)
        self._write(REG_CAL, self.cal)

    def calibrated(self):
        """True when the chip still holds our calibration word."""
        return self._read_u16(REG_CAL) == self.cal

    def read(self):
        """Return a ``Reading``, or ``None`` right after a re-calibration.

        After the chip lost its calibration the current register is invalid
        until the next conversion completes, so that sample is skipped rather
        than reported as zero current.
        """
        if not self.calibrated():
            self.configure()
            self.recalibrations += 1
            return None
        raw_bus = self._read_u16(REG_BUS)
        if raw_bus & BUS_OVF:
            raise SensorError("overflow")
        bus_mv = (raw_bus >> 3) * 4
        shunt_uv = self._read_s16(REG_SHUNT) * 10
        raw_current = self._read_s16(REG_CURRENT)
        ma = _round_div(raw_current * self.current_lsb_ua, 1000)
        # Battery voltage: the bus pin sits after the shunt, so add it back.
        mv = bus_mv + _round_div(shunt_uv, 1000)
        return Reading(mv, ma, bus_mv, shunt_uv)


def _round_div(a, b):
    """Integer division rounding half away from zero (b > 0)."""
    if a >= 0:
        return (a + b // 2) // b
    return -((-a + b // 2) // b)
