"""Wi-Fi station keeper (MicroPython only).

The host name ``peergrid-<uid>`` is set before the interface is activated:
the ESP32 sends it in DHCP and answers it over mDNS (``peergrid-<uid>.local``).
The keeper never blocks the node: safety does not depend on the network, the
control lease drops the relays when the controller falls silent.
"""

import asyncio

import network

from .config import hostname

RETRY_MIN_MS = 1000
RETRY_MAX_MS = 60000
POLL_MS = 1000


def start(config):
    """Set the host name, activate the station interface and start connecting."""
    name = hostname(config["uid"])
    try:
        network.hostname(name)
    except Exception:
        pass  # older firmware: the default host name stays
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    try:
        wlan.config(pm=wlan.PM_NONE)  # no power save: command latency matters more
    except Exception:
        pass
    ssid = config["wifi"]["ssid"]
    if ssid and not wlan.isconnected():
        try:
            wlan.connect(ssid, config["wifi"]["password"])
        except OSError:
            pass
    return wlan


async def keep(wlan, config):
    """Reconnect with capped exponential backoff whenever the link drops."""
    ssid = config["wifi"]["ssid"]
    if not ssid:
        return
    backoff = RETRY_MIN_MS
    while True:
        if wlan.isconnected():
            backoff = RETRY_MIN_MS
            await asyncio.sleep_ms(POLL_MS)
            continue
        try:
            wlan.disconnect()
            wlan.connect(ssid, config["wifi"]["password"])
        except OSError:
            pass
        await asyncio.sleep_ms(backoff)
        backoff = min(backoff * 2, RETRY_MAX_MS)
