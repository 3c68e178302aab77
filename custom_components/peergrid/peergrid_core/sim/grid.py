"""Run N virtual PeerGrid nodes, each the real firmware on simulated hardware.

:class:`SimulatedGrid` is what the integration tests, the edge gateway's
tests, the demo and the benchmarks talk to. Every node is the firmware's own
``peergrid_node.node.Node`` running in this process behind a real TCP server
on 127.0.0.1; its hardware is a :class:`~.hardware.SimHardware` wired to the
shared :class:`~.physics.GridPhysics`, which a background task advances at a
fixed simulated time step.

Example::

    async with SimulatedGrid(
        [NodeSpec(uid="NODE_A", soc_percent=90), NodeSpec(uid="NODE_B", soc_percent=20)],
        speedup=50,
        seed=1,
    ) as grid:
        node_a = grid.nodes["NODE_A"]
        reader, writer = await asyncio.open_connection(node_a.host, node_a.port)
        ...
        print(node_a.physical.soc_percent, node_a.physical.energy.terminal_out_j)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
import contextlib
from dataclasses import dataclass, field, replace
import logging
from math import ceil
import random
import re
import secrets
from types import TracebackType
from typing import Any, Protocol, Self

from ..errors import PeerGridError, PeerGridTimeoutError, PeerGridValidationError
from .hardware import SimClock, SimHardware
from .physics import (
    JOULES_PER_WH,
    ChargerState,
    ConverterState,
    EnergyCounters,
    GridPhysics,
    NodeParams,
    NodePhysics,
    PhysicalMode,
    Relay,
)

_LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STEP_S = 0.1
"""Simulated seconds per physics step: fine enough for the firmware's 1 Hz loop."""

_UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_KEY_BYTES = (16, 64)
_CONNECTION_IDLE_S = 30
_MAX_IDLE_S = 3600
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
_MIN_WALL_TICK_S = 0.0005
# Small against the firmware's 2 s freshness rule even when several of its
# short sleeps each absorb a full lag after a host stall.
_MIN_LAG_S = 0.25


class FirmwareNotFoundError(PeerGridError):
    """The node firmware package ``peergrid_node`` cannot be imported."""


class FirmwareNode(Protocol):
    """What the simulator needs of the firmware's ``Node`` (the hardware contract)."""

    @property
    def port(self) -> int | None:
        """The bound TCP port once serving."""

    @property
    def mode(self) -> str:
        """The commanded mode: ``IDLE``, ``SUPPLY`` or ``RECEIVE``."""

    def run(self) -> Awaitable[None]:
        """Serve until stopped."""

    def stop(self) -> None:
        """Relays off at once, server closed, ``run`` returns."""


type NodeFactory = Callable[[dict[str, Any], SimHardware], FirmwareNode]
"""Builds a firmware node from its config dict and hardware."""


def load_firmware() -> tuple[NodeFactory, str]:
    """Import the firmware's ``Node`` class and version string.

    Raises :class:`FirmwareNotFoundError` with instructions when the firmware
    package is not importable (the simulator is being run outside the
    repository checkout or its development environment).
    """
    try:
        import peergrid_node
        from peergrid_node.node import Node
    except ImportError as err:
        raise FirmwareNotFoundError(
            "the simulator runs the node firmware in-process but cannot import "
            f"'peergrid_node' ({err}); run it from the repository checkout with the "
            "development environment (`.venv/bin/python -m peergrid_core.sim` from the "
            "repository root), which puts firmware/ on the import path"
        ) from err
    version = str(getattr(peergrid_node, "FW_VERSION", "unknown"))
    factory: NodeFactory = Node
    return factory, version


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """How to build one virtual node."""

    uid: str
    """Node identity (``NODE_A``...): letters, digits, ``_`` and ``-``, at most 32."""

    key: str | None = None
    """Pre-shared key as text (its UTF-8 bytes, 16 to 64, are the HMAC key).

    ``None`` generates one (32 hex characters); ``""`` runs without authentication.
    """

    capacity_ah: float | None = None
    """Cell capacity; ``None`` keeps the one in :attr:`params`."""

    soc_percent: float = 50.0
    """True state of charge at start."""

    port: int = 0
    """TCP port on the grid's host; 0 picks a free one (kept across restarts)."""

    bench_mode: bool = False
    """Allow the plain-text bench commands (only effective without a key)."""

    limits: Mapping[str, int] = field(default_factory=dict)
    """Overrides of the firmware's ``limits`` (``min_mv``, ``max_mwh``, ...)."""

    config: Mapping[str, Any] = field(default_factory=dict)
    """Further firmware config keys, merged last."""

    params: NodeParams = field(default_factory=NodeParams)
    """Physical parameters (cell, converter, charger, overhead)."""

    def __post_init__(self) -> None:
        """Validate the spec; a bad field raises and names itself."""
        if not _UID_RE.match(self.uid):
            raise PeerGridValidationError(
                "uid", f"{self.uid!r} must be 1-32 letters, digits, '_' or '-'"
            )
        if self.key:
            low, high = _KEY_BYTES
            if not low <= len(self.key.encode()) <= high:
                raise PeerGridValidationError("key", f"the key must be {low} to {high} bytes")
        if not 0.0 <= self.soc_percent <= 100.0:
            raise PeerGridValidationError("soc_percent", f"{self.soc_percent} is outside 0..100")
        if not 0 <= self.port <= 65535:
            raise PeerGridValidationError("port", f"{self.port} is outside 0..65535")
        if self.capacity_ah is not None:
            # Validated by CellParams; raises PeerGridValidationError("capacity_ah").
            self.effective_params()

    def effective_params(self) -> NodeParams:
        """:attr:`params` with :attr:`capacity_ah` applied."""
        if self.capacity_ah is None:
            return self.params
        return replace(self.params, cell=replace(self.params.cell, capacity_ah=self.capacity_ah))


@dataclass(frozen=True, slots=True, kw_only=True)
class PhysicalState:
    """The true physical state of one node at one moment (a snapshot)."""

    uid: str
    time_s: float
    """Simulated time of the last physics step."""

    soc_percent: float
    ocv_volts: float
    terminal_volts: float
    cell_amps: float
    """Positive = discharge."""

    bus_volts: float
    supply_closed: bool
    receive_closed: bool
    mode: PhysicalMode
    charger_state: ChargerState
    converter_state: ConverterState
    powered: bool
    """Whether the firmware (the ESP32) is running."""

    stored_energy_wh: float
    """Chemical energy above 0 % SoC."""

    energy: EnergyCounters
    """A copy of the node's energy books (joules; ``energy.as_wh()`` for Wh)."""


class SimNode:
    """One virtual node: its spec, address, key, physics and running firmware."""

    def __init__(
        self,
        spec: NodeSpec,
        *,
        key: str,
        physics: NodePhysics,
        host: str,
        grid_time: Callable[[], float],
    ) -> None:
        """Describe a node that has not been started yet."""
        self.spec = spec
        self.uid = spec.uid
        self.key = key
        """The node's pre-shared key as text (``""`` = no authentication)."""
        self.host = host
        self.physics = physics
        self.hardware: SimHardware | None = None
        """The hardware of the current (or last) firmware run."""
        self.firmware: FirmwareNode | None = None
        self._port = spec.port
        self._task: asyncio.Task[None] | None = None
        self.crash: BaseException | None = None
        """The exception that ended the last firmware run unexpectedly, if any."""
        self.boots = 0
        """How many times the firmware was started."""
        self._grid_time = grid_time

    @property
    def port(self) -> int:
        """The TCP port the node listens on (known once it has started)."""
        if self._port == 0:
            raise PeerGridError(f"node {self.uid} has not bound a port yet")
        return self._port

    @property
    def key_bytes(self) -> bytes | None:
        """The HMAC key as a client needs it, ``None`` without authentication."""
        return self.key.encode() if self.key else None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return self.host, self.port

    @property
    def running(self) -> bool:
        """Whether the firmware task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def mode(self) -> str | None:
        """The firmware's commanded mode, ``None`` while stopped."""
        return self.firmware.mode if self.firmware is not None and self.running else None

    @property
    def physical(self) -> PhysicalState:
        """A snapshot of the node's true physical state."""
        node = self.physics
        point = node.last
        energy = replace(node.energy)
        return PhysicalState(
            uid=self.uid,
            time_s=self._grid_time(),
            soc_percent=node.cell.soc_percent,
            ocv_volts=node.cell.ocv_volts,
            terminal_volts=point.terminal_volts,
            cell_amps=point.cell_amps,
            bus_volts=point.bus_volts,
            supply_closed=node.supply_closed,
            receive_closed=node.receive_closed,
            mode=node.mode,
            charger_state=point.charger_state,
            converter_state=point.converter_state,
            powered=node.powered,
            stored_energy_wh=node.cell.stored_energy_j / JOULES_PER_WH,
            energy=energy,
        )


class SimulatedGrid:
    """N virtual nodes, the physics between them and a clock (async context manager).

    ``speedup`` scales simulated time against the wall clock (50 = fifty
    simulated seconds per real second); ``seed`` makes the sensor noise,
    generated keys and nonces reproducible; ``step_s`` is the physics step in
    simulated seconds. Nodes listen on ``host`` (loopback only by default).

    ``speedup`` is a ceiling: when the host cannot keep up, simulated time
    slows down (see :class:`~.hardware.SimClock`) rather than skipping ahead
    of the physics. The physics is deterministic; what is not is the
    interleaving of the firmware's tasks with it, which follows the host's
    scheduler, so tests should assert physical outcomes with tolerances, not
    exact timings.
    """

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        *,
        speedup: float = 1.0,
        seed: int | None = None,
        step_s: float = DEFAULT_STEP_S,
        host: str = DEFAULT_HOST,
        bus_volts: float = 5.0,
        noise_volts: float = 0.002,
        noise_amps: float = 0.002,
        node_factory: NodeFactory | None = None,
        fw_version: str | None = None,
        max_lag_s: float | None = None,
    ) -> None:
        """Prepare the grid; nothing runs until :meth:`start` (or ``async with``).

        ``node_factory`` replaces the firmware's ``Node`` class (default: import
        it from ``peergrid_node``). ``max_lag_s`` bounds how far (in simulated
        seconds) the clock may run ahead of the physics; a host that cannot
        keep up slows simulated time down instead (default: 0.25 s or two steps).
        """
        if not nodes:
            raise PeerGridValidationError("nodes", "a grid needs at least one node")
        uids = [spec.uid for spec in nodes]
        if len(set(uids)) != len(uids):
            raise PeerGridValidationError("nodes", f"duplicate uids in {uids}")
        if not 0.001 <= step_s <= 10.0:
            raise PeerGridValidationError("step_s", f"{step_s} s is outside 0.001..10")
        for name, value in (("noise_volts", noise_volts), ("noise_amps", noise_amps)):
            if not 0.0 <= value <= 0.1:
                raise PeerGridValidationError(name, f"{value} is outside 0..0.1")
        self.clock = SimClock(speedup)
        lag = max(_MIN_LAG_S, 2 * step_s) if max_lag_s is None else max_lag_s
        if not step_s <= lag <= 600.0:
            raise PeerGridValidationError("max_lag_s", f"{lag} s is outside step_s..600")
        self.max_lag_s = lag
        self.seed = seed
        self.step_s = step_s
        self.host = host
        self.physics = GridPhysics(bus_volts=bus_volts)
        self._noise = (noise_volts, noise_amps)
        self._factory = node_factory
        self._fw_version = fw_version
        key_rng = random.Random(f"{seed}/keys") if seed is not None else None
        self._nodes: dict[str, SimNode] = {}
        for spec in nodes:
            key = spec.key
            if key is None:
                key = key_rng.randbytes(16).hex() if key_rng is not None else secrets.token_hex(16)
            physics = self.physics.add_node(spec.uid, spec.effective_params(), spec.soc_percent)
            node = SimNode(spec, key=key, physics=physics, host=host, grid_time=self._time_s)
            self._nodes[spec.uid] = node
        self._physics_task: asyncio.Task[None] | None = None
        self._started = False

    # --------------------------------------------------------------- access
    @property
    def nodes(self) -> Mapping[str, SimNode]:
        """The nodes by uid, in spec order."""
        return self._nodes

    @property
    def speedup(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.clock.speedup

    @property
    def time_s(self) -> float:
        """Simulated time reached by the physics."""
        return self.physics.time_s

    def _time_s(self) -> float:
        return self.physics.time_s

    def _clock_limit(self) -> float:
        return self.physics.time_s + self.max_lag_s

    def node(self, uid: str) -> SimNode:
        """The node ``uid``; raises :class:`PeerGridValidationError` if unknown."""
        try:
            return self._nodes[uid]
        except KeyError as err:
            raise PeerGridValidationError("uid", f"no node {uid!r} in this grid") from err

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        """Start the grid."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the grid, whatever happened inside the block."""
        await self.stop()

    async def start(self) -> None:
        """Start the physics and every node's firmware; fail as a whole."""
        if self._started:
            raise PeerGridError("the grid is already running")
        if self._factory is None:
            self._factory, version = load_firmware()
            if self._fw_version is None:
                self._fw_version = version
        self._started = True
        self.clock.bind_limit(self._clock_limit)
        self._physics_task = asyncio.create_task(self._run_physics(), name="peergrid-sim-physics")
        try:
            for uid in self._nodes:
                await self.start_node(uid)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every node (relays off, servers closed) and the physics."""
        for uid, node in self._nodes.items():
            if node.running:
                await self.stop_node(uid)
            elif node.hardware is not None:
                node.hardware.power_off()
            node.physics.powered = False
        task, self._physics_task = self._physics_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.clock.bind_limit(None)
        self._started = False

    async def start_node(self, uid: str) -> None:
        """Boot ``uid``'s firmware (again), keeping its battery and port."""
        node = self.node(uid)
        if node.running:
            raise PeerGridError(f"node {uid} is already running")
        if not self._started or self._factory is None:
            raise PeerGridError("the grid is not started")
        noise_volts, noise_amps = self._noise
        hardware = SimHardware(
            node=node.physics,
            clock=self.clock,
            fw_version=self._fw_version or "unknown",
            reset_cause="power_on" if node.boots == 0 else "hard",
            # A new stream per boot: a rebooted node must not repeat its nonces.
            seed=None if self.seed is None else f"{self.seed}/boot{node.boots}",
            noise_volts=noise_volts,
            noise_amps=noise_amps,
            rssi_dbm=-50 - 3 * list(self._nodes).index(uid),
        )
        if node.hardware is not None:
            # Rebooting the ESP32 does not power-cycle the INA219: keep its registers.
            hardware.ina219 = node.hardware.ina219
            hardware.i2c = node.hardware.i2c
        try:
            firmware = self._factory(self._firmware_config(node), hardware)
        except Exception as err:
            # The firmware validates its config (a ConfigError naming the field).
            field = str(getattr(err, "field", "config"))
            raise PeerGridValidationError(field, f"node {uid}: {err}") from err
        node.hardware = hardware
        node.firmware = firmware
        node.crash = None
        node.boots += 1
        node.physics.powered = True
        task = asyncio.create_task(self._run_firmware(node, firmware), name=f"peergrid-sim-{uid}")
        node._task = task  # noqa: SLF001
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                while not firmware.port:
                    if task.done():
                        raise PeerGridError(f"node {uid} stopped while starting") from node.crash
                    await asyncio.sleep(0.002)
        except TimeoutError as err:
            await self.stop_node(uid)
            raise PeerGridTimeoutError(f"node {uid} did not start serving") from err
        node._port = int(firmware.port)  # noqa: SLF001

    async def stop_node(self, uid: str) -> None:
        """Kill ``uid``'s firmware: relays off, server closed; the battery stays."""
        node = self.node(uid)
        task, firmware = node._task, node.firmware  # noqa: SLF001
        if task is None or firmware is None:
            return
        if not task.done():
            firmware.stop()
            try:
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await asyncio.shield(task)
            except TimeoutError:
                _LOGGER.warning("Node %s did not stop in time; cancelling it", uid)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        node._task = None  # noqa: SLF001
        self._power_off(node)

    @staticmethod
    def _power_off(node: SimNode) -> None:
        if node.hardware is not None:
            node.hardware.power_off()
        node.physics.powered = False

    def _firmware_config(self, node: SimNode) -> dict[str, Any]:
        spec = node.spec
        config: dict[str, Any] = {
            "uid": node.uid,
            "key": node.key,
            "bench_mode": spec.bench_mode,
            "host": self.host,
            "port": node._port,  # noqa: SLF001
            # Connection liveness is a network matter: keep the firmware's 30 s
            # idle timeout in wall time, so that a controller pinging at its
            # usual pace is not dropped because simulated time runs faster.
            "idle_s": min(
                _MAX_IDLE_S, max(_CONNECTION_IDLE_S, ceil(_CONNECTION_IDLE_S * self.speedup))
            ),
        }
        if spec.limits:
            config["limits"] = dict(spec.limits)
        config.update(spec.config)
        return config

    async def _run_firmware(self, node: SimNode, firmware: FirmwareNode) -> None:
        try:
            await firmware.run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a crashing firmware is reported, not fatal
            node.crash = err
            _LOGGER.exception("Firmware of node %s crashed", node.uid)
        finally:
            # A halted ESP32 releases its relay coils, whatever the firmware did.
            self._power_off(node)

    async def _run_physics(self) -> None:
        physics, step_s, clock = self.physics, self.step_s, self.clock
        wall_tick = max(step_s / clock.speedup, _MIN_WALL_TICK_S)
        while True:
            # The clock never runs more than max_lag_s ahead, so one wake
            # does a bounded amount of work even after a host stall.
            target = clock.now_s()
            while physics.time_s + step_s <= target:
                physics.step(step_s)
            await asyncio.sleep(wall_tick)

    # -------------------------------------------------------------- waiting
    async def sleep(self, sim_seconds: float) -> None:
        """Let ``sim_seconds`` of simulated time pass."""
        await self.clock.sleep(sim_seconds)

    async def wait_for(
        self, predicate: Callable[[], bool], *, timeout_s: float, poll_s: float = 0.5
    ) -> None:
        """Wait until ``predicate()`` holds; give up after ``timeout_s`` simulated seconds.

        Raises :class:`PeerGridTimeoutError` on time-out.
        """
        deadline = self.physics.time_s + timeout_s
        while not predicate():
            if self.physics.time_s >= deadline:
                raise PeerGridTimeoutError(f"condition not met within {timeout_s} s simulated")
            await self.clock.sleep(poll_s)

    # -------------------------------------------------------------- faults
    def inject_stuck_relay(self, uid: str, relay: Relay, *, stuck: bool = True) -> None:
        """Weld ``relay``'s contact closed on ``uid`` (``stuck=False`` repairs it)."""
        self.node(uid).physics.weld(Relay(relay), stuck)

    def inject_sensor_fault(
        self, uid: str, *, active: bool = True, transfers: int | None = None
    ) -> None:
        """Make ``uid``'s I2C transfers raise ``OSError``.

        Without ``transfers`` the sensor stays unreachable while ``active``
        (a broken wire); with it, only the next ``transfers`` transfers fail
        (a glitch the firmware should ride out).
        """
        node = self.node(uid)
        if node.hardware is None:
            raise PeerGridError(f"node {uid} has no hardware yet (start the grid first)")
        if transfers is not None:
            if not 0 <= transfers <= 1_000_000:
                raise PeerGridValidationError("transfers", f"{transfers} is outside 0..1000000")
            node.hardware.i2c.fail_next = transfers
            return
        node.hardware.i2c.fault = active

    def inject_sensor_reset(self, uid: str) -> None:
        """Brown-out reset of ``uid``'s INA219: configuration and calibration lost."""
        node = self.node(uid)
        if node.hardware is None:
            raise PeerGridError(f"node {uid} has no hardware yet (start the grid first)")
        node.hardware.ina219.reset()

    def inject_voltage_drop(self, uid: str, volts: float) -> None:
        """Internal short on ``uid``'s cell: its open-circuit voltage drops by ``volts`` at once."""
        self.node(uid).physics.drop_voltage(volts)

    # ------------------------------------------------------------- summary
    def energy_balance(self) -> EnergyBalance:
        """Grid-wide energy books (see :class:`EnergyBalance`)."""
        return EnergyBalance.of(self.physics)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnergyBalance:
    """Energy books summed over the grid, in watt-hours.

    ``chemical_out_wh == chemical_in_wh + losses_wh`` holds to rounding: the
    simulator books every joule the cells release.
    """

    chemical_out_wh: float
    chemical_in_wh: float
    losses_wh: float
    delivered_to_bus_wh: float
    drawn_from_bus_wh: float

    @classmethod
    def of(cls, physics: GridPhysics) -> EnergyBalance:
        """Sum the books of every node of ``physics``."""
        books = [node.energy for node in physics.nodes.values()]
        return cls(
            chemical_out_wh=sum(b.chemical_out_j for b in books) / JOULES_PER_WH,
            chemical_in_wh=sum(b.chemical_in_j for b in books) / JOULES_PER_WH,
            losses_wh=sum(b.losses_j for b in books) / JOULES_PER_WH,
            delivered_to_bus_wh=sum(b.boost_out_j for b in books) / JOULES_PER_WH,
            drawn_from_bus_wh=sum(b.charger_in_j for b in books) / JOULES_PER_WH,
        )
