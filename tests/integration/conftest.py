"""Fixtures for the Home Assistant side of PeerGrid.

The repository's ``custom_components`` package is imported here, before the
Home Assistant test harness puts its own test configuration folder on the
path; otherwise Home Assistant would look for the integration there.

Tests run the integration against simulated nodes: the real node firmware on
simulated hardware behind real TCP servers on 127.0.0.1 (``peergrid_core.sim``),
never against mocks of PeerGrid's own client.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from pathlib import Path
from unittest.mock import PropertyMock, patch

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

import custom_components.peergrid  # noqa: F401  (see the module docstring)
from peergrid_core.sim import NodeSpec, SimulatedGrid

from .helpers import node_entry

KEY_A = "node-a-key-0123456789abcdef"
KEY_B = "node-b-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def ledger_file(tmp_path: Path) -> Generator[Path]:
    """Each test's own ledger file (the test configuration folder is shared by all tests)."""
    path = tmp_path / "peergrid_ledger.db"
    with patch("custom_components.peergrid.ledger.LEDGER_FILE", str(path)):
        yield path


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load integrations from custom_components/."""


@pytest.fixture
def entity_registry_enabled_by_default() -> Generator[None]:
    """Enable the entities that PeerGrid disables by default (noisy diagnostics)."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        new_callable=PropertyMock,
        return_value=True,
    ):
        yield


@pytest.fixture
async def sim_grid(socket_enabled: None) -> AsyncGenerator[SimulatedGrid]:
    """Two simulated nodes on 127.0.0.1: NODE_A fairly full, NODE_B fairly empty.

    Sockets are enabled for these tests; the Home Assistant test harness still
    refuses connections to anything but 127.0.0.1.
    """
    grid = SimulatedGrid(
        [
            NodeSpec(uid="NODE_A", key=KEY_A, soc_percent=80.0),
            NodeSpec(uid="NODE_B", key=KEY_B, soc_percent=30.0),
        ],
        speedup=1.0,
        seed=7,
    )
    async with grid:
        yield grid


@pytest.fixture
def node_a_entry(sim_grid: SimulatedGrid) -> MockConfigEntry:
    """A config entry for NODE_A of the simulated grid (not yet added to hass)."""
    return node_entry(sim_grid, "NODE_A")
