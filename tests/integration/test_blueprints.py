"""PeerGrid's automation blueprints, validated and run by Home Assistant itself.

Every blueprint under ``blueprints/automation/peergrid/`` is loaded with Home
Assistant's own blueprint schema, instantiated into an automation that the
automation integration validates, and run: the critical-charge protection end
to end against a simulated node over TCP, the others against the actions and
bus events of PeerGrid's contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
import shutil
from typing import Any

from freezegun.api import FrozenDateTimeFactory
from homeassistant.components.automation.config import (
    AUTOMATION_BLUEPRINT_SCHEMA,
    async_validate_config_item,
)
from homeassistant.components.automation.const import DOMAIN as AUTOMATION_DOMAIN
from homeassistant.components.blueprint import models
from homeassistant.components.blueprint.errors import MissingInput
from homeassistant.components.blueprint.schemas import BLUEPRINT_SCHEMA
from homeassistant.components.select import (
    ATTR_OPTION,
    DOMAIN as SELECT_DOMAIN,
    SERVICE_SELECT_OPTION,
)
from homeassistant.const import ATTR_ENTITY_ID, ENTITY_MATCH_ALL, SERVICE_TURN_OFF
from homeassistant.core import HomeAssistant, ServiceCall, SupportsResponse
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from homeassistant.util import dt as dt_util, yaml as yaml_util
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
    async_mock_service,
)

from custom_components.peergrid.const import DOMAIN
from peergrid_core.sim import SimulatedGrid

from .helpers import setup_entry, state_value, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT_DIR = REPO_ROOT / "blueprints" / "automation" / "peergrid"
SOURCE_URL_PREFIX = "https://github.com/peergrid/peergrid/blob/main/blueprints/automation/peergrid/"

SPREAD = "sensor.peergrid_grid_soc_spread"
MODE = "select.node_a_mode"
BATTERY = "sensor.node_a_battery"
NODE_STATE = "sensor.node_a_node_state"

EXAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "auto_balance_on_spread.yaml": {"spread_sensor": SPREAD},
    "protect_critical_soc.yaml": {"battery_sensor": BATTERY, "mode_select": MODE},
    "notify_transfer_result.yaml": {"notify_action": "notify.mobile_app_phone"},
    "nightly_balance_window.yaml": {},
}
"""Each shipped blueprint with the inputs that have no default."""

BALANCE_RESPONSE: dict[str, Any] = {
    "pairs": [{"donor": "NODE_A", "receiver": "NODE_B", "gap_pct": 50.0}],
    "spread_pct": 50.0,
    "skipped_reason": None,
    "started": [{"transfer_id": "t-balance", "sender": "NODE_A", "receiver": "NODE_B"}],
}
"""An ``auto_balance`` response: the plan and the records of the transfers it started."""


def _blueprint_files() -> list[str]:
    return sorted(path.name for path in BLUEPRINT_DIR.glob("*.yaml"))


def _use_blueprint(name: str, inputs: dict[str, Any], alias: str | None = None) -> dict[str, Any]:
    return {
        "alias": alias or name,
        "use_blueprint": {"path": f"peergrid/{name}", "input": inputs},
    }


@pytest.fixture
async def blueprint_config(hass: HomeAssistant, tmp_path: Path) -> AsyncIterator[Path]:
    """A configuration folder holding PeerGrid's blueprints where a user puts them.

    Afterwards every automation is turned off, which detaches its triggers:
    a time trigger would otherwise stay scheduled for the next day.
    """
    shutil.copytree(BLUEPRINT_DIR, tmp_path / "blueprints" / "automation" / "peergrid")
    original = hass.config.config_dir
    hass.config.config_dir = str(tmp_path)
    yield tmp_path
    if hass.services.has_service(AUTOMATION_DOMAIN, SERVICE_TURN_OFF):
        await hass.services.async_call(
            AUTOMATION_DOMAIN, SERVICE_TURN_OFF, {ATTR_ENTITY_ID: ENTITY_MATCH_ALL}, blocking=True
        )
        await hass.async_block_till_done()
    hass.config.config_dir = original


async def _until(predicate: Callable[[], bool]) -> None:
    """Let the event loop run until ``predicate()`` holds.

    For an automation that is waiting inside its actions, where
    ``hass.async_block_till_done()`` would wait for the whole run.
    """
    async with asyncio.timeout(5):
        # Nothing to await: the run is parked inside Home Assistant's script engine.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def _setup_automations(hass: HomeAssistant, *configs: dict[str, Any]) -> None:
    assert await async_setup_component(hass, AUTOMATION_DOMAIN, {AUTOMATION_DOMAIN: list(configs)})
    await hass.async_block_till_done()


def test_every_example_input_names_a_shipped_blueprint() -> None:
    """The tests below cover exactly the blueprints that ship."""
    assert _blueprint_files() == sorted(EXAMPLE_INPUTS)


@pytest.mark.parametrize("name", sorted(EXAMPLE_INPUTS))
def test_blueprint_passes_home_assistants_schema(name: str) -> None:
    """Each file is a valid automation blueprint with documented, selector-backed inputs."""
    data = yaml_util.load_yaml_dict(BLUEPRINT_DIR / name)
    BLUEPRINT_SCHEMA(data)
    blueprint = models.Blueprint(
        data, path=name, expected_domain="automation", schema=AUTOMATION_BLUEPRINT_SCHEMA
    )

    metadata = blueprint.metadata
    assert blueprint.domain == "automation"
    assert metadata["description"]
    assert metadata["source_url"] == SOURCE_URL_PREFIX + name
    # This Home Assistant is new enough.
    assert blueprint.validate() is None
    for key, spec in blueprint.inputs.items():
        assert spec.get("name"), f"input {key} has no name"
        assert "selector" in spec, f"input {key} has no selector"
        if "entity" in spec["selector"]:
            # Home Assistant normalises a filter to a list of filters.
            filters = spec["selector"]["entity"]["filter"]
            assert [entity_filter["integration"] for entity_filter in filters] == [DOMAIN]
    required = {key for key, spec in blueprint.inputs.items() if "default" not in spec}
    assert required <= set(EXAMPLE_INPUTS[name])


@pytest.mark.parametrize("name", sorted(EXAMPLE_INPUTS))
async def test_blueprint_instantiates_into_a_valid_automation(
    hass: HomeAssistant, blueprint_config: Path, name: str
) -> None:
    """The automation integration accepts an automation made from each blueprint."""
    config = await async_validate_config_item(
        hass, "automation", _use_blueprint(name, EXAMPLE_INPUTS[name])
    )
    assert config is not None
    assert config.validation_status == "ok", config.validation_error
    assert config["triggers"]
    assert config["actions"]


async def test_missing_required_input_is_refused(
    hass: HomeAssistant, blueprint_config: Path
) -> None:
    """Without its battery sensor the protection blueprint does not become an automation."""
    with pytest.raises(MissingInput, match="battery_sensor"):
        await async_validate_config_item(
            hass,
            "automation",
            _use_blueprint("protect_critical_soc.yaml", {"mode_select": MODE}),
        )


# ------------------------------------------------- critical charge, end to end
async def _select(hass: HomeAssistant, option: str) -> None:
    await hass.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: MODE, ATTR_OPTION: option},
        blocking=True,
    )


async def test_protection_idles_a_node_whose_charge_collapses(
    hass: HomeAssistant,
    blueprint_config: Path,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
) -> None:
    """A discharging node whose cell falls below 20 % is set idle by the automation.

    The cell drops to a low charge that is still above the node's own low-voltage
    cut-off, so the SUPPLY relay opens because of the automation, not a trip.
    """
    notifications = async_mock_service(hass, "notify", "mobile_app_phone")
    await setup_entry(hass, node_a_entry)
    await _setup_automations(
        hass,
        _use_blueprint(
            "protect_critical_soc.yaml",
            {
                "battery_sensor": BATTERY,
                "mode_select": MODE,
                "notify_action": "notify.mobile_app_phone",
            },
        ),
    )
    node = sim_grid.nodes["NODE_A"]

    await _select(hass, "discharge")
    assert node.physical.supply_closed
    await wait_until(hass, lambda: state_value(hass, MODE) == "discharge")
    assert not notifications

    # From about 4.04 V to 3.38 V: about 17 %, still above the 3.3 V cut-off.
    sim_grid.inject_voltage_drop("NODE_A", 0.66)
    await wait_until(hass, lambda: not node.physical.supply_closed)

    await wait_until(hass, lambda: state_value(hass, MODE) == "idle")
    assert float(state_value(hass, BATTERY)) < 20
    # Idle because the automation asked, not tripped by the node itself.
    assert state_value(hass, NODE_STATE) == "idle"
    automation = hass.states.get("automation.protect_critical_soc_yaml")
    assert automation is not None
    assert automation.attributes["last_triggered"] is not None
    assert len(notifications) == 1
    message = notifications[0].data["message"]
    assert message.startswith("NODE_A is at ")
    assert "critical level 20 %" in message


async def test_protection_refuses_discharge_below_the_level(
    hass: HomeAssistant,
    blueprint_config: Path,
    sim_grid: SimulatedGrid,
    node_a_entry: MockConfigEntry,
) -> None:
    """Selecting discharge on a node already below the level is undone at once."""
    await setup_entry(hass, node_a_entry)
    # NODE_A is at about 80 %: a level of 90 % makes it "critical" for this test.
    await _setup_automations(
        hass,
        _use_blueprint(
            "protect_critical_soc.yaml",
            {"battery_sensor": BATTERY, "mode_select": MODE, "threshold": 90},
        ),
    )
    node = sim_grid.nodes["NODE_A"]

    await _select(hass, "discharge")
    await wait_until(hass, lambda: not node.physical.supply_closed)
    await wait_until(hass, lambda: state_value(hass, MODE) == "idle")

    # Charging is what a low cell needs: the automation leaves it alone.
    await _select(hass, "charge")
    await wait_until(hass, lambda: state_value(hass, MODE) == "charge")
    await hass.async_block_till_done()
    assert node.physical.receive_closed
    await _select(hass, "idle")


# ------------------------------------------------------ transfer notifications
def _record(state: str, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "transfer_id": "0f3c2a9e8d7b4c6a9e1f2d3c4b5a6978",
        "sender": "NODE_A",
        "receiver": "NODE_B",
        "requested_wh": 5.0,
        "requested_duration_s": None,
        "state": state,
        "stop_reason": "target_reached",
        "wh_out": 5.0213,
        "wh_in": 4.6104,
        "loss_wh": 0.4109,
        "avg_voltage_v": 3.91,
        "avg_current_a": 0.42,
        "trip_reason": None,
        "sender_device_id": None,
        "receiver_device_id": None,
    }
    record.update(changes)
    return record


async def test_transfer_outcomes_are_notified(hass: HomeAssistant, blueprint_config: Path) -> None:
    """Completed and aborted transfers each send one notification with their numbers."""
    notifications = async_mock_service(hass, "notify", "mobile_app_phone")
    # A node device known to Home Assistant is named as the user named it.
    entry = MockConfigEntry(domain=DOMAIN, unique_id="NODE_B")
    entry.add_to_hass(hass)
    registry = dr.async_get(hass)
    node_b = registry.async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, "NODE_B")}, name="NODE_B"
    )
    registry.async_update_device(node_b.id, name_by_user="Garage battery")
    await _setup_automations(
        hass,
        _use_blueprint("notify_transfer_result.yaml", {"notify_action": "notify.mobile_app_phone"}),
    )

    hass.bus.async_fire(
        "peergrid_transfer_completed",
        _record("completed", receiver_device_id=node_b.id),
    )
    await hass.async_block_till_done()
    hass.bus.async_fire(
        "peergrid_transfer_aborted",
        _record(
            "aborted",
            stop_reason="sender_tripped",
            trip_reason="low_voltage",
            wh_out=2.1,
            wh_in=1.9,
            loss_wh=0.2,
        ),
    )
    await hass.async_block_till_done()

    assert [call.data["title"] for call in notifications] == ["PeerGrid transfer"] * 2
    completed, aborted = (" ".join(call.data["message"].split()) for call in notifications)
    assert completed == (
        "NODE_A sent 5.02 Wh to Garage battery: 4.61 Wh arrived, 0.41 Wh lost (target reached)."
    )
    assert aborted == (
        "Transfer from NODE_A to NODE_B aborted (sender tripped, trip: low voltage) "
        "after 2.1 Wh out, 1.9 Wh in, 0.2 Wh lost."
    )


async def test_transfer_notifications_follow_the_chosen_outcomes(
    hass: HomeAssistant, blueprint_config: Path
) -> None:
    """With only aborted transfers chosen, a completed one stays silent."""
    notifications = async_mock_service(hass, "notify", "notify")
    await _setup_automations(
        hass,
        _use_blueprint("notify_transfer_result.yaml", {"notify_on": ["aborted"]}),
    )

    hass.bus.async_fire("peergrid_transfer_completed", _record("completed"))
    await hass.async_block_till_done()
    assert not notifications
    hass.bus.async_fire(
        "peergrid_transfer_aborted", _record("aborted", stop_reason="receiver_lost")
    )
    await hass.async_block_till_done()
    assert len(notifications) == 1
    assert "(receiver lost)" in notifications[0].data["message"]


# ------------------------------------------------------------- balance on spread
async def test_wide_spread_runs_auto_balance(
    hass: HomeAssistant, blueprint_config: Path, freezer: FrozenDateTimeFactory
) -> None:
    """A spread above the limit for the hold time balances; so does a completed transfer."""
    balances: list[ServiceCall] = async_mock_service(
        hass, DOMAIN, "auto_balance", response=BALANCE_RESPONSE
    )
    hass.states.async_set(SPREAD, "5", {"unit_of_measurement": "%"})
    await _setup_automations(
        hass,
        _use_blueprint(
            "auto_balance_on_spread.yaml",
            {"spread_sensor": SPREAD, "deadband": 10, "hold_time": {"minutes": 5}},
        ),
    )

    hass.states.async_set(SPREAD, "25", {"unit_of_measurement": "%"})
    await hass.async_block_till_done()
    freezer.tick(timedelta(minutes=4))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert not balances
    freezer.tick(timedelta(minutes=1, seconds=1))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert [call.data for call in balances] == [{"dry_run": False}]

    # A transfer ends while the batteries are still far apart: balance again.
    hass.bus.async_fire("peergrid_transfer_completed", _record("completed"))
    await hass.async_block_till_done()
    assert len(balances) == 2

    # Once the spread is inside the limit, a completed transfer changes nothing.
    hass.states.async_set(SPREAD, "8", {"unit_of_measurement": "%"})
    hass.bus.async_fire("peergrid_transfer_completed", _record("completed"))
    await hass.async_block_till_done()
    assert len(balances) == 2


async def test_short_spike_of_the_spread_does_not_balance(
    hass: HomeAssistant, blueprint_config: Path, freezer: FrozenDateTimeFactory
) -> None:
    """The spread must stay wide for the whole hold time."""
    balances = async_mock_service(hass, DOMAIN, "auto_balance", response=BALANCE_RESPONSE)
    hass.states.async_set(SPREAD, "5")
    await _setup_automations(
        hass, _use_blueprint("auto_balance_on_spread.yaml", {"spread_sensor": SPREAD})
    )

    hass.states.async_set(SPREAD, "30")
    await hass.async_block_till_done()
    freezer.tick(timedelta(minutes=2))
    async_fire_time_changed(hass)
    hass.states.async_set(SPREAD, "6")
    await hass.async_block_till_done()
    freezer.tick(timedelta(minutes=10))
    async_fire_time_changed(hass)
    await hass.async_block_till_done()
    assert not balances


# --------------------------------------------------------- nightly balance window
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _window(minutes_from_now: int) -> tuple[datetime, list[str]]:
    """A start time soon after now and the weekdays it (and now) fall on."""
    now = dt_util.now().replace(microsecond=0)
    start = now + timedelta(minutes=minutes_from_now)
    return start, sorted({WEEKDAYS[now.weekday()], WEEKDAYS[start.weekday()]})


async def test_nightly_window_balances_and_stops_its_own_transfers(
    hass: HomeAssistant, blueprint_config: Path
) -> None:
    """At the start time the grid is balanced; at the end, this run's transfers stop."""
    balances = async_mock_service(
        hass,
        DOMAIN,
        "auto_balance",
        response=BALANCE_RESPONSE,
        supports_response=SupportsResponse.ONLY,
    )
    listings = async_mock_service(
        hass,
        DOMAIN,
        "get_transfers",
        response={"transfers": [{"transfer_id": "t-manual"}, {"transfer_id": "t-balance"}]},
        supports_response=SupportsResponse.ONLY,
    )
    stops = async_mock_service(hass, DOMAIN, "stop_transfer", response={"stopped": ["t-balance"]})
    start, days = _window(2)
    end = start + timedelta(hours=3)
    await _setup_automations(
        hass,
        _use_blueprint(
            "nightly_balance_window.yaml",
            {
                "start_time": start.strftime("%H:%M:%S"),
                "end_time": end.strftime("%H:%M:%S"),
                "stop_at_end": True,
                "weekdays": days,
            },
        ),
    )

    async_fire_time_changed(hass, start)
    # The run now waits for the end of the window.
    await _until(lambda: bool(balances))
    assert [call.data for call in balances] == [{"dry_run": False}]
    assert not stops

    async_fire_time_changed(hass, end)
    await hass.async_block_till_done()
    assert [call.data for call in listings] == [{"active_only": True}]
    # The manual transfer is not this run's: only the balancer's own is stopped.
    assert [call.data for call in stops] == [{"transfer_id": "t-balance"}]


async def test_nightly_window_skips_other_days(hass: HomeAssistant, blueprint_config: Path) -> None:
    """On a day that is not chosen nothing happens, and nothing waits for the end."""
    balances = async_mock_service(hass, DOMAIN, "auto_balance", response=BALANCE_RESPONSE)
    start, days = _window(2)
    await _setup_automations(
        hass,
        _use_blueprint(
            "nightly_balance_window.yaml",
            {
                "start_time": start.strftime("%H:%M:%S"),
                "weekdays": [day for day in WEEKDAYS if day not in days],
            },
        ),
    )

    async_fire_time_changed(hass, start)
    await hass.async_block_till_done()
    assert not balances


async def test_nightly_window_without_end_does_not_wait(
    hass: HomeAssistant, blueprint_config: Path
) -> None:
    """By default (every day, no stop at the end) one balance per night, nothing more."""
    balances = async_mock_service(hass, DOMAIN, "auto_balance", response=BALANCE_RESPONSE)
    stops = async_mock_service(hass, DOMAIN, "stop_transfer", response={"stopped": []})
    start, _ = _window(2)
    await _setup_automations(
        hass,
        _use_blueprint("nightly_balance_window.yaml", {"start_time": start.strftime("%H:%M:%S")}),
    )

    async_fire_time_changed(hass, start)
    await hass.async_block_till_done()
    assert len(balances) == 1
    async_fire_time_changed(hass, start + timedelta(hours=6))
    await hass.async_block_till_done()
    assert not stops
