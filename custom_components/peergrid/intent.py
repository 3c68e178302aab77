"""Assist intents of PeerGrid: move energy, stop, balance and ask for a battery level.

Home Assistant's ``intent`` integration loads this platform by itself and calls
:func:`async_setup_intents` once PeerGrid is loaded. Registered handlers serve
two kinds of assistant:

* the built-in conversation agent, through the sentences in the repository's
  ``custom_sentences/en/peergrid.yaml`` (copied by the user into
  ``<config>/custom_sentences/en/``);
* LLM conversation agents, through the Assist API, which turns every handler
  into a tool described by :attr:`~homeassistant.helpers.intent.IntentHandler.description`
  and :attr:`~homeassistant.helpers.intent.IntentHandler.slot_schema`.

Handlers only translate words into PeerGrid's actions (``start_transfer``,
``stop_transfer``, ``auto_balance``), so every safety check of an action applies
to voice as well. Nodes are named as the user sees them: the device name (or
the name the user gave the device) or the node uid, in any letter case, with
spaces, hyphens and underscores treated alike ("node a" finds ``NODE_A``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import re
from typing import Any, Final, override

from homeassistant.const import STATE_UNAVAILABLE, STATE_UNKNOWN
from homeassistant.core import HomeAssistant, ServiceResponse
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, entity_registry as er, intent
import voluptuous as vol

from .const import DOMAIN

INTENT_START_TRANSFER: Final = "PeerGridStartTransfer"
INTENT_STOP_TRANSFERS: Final = "PeerGridStopTransfers"
INTENT_BALANCE: Final = "PeerGridBalance"
INTENT_BATTERY_LEVEL: Final = "PeerGridBatteryLevel"

SERVICE_START_TRANSFER: Final = "start_transfer"
SERVICE_STOP_TRANSFER: Final = "stop_transfer"
SERVICE_AUTO_BALANCE: Final = "auto_balance"

MAX_TRANSFER_WH: Final = 100.0
"""Largest energy target of one transfer; the action enforces it too."""

# LLM agents see a handler only when the user exposed an entity of one of its
# platforms: reading a level needs an exposed sensor, moving energy needs an
# exposed control (the node's Mode select or relay switches).
_READ_PLATFORMS: Final = frozenset({"sensor"})
_CONTROL_PLATFORMS: Final = frozenset({"select", "switch"})

_SEPARATORS = re.compile(r"[\s_\-]+")


async def async_setup_intents(hass: HomeAssistant) -> None:
    """Register PeerGrid's intent handlers (called by the ``intent`` integration)."""
    intent.async_register(hass, StartTransferIntentHandler())
    intent.async_register(hass, StopTransfersIntentHandler())
    intent.async_register(hass, BalanceIntentHandler())
    intent.async_register(hass, BatteryLevelIntentHandler())


def normalize_node_name(name: str) -> str:
    """Fold a spoken or typed node name for comparison ("Node-A" == "node a" == "NODE_A")."""
    return _SEPARATORS.sub(" ", name).strip().casefold()


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeDevice:
    """A PeerGrid node as the voice handlers see it."""

    device_id: str
    uid: str
    name: str
    """What to call the node in an answer: the user's name for it, else the device name."""
    names: frozenset[str]
    """Every name the node answers to, normalised (see :func:`normalize_node_name`)."""


class NodeMatchError(intent.IntentHandleError):
    """No node, or more than one node, goes by the name that was said.

    The handlers answer it instead of raising it: Home Assistant's built-in
    agent would replace any raised error with a generic sentence, and the
    speaker should hear which name failed and which nodes exist.
    """

    def __init__(self, name: str, *, duplicate: bool, known: list[str]) -> None:
        """Describe the failed lookup of ``name``."""
        if duplicate:
            message = f"More than one PeerGrid node is called '{name}'; say its uid instead."
        else:
            message = (
                f"No PeerGrid node is called '{name}'. "
                f"Known nodes: {', '.join(known) if known else 'none'}."
            )
        super().__init__(message)
        self.name = name
        self.duplicate = duplicate
        self.known = known


def async_node_devices(hass: HomeAssistant) -> list[NodeDevice]:
    """Every PeerGrid node device, sorted by uid; the grid's service device is not a node."""
    nodes: list[NodeDevice] = []
    for device in dr.async_get(hass).devices.values():
        if device.entry_type is dr.DeviceEntryType.SERVICE:
            continue
        uid = next((ident for domain, ident in device.identifiers if domain == DOMAIN), None)
        if uid is None:
            continue
        names = frozenset(
            normalize_node_name(name)
            for name in (device.name_by_user, device.name, uid)
            if name is not None
        )
        nodes.append(
            NodeDevice(
                device_id=device.id,
                uid=uid,
                name=device.name_by_user or device.name or uid,
                names=names,
            )
        )
    return sorted(nodes, key=lambda node: node.uid)


def async_find_node(hass: HomeAssistant, name: str) -> NodeDevice:
    """The node called ``name`` (device name, user's name or uid; see the module docstring).

    Raises :class:`NodeMatchError` when no node, or several, go by that name.
    """
    wanted = normalize_node_name(name)
    nodes = async_node_devices(hass)
    matches = [node for node in nodes if wanted in node.names]
    if len(matches) == 1:
        return matches[0]
    raise NodeMatchError(name, duplicate=bool(matches), known=[node.name for node in nodes])


def _node_name(hass: HomeAssistant, uid: str) -> str:
    """The name to speak for the node ``uid``; the uid itself if it has no device."""
    return next((node.name for node in async_node_devices(hass) if node.uid == uid), uid)


def _format_wh(value: float) -> str:
    """Energy for speech: "5 watt-hours", "2.5 watt-hours", "1 watt-hour"."""
    rounded = round(value, 1)
    number = f"{rounded:g}"
    return f"{number} watt-hour" if rounded == 1 else f"{number} watt-hours"


def _as_mapping(response: ServiceResponse) -> Mapping[str, Any]:
    """An action's response as a mapping; an action without one answers ``{}``."""
    return response if isinstance(response, Mapping) else {}


async def _async_call(
    intent_obj: intent.Intent, service: str, data: dict[str, Any]
) -> Mapping[str, Any]:
    """Call one of PeerGrid's actions as the speaker and return its response."""
    response = await intent_obj.hass.services.async_call(
        DOMAIN,
        service,
        data,
        blocking=True,
        context=intent_obj.context,
        return_response=True,
    )
    return _as_mapping(response)


def _error(
    intent_obj: intent.Intent, code: intent.IntentResponseErrorCode, message: str
) -> intent.IntentResponse:
    """An error answer: spoken by the built-in agent, passed on to LLM agents as is."""
    response = intent_obj.create_response()
    response.async_set_error(code, message)
    return response


def _unknown_node(intent_obj: intent.Intent, err: NodeMatchError) -> intent.IntentResponse:
    """Answer a name that matches no node, or several."""
    return _error(intent_obj, intent.IntentResponseErrorCode.NO_VALID_TARGETS, str(err))


def _refused(
    intent_obj: intent.Intent, what: str, err: HomeAssistantError
) -> intent.IntentResponse:
    """Answer with the action's own reason when it refused (offline node, low charge...).

    A refusal is an answer, not a failure of the handler.
    """
    return _error(
        intent_obj, intent.IntentResponseErrorCode.FAILED_TO_HANDLE, f"Could not {what}: {err}"
    )


class StartTransferIntentHandler(intent.IntentHandler):
    """Send energy from one node to another (``peergrid.start_transfer``)."""

    intent_type = INTENT_START_TRANSFER
    description = (
        "Sends energy from one PeerGrid battery node to another. The sender discharges "
        "into the grid and the receiver charges until the sender has given the requested "
        "energy (at most 100 watt-hours); the node's safety limits still apply."
    )
    platforms = set(_CONTROL_PLATFORMS)

    @property
    @override
    def slot_schema(self) -> dict[Any, Any]:
        """Sender and receiver node names, and the energy in watt-hours."""
        return {
            vol.Required("sender", description="Name or uid of the node that gives energy"): (
                intent.non_empty_string
            ),
            vol.Required("receiver", description="Name or uid of the node that takes energy"): (
                intent.non_empty_string
            ),
            vol.Optional(
                "energy",
                description="Energy to send in watt-hours, more than 0 and at most 100",
            ): vol.All(
                vol.Coerce(float), vol.Range(min=0, min_included=False, max=MAX_TRANSFER_WH)
            ),
        }

    @override
    async def async_handle(self, intent_obj: intent.Intent) -> intent.IntentResponse:
        """Resolve both nodes, start the transfer and say what moves where."""
        slots = self.async_validate_slots(intent_obj.slots)
        try:
            sender = async_find_node(intent_obj.hass, slots["sender"]["value"])
            receiver = async_find_node(intent_obj.hass, slots["receiver"]["value"])
        except NodeMatchError as err:
            return _unknown_node(intent_obj, err)
        data: dict[str, Any] = {"sender": sender.device_id, "receiver": receiver.device_id}
        if "energy" in slots:
            data["energy_wh"] = slots["energy"]["value"]
        try:
            record = await _async_call(intent_obj, SERVICE_START_TRANSFER, data)
        except HomeAssistantError as err:
            return _refused(intent_obj, "start the transfer", err)

        response = intent_obj.create_response()
        energy = record.get("requested_wh", data.get("energy_wh"))
        amount = "energy" if energy is None else _format_wh(float(energy))
        response.async_set_speech(f"Sending {amount} from {sender.name} to {receiver.name}.")
        response.async_set_results(
            [
                intent.IntentResponseTarget(
                    name=node.name, type=intent.IntentResponseTargetType.DEVICE, id=node.device_id
                )
                for node in (sender, receiver)
            ]
        )
        response.async_set_speech_slots(
            {
                "transfer_id": record.get("transfer_id"),
                "sender": sender.name,
                "receiver": receiver.name,
                "energy_wh": energy,
            }
        )
        return response


class StopTransfersIntentHandler(intent.IntentHandler):
    """Stop every running transfer (``peergrid.stop_transfer`` without an id)."""

    intent_type = INTENT_STOP_TRANSFERS
    description = "Stops every running PeerGrid energy transfer; all nodes involved go idle."
    platforms = set(_CONTROL_PLATFORMS)

    @override
    async def async_handle(self, intent_obj: intent.Intent) -> intent.IntentResponse:
        """Stop them all and say how many there were."""
        try:
            result = await _async_call(intent_obj, SERVICE_STOP_TRANSFER, {})
        except HomeAssistantError as err:
            return _refused(intent_obj, "stop the transfers", err)

        stopped = list(result.get("stopped") or [])
        response = intent_obj.create_response()
        if not stopped:
            speech = "No transfer was running."
        elif len(stopped) == 1:
            speech = "Stopped 1 transfer."
        else:
            speech = f"Stopped {len(stopped)} transfers."
        response.async_set_speech(speech)
        response.async_set_speech_slots({"stopped": stopped})
        return response


class BalanceIntentHandler(intent.IntentHandler):
    """Balance the batteries now (``peergrid.auto_balance``)."""

    intent_type = INTENT_BALANCE
    description = (
        "Balances the state of charge of the PeerGrid battery nodes now: fuller nodes "
        "send bounded amounts of energy to emptier ones, following the grid's thresholds."
    )
    platforms = set(_CONTROL_PLATFORMS)

    @override
    async def async_handle(self, intent_obj: intent.Intent) -> intent.IntentResponse:
        """Run the balancer and say which transfers it started, or why none."""
        hass = intent_obj.hass
        try:
            plan = await _async_call(intent_obj, SERVICE_AUTO_BALANCE, {"dry_run": False})
        except HomeAssistantError as err:
            return _refused(intent_obj, "balance the grid", err)

        pairs = [pair for pair in plan.get("pairs") or [] if isinstance(pair, Mapping)]
        started = list(plan.get("started") or [])
        if started:
            moves = ", ".join(
                f"{_node_name(hass, str(pair['donor']))} to {_node_name(hass, str(pair['receiver']))}"
                for pair in pairs
            )
            count = "1 transfer" if len(started) == 1 else f"{len(started)} transfers"
            speech = f"Balancing the grid with {count}: {moves}."
        elif pairs:
            speech = "The balancer found nodes to pair but could not start a transfer."
        elif reason := plan.get("skipped_reason"):
            speech = f"Nothing to balance: {str(reason).replace('_', ' ')}."
        else:
            speech = "Nothing to balance right now."
        response = intent_obj.create_response()
        response.async_set_speech(speech)
        response.async_set_speech_slots({"started": started, "spread_pct": plan.get("spread_pct")})
        return response


class BatteryLevelIntentHandler(intent.IntentHandler):
    """Say a node's state of charge, read from its Battery sensor."""

    intent_type = INTENT_BATTERY_LEVEL
    description = "Tells the battery level (state of charge in percent) of a PeerGrid node."
    platforms = set(_READ_PLATFORMS)

    @property
    @override
    def slot_schema(self) -> dict[Any, Any]:
        """The node's name."""
        return {
            vol.Required("node", description="Name or uid of the PeerGrid node"): (
                intent.non_empty_string
            )
        }

    @override
    async def async_handle(self, intent_obj: intent.Intent) -> intent.IntentResponse:
        """Find the node's Battery sensor through the entity registry and read it."""
        hass = intent_obj.hass
        slots = self.async_validate_slots(intent_obj.slots)
        try:
            node = async_find_node(hass, slots["node"]["value"])
        except NodeMatchError as err:
            return _unknown_node(intent_obj, err)
        entity_id = er.async_get(hass).async_get_entity_id("sensor", DOMAIN, f"{node.uid}_battery")
        state = hass.states.get(entity_id) if entity_id is not None else None

        response = intent_obj.create_response()
        response.response_type = intent.IntentResponseType.QUERY_ANSWER
        if state is None or state.state in (STATE_UNAVAILABLE, STATE_UNKNOWN):
            response.async_set_speech(f"The battery level of {node.name} is not known right now.")
            return response
        try:
            level = round(float(state.state))
        except ValueError:
            response.async_set_speech(f"The battery level of {node.name} is not known right now.")
            return response
        response.async_set_states([state])
        response.async_set_speech(f"{node.name} is at {level} percent.")
        response.async_set_speech_slots({"node": node.name, "level": level})
        return response
