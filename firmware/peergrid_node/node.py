"""The node: sensing, safety, relays and the protocol server in one object.

``Node(config, hw)`` gets its hardware injected (see docs in
``firmware/README.md`` and the hardware contract): relay pins, an I2C bus with
the INA219, an optional watchdog, a millisecond tick source and an awaitable
``sleep_ms``. Every interval (energy integration, lease, timeouts) is measured
with ``hw.ticks_ms``, so the same code runs on the ESP32, under CPython with
fakes and, with simulated time, inside the grid simulator.

Safety lives here, never only on a controller:

* cut-offs checked on every sample: low voltage (SUPPLY), energy budget,
  over-current, stuck relay, sensor fault; the stricter of the command's and
  the configured limits applies;
* the control lease: SUPPLY and RECEIVE hold only while the controller renews
  them; silence drops the node to IDLE;
* sampling every ``active_sample_ms`` (20 ms) while a relay is closed or about
  to close, so a trip lands within a few samples of the crossing, and every
  ``idle_sample_ms`` (250 ms) at rest;
* the hardware watchdog is fed only while the sensor loop runs and the
  sensor has read successfully within the last two seconds.
"""

import asyncio
import sys

from . import FW_VERSION
from .battery import EnergyMeter, soc_pm
from .config import ConfigError, validate
from .ina219 import INA219, SensorError
from .relays import IDLE, RECEIVE, SUPPLY, InterlockError, Relays
from .session import AUTH_DEADLINE_MS, CLOSE_GRACE_MS, Session

try:
    import gc
except ImportError:  # pragma: no cover - both runtimes have gc
    gc = None

_MICROPYTHON = sys.implementation.name == "micropython"

# Readings outside these bounds are not a cell: a loose wire or a bad chip.
PLAUSIBLE_MV = (1500, 5000)
PLAUSIBLE_MA = 3300
# A reading older than this is not "fresh": no data for status, no watchdog.
FRESH_MS = 2000
# Longest gap the energy integration bridges (beyond it nothing is counted).
MAX_GAP_MS = 2000
# Ages saturate here, well inside ticks_diff's +-2**29 ms window.
MAX_AGE_MS = 1 << 28
SUPERVISOR_MS = 200
IDLE_CHUNK_MS = 50

STATE_IDLE = "idle"
STATE_TRIPPED = "tripped"


class Node:
    """One PeerGrid battery node.

    ``config`` is the dict of the node's JSON configuration (validated here;
    a bad value raises ``ConfigError`` naming the field). ``hw`` is the
    injected hardware. ``save``, when given, persists a changed configuration
    (``set_config``); without it changes live in memory only.
    """

    def __init__(self, config, hw, save=None):
        cfg = validate(config)
        if not cfg["uid"]:
            raise ConfigError("uid", "is required")
        self.config = cfg
        self.hw = hw
        self._save = save
        self.uid = cfg["uid"]
        self.fw = getattr(hw, "fw_version", None) or FW_VERSION
        self.reset_cause = getattr(hw, "reset_cause", None) or "unknown"
        self.key = cfg["key"].encode() if cfg["key"] else None
        # A key always wins: bench mode (plain text) only without one.
        self.bench_mode = bool(cfg["bench_mode"]) and self.key is None
        timing = cfg["timing"]
        self.relays = Relays(hw.supply_pin, hw.receive_pin, hw, timing["dead_ms"])
        self.sensor = INA219(hw.i2c, getattr(hw, "ina219_addr", 0x40))
        self.meter = EnergyMeter()
        self.boot_ms = hw.ticks_ms()
        # Long spans (uptime, time since the last relay change) are accumulated
        # from short ticks_diff steps: a single ticks_diff wraps after 6.2 days.
        self._uptime_ms = 0
        self._uptime_mark = self.boot_ms
        self._relay_age_ms = 0
        self._relay_age_mark = self.boot_ms
        self._relay_changes = -1
        self.port = None
        self.sessions = []
        self.controller = None
        self.reading = None
        self.last_good_ms = None
        self.loop_ms = self.boot_ms
        self.trip = None
        self.fault = None
        self._tripped = False
        self._target = IDLE
        self._lease_start = None
        self._lease_ms = 0
        self._eff_limit_mwh = 0
        self._eff_min_mv = 0
        self._eff_lease_s = 0
        self._bad_reads = 0
        self._low_count = 0
        self._oc_count = 0
        self._stuck_count = 0
        self._sample_ms = None
        self._last_push = self.boot_ms
        self._dirty = False
        self._running = False
        self._server = None
        self._tasks = []
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------ properties

    @property
    def mode(self):
        """What the relays are doing: IDLE (also during a dead time), SUPPLY, RECEIVE."""
        return self.relays.mode

    @property
    def state(self):
        """``idle`` / ``supplying`` / ``receiving`` / ``tripped``."""
        if self._tripped:
            return STATE_TRIPPED
        if self.relays.mode == SUPPLY:
            return "supplying"
        if self.relays.mode == RECEIVE:
            return "receiving"
        return STATE_IDLE

    def _fresh_reading(self):
        if self.reading is None or self.last_good_ms is None:
            return None
        if self.hw.ticks_diff(self.hw.ticks_ms(), self.last_good_ms) > FRESH_MS:
            return None
        return self.reading

    def uptime_ms(self):
        """Milliseconds since the node object was created (no wrap-around)."""
        now = self.hw.ticks_ms()
        self._uptime_ms += self.hw.ticks_diff(now, self._uptime_mark)
        self._uptime_mark = now
        return self._uptime_ms

    def _relay_age(self, now):
        """Milliseconds since the relays last changed, saturating at MAX_AGE_MS."""
        if self.relays.changes != self._relay_changes:
            self._relay_changes = self.relays.changes
            self._relay_age_ms = self.hw.ticks_diff(now, self.relays.changed_ms)
        else:
            self._relay_age_ms = min(
                self._relay_age_ms + self.hw.ticks_diff(now, self._relay_age_mark), MAX_AGE_MS
            )
        self._relay_age_mark = now
        return self._relay_age_ms

    def lease_left_s(self):
        """Whole seconds left on the lease (rounded up), 0 when none."""
        if self._lease_start is None:
            return 0
        left = self._lease_ms - self.hw.ticks_diff(self.hw.ticks_ms(), self._lease_start)
        if left <= 0:
            return 0
        return (left + 999) // 1000

    # ------------------------------------------------------------ frames

    def limits_body(self):
        """The configured limits as the protocol names them."""
        lim = self.config["limits"]
        return {
            "limit_mwh": lim["max_mwh"],
            "min_mv": lim["min_mv"],
            "max_ma": lim["max_ma"],
            "max_lease_s": lim["lease_max_s"],
        }

    def status_body(self, rid=None):
        """A ``status`` frame body (``id`` only when answering ``get_status``)."""
        r = self._fresh_reading()
        body = {"t": "status"}
        if rid is not None:
            body["id"] = rid
        body["uid"] = self.uid
        body["mode"] = self.relays.mode
        body["state"] = self.state
        if r is None:
            body["mv"] = None
            body["ma"] = None
            body["mw"] = None
            body["soc"] = None
        else:
            body["mv"] = r.mv
            body["ma"] = r.ma
            body["mw"] = _mw(r.mv, r.ma)
            body["soc"] = soc_pm(r.mv, r.ma, self.config["r_internal_mohm"])
        body["e_out_mwh"] = self.meter.out_mwh
        body["e_in_mwh"] = self.meter.in_mwh
        body["e_session_mwh"] = self.meter.session_mwh
        body["lease_left_s"] = self.lease_left_s()
        body["trip"] = self.trip
        body["rssi"] = self.hw.rssi()
        body["uptime_s"] = self.uptime_ms() // 1000
        body["fw"] = self.fw
        body["lim"] = self.limits_body()
        return body

    def config_body(self, rid=None):
        """A ``config`` frame body."""
        body = {"t": "config"}
        if rid is not None:
            body["id"] = rid
        lim = self.limits_body()
        for k in ("limit_mwh", "min_mv", "max_ma", "max_lease_s"):
            body[k] = lim[k]
        body["push_s"] = self.config["push_s"]
        return body

    def push_status(self):
        """Send a status to every session past authentication."""
        self._dirty = False
        self._last_push = self.hw.ticks_ms()
        if not self.sessions:
            return
        body = self.status_body()
        for s in self.sessions:
            s.push(body)

    def _broadcast(self, body):
        for s in self.sessions:
            s.push(body)

    # ------------------------------------------------------------ commands

    async def command(self, session, mode, rid, lease_s, limit_mwh, min_mv):
        """Execute a validated command; returns the ``ack`` or ``err`` body."""
        if mode == IDLE:
            # IDLE is accepted from every session, always.
            self._end_transfer()
            self._tripped = False
            await self.relays.set(IDLE)
            self._sample(self.hw.ticks_ms())
            self._dirty = True
            return _reply("ack", rid, {"mode": IDLE})
        if self.controller is not None and self.controller is not session:
            return _error(rid, "busy", "another session controls the node")
        if self.fault is not None:
            return _error(rid, "fault", self.fault + " is latched")
        lim = self.config["limits"]
        eff_lease = min(lease_s, lim["lease_max_s"])
        eff_limit = min(limit_mwh, lim["max_mwh"])
        eff_min = max(min_mv, lim["min_mv"])
        now = self.hw.ticks_ms()
        if session is self.controller and self._target == mode:
            # Renewal: new lease from now, new limits; the energy keeps counting.
            self._lease_start = now
            self._lease_ms = eff_lease * 1000
            self._set_effective(eff_limit, eff_min, eff_lease)
            return _ack(rid, mode, eff_lease, eff_limit, eff_min, True)
        r = self._fresh_reading()
        if r is None:
            return _error(rid, "fault", "no fresh sensor reading")
        if mode == SUPPLY and r.mv < eff_min:
            return _error(rid, "low_voltage", "cell at %d mV, below %d mV" % (r.mv, eff_min))
        self.controller = session
        self._target = mode
        self._lease_start = now
        self._lease_ms = eff_lease * 1000
        self._set_effective(eff_limit, eff_min, eff_lease)
        self.meter.start_session(1 if mode == SUPPLY else -1)
        self._reset_counters()
        try:
            done = await self.relays.set(mode)
        except InterlockError:
            self._do_trip("interlock", True)
            return _error(rid, "fault", "interlock")
        if not done or self._target != mode or self.controller is not session:
            return _error(rid, "busy", "superseded by a newer command or a trip")
        # A first reading on the new path, so the ack's status is current.
        self._sample(self.hw.ticks_ms())
        if self._target != mode:
            return _error(rid, "busy", "superseded by a trip")
        self._tripped = False
        self._dirty = True
        return _ack(rid, mode, eff_lease, eff_limit, eff_min, False)

    def _set_effective(self, limit_mwh, min_mv, lease_s):
        self._eff_limit_mwh = limit_mwh
        self._eff_min_mv = min_mv
        self._eff_lease_s = lease_s

    def _end_transfer(self):
        self._target = IDLE
        self._lease_start = None
        self._lease_ms = 0
        self.controller = None

    def _reset_counters(self):
        self._low_count = 0
        self._oc_count = 0
        self._stuck_count = 0

    def update_config(self, update, rid=None):
        """Apply a validated ``set_config``; returns the ``config`` or ``err`` body."""
        new = {}
        for k in self.config:
            new[k] = self.config[k]
        limits = {}
        for k in self.config["limits"]:
            limits[k] = self.config["limits"][k]
        new["limits"] = limits
        names = {
            "limit_mwh": "max_mwh",
            "min_mv": "min_mv",
            "max_ma": "max_ma",
            "max_lease_s": "lease_max_s",
        }
        for k in update:
            if k == "push_s":
                new["push_s"] = update[k]
            else:
                limits[names[k]] = update[k]
        try:
            new = validate(new)
            if self._save is not None:
                self._save(new)
        except Exception:
            return _error(rid, "internal", "could not store the configuration")
        self.config = new
        # A tighter limit applies to the running transfer at once; a looser
        # one waits for the next command.
        if self._target != IDLE:
            self._eff_limit_mwh = min(self._eff_limit_mwh, limits["max_mwh"])
            self._eff_min_mv = max(self._eff_min_mv, limits["min_mv"])
        self._dirty = True
        return self.config_body(rid)

    def session_closed(self, session):
        """A connection ended: a controller leaving mid-transfer stops it."""
        if session in self.sessions:
            self.sessions.remove(session)
        if self.controller is session:
            if self._target != IDLE or self.relays.mode != IDLE:
                self._do_trip("controller_lost")
            else:
                self.controller = None

    # ------------------------------------------------------------ safety

    def _do_trip(self, reason, latch=False):
        """Open every relay now, record the reason, tell every session."""
        stopped = self._target if self._target != IDLE else self.relays.mode
        self.relays.off_now()
        self._end_transfer()
        self._reset_counters()
        self._tripped = True
        self.trip = reason
        if latch:
            self.fault = reason
        r = self.reading
        self._broadcast(
            {
                "t": "event",
                "ev": "trip",
                "reason": reason,
                "mode": stopped,
                "mv": r.mv if r is not None and self.fault != "sensor_fault" else None,
                "e_session_mwh": self.meter.session_mwh,
            }
        )
        self.push_status()

    def _check_lease(self, now):
        if self._lease_start is None:
            return
        if self.hw.ticks_diff(now, self._lease_start) >= self._lease_ms:
            self._do_trip("lease_expired")

    def _sample(self, now):
        """Read the sensor once and apply every measurement-based rule."""
        try:
            r = self.sensor.read()
        except (OSError, SensorError):
            r = False
        if r is None:
            return  # re-calibrated after a chip reset; the next sample is valid
        if (
            r is False
            or not (PLAUSIBLE_MV[0] <= r.mv <= PLAUSIBLE_MV[1])
            or (abs(r.ma) > PLAUSIBLE_MA)
        ):
            self._bad_reads += 1
            faults = self.config["faults"]
            if self._bad_reads >= faults["sensor_fault_samples"] and self.fault != "sensor_fault":
                self._do_trip("sensor_fault", True)
                # No stale value may pass for a current one, however long this lasts.
                self.reading = None
                self.last_good_ms = None
            return
        self._bad_reads = 0
        if self.fault == "sensor_fault":
            # Latched only until the sensor reads again.
            self.fault = None
            self._dirty = True
        if self._sample_ms is not None:
            gap = self.hw.ticks_diff(now, self._sample_ms)
            if gap > MAX_GAP_MS:
                self.meter.reset_sample()
                gap = 0
        else:
            gap = 0
        self.meter.add(_mw(r.mv, r.ma), gap)
        self._sample_ms = now
        self.reading = r
        self.last_good_ms = now
        self._apply_rules(r, now)

    def _apply_rules(self, r, now):
        mode = self.relays.mode
        faults = self.config["faults"]
        lim = self.config["limits"]
        if mode != IDLE and abs(r.ma) > lim["max_ma"]:
            self._oc_count += 1
            if self._oc_count >= faults["over_current_samples"]:
                self._do_trip("over_current")
                return
        else:
            self._oc_count = 0
        if mode == SUPPLY and r.mv < self._eff_min_mv:
            self._low_count += 1
            if self._low_count >= faults["low_voltage_samples"]:
                self._do_trip("low_voltage")
                return
        else:
            self._low_count = 0
        if mode != IDLE and self.meter.session_mwh >= self._eff_limit_mwh:
            self._do_trip("energy_limit")
            return
        if self._stuck(mode, r.ma, now, faults):
            self._stuck_count += 1
            if self._stuck_count >= faults["stuck_samples"] and self.fault != "stuck_relay":
                self._do_trip("stuck_relay", True)
        else:
            self._stuck_count = 0

    def _stuck(self, mode, ma, now, faults):
        """True when the current contradicts what the relays were told to do."""
        if mode != self._target:
            return False  # a make is pending: nothing is settled yet
        since = self._relay_age(now)
        if since < faults["settle_ms"]:
            return False
        limit = faults["stuck_ma"]
        if mode == IDLE:
            return abs(ma) > limit
        if mode == SUPPLY:
            if ma < -limit:
                return True  # charging while supplying: RECEIVE path closed
            return (
                faults["supply_min_ma"] > 0
                and since >= faults["supply_settle_ms"]
                and ma < faults["supply_min_ma"]
            )
        return ma > limit  # discharging while receiving: SUPPLY path closed

    # ------------------------------------------------------------ tasks

    async def _sensor_loop(self):
        timing = self.config["timing"]
        while self._running:
            now = self.hw.ticks_ms()
            self.loop_ms = now
            try:
                self.uptime_ms()
                self._relay_age(now)
                self._sample(now)
                self._check_lease(now)
                if self._dirty or self.hw.ticks_diff(now, self._last_push) >= (
                    self.config["push_s"] * 1000
                ):
                    self.push_status()
            except Exception:
                # A bug must not leave a relay closed; the watchdog, no longer
                # fed, then resets the node.
                self.relays.off_now()
                raise
            if self._target != IDLE or self.relays.mode != IDLE:
                await self.hw.sleep_ms(timing["active_sample_ms"])
                continue
            waited = 0
            idle_ms = timing["idle_sample_ms"]
            while waited < idle_ms and self._target == IDLE and self._running:
                step = min(IDLE_CHUNK_MS, idle_ms - waited)
                await self.hw.sleep_ms(step)
                waited += step

    def healthy(self, now):
        """True while the sensor loop runs and the sensor read recently."""
        if self.hw.ticks_diff(now, self.loop_ms) > FRESH_MS:
            return False
        if self.last_good_ms is None:
            return False
        return self.hw.ticks_diff(now, self.last_good_ms) <= FRESH_MS

    async def _supervisor(self):
        collect = 0
        while self._running:
            now = self.hw.ticks_ms()
            # The lease is enforced here too, in case the sensor loop stalls.
            self._check_lease(now)
            if self.hw.wdt is not None and self.healthy(now):
                self.hw.wdt.feed()
            self._reap(now)
            collect += 1
            if _MICROPYTHON and gc is not None and collect >= 5:
                collect = 0
                gc.collect()
            await self.hw.sleep_ms(SUPERVISOR_MS)

    def _reap(self, now):
        idle_ms = self.config["idle_s"] * 1000
        for s in list(self.sessions):
            if s.closing:
                if (
                    s.closing_ms is not None
                    and self.hw.ticks_diff(now, s.closing_ms) > CLOSE_GRACE_MS
                ):
                    s.abort()
                continue
            if not s.authed:
                if self.hw.ticks_diff(now, s.opened_ms) > AUTH_DEADLINE_MS:
                    s.expire()
            elif self.hw.ticks_diff(now, s.last_rx_ms) > idle_ms:
                s.expire()

    async def _accept(self, reader, writer):
        if not self._running or len(self.sessions) >= self.config["max_sessions"]:
            # Over the session limit: close right after accept.
            try:
                writer.close()
                await writer.wait_closed()
            except Exception:
                pass
            return
        session = Session(self, reader, writer)
        self.sessions.append(session)
        await session.serve()

    async def _listen(self):
        host = self.config["host"]
        port = self.config["port"]
        if port or not _MICROPYTHON:
            server = await asyncio.start_server(self._accept, host, port, backlog=4)
            if not port:
                port = server.sockets[0].getsockname()[1]
            return server, port
        # MicroPython sockets have no getsockname(): pick a free port from the
        # ephemeral range ourselves so that it is known.
        err = None
        for _ in range(32):
            rnd = self.hw.urandom(2)
            candidate = 49152 + ((rnd[0] << 8) | rnd[1]) % 16384
            try:
                server = await asyncio.start_server(self._accept, host, candidate, backlog=4)
                return server, candidate
            except OSError as e:
                err = e
        raise err

    async def run(self):
        """Sense, protect and serve until ``stop()``; the relays end open."""
        self.relays.off_now()
        self._running = True
        try:
            try:
                self.sensor.configure()
            except OSError:
                pass  # counted as bad reads by the sensor loop
            self._server, self.port = await self._listen()
            self._tasks = [
                asyncio.create_task(self._sensor_loop()),
                asyncio.create_task(self._supervisor()),
            ]
            await self._stopped.wait()
        finally:
            self._running = False
            self.relays.off_now()
            for t in self._tasks:
                t.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            for s in list(self.sessions):
                s.abort()
            pending = [s.task for s in self.sessions if s.task is not None]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None

    def stop(self):
        """Stop now: relays open immediately, server and sessions closed."""
        self._running = False
        self.relays.off_now()
        self._end_transfer()
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions):
            s.abort()
        self._stopped.set()


def _mw(mv, ma):
    """Signed power in mW from mV and mA (rounded toward zero)."""
    p = mv * ma
    return p // 1000 if p >= 0 else -((-p) // 1000)


def _reply(t, rid, fields):
    body = {"t": t}
    if rid is not None:
        body["id"] = rid
    for k in fields:
        body[k] = fields[k]
    return body


def _ack(rid, mode, lease_s, limit_mwh, min_mv, renewed):
    body = {"t": "ack"}
    if rid is not None:
        body["id"] = rid
    body["mode"] = mode
    body["lease_s"] = lease_s
    body["limit_mwh"] = limit_mwh
    body["min_mv"] = min_mv
    body["renewed"] = renewed
    return body


def _error(rid, code, msg):
    body = {"t": "err"}
    if rid is not None:
        body["id"] = rid
    body["code"] = code
    body["msg"] = msg[:80]
    return body
