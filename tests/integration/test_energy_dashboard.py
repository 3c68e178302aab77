"""Home Assistant's own Energy-dashboard validation accepts PeerGrid's energy sensors.

The validation is what *Settings -> Dashboards -> Energy* shows as problems
(wrong unit, device class or state class, no statistics, unavailable...). It
runs here against real PeerGrid entities of simulated nodes, with the
recorder compiling their statistics, for the preferences the demo writes and
for the peer-transfer counters used as grid import and export.
"""

from __future__ import annotations

from typing import Any

from homeassistant.components.energy import data as energy_data
from homeassistant.components.energy.validate import async_validate
from homeassistant.components.recorder.core import Recorder
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util
import pytest
from pytest_homeassistant_custom_component.components.recorder.common import (
    async_wait_recording_done,
    do_adhoc_statistics,
)

from demo.config_dir import energy_preferences
from demo.dashboard import node_entity
from peergrid_core.sim import SimulatedGrid

from .helpers import node_entry, setup_entry, wait_until

NODES = ("NODE_A", "NODE_B")


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(
    recorder_mock: Recorder, enable_custom_integrations: None
) -> None:
    """The recorder must exist before Home Assistant starts: ask for it first."""


def _peers_as_grid(nodes: tuple[str, ...]) -> dict[str, Any]:
    """Each node's peer totals as a grid connection: received = import, shared = export."""
    return {
        "energy_sources": [
            {
                "type": "grid",
                "flow_from": [
                    {
                        "stat_energy_from": node_entity(
                            "sensor", uid, "Energy received from peers"
                        ),
                        "stat_cost": None,
                        "entity_energy_price": None,
                        "number_energy_price": None,
                    }
                    for uid in nodes
                ],
                "flow_to": [
                    {
                        "stat_energy_to": node_entity("sensor", uid, "Energy shared to peers"),
                        "stat_compensation": None,
                        "entity_energy_price": None,
                        "number_energy_price": None,
                    }
                    for uid in nodes
                ],
                "cost_adjustment_day": 0.0,
            }
        ],
        "device_consumption": [],
    }


@pytest.mark.parametrize(
    ("preferences", "sources"),
    [
        pytest.param(energy_preferences(NODES), len(NODES), id="node-batteries-as-in-the-demo"),
        pytest.param(_peers_as_grid(NODES), 1, id="peer-transfers-as-grid"),
    ],
)
async def test_energy_validation_finds_no_problem(
    hass: HomeAssistant,
    sim_grid: SimulatedGrid,
    preferences: dict[str, Any],
    sources: int,
) -> None:
    """Every PeerGrid energy sensor in the preferences passes Home Assistant's checks."""
    for uid in NODES:
        await setup_entry(hass, node_entry(sim_grid, uid))
    wanted = [
        source[key]
        for source in energy_preferences(NODES)["energy_sources"]
        for key in ("stat_energy_from", "stat_energy_to")
    ] + [
        node_entity("sensor", uid, name)
        for uid in NODES
        for name in ("Energy shared to peers", "Energy received from peers")
    ]
    await wait_until(
        hass,
        lambda: all(
            (state := hass.states.get(entity_id)) is not None
            and state.state not in ("unknown", "unavailable")
            for entity_id in wanted
        ),
    )

    assert await async_setup_component(hass, "energy", {})
    manager = await energy_data.async_get_manager(hass)
    await manager.async_update(preferences)  # type: ignore[arg-type]

    # The recorder compiles statistics every five minutes; run the current
    # period's compile now, so that each sensor has its statistics metadata.
    await async_wait_recording_done(hass)
    now = dt_util.utcnow()
    do_adhoc_statistics(
        hass, start=now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    )
    await async_wait_recording_done(hass)

    result = (await async_validate(hass)).as_dict()

    assert result == {"energy_sources": [[] for _ in range(sources)], "device_consumption": []}


async def test_energy_validation_reports_a_node_that_is_away(
    hass: HomeAssistant, sim_grid: SimulatedGrid
) -> None:
    """The check is real: a node's counters without a node are reported as unavailable."""
    for uid in NODES:
        await setup_entry(hass, node_entry(sim_grid, uid))
    supplied = node_entity("sensor", "NODE_B", "Energy supplied")
    await wait_until(
        hass, lambda: (state := hass.states.get(supplied)) is not None and state.state != "unknown"
    )
    await sim_grid.stop_node("NODE_B")
    await wait_until(
        hass,
        lambda: (state := hass.states.get(supplied)) is not None and state.state == "unavailable",
    )

    assert await async_setup_component(hass, "energy", {})
    manager = await energy_data.async_get_manager(hass)
    await manager.async_update(energy_preferences(NODES))  # type: ignore[arg-type]
    await async_wait_recording_done(hass)

    issues = (await async_validate(hass)).as_dict()["energy_sources"]

    assert {issue["type"] for issue in issues[1]} >= {"entity_unavailable"}
    assert any(
        entity == supplied
        for issue in issues[1]
        if issue["type"] == "entity_unavailable"
        for entity, _value in issue["affected_entities"]
    )
