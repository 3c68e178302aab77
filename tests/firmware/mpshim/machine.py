"""A ``machine`` module for running the firmware on the MicroPython unix port.

It shadows the unix port's minimal built-in ``machine`` (a module on the path
wins). Pins remember their level; ``I2C`` carries a register-level INA219
whose cell reacts to the relay pins: SUPPLY draws ``SUPPLY_MA`` from the cell,
RECEIVE pushes ``RECEIVE_MA`` into it. Plain MicroPython: no typing, no
dataclasses. Test-only code, never copied to a node.
"""

import struct

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

OCV_MV = 3950
R_MOHM = 50
SUPPLY_MA = 1200
RECEIVE_MA = 800

_pins = {}  # type: dict[int, int]


class Pin:
    IN = 0
    OUT = 1

    def __init__(self, pin_id, mode=-1, value=None):
        self.id = pin_id
        if value is not None:
            _pins[pin_id] = 1 if value else 0
        elif pin_id not in _pins:
            _pins[pin_id] = 0

    def value(self, v=None):
        if v is None:
            return _pins.get(self.id, 0)
        _pins[self.id] = 1 if v else 0
        if _pins.get(26, 0) and _pins.get(25, 0):
            print("peergrid-shim: INTERLOCK VIOLATION")  # noqa: T201 - read by the test
        return None


def _level(pin_id):
    return _pins.get(pin_id, 0)


class I2C:
    def __init__(self, bus_id, scl=None, sda=None, freq=400000):
        if scl is None or sda is None:
            raise ValueError("explicit pins required")
        self.regs = {0: 0x399F, 5: 0}

    def _current_ma(self):
        ma = 0
        if _level(26):
            ma += SUPPLY_MA
        if _level(25):
            ma -= RECEIVE_MA
        return ma

    def readfrom_mem(self, addr, reg, n):
        if addr != 0x40:
            raise OSError(19)
        ma = self._current_ma()
        cell_mv = OCV_MV - ma * R_MOHM // 1000
        shunt_raw = ma * 10
        bus_mv = cell_mv - ma // 10
        cal = self.regs.get(5, 0)
        if reg == 1:
            value = shunt_raw & 0xFFFF
        elif reg == 2:
            value = ((bus_mv // 4) << 3) | 2
        elif reg == 4:
            value = (shunt_raw * cal // 4096) & 0xFFFF
        elif reg == 3:
            value = abs(shunt_raw * cal // 4096) * (bus_mv // 4) // 5000
        else:
            value = self.regs.get(reg, 0)
        return struct.pack(">H", value)[:n]

    def writeto_mem(self, addr, reg, buf):
        if addr != 0x40:
            raise OSError(19)
        self.regs[reg] = struct.unpack(">H", bytes(buf))[0]


class WDT:
    def __init__(self, id=0, timeout=5000):  # noqa: A002 - machine.WDT's signature
        self.timeout = timeout
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def unique_id():
    return b"\x24\x0a\xc4\x12\x34\x56"


def reset_cause():
    return PWRON_RESET
