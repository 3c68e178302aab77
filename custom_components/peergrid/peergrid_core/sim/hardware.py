"""The firmware's ``hw`` object, backed by the simulated physics.

The node firmware (``peergrid_node.node.Node``) receives all of its hardware
as one injected object; :class:`SimHardware` is that object for a virtual
node. Relay pins drive the relay coils of a :class:`~.physics.NodePhysics`,
the I2C bus carries a register-level INA219 (:mod:`.ina219`) measuring that
node's cell, and the clock is simulated time: ``ticks_ms`` runs ``speedup``
times faster than the wall clock and ``sleep_ms`` sleeps correspondingly
shorter, so the firmware's own timing (energy integration, leases, timeouts)
scales consistently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import os
import random
import time

from ..errors import PeerGridValidationError
from .ina219 import Ina219Chip, SimI2C
from .physics import NodePhysics, Relay

TICKS_PERIOD = 1 << 30
"""MicroPython's ``time.ticks_ms`` wraps at 2**30 on every port."""

_TICKS_HALF = TICKS_PERIOD // 2
_TICKS_MASK = TICKS_PERIOD - 1


def ticks_diff(a: int, b: int) -> int:
    """``a - b`` for two tick values, with MicroPython's wrap-around semantics."""
    return ((a - b + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF


def ticks_add(ticks: int, delta: int) -> int:
    """``ticks + delta`` wrapped like MicroPython's ``time.ticks_add``."""
    return (ticks + delta) & _TICKS_MASK


class SimClock:
    """Simulated time: the wall clock's monotonic time scaled by ``speedup``.

    One clock is shared by every node of a grid and by the physics, so the
    nodes' ``ticks_ms`` and the physics' time step agree.

    ``speedup`` is a ceiling, not a promise. With a ``limit`` bound (the grid
    binds "physics time plus a small lag"), simulated time never runs ahead
    of that limit: when the host stalls (a loaded CI machine, a debugger),
    the clock slips and simulated time slows down instead of jumping, so the
    firmware never sees a gap a real ESP32 would not see.
    """

    def __init__(
        self, speedup: float = 1.0, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        """Start simulated time at zero now."""
        if not (isinstance(speedup, int | float) and 0.01 <= speedup <= 100_000):
            raise PeerGridValidationError("speedup", f"{speedup} is outside 0.01..100000")
        self.speedup = float(speedup)
        self._monotonic = monotonic
        self._wall_base = monotonic()
        self._sim_base = 0.0
        self._limit: Callable[[], float] | None = None
        self.slipped_s = 0.0
        """Simulated seconds lost to host stalls (0 on a host that keeps up)."""

    def bind_limit(self, limit: Callable[[], float] | None) -> None:
        """Never let simulated time pass ``limit()`` (``None`` removes the bound).

        Resets :attr:`slipped_s`, so that it counts from the binding on.
        """
        self.now_s()
        self._limit = limit
        self.now_s()
        self.slipped_s = 0.0

    def now_s(self) -> float:
        """Simulated seconds since the clock started (monotonic)."""
        wall = self._monotonic()
        now = self._sim_base + (wall - self._wall_base) * self.speedup
        if self._limit is not None:
            limit = self._limit()
            if now > limit:
                # Re-base so that time continues from the limit: it slows
                # down, it never goes backwards.
                self.slipped_s += now - limit
                self._sim_base = limit
                self._wall_base = wall
                now = limit
        return now

    def now_ms(self) -> float:
        """Simulated milliseconds since the clock started (not wrapped)."""
        return self.now_s() * 1000.0

    def wall_seconds(self, sim_seconds: float) -> float:
        """Wall-clock seconds that ``sim_seconds`` of simulated time take at full speed."""
        return sim_seconds / self.speedup

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep until ``sim_seconds`` of simulated time have passed."""
        target = self.now_s() + max(sim_seconds, 0.0)
        # Polling is right here: the clock can slip, so one wall-clock sleep
        # may cover less simulated time than asked for.
        while (left := target - self.now_s()) > 0.0:  # noqa: ASYNC110
            await asyncio.sleep(left / self.speedup)


class SimPin:
    """A ``machine.Pin``-like output driving one relay coil (1 = energised)."""

    def __init__(self, node: NodePhysics, relay: Relay) -> None:
        """Connect the pin to ``relay``'s coil on ``node``."""
        self._node = node
        self.relay = relay
        self._level = 0
        self.writes = 0
        """How many times the firmware wrote the pin."""

    def value(self, level: int | bool | None = None) -> int:
        """Set the level when given, and return it (``machine.Pin.value``)."""
        if level is not None:
            self._level = 1 if level else 0
            self.writes += 1
            self._node.set_coil(self.relay, bool(self._level))
        return self._level

    def __call__(self, level: int | bool | None = None) -> int:
        """``pin(v)`` is ``pin.value(v)`` on MicroPython."""
        return self.value(level)

    def on(self) -> None:
        """Drive the pin high."""
        self.value(1)

    def off(self) -> None:
        """Drive the pin low."""
        self.value(0)

    def release(self) -> None:
        """The ESP32 lost power: the pin floats and the relay module's pull-down wins."""
        self._level = 0
        self._node.set_coil(self.relay, on=False)


class SimWatchdog:
    """A ``machine.WDT``-like object that records the firmware's feeds.

    The simulator does not bite: under a loaded host the event loop can stall
    for longer than a hardware timeout, which would reset healthy nodes. The
    runner and tests read :attr:`feeds` and :attr:`last_feed_ms` instead.
    """

    def __init__(self, now_ms: Callable[[], float]) -> None:
        """Record feeds against the simulated clock ``now_ms``."""
        self._now_ms = now_ms
        self.feeds = 0
        self.last_feed_ms: float | None = None

    def feed(self) -> None:
        """Reset the (virtual) watchdog countdown."""
        self.feeds += 1
        self.last_feed_ms = self._now_ms()


class SimHardware:
    """The ``hw`` object of the node/hardware contract for one virtual node.

    Attributes are plain, as on MicroPython: ``supply_pin``, ``receive_pin``,
    ``i2c``, ``ina219_addr``, ``wdt``, ``fw_version``, ``reset_cause``; methods ``ticks_ms``,
    ``ticks_diff``, ``ticks_add``, ``sleep_ms`` (awaitable), ``urandom`` and
    ``rssi``.
    """

    def __init__(
        self,
        *,
        node: NodePhysics,
        clock: SimClock,
        fw_version: str,
        seed: int | str | None = None,
        ina219_addr: int = 0x40,
        noise_volts: float = 0.002,
        noise_amps: float = 0.002,
        rssi_dbm: int = -58,
        reset_cause: str = "power_on",
    ) -> None:
        """Build the hardware of ``node``.

        With a ``seed``, sensor noise, nonces and RSSI jitter are reproducible
        (nonces then come from a seeded generator: fine for a simulation,
        never for a deployment); without one, nonces come from ``os.urandom``.
        """
        self.node = node
        self.clock = clock
        self.fw_version = fw_version
        self.reset_cause = reset_cause
        """Why the (virtual) ESP32 last booted, in the protocol's words (``power_on``, ``hard``)."""
        self.ina219_addr = ina219_addr
        self._seeded = seed is not None
        self._rng = random.Random(f"{seed}/{node.uid}/hw") if seed is not None else random.Random()
        noise_rng = (
            random.Random(f"{seed}/{node.uid}/ina219") if seed is not None else random.Random()
        )
        shunt_ohms = node.params.shunt_ohms
        self.ina219 = Ina219Chip(
            sample=self._sample,
            now_ms=clock.now_ms,
            rng=noise_rng,
            shunt_ohms=shunt_ohms,
            noise_volts=noise_volts,
            noise_amps=noise_amps,
        )
        self.i2c = SimI2C(self.ina219, ina219_addr)
        self.supply_pin = SimPin(node, Relay.SUPPLY)
        self.receive_pin = SimPin(node, Relay.RECEIVE)
        self.wdt = SimWatchdog(clock.now_ms)
        self._rssi_dbm = rssi_dbm

    def _sample(self) -> tuple[float, float]:
        point = self.node.last
        return point.terminal_volts, point.cell_amps

    # ------------------------------------------------------------- time
    def ticks_ms(self) -> int:
        """Simulated milliseconds, wrapped at 2**30 like MicroPython."""
        return int(self.clock.now_ms()) & _TICKS_MASK

    @staticmethod
    def ticks_diff(a: int, b: int) -> int:
        """``a - b`` with wrap-around."""
        return ticks_diff(a, b)

    @staticmethod
    def ticks_add(ticks: int, delta: int) -> int:
        """``ticks + delta`` with wrap-around."""
        return ticks_add(ticks, delta)

    async def sleep_ms(self, ms: float) -> None:
        """Sleep ``ms`` simulated milliseconds."""
        await self.clock.sleep(ms / 1000.0)

    # ------------------------------------------------------------ misc
    def urandom(self, n: int) -> bytes:
        """``n`` random bytes: seeded when the grid has a seed, else ``os.urandom``."""
        if self._seeded:
            return self._rng.randbytes(n)
        return os.urandom(n)

    def rssi(self) -> int:
        """Wi-Fi signal strength in dBm, jittering a little around the node's level."""
        return self._rssi_dbm + round(self._rng.gauss(0.0, 1.5))

    def power_off(self) -> None:
        """The ESP32 stops: both relay coils drop out."""
        self.supply_pin.release()
        self.receive_pin.release()
