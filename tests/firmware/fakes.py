"""Host-side fakes of the node's hardware, for the firmware tests.

* :class:`FakeClock` is a virtual millisecond clock. Time moves only when a test
  calls :meth:`FakeClock.advance` (deterministic safety tests) or while
  :meth:`FakeClock.run_free` lets it follow the event loop (socket tests).
* :class:`FakeCell` is the voltage/current source: an open-circuit voltage, a
  series resistance and the current that flows for each relay position.
* :class:`FakeINA219` is a register-level INA219 on a :class:`FakeI2C` bus,
  computing the registers with the datasheet arithmetic from the cell and the
  relay pins, including a brown-out that resets it to power-on defaults.
* :class:`FakePin` records every write; :class:`PinMonitor` records whether
  both relay outputs were ever on at the same time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import dataclass, field
import heapq
import itertools
import os
import struct

TICKS_PERIOD = 1 << 30

REG_CONFIG = 0x00
REG_SHUNT = 0x01
REG_BUS = 0x02
REG_POWER = 0x03
REG_CURRENT = 0x04
REG_CAL = 0x05
POWER_ON_CONFIG = 0x399F
SHUNT_MOHM = 100
ENODEV = 19


def ticks_diff(a: int, b: int) -> int:
    """MicroPython's ``time.ticks_diff`` for a 2**30 tick period."""
    half = TICKS_PERIOD // 2
    return ((a - b + half) & (TICKS_PERIOD - 1)) - half


class FakeClock:
    """Virtual time for ``hw.ticks_ms`` and ``hw.sleep_ms``."""

    def __init__(self, start_ms: int = 0) -> None:
        """Start at ``start_ms`` (use a value near 2**30 to test wrap-around)."""
        self.now = start_ms
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._free_task: asyncio.Task[None] | None = None

    def ticks_ms(self) -> int:
        """Wrapped milliseconds, like ``time.ticks_ms``."""
        return self.now % TICKS_PERIOD

    async def sleep_ms(self, ms: int) -> None:
        """Sleep ``ms`` of virtual time."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(int(ms), 0), next(self._counter), fut))
        await fut

    @staticmethod
    async def settle(rounds: int = 25) -> None:
        """Let every ready task run until the loop is quiet."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, ms: int) -> None:
        """Move time forward by ``ms``, waking sleepers in deadline order."""
        target = self.now + ms
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not fut.done():
                fut.set_result(None)
            await self.settle()
        self.now = target
        await self.settle()

    async def jump(self, ms: int) -> None:
        """Move time forward by ``ms`` at once: each sleeper wakes only once."""
        self.now += ms
        await self.advance(0)

    def run_free(self, step_ms: int = 10, real_s: float = 0.001) -> None:
        """Advance ``step_ms`` of virtual time every ``real_s`` seconds until stopped."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(real_s)
                await self.advance(step_ms)

        self._free_task = asyncio.get_running_loop().create_task(loop())

    async def stop_free(self) -> None:
        """Stop :meth:`run_free` and wait for its task."""
        task, self._free_task = self._free_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class PinMonitor:
    """Watches the two relay pins and remembers any moment both were on."""

    def __init__(self) -> None:
        """No violation yet."""
        self.pins: list[FakePin] = []
        self.both_on = 0

    def check(self) -> None:
        """Called after every pin write."""
        if len(self.pins) == 2 and all(p.level for p in self.pins):
            self.both_on += 1


class FakePin:
    """A ``machine.Pin``-like output: ``value(v)`` sets, ``value()`` reads."""

    def __init__(self, name: str, monitor: PinMonitor | None = None) -> None:
        """An output at level 0."""
        self.name = name
        self.level = 0
        self.writes: list[int] = []
        self.stuck: int | None = None
        self.monitor = monitor
        if monitor is not None:
            monitor.pins.append(self)

    def value(self, v: int | None = None) -> int | None:
        """Set the level or read it back (a stuck pin reads its stuck level)."""
        if v is None:
            return self.stuck if self.stuck is not None else self.level
        self.level = 1 if v else 0
        self.writes.append(self.level)
        if self.monitor is not None:
            self.monitor.check()
        return None


@dataclass(kw_only=True)
class FakeCell:
    """The cell and the paths the relays connect, as a current source."""

    ocv_mv: int = 3950
    r_mohm: int = 50
    supply_ma: int = 1500
    receive_ma: int = 900
    idle_ma: int = 0
    welded_supply: bool = False
    """The SUPPLY contacts are welded: current flows whatever the pin says."""

    def current_ma(self, supply_on: bool, receive_on: bool) -> int:
        """Signed cell current (positive = out of the cell)."""
        ma = self.idle_ma
        if supply_on or self.welded_supply:
            ma += self.supply_ma
        if receive_on:
            ma -= self.receive_ma
        return ma

    def terminal_mv(self, ma: int) -> int:
        """Voltage at the cell's terminals under ``ma``."""
        return self.ocv_mv - ma * self.r_mohm // 1000


class FakeINA219:
    """Register-level INA219 with a 0.1 ohm shunt, fed by a cell and two pins."""

    def __init__(self, cell: FakeCell, supply_pin: FakePin, receive_pin: FakePin) -> None:
        """Power-on defaults: configuration 0x399F, calibration 0."""
        self.cell = cell
        self.supply_pin = supply_pin
        self.receive_pin = receive_pin
        self.regs = {REG_CONFIG: POWER_ON_CONFIG, REG_CAL: 0}
        self.writes: list[tuple[int, int]] = []
        self.overflow = False
        self.override_ma: int | None = None

    def brownout(self) -> None:
        """The chip resets: every register back to its power-on value."""
        self.regs = {REG_CONFIG: POWER_ON_CONFIG, REG_CAL: 0}

    def _electrical(self) -> tuple[int, int]:
        supply_on = bool(self.supply_pin.level)
        receive_on = bool(self.receive_pin.level)
        ma = self.cell.current_ma(supply_on, receive_on)
        if self.override_ma is not None:
            ma = self.override_ma
        return self.cell.terminal_mv(ma), ma

    def read(self, reg: int) -> int:
        """The 16-bit register value (two's complement for signed ones)."""
        v_cell, ma = self._electrical()
        shunt_raw = max(-32000, min(32000, ma * SHUNT_MOHM // 10))  # 10 uV LSB
        shunt_mv = shunt_raw / 100
        bus_mv = round(v_cell - shunt_mv)
        if reg == REG_SHUNT:
            return shunt_raw & 0xFFFF
        if reg == REG_BUS:
            raw = (max(bus_mv, 0) // 4) << 3 | 0x2
            if self.overflow:
                raw |= 0x1
            return raw
        cal = self.regs.get(REG_CAL, 0)
        current_raw = int(shunt_raw * cal / 4096)
        if reg == REG_CURRENT:
            return current_raw & 0xFFFF
        if reg == REG_POWER:
            return abs(current_raw) * (max(bus_mv, 0) // 4) // 5000 & 0xFFFF
        return self.regs.get(reg, 0)

    def write(self, reg: int, value: int) -> None:
        """Write a register (the calibration's bit 0 always reads 0)."""
        self.writes.append((reg, value))
        if reg == REG_CONFIG and value & 0x8000:
            self.brownout()
            return
        if reg == REG_CAL:
            value &= 0xFFFE
        self.regs[reg] = value


class FakeI2C:
    """A ``machine.I2C``-like bus with one INA219; ``fail`` makes it raise OSError."""

    def __init__(self, chip: FakeINA219, addr: int = 0x40) -> None:
        """The chip answers at ``addr``."""
        self.chip = chip
        self.addr = addr
        self.fail = False
        self.reads = 0

    def _check(self, addr: int) -> None:
        if self.fail or addr != self.addr:
            raise OSError(ENODEV, "ENODEV")

    def readfrom_mem(self, addr: int, reg: int, n: int) -> bytes:
        """Read ``n`` (2) bytes, big-endian."""
        self._check(addr)
        self.reads += 1
        return struct.pack(">H", self.chip.read(reg))[:n]

    def writeto_mem(self, addr: int, reg: int, buf: bytes) -> None:
        """Write a big-endian 16-bit register."""
        self._check(addr)
        self.chip.write(reg, struct.unpack(">H", bytes(buf))[0])


class FakeWDT:
    """Counts feeds."""

    def __init__(self) -> None:
        """Never fed yet."""
        self.feeds = 0

    def feed(self) -> None:
        """Feed the watchdog."""
        self.feeds += 1


@dataclass(kw_only=True)
class FakeHw:
    """The hardware object of the node contract, built from the fakes above."""

    clock: FakeClock = field(default_factory=FakeClock)
    cell: FakeCell = field(default_factory=FakeCell)
    nonce: bytes | None = None
    rssi_dbm: int | None = -61
    fw_version: str = "0.1.0"
    reset_cause: str = "power_on"
    ina219_addr: int = 0x40
    monitor: PinMonitor = field(default_factory=PinMonitor)
    random: Callable[[int], bytes] = os.urandom

    def __post_init__(self) -> None:
        """Wire the pins, the chip, the bus and the watchdog."""
        self.supply_pin = FakePin("supply", self.monitor)
        self.receive_pin = FakePin("receive", self.monitor)
        self.chip = FakeINA219(self.cell, self.supply_pin, self.receive_pin)
        self.i2c = FakeI2C(self.chip, self.ina219_addr)
        self.wdt: FakeWDT | None = FakeWDT()

    def ticks_ms(self) -> int:
        """Virtual milliseconds."""
        return self.clock.ticks_ms()

    @staticmethod
    def ticks_diff(a: int, b: int) -> int:
        """Wrap-around difference."""
        return ticks_diff(a, b)

    def sleep_ms(self, ms: int) -> asyncio.Future[None] | object:
        """Virtual sleep."""
        return self.clock.sleep_ms(ms)

    def urandom(self, n: int) -> bytes:
        """The configured nonce (for golden-frame tests) or random bytes."""
        if self.nonce is not None and n == len(self.nonce):
            return self.nonce
        return self.random(n)

    def rssi(self) -> int | None:
        """Wi-Fi signal."""
        return self.rssi_dbm
