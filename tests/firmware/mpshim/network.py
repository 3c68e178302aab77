"""A ``network`` module for the MicroPython unix port: a Wi-Fi link that is up."""

STA_IF = 0
_hostname = ["espressif"]


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name
    print("peergrid-shim: hostname", name)  # noqa: T201 - read by the test
    return None


class WLAN:
    PM_NONE = 0

    def __init__(self, interface):
        self._active = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        return None

    def config(self, **kwargs):
        return None

    def isconnected(self):
        return True

    def connect(self, ssid, password):
        return None

    def disconnect(self):
        return None

    def status(self, what=None):
        if what == "rssi":
            return -58
        return 1010
