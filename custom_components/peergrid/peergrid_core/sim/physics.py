"""Electrical model of a grid of PeerGrid nodes sharing one 5 V bus.

Everything here is pure and synchronous: a :class:`GridPhysics` advances by
:meth:`GridPhysics.step` with a fixed time step and is deterministic for a
given sequence of relay positions and faults. The asynchronous runner in
:mod:`.grid` drives it from a background task; tests drive it directly.

Model of one node (sign convention: cell current positive = discharge)::

    cell chemistry ── R0 ── R1||C1 ── terminal ──┬── ESP32 (constant power)
    OCV(SoC)                                     ├── SUPPLY relay ── boost ──┐
                                                 └── RECEIVE relay ─ TP4056 ─┤
                                                                    5 V bus ─┘

* The cell is a first-order Thevenin circuit: ``V = OCV(SoC) - I*R0 - V1``
  with ``dV1/dt = I/C1 - V1/(R1*C1)``. The OCV curve is the core's single
  :class:`~peergrid_core.soc.OcvCurve`; R0 is the whole in-circuit resistance
  (cell, INA219 shunt, holder, protection FETs, wiring).
* The boost converter draws ``P_out / efficiency + P_quiescent`` from the
  terminal as soon as its relay is closed; it browns out (and the bus sags)
  when its cell cannot deliver that power, when its input current limit is
  exceeded or when the terminal falls below its under-voltage lockout.
* The TP4056 charges constant-current, then constant-voltage at 4.2 V, with a
  tenth of the current below 2.9 V (trickle), terminates at a tenth of the
  set current in the CV phase and restarts below 4.05 V. It is a linear
  regulator, so its input current equals its output current and its
  efficiency is ``V_cell / V_bus``.
* The ESP32 draws a constant power from its own cell while the firmware runs,
  so the node's INA219 sees it too.

Energy is booked per node and per step in joules (:class:`EnergyCounters`);
the books balance exactly: what the cells release equals what they absorb
plus every loss (ohmic, polarisation, converter, charger, ESP32, faults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
import math

from ..errors import PeerGridValidationError
from ..soc import DEFAULT_OCV_CURVE, OcvCurve

SECONDS_PER_HOUR = 3600.0
JOULES_PER_WH = 3600.0


class Relay(StrEnum):
    """The two relays of a node."""

    SUPPLY = "supply"
    """Connects the boost converter: the cell feeds the bus."""

    RECEIVE = "receive"
    """Connects the TP4056 charger: the bus charges the cell."""


class PhysicalMode(StrEnum):
    """What the relay contacts actually do, whatever the firmware commanded."""

    IDLE = "IDLE"
    SUPPLY = "SUPPLY"
    RECEIVE = "RECEIVE"
    BOTH = "BOTH"
    """Both contacts closed: only possible with a welded (stuck) relay."""


class ChargerState(StrEnum):
    """State of a node's TP4056 charger."""

    DISCONNECTED = "disconnected"
    """RECEIVE contact open."""

    NO_INPUT = "no_input"
    """Contact closed but the bus is dead (no supplier, or it browned out)."""

    TRICKLE = "trickle"
    CONSTANT_CURRENT = "cc"
    CONSTANT_VOLTAGE = "cv"
    TERMINATED = "terminated"
    """Charge finished (C/10 in the CV phase); waits for the recharge threshold."""


class ConverterState(StrEnum):
    """State of a node's boost converter."""

    DISCONNECTED = "disconnected"
    """SUPPLY contact open."""

    RUNNING = "running"

    BROWNOUT = "brownout"
    """The cell cannot carry the converter's load: its output has collapsed."""


def _require(field_name: str, ok: bool, message: str) -> None:
    if not ok:
        raise PeerGridValidationError(field_name, message)


def _finite(value: float) -> bool:
    return math.isfinite(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class CellParams:
    """Electrical parameters of one 18650 cell in its node."""

    capacity_ah: float = 2.5
    """Rated capacity in ampere-hours (18650 cells: 2.0-3.5 Ah)."""

    r0_ohms: float = 0.15
    """Series resistance in circuit: cell, 0.1 ohm shunt, holder, FETs, wires."""

    r1_ohms: float = 0.03
    """Polarisation resistance of the RC branch."""

    c1_farads: float = 1000.0
    """Polarisation capacitance (R1*C1 = 30 s relaxation time)."""

    curve: OcvCurve = DEFAULT_OCV_CURVE
    """Open-circuit voltage against state of charge."""

    cutoff_volts: float = 2.5
    """The protection board disconnects the load below this terminal voltage."""

    def __post_init__(self) -> None:
        """Reject parameters that make the model meaningless."""
        _require(
            "capacity_ah",
            _finite(self.capacity_ah) and 0.05 <= self.capacity_ah <= 100.0,
            f"{self.capacity_ah} Ah is outside 0.05..100",
        )
        _require(
            "r0_ohms",
            _finite(self.r0_ohms) and 0.001 <= self.r0_ohms <= 2.0,
            f"{self.r0_ohms} ohm is outside 0.001..2",
        )
        _require(
            "r1_ohms",
            _finite(self.r1_ohms) and 0.0 < self.r1_ohms <= 2.0,
            f"{self.r1_ohms} ohm is outside 0..2",
        )
        _require(
            "cutoff_volts",
            _finite(self.cutoff_volts) and 0.0 <= self.cutoff_volts <= 3.5,
            f"{self.cutoff_volts} V is outside 0..3.5",
        )
        _require(
            "c1_farads",
            _finite(self.c1_farads) and 0.0 < self.c1_farads <= 1e6,
            f"{self.c1_farads} F is outside 0..1e6",
        )

    @property
    def charge_coulombs(self) -> float:
        """Capacity in coulombs."""
        return self.capacity_ah * SECONDS_PER_HOUR

    @property
    def tau_seconds(self) -> float:
        """Relaxation time constant of the polarisation branch."""
        return self.r1_ohms * self.c1_farads


@dataclass(frozen=True, slots=True, kw_only=True)
class BoostParams:
    """The SUPPLY path: a boost converter from the cell to the 5 V bus."""

    efficiency: float = 0.78
    """Power conversion efficiency (the XL6019 modules measured 75-80 %)."""

    quiescent_w: float = 0.03
    """Power drawn from the cell with no load on the bus."""

    max_input_amps: float = 3.0
    """Switch-current limit on the cell side; above it the output collapses."""

    undervoltage_volts: float = 2.7
    """Input under-voltage lockout: below it the converter stops."""

    def __post_init__(self) -> None:
        """Reject parameters that make the model meaningless."""
        _require(
            "efficiency",
            _finite(self.efficiency) and 0.1 <= self.efficiency <= 1.0,
            f"{self.efficiency} is outside 0.1..1",
        )
        _require(
            "quiescent_w",
            _finite(self.quiescent_w) and 0.0 <= self.quiescent_w <= 1.0,
            f"{self.quiescent_w} W is outside 0..1",
        )
        _require(
            "max_input_amps",
            _finite(self.max_input_amps) and 0.1 <= self.max_input_amps <= 20.0,
            f"{self.max_input_amps} A is outside 0.1..20",
        )
        _require(
            "undervoltage_volts",
            _finite(self.undervoltage_volts) and 0.0 <= self.undervoltage_volts <= 4.0,
            f"{self.undervoltage_volts} V is outside 0..4",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerParams:
    """The RECEIVE path: a TP4056 linear Li-ion charger fed from the bus."""

    charge_amps: float = 1.0
    """Programmed constant current (1.2 kohm R_PROG gives the module's 1 A)."""

    float_volts: float = 4.2
    """Constant-voltage set point."""

    trickle_below_volts: float = 2.9
    """Below this cell voltage the charger uses a tenth of the current."""

    termination_ratio: float = 0.1
    """Charge ends when the CV current falls below this share of ``charge_amps``."""

    recharge_volts: float = 4.05
    """A terminated charge restarts when the cell sags below this voltage."""

    dropout_volts: float = 0.1
    """Smallest bus-to-cell headroom at which the linear charger still conducts."""

    def __post_init__(self) -> None:
        """Reject parameters that make the model meaningless."""
        _require(
            "charge_amps",
            _finite(self.charge_amps) and 0.05 <= self.charge_amps <= 1.5,
            f"{self.charge_amps} A is outside 0.05..1.5",
        )
        _require(
            "float_volts",
            _finite(self.float_volts) and 3.5 <= self.float_volts <= 4.4,
            f"{self.float_volts} V is outside 3.5..4.4",
        )
        _require(
            "trickle_below_volts",
            _finite(self.trickle_below_volts)
            and 0.0 <= self.trickle_below_volts < self.float_volts,
            f"{self.trickle_below_volts} V must be below the float voltage",
        )
        _require(
            "termination_ratio",
            _finite(self.termination_ratio) and 0.0 < self.termination_ratio < 1.0,
            f"{self.termination_ratio} is outside 0..1",
        )
        _require(
            "recharge_volts",
            _finite(self.recharge_volts)
            and self.trickle_below_volts < self.recharge_volts < self.float_volts,
            f"{self.recharge_volts} V must lie between the trickle and float voltages",
        )
        _require(
            "dropout_volts",
            _finite(self.dropout_volts) and 0.0 <= self.dropout_volts <= 2.0,
            f"{self.dropout_volts} V is outside 0..2",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeParams:
    """Everything physical about one node."""

    cell: CellParams = field(default_factory=CellParams)
    boost: BoostParams = field(default_factory=BoostParams)
    charger: ChargerParams = field(default_factory=ChargerParams)

    overhead_w: float = 0.35
    """ESP32 with Wi-Fi, drawn from the node's own cell while the firmware runs.

    Kept below the TP4056's termination current at 4.2 V (0.1 A = 0.42 W) so
    that a full cell can still terminate its charge.
    """

    shunt_ohms: float = 0.1
    """The INA219 shunt (part of ``cell.r0_ohms``): sets the shunt-voltage reading."""

    def __post_init__(self) -> None:
        """Reject parameters that make the model meaningless."""
        _require(
            "overhead_w",
            _finite(self.overhead_w) and 0.0 <= self.overhead_w <= 5.0,
            f"{self.overhead_w} W is outside 0..5",
        )
        _require(
            "shunt_ohms",
            _finite(self.shunt_ohms) and 0.0 < self.shunt_ohms <= self.cell.r0_ohms,
            f"{self.shunt_ohms} ohm must be positive and part of r0_ohms",
        )


@dataclass(slots=True)
class EnergyCounters:
    """Energy booked on one node since the simulation started, in joules.

    All counters only grow except :attr:`polarisation_j`, which is the net
    energy into the cell's RC branch (dissipated in R1 plus whatever C1 still
    holds, which C1 can hand back when the current reverses).
    """

    chemical_out_j: float = 0.0
    """Released by the cell chemistry (discharge), including fault losses."""

    chemical_in_j: float = 0.0
    """Stored into the cell chemistry (charge)."""

    terminal_out_j: float = 0.0
    """Delivered at the cell terminals (what the INA219 sees leaving)."""

    terminal_in_j: float = 0.0
    """Accepted at the cell terminals (what the INA219 sees entering)."""

    ohmic_loss_j: float = 0.0
    """Dissipated in R0 (I^2 R0)."""

    polarisation_j: float = 0.0
    """Net energy into the polarisation branch (V1 * I)."""

    overhead_j: float = 0.0
    """Consumed by the ESP32."""

    boost_in_j: float = 0.0
    """Drawn by the boost converter from the terminal."""

    boost_out_j: float = 0.0
    """Delivered by the boost converter to the bus."""

    charger_in_j: float = 0.0
    """Drawn by the TP4056 from the bus."""

    charger_out_j: float = 0.0
    """Delivered by the TP4056 to the terminal."""

    fault_loss_j: float = 0.0
    """Destroyed by injected cell faults (an internal short)."""

    @property
    def boost_loss_j(self) -> float:
        """Converter losses, quiescent draw included."""
        return self.boost_in_j - self.boost_out_j

    @property
    def charger_loss_j(self) -> float:
        """Heat in the linear charger."""
        return self.charger_in_j - self.charger_out_j

    @property
    def losses_j(self) -> float:
        """Every loss booked on this node."""
        return (
            self.ohmic_loss_j
            + self.polarisation_j
            + self.overhead_j
            + self.boost_loss_j
            + self.charger_loss_j
            + self.fault_loss_j
        )

    def as_wh(self) -> dict[str, float]:
        """Return every counter (and the derived losses) in watt-hours."""
        return {
            "chemical_out_wh": self.chemical_out_j / JOULES_PER_WH,
            "chemical_in_wh": self.chemical_in_j / JOULES_PER_WH,
            "terminal_out_wh": self.terminal_out_j / JOULES_PER_WH,
            "terminal_in_wh": self.terminal_in_j / JOULES_PER_WH,
            "ohmic_loss_wh": self.ohmic_loss_j / JOULES_PER_WH,
            "polarisation_wh": self.polarisation_j / JOULES_PER_WH,
            "overhead_wh": self.overhead_j / JOULES_PER_WH,
            "boost_in_wh": self.boost_in_j / JOULES_PER_WH,
            "boost_out_wh": self.boost_out_j / JOULES_PER_WH,
            "boost_loss_wh": self.boost_loss_j / JOULES_PER_WH,
            "charger_in_wh": self.charger_in_j / JOULES_PER_WH,
            "charger_out_wh": self.charger_out_j / JOULES_PER_WH,
            "charger_loss_wh": self.charger_loss_j / JOULES_PER_WH,
            "fault_loss_wh": self.fault_loss_j / JOULES_PER_WH,
        }


def stored_energy_j(curve: OcvCurve, capacity_ah: float, soc_percent: float) -> float:
    """Chemical energy held by a cell at ``soc_percent``, measured from 0 % SoC.

    The exact integral of the piecewise-linear OCV curve over the charge, so
    it is independent of any time step: tests compare it with the booked
    chemical energy.
    """
    soc = min(max(soc_percent, 0.0), 100.0)
    total = 0.0
    for (soc0, volts0), (soc1, volts1) in zip(curve.points, curve.points[1:], strict=False):
        if soc <= soc0:
            break
        end = min(soc, soc1)
        volts_end = volts0 + (volts1 - volts0) * (end - soc0) / (soc1 - soc0)
        total += (volts0 + volts_end) / 2.0 * (end - soc0)
    return total / 100.0 * capacity_ah * SECONDS_PER_HOUR


class Cell:
    """A first-order Thevenin model of one Li-ion cell (mutable state)."""

    __slots__ = ("params", "soc_percent", "v1_volts")

    def __init__(self, params: CellParams, soc_percent: float) -> None:
        """Start the cell at rest at ``soc_percent``."""
        _require(
            "soc_percent",
            _finite(soc_percent) and 0.0 <= soc_percent <= 100.0,
            f"{soc_percent} % is outside 0..100",
        )
        self.params = params
        self.soc_percent = float(soc_percent)
        self.v1_volts = 0.0

    @property
    def ocv_volts(self) -> float:
        """Open-circuit voltage of the chemistry at the present SoC."""
        return self.params.curve.ocv_at(self.soc_percent)

    @property
    def emf_volts(self) -> float:
        """The voltage behind R0: OCV less the polarisation voltage."""
        return self.ocv_volts - self.v1_volts

    @property
    def stored_energy_j(self) -> float:
        """Chemical energy above 0 % SoC (see :func:`stored_energy_j`)."""
        return stored_energy_j(self.params.curve, self.params.capacity_ah, self.soc_percent)

    def advance(self, current_amps: float, dt_s: float) -> None:
        """Carry ``current_amps`` (positive = discharge) for ``dt_s`` seconds."""
        params = self.params
        soc = self.soc_percent - current_amps * dt_s / params.charge_coulombs * 100.0
        self.soc_percent = min(max(soc, 0.0), 100.0)
        # Exact solution of the RC branch for a constant current: stable for
        # any step, unlike explicit Euler when dt approaches tau.
        settled = current_amps * params.r1_ohms
        decay = math.exp(-dt_s / params.tau_seconds)
        self.v1_volts = settled + (self.v1_volts - settled) * decay

    def drop_voltage(self, volts: float) -> float:
        """Lose charge until the OCV is ``volts`` lower; return the energy destroyed (J)."""
        before = self.stored_energy_j
        target = self.params.curve.soc_at(max(self.ocv_volts - volts, 0.0))
        self.soc_percent = min(self.soc_percent, target)
        return before - self.stored_energy_j


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatingPoint:
    """The electrical state of one node during the last step."""

    terminal_volts: float
    """Voltage at the cell side of the relays (the INA219's bus input)."""

    cell_amps: float
    """Cell current, positive = discharge (what the INA219 measures)."""

    charger_amps: float
    """TP4056 output current into the node."""

    boost_in_w: float
    """Power the boost converter draws from the terminal."""

    boost_out_w: float
    """Power the boost converter delivers to the bus."""

    overhead_w: float
    """Power the ESP32 draws."""

    bus_volts: float
    """Voltage of the shared bus (0 when nobody supplies it)."""

    charger_state: ChargerState
    converter_state: ConverterState


class NodePhysics:
    """One node's cell, converters, relay contacts and energy books."""

    def __init__(self, uid: str, params: NodeParams, soc_percent: float) -> None:
        """Build the node at rest, relays open, firmware not yet running."""
        self.uid = uid
        self.params = params
        self.cell = Cell(params.cell, soc_percent)
        self.energy = EnergyCounters()
        self.powered = False
        """True while the firmware runs (the ESP32 draws its overhead)."""
        self.supply_coil = False
        """Drive level of the SUPPLY relay coil (from the firmware's pin)."""
        self.receive_coil = False
        """Drive level of the RECEIVE relay coil (from the firmware's pin)."""
        self.stuck: set[Relay] = set()
        """Relays whose contact is welded closed."""
        self.charge_terminated = False
        self.esp_brownout = False
        """The cell could not even carry the ESP32 during the last step."""
        emf = self.cell.emf_volts
        self.last = OperatingPoint(
            terminal_volts=emf,
            cell_amps=0.0,
            charger_amps=0.0,
            boost_in_w=0.0,
            boost_out_w=0.0,
            overhead_w=0.0,
            bus_volts=0.0,
            charger_state=ChargerState.DISCONNECTED,
            converter_state=ConverterState.DISCONNECTED,
        )

    @property
    def supply_closed(self) -> bool:
        """Whether the SUPPLY contact conducts (coil on or welded)."""
        return self.supply_coil or Relay.SUPPLY in self.stuck

    @property
    def receive_closed(self) -> bool:
        """Whether the RECEIVE contact conducts (coil on or welded)."""
        return self.receive_coil or Relay.RECEIVE in self.stuck

    @property
    def mode(self) -> PhysicalMode:
        """What the contacts do right now."""
        if self.supply_closed and self.receive_closed:
            return PhysicalMode.BOTH
        if self.supply_closed:
            return PhysicalMode.SUPPLY
        if self.receive_closed:
            return PhysicalMode.RECEIVE
        return PhysicalMode.IDLE

    def set_coil(self, relay: Relay, on: bool) -> None:
        """Energise or release one relay coil."""
        if relay is Relay.SUPPLY:
            self.supply_coil = on
        else:
            self.receive_coil = on

    def weld(self, relay: Relay, stuck: bool = True) -> None:
        """Weld ``relay``'s contact closed (``stuck``) or repair it."""
        if stuck:
            self.stuck.add(relay)
        else:
            self.stuck.discard(relay)

    def drop_voltage(self, volts: float) -> None:
        """Inject an internal short that drops the OCV by ``volts`` at once."""
        _require("volts", _finite(volts) and 0.0 < volts <= 5.0, f"{volts} V is outside 0..5")
        lost = self.cell.drop_voltage(volts)
        self.energy.fault_loss_j += lost
        self.energy.chemical_out_j += lost
        self.last = _replace_terminal(self.last, self.cell.emf_volts)

    @property
    def overhead_w(self) -> float:
        """ESP32 draw while powered and the cell can still carry it."""
        return self.params.overhead_w if self.powered else 0.0

    def charger_demand(self, bus_volts: float) -> tuple[float, ChargerState]:
        """TP4056 output current for this step (amps into the node) and its state."""
        if not self.receive_closed:
            self.charge_terminated = False
            return 0.0, ChargerState.DISCONNECTED
        charger = self.params.charger
        cell = self.cell
        emf = cell.emf_volts
        if bus_volts <= 0.0 or bus_volts < emf + charger.dropout_volts:
            # The TP4056 resets its termination latch when its input drops.
            self.charge_terminated = False
            return 0.0, ChargerState.NO_INPUT
        if cell.soc_percent >= 100.0:
            # A full cell takes no more charge: its voltage rises steeply and
            # the CV current collapses below the termination threshold.
            self.charge_terminated = True
            return 0.0, ChargerState.TERMINATED
        if self.charge_terminated:
            if self.last.terminal_volts >= charger.recharge_volts:
                return 0.0, ChargerState.TERMINATED
            self.charge_terminated = False
        r0 = cell.params.r0_ohms
        load_w = self.overhead_w
        if emf < charger.trickle_below_volts:
            return charger.charge_amps * charger.termination_ratio, ChargerState.TRICKLE
        # Output current that holds the terminal at the float voltage while the
        # ESP32 also draws from it: the CV regulator's current.
        cv_amps = (charger.float_volts - emf) / r0 + load_w / charger.float_volts
        if cv_amps >= charger.charge_amps:
            return charger.charge_amps, ChargerState.CONSTANT_CURRENT
        if cv_amps < charger.charge_amps * charger.termination_ratio:
            self.charge_terminated = True
            return 0.0, ChargerState.TERMINATED
        return cv_amps, ChargerState.CONSTANT_VOLTAGE


def _replace_terminal(point: OperatingPoint, volts: float) -> OperatingPoint:
    return OperatingPoint(
        terminal_volts=volts,
        cell_amps=point.cell_amps,
        charger_amps=point.charger_amps,
        boost_in_w=point.boost_in_w,
        boost_out_w=point.boost_out_w,
        overhead_w=point.overhead_w,
        bus_volts=point.bus_volts,
        charger_state=point.charger_state,
        converter_state=point.converter_state,
    )


def solve_terminal(
    emf_volts: float, r0_ohms: float, load_w: float, source_amps: float
) -> float | None:
    """Terminal voltage with a constant-power load and a current source attached.

    ``V = E - I*R0`` and ``I = load/V - source`` give ``V^2 - (E + R0*source)*V
    + R0*load = 0``; the larger root is the stable operating point. ``None``
    means no real root: the cell cannot deliver the load (voltage collapse).
    """
    b = emf_volts + r0_ohms * source_amps
    disc = b * b - 4.0 * r0_ohms * load_w
    if disc < 0.0 or b <= 0.0:
        return None if load_w > 0.0 else max(b, 0.0)
    return (b + math.sqrt(disc)) / 2.0


@dataclass(slots=True, kw_only=True)
class _Plan:
    """Per-node loads for one step while the bus is being solved."""

    node: NodePhysics
    charger_amps: float = 0.0
    charger_state: ChargerState = ChargerState.DISCONNECTED
    boost_out_w: float = 0.0
    converter_state: ConverterState = ConverterState.DISCONNECTED
    overhead_w: float = 0.0

    @property
    def boost_in_w(self) -> float:
        if self.converter_state is not ConverterState.RUNNING:
            return 0.0
        boost = self.node.params.boost
        return self.boost_out_w / boost.efficiency + boost.quiescent_w


class GridPhysics:
    """All nodes of one simulated grid and the 5 V bus between them."""

    def __init__(self, *, bus_volts: float = 5.0) -> None:
        """Create an empty grid whose suppliers regulate the bus to ``bus_volts``."""
        _require(
            "bus_volts",
            _finite(bus_volts) and 4.3 <= bus_volts <= 6.0,
            f"{bus_volts} V is outside 4.3..6",
        )
        self.bus_volts = bus_volts
        self.nodes: dict[str, NodePhysics] = {}
        self.time_s = 0.0
        self.steps = 0
        self.last_bus_volts = 0.0

    def add_node(self, uid: str, params: NodeParams, soc_percent: float) -> NodePhysics:
        """Add a node at rest; its uid must be new."""
        if uid in self.nodes:
            raise PeerGridValidationError("uid", f"node {uid!r} already exists")
        node = NodePhysics(uid, params, soc_percent)
        self.nodes[uid] = node
        return node

    def step(self, dt_s: float) -> None:
        """Advance every node by ``dt_s`` seconds with the present contacts."""
        _require("dt_s", _finite(dt_s) and 0.0 < dt_s <= 60.0, f"{dt_s} s is outside 0..60")
        plans = [_Plan(node=node, overhead_w=node.overhead_w) for node in self.nodes.values()]
        suppliers = [plan for plan in plans if plan.node.supply_closed]
        for plan in suppliers:
            plan.converter_state = ConverterState.RUNNING
        bus_volts = self._solve_bus(plans, suppliers)
        self.last_bus_volts = bus_volts
        for plan in plans:
            self._advance_node(plan, bus_volts, dt_s)
        self.time_s += dt_s
        self.steps += 1

    def _solve_bus(self, plans: list[_Plan], suppliers: list[_Plan]) -> float:
        """Share the chargers' load among the running suppliers; shed those that fail."""
        while True:
            running = [p for p in suppliers if p.converter_state is ConverterState.RUNNING]
            bus_volts = self.bus_volts if running else 0.0
            load_w = 0.0
            for plan in plans:
                plan.charger_amps, plan.charger_state = plan.node.charger_demand(bus_volts)
                load_w += bus_volts * plan.charger_amps
            if not running:
                return bus_volts
            # Boost modules in parallel share the load roughly equally (droop).
            share_w = load_w / len(running)
            failed = False
            for plan in running:
                plan.boost_out_w = share_w
                if not self._supplier_holds(plan):
                    plan.converter_state = ConverterState.BROWNOUT
                    plan.boost_out_w = 0.0
                    failed = True
            if not failed:
                return bus_volts

    @staticmethod
    def _supplier_holds(plan: _Plan) -> bool:
        node = plan.node
        boost = node.params.boost
        volts = solve_terminal(
            node.cell.emf_volts,
            node.params.cell.r0_ohms,
            plan.overhead_w + plan.boost_in_w,
            plan.charger_amps,
        )
        if volts is None or volts < boost.undervoltage_volts:
            return False
        return plan.boost_in_w / volts <= boost.max_input_amps

    @staticmethod
    def _advance_node(plan: _Plan, bus_volts: float, dt_s: float) -> None:
        node = plan.node
        cell = node.cell
        r0 = cell.params.r0_ohms
        emf = cell.emf_volts
        boost_in_w = plan.boost_in_w
        volts = solve_terminal(emf, r0, plan.overhead_w + boost_in_w, plan.charger_amps)
        node.esp_brownout = False
        if volts is None or (
            plan.overhead_w > 0.0
            and (volts < cell.params.cutoff_volts or cell.soc_percent <= 0.0)
            and (emf - volts) > 0.0
        ):
            # Only the ESP32 is left (suppliers were shed already) and the cell
            # cannot carry even that, or its protection board cuts it off: the
            # node browns out and draws nothing.
            node.esp_brownout = True
            plan.overhead_w = 0.0
            volts = solve_terminal(emf, r0, 0.0, plan.charger_amps)
            if volts is None:  # pragma: no cover - no load means a root always exists
                volts = 0.0
        amps = (emf - volts) / r0
        ocv = cell.ocv_volts
        v1 = cell.v1_volts
        energy = node.energy
        chemical_j = ocv * amps * dt_s
        terminal_j = volts * amps * dt_s
        if amps >= 0.0:
            energy.chemical_out_j += chemical_j
            energy.terminal_out_j += terminal_j
        else:
            energy.chemical_in_j -= chemical_j
            energy.terminal_in_j -= terminal_j
        energy.ohmic_loss_j += amps * amps * r0 * dt_s
        energy.polarisation_j += v1 * amps * dt_s
        energy.overhead_j += plan.overhead_w * dt_s
        energy.boost_in_j += boost_in_w * dt_s
        energy.boost_out_j += plan.boost_out_w * dt_s
        energy.charger_in_j += bus_volts * plan.charger_amps * dt_s
        energy.charger_out_j += volts * plan.charger_amps * dt_s
        node.last = OperatingPoint(
            terminal_volts=volts,
            cell_amps=amps,
            charger_amps=plan.charger_amps,
            boost_in_w=boost_in_w,
            boost_out_w=plan.boost_out_w,
            overhead_w=plan.overhead_w,
            bus_volts=bus_volts,
            charger_state=plan.charger_state,
            converter_state=plan.converter_state,
        )
        cell.advance(amps, dt_s)
