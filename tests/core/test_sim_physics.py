"""Tests of the simulator's electrical model (pure, no asyncio)."""

from __future__ import annotations

from dataclasses import replace
import math

from hypothesis import given, settings, strategies as st
import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.sim.physics import (
    JOULES_PER_WH,
    BoostParams,
    Cell,
    CellParams,
    ChargerParams,
    ChargerState,
    ConverterState,
    GridPhysics,
    NodeParams,
    NodePhysics,
    PhysicalMode,
    Relay,
    solve_terminal,
    stored_energy_j,
)
from peergrid_core.soc import DEFAULT_OCV_CURVE, ocv_from_soc

# The research note's reference scenario: 80 % converter, no quiescent draw,
# 0.45 W ESP32 on both nodes.
REFERENCE = NodeParams(overhead_w=0.45, boost=BoostParams(efficiency=0.80, quiescent_w=0.0))


def _grid(*socs: float, params: NodeParams | None = None) -> tuple[GridPhysics, list[NodePhysics]]:
    grid = GridPhysics()
    nodes = [
        grid.add_node(f"NODE_{chr(65 + i)}", params or NodeParams(), soc)
        for i, soc in enumerate(socs)
    ]
    for node in nodes:
        node.powered = True
    return grid, nodes


def _balance_error_j(grid: GridPhysics) -> tuple[float, float]:
    books = [node.energy for node in grid.nodes.values()]
    out = sum(b.chemical_out_j for b in books)
    absorbed = sum(b.chemical_in_j for b in books)
    losses = sum(b.losses_j for b in books)
    return out - absorbed - losses, out


def test_reference_transfer_matches_the_research_run() -> None:
    """A (90 %) feeds B (20 %) at 1 A until A's loaded voltage falls below 3.3 V."""
    grid, (node_a, node_b) = _grid(90.0, 20.0, params=REFERENCE)
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.RECEIVE, on=True)
    seconds = 0
    while node_a.last.terminal_volts >= 3.3 or seconds == 0:
        grid.step(1.0)
        seconds += 1
    assert 38 * 60 <= seconds <= 41 * 60
    assert node_a.cell.soc_percent == pytest.approx(40.0, abs=1.5)
    assert node_b.cell.soc_percent == pytest.approx(43.0, abs=1.5)
    assert node_a.energy.terminal_out_j / JOULES_PER_WH == pytest.approx(4.39, abs=0.1)
    assert node_b.energy.charger_out_j / JOULES_PER_WH == pytest.approx(2.45, abs=0.1)
    # A 1 A charger on a 5 V bus pulls about 1.9 A from the supplying cell.
    assert 1.75 <= node_a.last.cell_amps <= 2.1


def test_energy_is_conserved_over_a_long_mixed_run() -> None:
    """Six simulated hours of switching, welded relays and a fault: every joule is booked."""
    grid, nodes = _grid(95.0, 15.0, 60.0, 40.0)
    node_a, node_b, node_c, node_d = nodes
    stored_before = sum(node.cell.stored_energy_j for node in nodes)
    schedule = [
        # (seconds, supply nodes, receive nodes)
        (1800, [node_a], [node_b]),
        (600, [], []),
        (1800, [node_a, node_c], [node_b, node_d]),
        (900, [node_c], []),  # supplier without load
        (900, [], [node_d]),  # load without supplier
        (3600, [node_a], [node_b, node_c, node_d]),  # overload sheds A
        (1800, [node_d], [node_a]),
        (9600, [node_c], [node_b]),
    ]
    for index, (seconds, suppliers, receivers) in enumerate(schedule):
        for node in nodes:
            node.set_coil(Relay.SUPPLY, on=node in suppliers)
            node.set_coil(Relay.RECEIVE, on=node in receivers)
        if index == 3:
            node_d.weld(Relay.SUPPLY)
        if index == 5:
            node_d.weld(Relay.SUPPLY, stuck=False)
            node_c.drop_voltage(0.2)
        for _ in range(seconds):
            grid.step(1.0)
    error_j, out_j = _balance_error_j(grid)
    assert out_j > 20_000.0
    assert abs(error_j) <= 1e-9 * out_j
    # The booked chemical energy agrees with the exact integral of the OCV
    # curve over the SoC the cells actually travelled.
    stored_after = sum(node.cell.stored_energy_j for node in nodes)
    books = [node.energy for node in nodes]
    net_released = sum(b.chemical_out_j - b.chemical_in_j for b in books)
    assert net_released == pytest.approx(stored_before - stored_after, rel=2e-3)
    assert all(b.ohmic_loss_j > 0 and b.overhead_j > 0 for b in books)
    assert sum(b.boost_out_j for b in books) == pytest.approx(sum(b.charger_in_j for b in books))


def test_charge_moves_from_supplier_to_receiver_with_losses() -> None:
    grid, (node_a, node_b) = _grid(80.0, 30.0)
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.RECEIVE, on=True)
    for _ in range(600):
        grid.step(1.0)
    assert node_a.cell.soc_percent < 80.0
    assert node_b.cell.soc_percent > 30.0
    out_wh = node_a.energy.terminal_out_j / JOULES_PER_WH
    stored_wh = node_b.energy.chemical_in_j / JOULES_PER_WH
    assert 0.4 < stored_wh / out_wh < 0.65
    assert node_b.last.charger_state is ChargerState.CONSTANT_CURRENT
    assert node_a.last.converter_state is ConverterState.RUNNING
    assert node_a.last.bus_volts == 5.0


def test_receiver_without_supplier_gets_nothing() -> None:
    grid, (node_b,) = _grid(30.0)
    node_b.set_coil(Relay.RECEIVE, on=True)
    for _ in range(60):
        grid.step(1.0)
    assert node_b.last.charger_state is ChargerState.NO_INPUT
    assert node_b.last.bus_volts == 0.0
    assert node_b.energy.chemical_in_j == 0.0
    assert node_b.cell.soc_percent < 30.0  # only the ESP32 drew


def test_supplier_without_load_draws_only_quiescent() -> None:
    params = NodeParams(overhead_w=0.0)
    grid, (node_a,) = _grid(70.0, params=params)
    node_a.set_coil(Relay.SUPPLY, on=True)
    grid.step(10.0)
    energy = node_a.energy
    assert energy.boost_out_j == 0.0
    assert energy.boost_in_j == pytest.approx(params.boost.quiescent_w * 10.0)
    assert node_a.last.bus_volts == 5.0


def test_boost_and_charger_efficiencies() -> None:
    grid, (node_a, node_b) = _grid(85.0, 50.0)
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.RECEIVE, on=True)
    grid.step(1.0)
    boost = node_a.params.boost
    point_a, point_b = node_a.last, node_b.last
    assert point_a.boost_out_w == pytest.approx(
        (point_a.boost_in_w - boost.quiescent_w) * boost.efficiency
    )
    # TP4056: linear, so efficiency is V_cell / V_bus.
    charger_in = node_b.energy.charger_in_j
    charger_out = node_b.energy.charger_out_j
    assert charger_out / charger_in == pytest.approx(point_b.terminal_volts / 5.0)


def test_weak_cell_collapses_the_bus() -> None:
    """A cell that cannot deliver the power browns its converter out."""
    weak = NodeParams(cell=CellParams(r0_ohms=1.0))
    grid = GridPhysics()
    node_a = grid.add_node("NODE_A", weak, 50.0)
    node_b = grid.add_node("NODE_B", NodeParams(), 20.0)
    node_a.powered = node_b.powered = True
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.RECEIVE, on=True)
    grid.step(1.0)
    assert node_a.last.converter_state is ConverterState.BROWNOUT
    assert node_a.last.bus_volts == 0.0
    assert node_b.last.charger_state is ChargerState.NO_INPUT
    assert node_b.energy.chemical_in_j == 0.0


def test_current_limit_sheds_one_supplier_and_the_other_carries_the_load() -> None:
    limited = NodeParams(boost=BoostParams(max_input_amps=0.5))
    grid = GridPhysics()
    node_a = grid.add_node("NODE_A", limited, 80.0)
    node_b = grid.add_node("NODE_B", NodeParams(), 80.0)
    node_c = grid.add_node("NODE_C", NodeParams(), 20.0)
    for node in (node_a, node_b, node_c):
        node.powered = True
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.SUPPLY, on=True)
    node_c.set_coil(Relay.RECEIVE, on=True)
    grid.step(1.0)
    assert node_a.last.converter_state is ConverterState.BROWNOUT
    assert node_b.last.converter_state is ConverterState.RUNNING
    assert node_b.last.boost_out_w == pytest.approx(5.0 * node_c.last.charger_amps)


def test_parallel_suppliers_share_the_load() -> None:
    grid, (node_a, node_b, node_c) = _grid(80.0, 80.0, 20.0)
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.SUPPLY, on=True)
    node_c.set_coil(Relay.RECEIVE, on=True)
    grid.step(1.0)
    assert node_a.last.boost_out_w == pytest.approx(node_b.last.boost_out_w)
    assert node_a.last.boost_out_w + node_b.last.boost_out_w == pytest.approx(5.0)


def test_tp4056_cc_cv_and_c10_termination() -> None:
    grid, (node_a, node_b) = _grid(100.0, 70.0)
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.RECEIVE, on=True)
    states: list[ChargerState] = []
    max_terminal = 0.0
    for _ in range(4 * 3600):
        grid.step(1.0)
        states.append(node_b.last.charger_state)
        max_terminal = max(max_terminal, node_b.last.terminal_volts)
        if node_b.last.charger_state is ChargerState.TERMINATED:
            break
        # The supplier gets refilled by hand so that only B's charge matters.
        node_a.cell.soc_percent = 100.0
    assert states[0] is ChargerState.CONSTANT_CURRENT
    assert ChargerState.CONSTANT_VOLTAGE in states
    assert states[-1] is ChargerState.TERMINATED
    assert max_terminal <= node_b.params.charger.float_volts + 1e-9
    assert node_b.cell.soc_percent > 95.0
    # Terminated: the ESP32 slowly discharges the cell until the recharge threshold.
    grid.step(1.0)
    assert node_b.last.charger_state is ChargerState.TERMINATED
    assert node_b.last.cell_amps > 0.0


def test_trickle_charge_below_2v9() -> None:
    grid, (node_a, node_b) = _grid(90.0, 1.0)
    assert node_b.cell.ocv_volts < 2.9
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.RECEIVE, on=True)
    grid.step(1.0)
    assert node_b.last.charger_state is ChargerState.TRICKLE
    assert node_b.last.charger_amps == pytest.approx(0.1)


def test_polarisation_relaxes_after_load() -> None:
    grid, (node_a,) = _grid(70.0, params=NodeParams(overhead_w=0.0))
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_a.cell.v1_volts = 0.0
    # A steady 1.5 A from an external load is modelled by a big share: run a
    # real load instead, a receiver on a second node.
    receiver = grid.add_node("NODE_Z", NodeParams(overhead_w=0.0), 10.0)
    receiver.set_coil(Relay.RECEIVE, on=True)
    for _ in range(120):
        grid.step(1.0)
    sagged = node_a.cell.v1_volts
    assert sagged > 0.03
    node_a.set_coil(Relay.SUPPLY, on=False)
    grid.step(1.0)
    loaded_rest = node_a.last.terminal_volts
    for _ in range(150):
        grid.step(1.0)
    assert node_a.cell.v1_volts < sagged * 0.01
    assert node_a.last.terminal_volts > loaded_rest  # the voltage recovers


def test_overhead_only_while_powered() -> None:
    grid, (node_a,) = _grid(60.0)
    node_a.powered = False
    grid.step(10.0)
    assert node_a.energy.overhead_j == 0.0
    assert node_a.last.cell_amps == 0.0
    node_a.powered = True
    grid.step(10.0)
    assert node_a.energy.overhead_j == pytest.approx(node_a.params.overhead_w * 10.0)


def test_welded_relay_stays_closed() -> None:
    grid, (node_a,) = _grid(60.0)
    node_a.weld(Relay.SUPPLY)
    assert node_a.supply_closed
    modes = [node_a.mode]
    node_a.set_coil(Relay.RECEIVE, on=True)
    modes.append(node_a.mode)
    assert modes == [PhysicalMode.SUPPLY, PhysicalMode.BOTH]
    grid.step(1.0)  # a node feeding its own charger still balances
    error_j, out_j = _balance_error_j(grid)
    assert abs(error_j) <= 1e-9 * max(out_j, 1.0)
    node_a.weld(Relay.SUPPLY, stuck=False)
    node_a.set_coil(Relay.RECEIVE, on=False)
    assert node_a.mode is PhysicalMode.IDLE


def test_voltage_drop_fault_is_booked_as_a_loss() -> None:
    _, (node_a,) = _grid(60.0)
    before = node_a.cell.ocv_volts
    stored = node_a.cell.stored_energy_j
    node_a.drop_voltage(0.3)
    assert node_a.cell.ocv_volts == pytest.approx(before - 0.3)
    assert node_a.last.terminal_volts == pytest.approx(node_a.cell.emf_volts)
    assert node_a.energy.fault_loss_j == pytest.approx(stored - node_a.cell.stored_energy_j)
    with pytest.raises(PeerGridValidationError) as err:
        node_a.drop_voltage(-1.0)
    assert err.value.field == "volts"


def test_empty_cell_browns_the_esp32_out() -> None:
    grid, (node_a,) = _grid(0.0)
    grid.step(1.0)
    assert node_a.esp_brownout
    assert node_a.last.cell_amps == 0.0
    assert node_a.cell.soc_percent == 0.0


def test_physics_is_deterministic() -> None:
    def run() -> tuple[float, float, float]:
        grid, (node_a, node_b) = _grid(90.0, 20.0)
        node_a.set_coil(Relay.SUPPLY, on=True)
        node_b.set_coil(Relay.RECEIVE, on=True)
        for _ in range(500):
            grid.step(0.1)
        return node_a.cell.soc_percent, node_b.cell.soc_percent, node_a.energy.ohmic_loss_j

    assert run() == run()


def test_cell_uses_the_core_ocv_curve() -> None:
    cell = Cell(CellParams(), 37.5)
    assert cell.ocv_volts == ocv_from_soc(37.5)
    assert cell.emf_volts == cell.ocv_volts


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: CellParams(capacity_ah=0.0), "capacity_ah"),
        (lambda: CellParams(r0_ohms=-0.1), "r0_ohms"),
        (lambda: CellParams(r1_ohms=math.nan), "r1_ohms"),
        (lambda: CellParams(c1_farads=0.0), "c1_farads"),
        (lambda: CellParams(cutoff_volts=9.0), "cutoff_volts"),
        (lambda: BoostParams(efficiency=1.5), "efficiency"),
        (lambda: BoostParams(quiescent_w=-1.0), "quiescent_w"),
        (lambda: BoostParams(max_input_amps=0.0), "max_input_amps"),
        (lambda: BoostParams(undervoltage_volts=5.0), "undervoltage_volts"),
        (lambda: ChargerParams(charge_amps=2.0), "charge_amps"),
        (lambda: ChargerParams(float_volts=5.0), "float_volts"),
        (lambda: ChargerParams(trickle_below_volts=4.3), "trickle_below_volts"),
        (lambda: ChargerParams(termination_ratio=0.0), "termination_ratio"),
        (lambda: ChargerParams(recharge_volts=4.3), "recharge_volts"),
        (lambda: ChargerParams(dropout_volts=-1.0), "dropout_volts"),
        (lambda: NodeParams(overhead_w=-0.1), "overhead_w"),
        (lambda: NodeParams(shunt_ohms=0.2), "shunt_ohms"),
        (lambda: Cell(CellParams(), 101.0), "soc_percent"),
        (lambda: GridPhysics(bus_volts=12.0), "bus_volts"),
        (lambda: GridPhysics().step(0.0), "dt_s"),
    ],
)
def test_bad_parameters_name_their_field(factory, field: str) -> None:
    with pytest.raises(PeerGridValidationError) as err:
        factory()
    assert err.value.field == field


def test_duplicate_node_is_rejected() -> None:
    grid = GridPhysics()
    grid.add_node("NODE_A", NodeParams(), 50.0)
    with pytest.raises(PeerGridValidationError) as err:
        grid.add_node("NODE_A", NodeParams(), 50.0)
    assert err.value.field == "uid"
    assert list(grid.nodes) == ["NODE_A"]


def test_energy_counters_in_wh() -> None:
    grid, (node_a,) = _grid(50.0)
    for _ in range(60):
        grid.step(60.0)
    as_wh = node_a.energy.as_wh()
    assert as_wh["overhead_wh"] == pytest.approx(node_a.params.overhead_w)
    assert set(as_wh) >= {"chemical_out_wh", "boost_loss_wh", "charger_loss_wh", "fault_loss_wh"}


@settings(max_examples=60, deadline=None)
@given(
    emf=st.floats(2.5, 4.3),
    r0=st.floats(0.01, 0.5),
    load=st.floats(0.0, 8.0),
    source=st.floats(0.0, 1.5),
)
def test_solve_terminal_satisfies_the_circuit(
    emf: float, r0: float, load: float, source: float
) -> None:
    volts = solve_terminal(emf, r0, load, source)
    if volts is None:
        assert (emf + r0 * source) ** 2 < 4 * r0 * load
        return
    amps = (emf - volts) / r0
    # Kirchhoff: the cell current feeds the load less what the source injects.
    assert amps * volts == pytest.approx(load - source * volts, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(soc0=st.floats(0.0, 100.0), soc1=st.floats(0.0, 100.0), cap=st.floats(0.5, 5.0))
def test_stored_energy_is_the_integral_of_the_curve(soc0: float, soc1: float, cap: float) -> None:
    low, high = sorted((soc0, soc1))
    exact = stored_energy_j(DEFAULT_OCV_CURVE, cap, high) - stored_energy_j(
        DEFAULT_OCV_CURVE, cap, low
    )
    steps = 400
    width = (high - low) / steps
    midpoint = sum(ocv_from_soc(low + (i + 0.5) * width) for i in range(steps)) * width
    numeric = midpoint / 100.0 * cap * 3600.0
    assert exact >= 0.0
    assert exact == pytest.approx(numeric, rel=1e-3, abs=1e-6)


def test_capacity_changes_the_time_to_drain() -> None:
    def minutes_to_cutoff(capacity: float) -> float:
        params = replace(REFERENCE, cell=CellParams(capacity_ah=capacity))
        grid, (node_a, node_b) = _grid(90.0, 20.0, params=params)
        node_a.set_coil(Relay.SUPPLY, on=True)
        node_b.set_coil(Relay.RECEIVE, on=True)
        seconds = 0
        while node_a.last.terminal_volts >= 3.3 or seconds == 0:
            grid.step(5.0)
            seconds += 5
        return seconds / 60

    assert minutes_to_cutoff(3.5) > minutes_to_cutoff(2.5) * 1.3


def test_full_cell_terminates_and_recharges_below_the_threshold() -> None:
    grid, (node_a, node_b) = _grid(100.0, 100.0)
    node_a.set_coil(Relay.SUPPLY, on=True)
    node_b.set_coil(Relay.RECEIVE, on=True)
    grid.step(1.0)
    states = [node_b.last.charger_state]
    # The ESP32 drains B while the charger waits for the recharge threshold;
    # A gets topped up by hand so that the bus stays alive.
    for _ in range(400):
        node_a.cell.soc_percent = 100.0
        grid.step(60.0)
        states.append(node_b.last.charger_state)
        if states[-1] is not ChargerState.TERMINATED:
            break
    assert states[0] is ChargerState.TERMINATED
    assert states[-1] in (ChargerState.CONSTANT_CURRENT, ChargerState.CONSTANT_VOLTAGE)
    assert node_b.cell.ocv_volts < node_b.params.charger.recharge_volts + 0.05
