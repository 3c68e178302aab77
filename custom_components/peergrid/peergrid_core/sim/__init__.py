"""A simulator of PeerGrid nodes: real firmware, simulated batteries.

Layers, from the bottom:

* :mod:`.physics` -- pure, synchronous electrical model: Thevenin cells on the
  core's OCV curve, boost converters, TP4056 chargers, the ESP32's draw and
  the shared 5 V bus, with complete energy books and fault hooks;
* :mod:`.ina219` -- a register-level INA219 and the I2C bus it sits on;
* :mod:`.hardware` -- the firmware's ``hw`` object (pins, I2C, clock, RNG)
  backed by the physics;
* :mod:`.grid` -- :class:`SimulatedGrid`, which runs the firmware's ``Node``
  for every virtual node behind a TCP server on 127.0.0.1;
* ``python -m peergrid_core.sim`` -- the command-line front end.

The firmware package ``peergrid_node`` is imported only when a grid starts,
so the physics can be used without it.
"""

from __future__ import annotations

from .grid import (
    EnergyBalance,
    FirmwareNotFoundError,
    NodeSpec,
    PhysicalState,
    SimNode,
    SimulatedGrid,
    load_firmware,
)
from .hardware import SimClock, SimHardware
from .physics import (
    BoostParams,
    CellParams,
    ChargerParams,
    ChargerState,
    ConverterState,
    EnergyCounters,
    GridPhysics,
    NodeParams,
    NodePhysics,
    PhysicalMode,
    Relay,
)

__all__ = [
    "BoostParams",
    "CellParams",
    "ChargerParams",
    "ChargerState",
    "ConverterState",
    "EnergyBalance",
    "EnergyCounters",
    "FirmwareNotFoundError",
    "GridPhysics",
    "NodeParams",
    "NodePhysics",
    "NodeSpec",
    "PhysicalMode",
    "PhysicalState",
    "Relay",
    "SimClock",
    "SimHardware",
    "SimNode",
    "SimulatedGrid",
    "load_firmware",
]
