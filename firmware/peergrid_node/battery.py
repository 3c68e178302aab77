"""Cell state of charge and energy counters, in integer wire units.

The state of charge comes from an open-circuit-voltage table for an NMC 18650
applied to an IR-compensated voltage (``V_oc = V + I * R``, discharge current
positive): a linear 3.2-4.2 V map reads several points wrong at rest and 20 to
30 points low under load.

Energy is integrated per direction with the trapezoid rule over the measured
interval between samples. The counters keep a remainder in mW*ms so that
nothing is lost to rounding and every quantity stays a small integer on the
ESP32 (no float accumulation, no big-integer allocation).
"""

# (SoC per mille, OCV mV), both strictly increasing.
OCV_TABLE = (
    (0, 2540),
    (30, 3010),
    (50, 3150),
    (100, 3270),
    (150, 3350),
    (200, 3420),
    (250, 3500),
    (300, 3560),
    (350, 3610),
    (400, 3660),
    (450, 3710),
    (500, 3760),
    (550, 3800),
    (600, 3840),
    (650, 3880),
    (700, 3920),
    (750, 3980),
    (800, 4040),
    (850, 4070),
    (900, 4090),
    (950, 4110),
    (1000, 4175),
)

MS_PER_HOUR = 3600000


def soc_pm(mv, ma, r_mohm=50):
    """State of charge in per mille from the cell-side voltage ``mv`` and cell ``ma``.

    ``mv`` is bus + shunt voltage, measured on the cell's side of the 0.1 ohm
    shunt, so ``r_mohm`` is only what lies between the cell's open-circuit
    voltage and that point: the cell itself, its holder and protection board
    (about 50 mOhm), not the shunt.
    """
    ocv = mv + (ma * r_mohm) // 1000
    if ocv <= OCV_TABLE[0][1]:
        return 0
    prev_soc, prev_mv = OCV_TABLE[0]
    for soc, table_mv in OCV_TABLE[1:]:
        if ocv <= table_mv:
            return prev_soc + (soc - prev_soc) * (ocv - prev_mv) // (table_mv - prev_mv)
        prev_soc, prev_mv = soc, table_mv
    return 1000


class EnergyMeter:
    """Monotonic energy counters: ``out_mwh`` (discharge) and ``in_mwh`` (charge).

    ``session_mwh`` counts the energy of the running transfer in its own
    direction and is reset by ``start_session``.
    """

    def __init__(self):
        self.out_mwh = 0
        self.in_mwh = 0
        self._out_rem = 0  # mW*ms not yet worth a whole mWh
        self._in_rem = 0
        self.session_mwh = 0
        self._session_rem = 0
        self._session_dir = 0  # +1 out, -1 in, 0 none
        self._last_mw = None

    def start_session(self, direction):
        """Start counting a transfer: ``direction`` +1 (out), -1 (in) or 0."""
        self.session_mwh = 0
        self._session_rem = 0
        self._session_dir = direction

    def reset_sample(self):
        """Forget the previous sample (after a gap in the readings)."""
        self._last_mw = None

    def add(self, mw, dt_ms):
        """Account the interval ``dt_ms`` that ends with signed power ``mw``.

        Positive power leaves the cell. The first sample after a gap only
        primes the trapezoid.
        """
        last = self._last_mw
        self._last_mw = mw
        if last is None or dt_ms <= 0:
            return
        # Trapezoid over the interval, in mW*ms (halved once at the end).
        area2 = (last + mw) * dt_ms
        if area2 >= 0:
            self._out_rem += area2
            whole = self._out_rem // (2 * MS_PER_HOUR)
            self.out_mwh += whole
            self._out_rem -= whole * 2 * MS_PER_HOUR
            if self._session_dir > 0:
                self._session_rem += area2
        else:
            self._in_rem -= area2
            whole = self._in_rem // (2 * MS_PER_HOUR)
            self.in_mwh += whole
            self._in_rem -= whole * 2 * MS_PER_HOUR
            if self._session_dir < 0:
                self._session_rem -= area2
        if self._session_rem >= 2 * MS_PER_HOUR:
            whole = self._session_rem // (2 * MS_PER_HOUR)
            self.session_mwh += whole
            self._session_rem -= whole * 2 * MS_PER_HOUR
