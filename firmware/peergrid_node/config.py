"""The node's persistent JSON configuration: defaults, validation, atomic save.

The file lives at ``/config.json`` on the ESP32's LittleFS and is written
atomically: the new content goes to ``config.json.tmp`` first and replaces the
old file with ``os.rename`` (atomic on LittleFS and POSIX), so a power cut
leaves either the old or the new file, never a torn one.

``validate`` is strict: it returns a complete, normalised copy or raises
``ConfigError`` naming the offending field and changes nothing. ``load`` is
forgiving because a node must come up even with a damaged file: a field that
fails validation falls back to its default and is listed in the returned
problems, which ``main.py`` prints on the console.
"""

import json
import os

CONFIG_PATH = "config.json"
SCHEMA_VERSION = 1

DEFAULTS = {
    "version": SCHEMA_VERSION,
    "uid": "",
    "key": "",
    "bench_mode": False,
    "host": "0.0.0.0",
    "port": 7420,
    "wifi": {"ssid": "", "password": ""},
    "limits": {
        "min_mv": 3300,
        "max_mwh": 10000,
        "max_ma": 2500,
        "lease_max_s": 120,
    },
    "push_s": 5,
    "idle_s": 30,
    "max_sessions": 3,
    "timing": {
        "dead_ms": 100,
        "active_sample_ms": 20,
        "idle_sample_ms": 250,
    },
    "faults": {
        "low_voltage_samples": 3,
        "over_current_samples": 2,
        "sensor_fault_samples": 3,
        "stuck_samples": 3,
        "stuck_ma": 200,
        "settle_ms": 300,
        "supply_min_ma": 0,
        "supply_settle_ms": 3000,
    },
    "r_internal_mohm": 50,
    "watchdog_ms": 8000,
}

# (section, key) -> (kind, low, high). Kinds: int, bool, str, uid, key.
_RULES = {
    ("", "version"): ("int", 1, SCHEMA_VERSION),
    ("", "uid"): ("uid", 0, 32),
    ("", "key"): ("key", 16, 64),
    ("", "bench_mode"): ("bool", 0, 0),
    ("", "host"): ("str", 1, 64),
    ("", "port"): ("int", 0, 65535),
    ("wifi", "ssid"): ("str", 0, 32),
    ("wifi", "password"): ("str", 0, 64),
    # The same ranges as the protocol's set_config (docs/protocol.md 5.6).
    ("limits", "min_mv"): ("int", 3000, 4200),
    ("limits", "max_mwh"): ("int", 1, 100000),
    ("limits", "max_ma"): ("int", 100, 3200),
    ("limits", "lease_max_s"): ("int", 1, 3600),
    ("", "push_s"): ("int", 1, 60),
    ("", "idle_s"): ("int", 5, 3600),
    ("", "max_sessions"): ("int", 1, 3),
    ("timing", "dead_ms"): ("int", 20, 1000),
    ("timing", "active_sample_ms"): ("int", 5, 50),
    ("timing", "idle_sample_ms"): ("int", 50, 2000),
    ("faults", "low_voltage_samples"): ("int", 1, 5),
    ("faults", "over_current_samples"): ("int", 1, 5),
    ("faults", "sensor_fault_samples"): ("int", 1, 20),
    ("faults", "stuck_samples"): ("int", 1, 20),
    ("faults", "stuck_ma"): ("int", 20, 3200),
    ("faults", "settle_ms"): ("int", 0, 30000),
    ("faults", "supply_min_ma"): ("int", 0, 1000),
    ("faults", "supply_settle_ms"): ("int", 100, 60000),
    ("", "r_internal_mohm"): ("int", 0, 1000),
    ("", "watchdog_ms"): ("int", 0, 60000),
}

_UID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


class ConfigError(ValueError):
    """A configuration value that fails validation; ``field`` names it."""

    def __init__(self, field, message):
        super().__init__(field + ": " + message)
        self.field = field
        self.message = message


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _check(field, rule, value):
    kind, low, high = rule
    if kind == "bool":
        if value is not True and value is not False:
            raise ConfigError(field, "must be true or false")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, "must be an integer")
        if value < low or value > high:
            raise ConfigError(field, "must be between %d and %d" % (low, high))
        return value
    if not isinstance(value, str):
        raise ConfigError(field, "must be a string")
    if kind == "key":
        # The key is text; its UTF-8 bytes are the HMAC key. Empty = no key.
        size = len(value.encode())
        if size and (size < low or size > high):
            raise ConfigError(field, "must be %d to %d bytes (or empty)" % (low, high))
        return value
    if len(value) < low or len(value) > high:
        raise ConfigError(field, "length must be between %d and %d" % (low, high))
    if kind == "uid":
        for ch in value:
            if ch not in _UID_CHARS:
                raise ConfigError(field, "only letters, digits, '-' and '_'")
    return value


def _field(section, key):
    return key if not section else section + "." + key


def _merge(raw, strict, problems):
    if not isinstance(raw, dict):
        if strict:
            raise ConfigError("config", "must be a JSON object")
        problems.append("config: not a JSON object, using defaults")
        raw = {}
    out = _copy(DEFAULTS)
    for section_key, value in raw.items():
        if isinstance(out.get(section_key), dict):
            if not isinstance(value, dict):
                if strict:
                    raise ConfigError(section_key, "must be an object")
                problems.append(section_key + ": not an object, using defaults")
                continue
            for key, item in value.items():
                rule = _RULES.get((section_key, key))
                if rule is None:
                    # Unknown keys are kept (a newer firmware may use them)
                    # but reported, so that a misspelt limit is noticed.
                    problems.append(_field(section_key, key) + ": unknown key, not used")
                    out[section_key][key] = item
                    continue
                try:
                    out[section_key][key] = _check(_field(section_key, key), rule, item)
                except ConfigError as err:
                    if strict:
                        raise
                    problems.append(str(err) + ", using default")
            continue
        rule = _RULES.get(("", section_key))
        if rule is None:
            problems.append(section_key + ": unknown key, not used")
            out[section_key] = value
            continue
        try:
            out[section_key] = _check(section_key, rule, value)
        except ConfigError as err:
            if strict:
                raise
            problems.append(str(err) + ", using default")
    if out["watchdog_ms"] and out["watchdog_ms"] < 1000:
        # The ESP32's WDT cannot be shorter than one second.
        if strict:
            raise ConfigError("watchdog_ms", "must be 0 (off) or at least 1000")
        problems.append("watchdog_ms: below 1000, using default")
        out["watchdog_ms"] = DEFAULTS["watchdog_ms"]
    return out


def validate(raw):
    """Return the complete, normalised configuration or raise ``ConfigError``."""
    return _merge(raw, True, [])


def merge_defaults(raw):
    """Forgiving validation: ``(config, problems)``; bad fields take defaults."""
    problems = []
    return _merge(raw, False, problems), problems


def load(path=CONFIG_PATH):
    """Read and validate ``path``: ``(config, problems)``; never raises.

    A missing or unreadable file gives the defaults (with a problem noted).
    """
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        return merge_defaults({})[0], [path + ": missing, using defaults"]
    except ValueError:
        return merge_defaults({})[0], [path + ": not valid JSON, using defaults"]
    return merge_defaults(raw)


def save(config, path=CONFIG_PATH):
    """Validate ``config`` and write it atomically; returns the saved copy.

    Raises ``ConfigError`` (and writes nothing) when a field is invalid.
    """
    clean = validate(config)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(clean))
    # Replaces the old file in one step on LittleFS (the ESP32 default) and POSIX.
    os.rename(tmp, path)
    return clean


def hostname(uid):
    """The node's DHCP/mDNS host name, ``peergrid-<uid>`` (at most 32 characters).

    Host names allow letters, digits and '-' only, so '_' becomes '-'.
    """
    return ("peergrid-" + uid.lower().replace("_", "-"))[:32]
