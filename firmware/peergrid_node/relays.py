"""The two relays, switched break-before-make with an interlock.

SUPPLY (GPIO 26) connects the boost converter, RECEIVE (GPIO 25) the TP4056
charger. They must never be on together: the charger cannot terminate while
the same cell feeds a load, and the two paths would short the bus through the
cell. Three layers keep them apart:

* one writer (``_drive``) that refuses to turn a relay on while the other
  pin reads back on, and forces both off if it ever finds both on;
* break-before-make: any change first turns both off, waits a dead time longer
  than a relay's release time, then makes the new path;
* a generation counter: ``off_now()`` (a trip, from any task) and every newer
  request invalidate a pending make, so a trip during the dead time wins.

The mode is reported as IDLE during the dead time. Pins are driven active-high
(1 = relay on); see firmware/README.md for the relay board.
"""

import asyncio

IDLE = "IDLE"
SUPPLY = "SUPPLY"
RECEIVE = "RECEIVE"
MODES = (IDLE, SUPPLY, RECEIVE)


class InterlockError(Exception):
    """A request that would have turned SUPPLY and RECEIVE on together."""


class Relays:
    """Owner of the two relay pins; the only code that writes them."""

    def __init__(self, supply_pin, receive_pin, hw, dead_ms=100):
        self._supply = supply_pin
        self._receive = receive_pin
        self._hw = hw
        self.dead_ms = dead_ms
        self._lock = asyncio.Lock()
        self._gen = 0
        self.mode = IDLE
        self.changed_ms = hw.ticks_ms()
        self.changes = 0  # bumped with every changed_ms, so readers can tell a new change
        self.interlock_faults = 0
        self.off_now()

    def _drive(self, supply_on, receive_on):
        if supply_on and receive_on:
            raise InterlockError("interlock")
        # Turning one on requires the other to read back off right now.
        if supply_on and self._receive.value():
            self._force_off()
            raise InterlockError("interlock")
        if receive_on and self._supply.value():
            self._force_off()
            raise InterlockError("interlock")
        # Off first, then on: a single call never has both on in between.
        if not supply_on:
            self._supply.value(0)
        if not receive_on:
            self._receive.value(0)
        if supply_on:
            self._supply.value(1)
        if receive_on:
            self._receive.value(1)
        if self._supply.value() and self._receive.value():
            self._force_off()
            raise InterlockError("interlock")

    def _force_off(self):
        self.interlock_faults += 1
        self._supply.value(0)
        self._receive.value(0)
        self.mode = IDLE
        self._changed()

    def _changed(self):
        self.changed_ms = self._hw.ticks_ms()
        self.changes += 1

    def off_now(self):
        """Turn both relays off immediately and cancel any pending make.

        Synchronous on purpose: safety trips call it from any task and it
        takes effect before they yield.
        """
        self._gen += 1
        self._supply.value(0)
        self._receive.value(0)
        if self.mode != IDLE:
            self._changed()
        self.mode = IDLE

    def pins(self):
        """The pin levels as read back: ``(supply, receive)``."""
        return self._supply.value(), self._receive.value()

    async def set(self, mode):
        """Switch to ``mode``; True when the relays now are in that mode.

        False means the request was superseded (a newer ``set`` or an
        ``off_now`` arrived before the make); the relays are then in whatever
        state the newer action left them. Raises ``InterlockError`` if the pins
        read back in a state that forbids the make (the relays are off then).
        """
        if mode not in MODES:
            raise ValueError("mode")
        self._gen += 1
        gen = self._gen
        async with self._lock:
            if gen != self._gen:
                return False
            if mode == self.mode:
                return True
            # Break.
            self._supply.value(0)
            self._receive.value(0)
            if self.mode != IDLE:
                self._changed()
            self.mode = IDLE
            if mode == IDLE:
                return True
            await self._hw.sleep_ms(self.dead_ms)
            if gen != self._gen:
                return False
            # Make.
            self._drive(mode == SUPPLY, mode == RECEIVE)
            self.mode = mode
            self._changed()
            return True
