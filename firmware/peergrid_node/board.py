"""The ESP32 hardware object handed to ``Node`` (MicroPython only).

Pins: SUPPLY relay on GPIO 26, RECEIVE relay on GPIO 25, INA219 on I2C bus 0
with SCL on GPIO 22 and SDA on GPIO 21. The bus is always built with explicit
pins: ``I2C(1)`` without pins defaults to SCL 25 / SDA 26 on the ESP32, which
are exactly the relay pins.
"""

import asyncio
import os
import time

import machine
from machine import I2C, Pin

from . import FW_VERSION

SUPPLY_GPIO = 26
RECEIVE_GPIO = 25
I2C_ID = 0
I2C_SCL_GPIO = 22
I2C_SDA_GPIO = 21
I2C_FREQ = 400000
INA219_ADDR = 0x40


def reset_cause():
    """The last reset cause in the protocol's words (``hello.reset``)."""
    names = (
        ("PWRON_RESET", "power_on"),
        ("HARD_RESET", "hard"),
        ("WDT_RESET", "wdt"),
        ("DEEPSLEEP_RESET", "deepsleep"),
        ("SOFT_RESET", "soft"),
        ("BROWNOUT_RESET", "brownout"),
    )
    try:
        cause = machine.reset_cause()
    except Exception:
        return "unknown"
    for attr, name in names:
        if getattr(machine, attr, None) == cause:
            return name
    return "unknown"


def default_uid():
    """A stable uid from the chip's id (its MAC): ``pg-`` and 6 hex digits."""
    try:
        raw = machine.unique_id()
    except Exception:
        raw = os.urandom(3)
    text = ""
    for b in raw[-3:]:
        text += "%02x" % b
    return "pg-" + text


class Board:
    """Real hardware: relay pins, INA219 bus, watchdog, clock, RNG, Wi-Fi RSSI."""

    def __init__(self, watchdog_ms=0, wlan=None):
        # boot.py already drove both pins low; keep them low while re-creating.
        self.supply_pin = Pin(SUPPLY_GPIO, Pin.OUT, value=0)
        self.receive_pin = Pin(RECEIVE_GPIO, Pin.OUT, value=0)
        self.i2c = I2C(I2C_ID, scl=Pin(I2C_SCL_GPIO), sda=Pin(I2C_SDA_GPIO), freq=I2C_FREQ)
        self.ina219_addr = INA219_ADDR
        self.fw_version = FW_VERSION
        self.reset_cause = reset_cause()
        self._wlan = wlan
        # Started last: it cannot be stopped, and the node feeds it from here on.
        self.wdt = machine.WDT(timeout=watchdog_ms) if watchdog_ms else None

    @staticmethod
    def ticks_ms():
        return time.ticks_ms()

    @staticmethod
    def ticks_diff(a, b):
        return time.ticks_diff(a, b)

    @staticmethod
    def ticks_add(a, delta):
        return time.ticks_add(a, delta)

    @staticmethod
    def sleep_ms(ms):
        return asyncio.sleep_ms(ms)

    @staticmethod
    def urandom(n):
        return os.urandom(n)

    def rssi(self):
        wlan = self._wlan
        if wlan is None:
            return None
        try:
            if not wlan.isconnected():
                return None
            return wlan.status("rssi")
        except Exception:
            return None
