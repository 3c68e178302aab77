"""A register-level model of the TI INA219 current/power monitor.

The firmware talks to this object exactly as it talks to the chip: 16-bit
big-endian registers behind an I2C address. The arithmetic follows the
datasheet (SBOS448), so calibration mistakes in the firmware show up in the
simulator as they would on the bench:

* 0x01 shunt voltage, signed, 10 uV per LSB, saturating at the PGA range;
* 0x02 bus voltage in bits 15..3 (4 mV per LSB), bit 1 CNVR (a new result
  since the power register was last read), bit 0 OVF (current or power out
  of range);
* 0x04 current = shunt * calibration / 4096 and 0x03 power = |current| *
  bus / 5000, computed at the end of each conversion (so a new calibration
  shows only after the next one) and zero while the calibration is zero;
* a reset (software bit 15 of the configuration, or a brown-out) restores the
  power-on configuration 0x399F and clears the calibration.

Where the chip measures: high side, with the shunt between the cell and the
relays. VIN- (the "bus" input) sits at the node's terminal voltage; the shunt
carries the cell current, positive when the cell discharges.
"""

from __future__ import annotations

from collections.abc import Callable
import random
import struct

REG_CONFIG = 0x00
REG_SHUNT = 0x01
REG_BUS = 0x02
REG_POWER = 0x03
REG_CURRENT = 0x04
REG_CALIBRATION = 0x05
REGISTER_COUNT = 6

CONFIG_POWER_ON = 0x399F
"""Configuration after power-on or reset: 32 V range, PGA /8, 12-bit, continuous."""

CONFIG_RESET_BIT = 0x8000
_BRNG_BIT = 0x2000
_PG_SHIFT = 11
_BADC_SHIFT = 7
_SADC_SHIFT = 3
_MODE_MASK = 0x7

_SHUNT_LSB_VOLTS = 10e-6
_BUS_LSB_VOLTS = 4e-3
_BUS_CNVR = 0x0002
_BUS_OVF = 0x0001
_INT16_MAX = 32767
_UINT16_MAX = 65535
_PGA_RANGE_VOLTS = (0.04, 0.08, 0.16, 0.32)

# Conversion time in ms per ADC setting (datasheet table 5): resolution
# settings 0..3 (9-12 bit), then averaging over 2..128 samples.
_ADC_MS = {
    0x0: 0.084,
    0x1: 0.148,
    0x2: 0.276,
    0x3: 0.532,
    0x8: 0.532,
    0x9: 1.06,
    0xA: 2.13,
    0xB: 4.26,
    0xC: 8.51,
    0xD: 17.02,
    0xE: 34.05,
    0xF: 68.10,
}

type Sampler = Callable[[], tuple[float, float]]
"""Returns the true ``(terminal_volts, cell_amps)`` at the present moment."""


def _adc_ms(bits: int) -> float:
    # Settings 0100-0111 behave like 0000-0011 (bit 2 is "don't care" in
    # resolution mode).
    return _ADC_MS.get(bits, _ADC_MS[bits & 0x3])


class Ina219Chip:
    """The chip's register file and conversion logic (one per node)."""

    def __init__(
        self,
        *,
        sample: Sampler,
        now_ms: Callable[[], float],
        rng: random.Random,
        shunt_ohms: float = 0.1,
        noise_volts: float = 0.002,
        noise_amps: float = 0.002,
    ) -> None:
        """Wire the chip to the physics.

        ``sample`` gives the true terminal voltage and cell current, ``now_ms``
        the simulated time; Gaussian noise of ``noise_volts`` and ``noise_amps``
        (standard deviations) is added to every conversion, drawn from ``rng``.
        """
        self._sample = sample
        self._now_ms = now_ms
        self._rng = rng
        self.shunt_ohms = shunt_ohms
        self.noise_volts = noise_volts
        self.noise_amps = noise_amps
        self.pointer = REG_CONFIG
        self.resets = 0
        """How many times the chip was reset (software or brown-out)."""
        self._config = CONFIG_POWER_ON
        self._calibration = 0
        self._shunt = 0
        self._bus = 0
        self._current = 0
        self._power = 0
        self._cnvr = False
        self._ovf = False
        self._last_conversion_ms: float | None = None

    # ------------------------------------------------------------ registers
    def reset(self) -> None:
        """Return to the power-on state (software reset or supply brown-out)."""
        self._config = CONFIG_POWER_ON
        self._calibration = 0
        self._shunt = 0
        self._bus = 0
        self._current = 0
        self._power = 0
        self._cnvr = False
        self._ovf = False
        self._last_conversion_ms = None
        self.resets += 1

    def read_register(self, reg: int) -> int:
        """Return the 16-bit (two's complement for signed registers) value of ``reg``."""
        if reg == REG_CONFIG:
            return self._config
        if reg == REG_CALIBRATION:
            return self._calibration
        if reg not in (REG_SHUNT, REG_BUS, REG_POWER, REG_CURRENT):
            raise OSError(5, "INA219: no such register")  # EIO: the chip NACKs
        self._convert_if_due()
        if reg == REG_SHUNT:
            return self._shunt & 0xFFFF
        if reg == REG_BUS:
            return (
                (self._bus << 3) | (_BUS_CNVR if self._cnvr else 0) | (_BUS_OVF if self._ovf else 0)
            )
        if reg == REG_CURRENT:
            return self._current & 0xFFFF
        # Reading the power register acknowledges the conversion (CNVR).
        self._cnvr = False
        return self._power

    def write_register(self, reg: int, value: int) -> None:
        """Write ``value`` to ``reg``; measurement registers ignore writes."""
        value &= 0xFFFF
        if reg == REG_CONFIG:
            if value & CONFIG_RESET_BIT:
                self.reset()
                return
            self._config = value
            self._cnvr = False
            mode = value & _MODE_MASK
            if mode in (1, 2, 3):
                # Triggered mode: one conversion now, then hold the result.
                self._convert(mode)
            return
        if reg == REG_CALIBRATION:
            # Bit 0 is read-only zero on the chip.
            self._calibration = value & 0xFFFE
            return
        if reg not in (REG_SHUNT, REG_BUS, REG_POWER, REG_CURRENT):
            raise OSError(5, "INA219: no such register")

    # ----------------------------------------------------------- internals
    @property
    def conversion_ms(self) -> float:
        """Time for one bus plus one shunt conversion at the present settings."""
        config = self._config
        return _adc_ms((config >> _BADC_SHIFT) & 0xF) + _adc_ms((config >> _SADC_SHIFT) & 0xF)

    def _convert_if_due(self) -> None:
        mode = self._config & _MODE_MASK
        if mode < 5:
            return
        now = self._now_ms()
        last = self._last_conversion_ms
        if last is None or now - last >= self.conversion_ms:
            self._convert(mode)

    def _convert(self, mode: int) -> None:
        terminal_volts, cell_amps = self._sample()
        amps = cell_amps + self._rng.gauss(0.0, self.noise_amps)
        volts = terminal_volts + self._rng.gauss(0.0, self.noise_volts)
        shunt_range = _PGA_RANGE_VOLTS[(self._config >> _PG_SHIFT) & 0x3]
        bus_range = 32.0 if self._config & _BRNG_BIT else 16.0
        ovf = False
        if mode & 0x1:
            shunt_volts = amps * self.shunt_ohms
            if abs(shunt_volts) > shunt_range:
                ovf = True
                shunt_volts = shunt_range if shunt_volts > 0 else -shunt_range
            self._shunt = round(shunt_volts / _SHUNT_LSB_VOLTS)
        if mode & 0x2:
            bus_volts = min(max(volts, 0.0), bus_range)
            self._bus = min(round(bus_volts / _BUS_LSB_VOLTS), 0x1FFF)
        # The chip truncates the product toward zero.
        product = self._shunt * self._calibration
        current = -((-product) // 4096) if product < 0 else product // 4096
        power = abs(current) * self._bus // 5000
        if not -_INT16_MAX - 1 <= current <= _INT16_MAX or power > _UINT16_MAX:
            ovf = True
        self._current = min(max(current, -_INT16_MAX - 1), _INT16_MAX)
        self._power = min(power, _UINT16_MAX)
        self._ovf = ovf
        self._cnvr = True
        self._last_conversion_ms = self._now_ms()


class SimI2C:
    """A ``machine.I2C``-like bus with the node's INA219 on it.

    Supports the memory-style calls (``readfrom_mem``, ``readfrom_mem_into``,
    ``writeto_mem``), the raw pointer-style calls (``writeto``, ``readfrom``)
    and ``scan``. While :attr:`fault` is set every transfer raises ``OSError``
    as a disconnected or jammed sensor does on the ESP32 (ETIMEDOUT); a
    positive :attr:`fail_next` makes only that many transfers fail.
    """

    ETIMEDOUT = 116
    ENODEV = 19

    def __init__(self, chip: Ina219Chip, addr: int = 0x40) -> None:
        """Put ``chip`` on the bus at ``addr``."""
        self.chip = chip
        self.addr = addr
        self.fault = False
        self.fail_next = 0
        """Number of upcoming transfers that fail (a glitch), independent of :attr:`fault`."""
        self.transfers = 0
        self.failed_transfers = 0

    def _device(self, addr: int) -> Ina219Chip:
        self.transfers += 1
        if self.fault or self.fail_next > 0:
            self.fail_next = max(self.fail_next - 1, 0)
            self.failed_transfers += 1
            raise OSError(self.ETIMEDOUT, "I2C bus timeout")
        if addr != self.addr:
            self.failed_transfers += 1
            raise OSError(self.ENODEV, "no I2C device at this address")
        return self.chip

    def scan(self) -> list[int]:
        """Addresses that acknowledge (none while the bus is faulty)."""
        return [] if self.fault else [self.addr]

    def readfrom_mem(self, addr: int, memaddr: int, nbytes: int, *, addrsize: int = 8) -> bytes:
        """Set the register pointer to ``memaddr`` and read ``nbytes``."""
        chip = self._device(addr)
        chip.pointer = memaddr
        return self._read(chip, nbytes)

    def readfrom_mem_into(
        self, addr: int, memaddr: int, buf: bytearray | memoryview, *, addrsize: int = 8
    ) -> None:
        """Like :meth:`readfrom_mem` but into ``buf``."""
        data = self.readfrom_mem(addr, memaddr, len(buf))
        buf[:] = data

    def writeto_mem(
        self, addr: int, memaddr: int, buf: bytes | bytearray | memoryview, *, addrsize: int = 8
    ) -> None:
        """Write ``buf`` (big-endian 16-bit words) to register ``memaddr``."""
        chip = self._device(addr)
        chip.pointer = memaddr
        self._write(chip, bytes(buf))

    def writeto(self, addr: int, buf: bytes | bytearray | memoryview, stop: bool = True) -> int:
        """Raw write: the first byte sets the pointer, two more write a register."""
        chip = self._device(addr)
        data = bytes(buf)
        if data:
            chip.pointer = data[0]
            self._write(chip, data[1:])
        return 1

    def readfrom(self, addr: int, nbytes: int, stop: bool = True) -> bytes:
        """Raw read from the register the pointer selects."""
        return self._read(self._device(addr), nbytes)

    @staticmethod
    def _read(chip: Ina219Chip, nbytes: int) -> bytes:
        if nbytes <= 0:
            return b""
        word = struct.pack(">H", chip.read_register(chip.pointer))
        # Reading past two bytes repeats the register, as the chip does.
        return (word * ((nbytes + 1) // 2))[:nbytes]

    @staticmethod
    def _write(chip: Ina219Chip, data: bytes) -> None:
        if not data:
            return
        if len(data) != 2:
            raise OSError(5, "INA219 registers take exactly two bytes")
        chip.write_register(chip.pointer, struct.unpack(">H", data)[0])
