"""PeerGrid's Assist intents: sentences, node names, and the actions they call.

The intents run against simulated nodes over TCP and PeerGrid's real actions,
so a spoken "send 5 watt-hours from node a to node b" is checked down to the
relays of the simulated nodes. Answers for outcomes the simulated grid cannot
easily produce use stand-in actions.
"""

from __future__ import annotations

from pathlib import Path
import shutil
from typing import Any

from hassil.intents import Intents
from hassil.recognize import recognize
from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import device_registry as dr, intent, llm
from homeassistant.setup import async_setup_component
from homeassistant.util import yaml as yaml_util
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_mock_service
import voluptuous_openapi

from custom_components.peergrid.const import DOMAIN
from custom_components.peergrid.intent import (
    INTENT_BALANCE,
    INTENT_BATTERY_LEVEL,
    INTENT_START_TRANSFER,
    INTENT_STOP_TRANSFERS,
    NodeMatchError,
    async_setup_intents,
    normalize_node_name,
)
from peergrid_core.sim import SimulatedGrid

from .helpers import node_entry, setup_entry, state_value, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SENTENCES = REPO_ROOT / "custom_sentences" / "en" / "peergrid.yaml"
PEERGRID_INTENTS = {
    INTENT_START_TRANSFER,
    INTENT_STOP_TRANSFERS,
    INTENT_BALANCE,
    INTENT_BATTERY_LEVEL,
}


def _slots(**values: Any) -> dict[str, dict[str, Any]]:
    return {name: {"value": value} for name, value in values.items()}


async def _handle(hass: HomeAssistant, intent_type: str, **slots: Any) -> intent.IntentResponse:
    return await intent.async_handle(hass, "test", intent_type, _slots(**slots))


def _speech(response: intent.IntentResponse) -> str:
    return str(response.speech["plain"]["speech"])


@pytest.fixture
def node_b_entry(sim_grid: SimulatedGrid) -> MockConfigEntry:
    """A config entry for NODE_B of the simulated grid (not yet added to hass)."""
    return node_entry(sim_grid, "NODE_B")


@pytest.fixture
async def grid(
    hass: HomeAssistant, node_a_entry: MockConfigEntry, node_b_entry: MockConfigEntry
) -> None:
    """Both simulated nodes in Home Assistant, with the ``intent`` integration loaded."""
    assert await async_setup_component(hass, "intent", {})
    await setup_entry(hass, node_a_entry)
    await setup_entry(hass, node_b_entry)


# ----------------------------------------------------------------- sentence file
def test_sentence_file_has_the_expected_structure() -> None:
    """Language, one block per intent with sentences, and the slot lists they use."""
    data = yaml_util.load_yaml_dict(SENTENCES)
    assert data["language"] == "en"
    assert set(data["intents"]) == PEERGRID_INTENTS
    for name, spec in data["intents"].items():
        assert all(block["sentences"] for block in spec["data"]), name
    assert data["lists"]["energy"]["range"] == {"from": 1, "to": 100}
    for wildcard in ("sender", "receiver", "node"):
        assert data["lists"][wildcard] == {"wildcard": True}


@pytest.mark.parametrize(
    ("sentence", "intent_type", "slots"),
    [
        (
            "send 5 watt-hours from node a to node b",
            INTENT_START_TRANSFER,
            {"energy": 5, "sender": "node a", "receiver": "node b"},
        ),
        (
            "transfer 20 Wh to NODE_B from NODE_A",
            INTENT_START_TRANSFER,
            {"energy": 20, "sender": "NODE_A", "receiver": "NODE_B"},
        ),
        (
            "charge garage battery from node a",
            INTENT_START_TRANSFER,
            {"sender": "node a", "receiver": "garage battery"},
        ),
        ("stop all energy transfers", INTENT_STOP_TRANSFERS, {}),
        ("cancel the transfer", INTENT_STOP_TRANSFERS, {}),
        ("balance the grid", INTENT_BALANCE, {}),
        ("balance my batteries", INTENT_BALANCE, {}),
        ("what is the battery level of node a", INTENT_BATTERY_LEVEL, {"node": "node a"}),
        ("how full is NODE_B", INTENT_BATTERY_LEVEL, {"node": "NODE_B"}),
    ],
)
def test_sentences_match_their_intents(
    sentence: str, intent_type: str, slots: dict[str, Any]
) -> None:
    """Home Assistant's sentence matcher finds the intent and its slot values."""
    result = recognize(sentence, Intents.from_dict(yaml_util.load_yaml_dict(SENTENCES)))
    assert result is not None, sentence
    assert result.intent.name == intent_type
    assert {name: entity.value for name, entity in result.entities.items()} == slots


def test_energy_outside_the_transfer_range_is_not_matched() -> None:
    """101 watt-hours is not a transfer the grid accepts, so no sentence matches it."""
    intents = Intents.from_dict(yaml_util.load_yaml_dict(SENTENCES))
    assert recognize("send 101 watt-hours from node a to node b", intents) is None


def test_node_names_fold_case_and_separators() -> None:
    """What a speech-to-text engine writes still finds the node's uid."""
    assert normalize_node_name("NODE_A") == normalize_node_name(" node  a ") == "node a"
    assert normalize_node_name("Node-A") == "node a"


# ------------------------------------------------------------------ registration
async def test_intents_are_registered_through_the_intent_integration(
    hass: HomeAssistant, grid: None
) -> None:
    """Loading PeerGrid with ``intent`` registers the four handlers, each described."""
    handlers = {
        handler.intent_type: handler
        for handler in intent.async_get(hass)
        if handler.intent_type in PEERGRID_INTENTS
    }
    assert set(handlers) == PEERGRID_INTENTS
    assert all(handler.description for handler in handlers.values())


async def test_assist_api_offers_the_intents_as_tools(hass: HomeAssistant, grid: None) -> None:
    """An LLM agent using the Assist API gets PeerGrid's intents as tools with typed slots."""
    assert await async_setup_component(hass, "homeassistant", {})
    api = await llm.async_get_api(
        hass,
        llm.LLM_API_ASSIST,
        llm.LLMContext(
            platform="test",
            context=Context(),
            user_prompt=None,
            language="en",
            assistant=None,
            device_id=None,
        ),
    )
    tools = {tool.name: tool for tool in api.tools}
    assert set(tools) >= PEERGRID_INTENTS
    # What an LLM agent sends to its model as the tool's parameters.
    start = voluptuous_openapi.convert(
        tools[INTENT_START_TRANSFER].parameters, custom_serializer=api.custom_serializer
    )
    assert set(start["required"]) == {"sender", "receiver"}
    assert start["properties"]["energy"]["maximum"] == 100
    assert start["properties"]["sender"]["description"]
    level = voluptuous_openapi.convert(
        tools[INTENT_BATTERY_LEVEL].parameters, custom_serializer=api.custom_serializer
    )
    assert level["required"] == ["node"]


# ----------------------------------------------------------------- battery level
async def test_battery_level_reads_the_nodes_sensor(hass: HomeAssistant, grid: None) -> None:
    """The answer is the Battery sensor's value, for a node named as spoken."""
    response = await _handle(hass, INTENT_BATTERY_LEVEL, node="node a")

    level = round(float(state_value(hass, "sensor.node_a_battery")))
    assert response.response_type is intent.IntentResponseType.QUERY_ANSWER
    assert _speech(response) == f"NODE_A is at {level} percent."
    assert [state.entity_id for state in response.matched_states] == ["sensor.node_a_battery"]


async def test_nodes_answer_to_the_name_the_user_gave_them(hass: HomeAssistant, grid: None) -> None:
    """A renamed device is found by its new name and called by it."""
    registry = dr.async_get(hass)
    device = registry.async_get_device(identifiers={(DOMAIN, "NODE_B")})
    assert device is not None
    registry.async_update_device(device.id, name_by_user="Garage battery")

    response = await _handle(hass, INTENT_BATTERY_LEVEL, node="garage battery")
    assert _speech(response).startswith("Garage battery is at ")
    # The uid keeps working.
    response = await _handle(hass, INTENT_BATTERY_LEVEL, node="node_b")
    assert _speech(response).startswith("Garage battery is at ")


async def test_unknown_node_is_answered_with_the_known_nodes(
    hass: HomeAssistant, grid: None
) -> None:
    """A name no node has is an error answer that lists the nodes there are."""
    response = await _handle(hass, INTENT_BATTERY_LEVEL, node="node c")

    assert response.response_type is intent.IntentResponseType.ERROR
    assert response.error_code is intent.IntentResponseErrorCode.NO_VALID_TARGETS
    assert _speech(response) == "No PeerGrid node is called 'node c'. Known nodes: NODE_A, NODE_B."


async def test_unknown_node_starts_nothing(
    hass: HomeAssistant, sim_grid: SimulatedGrid, grid: None
) -> None:
    """A transfer to a node that does not exist is refused before any action runs."""
    response = await _handle(hass, INTENT_START_TRANSFER, sender="node a", receiver="node z")

    assert response.error_code is intent.IntentResponseErrorCode.NO_VALID_TARGETS
    assert "'node z'" in _speech(response)
    assert not sim_grid.nodes["NODE_A"].physical.supply_closed


def test_node_lookup_error_is_an_intent_error() -> None:
    """For callers of the lookup itself, a failed name is an intent handling error."""
    err = NodeMatchError("node c", duplicate=False, known=[])
    assert isinstance(err, intent.IntentHandleError)
    assert str(err) == "No PeerGrid node is called 'node c'. Known nodes: none."


async def test_ambiguous_node_name_is_refused(hass: HomeAssistant, grid: None) -> None:
    """Two nodes with the same name cannot be told apart by it."""
    registry = dr.async_get(hass)
    for uid in ("NODE_A", "NODE_B"):
        device = registry.async_get_device(identifiers={(DOMAIN, uid)})
        assert device is not None
        registry.async_update_device(device.id, name_by_user="Shed")

    response = await _handle(hass, INTENT_BATTERY_LEVEL, node="shed")
    assert _speech(response) == "More than one PeerGrid node is called 'shed'; say its uid instead."


# ------------------------------------------------------------ transfers, for real
async def test_spoken_transfer_moves_the_relays(
    hass: HomeAssistant, sim_grid: SimulatedGrid, grid: None
) -> None:
    """Start: the sender supplies, the receiver charges. Stop: both go idle."""
    node_a = sim_grid.nodes["NODE_A"]
    node_b = sim_grid.nodes["NODE_B"]

    response = await _handle(
        hass, INTENT_START_TRANSFER, sender="node a", receiver="Node-B", energy="5"
    )
    assert response.response_type is intent.IntentResponseType.ACTION_DONE
    assert _speech(response) == "Sending 5 watt-hours from NODE_A to NODE_B."
    assert response.speech_slots["transfer_id"]
    await wait_until(hass, lambda: node_a.physical.supply_closed)
    await wait_until(hass, lambda: node_b.physical.receive_closed)

    response = await _handle(hass, INTENT_STOP_TRANSFERS)
    assert _speech(response) == "Stopped 1 transfer."
    await wait_until(hass, lambda: not node_a.physical.supply_closed)
    await wait_until(hass, lambda: not node_b.physical.receive_closed)

    response = await _handle(hass, INTENT_STOP_TRANSFERS)
    assert _speech(response) == "No transfer was running."


async def test_refused_transfer_is_answered_with_the_reason(
    hass: HomeAssistant, sim_grid: SimulatedGrid, grid: None
) -> None:
    """A node cannot send to itself: the answer says why and nothing moves."""
    response = await _handle(hass, INTENT_START_TRANSFER, sender="node a", receiver="NODE_A")

    assert response.response_type is intent.IntentResponseType.ERROR
    assert response.error_code is intent.IntentResponseErrorCode.FAILED_TO_HANDLE
    assert _speech(response).startswith("Could not start the transfer: ")
    assert not sim_grid.nodes["NODE_A"].physical.supply_closed
    assert not sim_grid.nodes["NODE_A"].physical.receive_closed


async def test_energy_above_the_limit_is_invalid_slot_info(hass: HomeAssistant, grid: None) -> None:
    """An LLM asking for 500 Wh gets a slot error before any action runs."""
    with pytest.raises(intent.InvalidSlotInfo):
        await _handle(hass, INTENT_START_TRANSFER, sender="NODE_A", receiver="NODE_B", energy=500)


async def test_spoken_balance_pairs_the_full_node_with_the_empty_one(
    hass: HomeAssistant, sim_grid: SimulatedGrid, grid: None
) -> None:
    """NODE_A (about 80 %) gives to NODE_B (about 30 %)."""
    response = await _handle(hass, INTENT_BALANCE)

    assert _speech(response) == "Balancing the grid with 1 transfer: NODE_A to NODE_B."
    await wait_until(hass, lambda: sim_grid.nodes["NODE_A"].physical.supply_closed)
    await wait_until(hass, lambda: sim_grid.nodes["NODE_B"].physical.receive_closed)
    await _handle(hass, INTENT_STOP_TRANSFERS)
    await wait_until(hass, lambda: not sim_grid.nodes["NODE_A"].physical.supply_closed)


# ------------------------------------------- answers for outcomes, stand-in actions
@pytest.mark.parametrize(
    ("plan", "speech"),
    [
        (
            {"pairs": [], "spread_pct": 4.0, "skipped_reason": "spread_below_deadband"},
            "Nothing to balance: spread below deadband.",
        ),
        ({"pairs": [], "spread_pct": 0.0, "skipped_reason": None}, "Nothing to balance right now."),
        (
            {
                "pairs": [{"donor": "NODE_A", "receiver": "NODE_B", "gap_pct": 40.0}],
                "spread_pct": 40.0,
                "skipped_reason": None,
                "started": [],
            },
            "The balancer found nodes to pair but could not start a transfer.",
        ),
    ],
)
async def test_balance_explains_why_nothing_started(
    hass: HomeAssistant, plan: dict[str, Any], speech: str
) -> None:
    """Without a transfer to start, the answer gives the balancer's reason."""
    await async_setup_intents(hass)
    calls = async_mock_service(hass, DOMAIN, "auto_balance", response=plan)

    response = await _handle(hass, INTENT_BALANCE)

    assert _speech(response) == speech
    assert [call.data for call in calls] == [{"dry_run": False}]


async def test_stop_counts_several_transfers(hass: HomeAssistant) -> None:
    """Several stopped transfers are counted in the answer."""
    await async_setup_intents(hass)
    async_mock_service(hass, DOMAIN, "stop_transfer", response={"stopped": ["t1", "t2"]})

    response = await _handle(hass, INTENT_STOP_TRANSFERS)
    assert _speech(response) == "Stopped 2 transfers."


async def test_missing_action_is_answered_not_raised(hass: HomeAssistant) -> None:
    """Before PeerGrid's actions exist (integration not loaded), the answer says so."""
    await async_setup_intents(hass)

    response = await _handle(hass, INTENT_STOP_TRANSFERS)
    assert response.response_type is intent.IntentResponseType.ERROR
    assert _speech(response).startswith("Could not stop the transfers: ")


# ------------------------------------------------ the built-in agent, end to end
async def test_conversation_agent_uses_the_shipped_sentences(
    hass: HomeAssistant, grid: None, tmp_path: Path
) -> None:
    """With the sentence file in the config folder, Assist answers a spoken question."""
    sentences = tmp_path / "custom_sentences" / "en"
    sentences.mkdir(parents=True)
    shutil.copy(SENTENCES, sentences / "peergrid.yaml")
    original = hass.config.config_dir
    hass.config.config_dir = str(tmp_path)
    try:
        assert await async_setup_component(hass, "homeassistant", {})
        assert await async_setup_component(hass, "conversation", {})
        result = await conversation.async_converse(
            hass, "what is the battery level of node a", None, Context(), "en"
        )
        unknown = await conversation.async_converse(
            hass, "how full is the neighbour's battery", None, Context(), "en"
        )
    finally:
        hass.config.config_dir = original

    level = round(float(state_value(hass, "sensor.node_a_battery")))
    assert result.response.speech["plain"]["speech"] == f"NODE_A is at {level} percent."
    assert unknown.response.speech["plain"]["speech"] == (
        "No PeerGrid node is called 'the neighbour's battery'. Known nodes: NODE_A, NODE_B."
    )
