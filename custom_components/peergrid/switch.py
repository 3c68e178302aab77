"""Switches of a PeerGrid node: the Supply and Receive relays, and Auto-balance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from homeassistant.components.switch import SwitchEntity, SwitchEntityDescription
from homeassistant.const import STATE_OFF, EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.restore_state import RestoreEntity

from .const import CONF_KIND, EntryKind
from .coordinator import PeerGridConfigEntry
from .entity import PeerGridGatewayNodeEntity, PeerGridNodeEntity, async_setup_gateway_node_entities
from .gateway import PeerGridGatewayConfigEntry, PeerGridGatewayCoordinator
from .peergrid_core.payloads import NodeDetail
from .peergrid_core.protocol import Mode

# Commands move relays: one at a time per platform.
PARALLEL_UPDATES = 1


@dataclass(frozen=True, kw_only=True)
class PeerGridRelaySwitchDescription(SwitchEntityDescription):
    """A relay switch: the mode it stands for."""

    mode: Mode


RELAY_SWITCHES: tuple[PeerGridRelaySwitchDescription, ...] = (
    PeerGridRelaySwitchDescription(key="supply", translation_key="supply", mode=Mode.SUPPLY),
    PeerGridRelaySwitchDescription(key="receive", translation_key="receive", mode=Mode.RECEIVE),
)
AUTO_BALANCE_SWITCH = SwitchEntityDescription(
    key="auto_balance", translation_key="auto_balance", entity_category=EntityCategory.CONFIG
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: PeerGridConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the node's relay switches and its Auto-balance switch, or a gateway's nodes' relays."""
    if entry.data[CONF_KIND] == EntryKind.GATEWAY:
        # Gateway entries carry a gateway coordinator (see __init__.py).
        async_setup_gateway_node_entities(
            cast("PeerGridGatewayConfigEntry", entry), async_add_entities, _gateway_relays
        )
        return
    coordinator = entry.runtime_data
    entities: list[SwitchEntity] = [
        PeerGridRelaySwitch(coordinator, description) for description in RELAY_SWITCHES
    ]
    entities.append(PeerGridAutoBalanceSwitch(coordinator, AUTO_BALANCE_SWITCH))
    async_add_entities(entities)


class PeerGridRelaySwitch(PeerGridNodeEntity, SwitchEntity):
    """One relay of the node.

    The node's interlock guarantees that the two relays are never on
    together: turning one on makes the node open the other first (break
    before make), and the other switch follows the node's next status.
    """

    entity_description: PeerGridRelaySwitchDescription

    @property
    def is_on(self) -> bool:
        """Whether the node reports this relay's mode."""
        return self.coordinator.data.status.mode is self.entity_description.mode

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Switch the node to this relay's mode and hold the lease."""
        await self.coordinator.async_hold(self.entity_description.mode)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Open this relay (the node goes IDLE) if it is the one that is on."""
        if self.is_on:
            await self.coordinator.async_hold(Mode.IDLE)


class PeerGridAutoBalanceSwitch(PeerGridNodeEntity, SwitchEntity, RestoreEntity):
    """Whether the node takes part in automatic balancing; kept across restarts."""

    @property
    def available(self) -> bool:
        """A setting of Home Assistant's, available even while the node is offline."""
        return True

    @property
    def is_on(self) -> bool:
        """The setting as the coordinator holds it."""
        return self.coordinator.auto_balance

    async def async_added_to_hass(self) -> None:
        """Restore the last setting (on by default)."""
        await super().async_added_to_hass()
        if (last := await self.async_get_last_state()) is not None:
            self.coordinator.auto_balance = last.state != STATE_OFF

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Let the balancer use this node."""
        self._set(True)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Keep the balancer away from this node."""
        self._set(False)

    def _set(self, value: bool) -> None:
        self.coordinator.auto_balance = value
        self.async_write_ha_state()


def _gateway_relays(
    coordinator: PeerGridGatewayCoordinator, node: NodeDetail
) -> list[PeerGridGatewayRelaySwitch]:
    return [
        PeerGridGatewayRelaySwitch(coordinator, node.uid, description)
        for description in RELAY_SWITCHES
    ]


class PeerGridGatewayRelaySwitch(PeerGridGatewayNodeEntity, SwitchEntity):
    """One relay of a node behind a gateway, switched through the gateway's schedule.

    Turning it on asks the gateway to hold the node in the relay's mode (it
    renews the lease while the schedule stands) and waits until the
    gateway's ping shows the node there; the node's interlock keeps the two
    relays apart as for a direct node.
    """

    entity_description: PeerGridRelaySwitchDescription

    @property
    def is_on(self) -> bool | None:
        """Whether the gateway reports the node in this relay's mode."""
        node = self.node
        return None if node is None else node.state.value == self.entity_description.mode.value

    async def async_turn_on(self, **kwargs: Any) -> None:
        """Switch the node to this relay's mode through the gateway."""
        await self.coordinator.async_command(self.uid, self.entity_description.mode)

    async def async_turn_off(self, **kwargs: Any) -> None:
        """Open this relay (the node goes IDLE) if it is the one that is on."""
        if self.is_on:
            await self.coordinator.async_command(self.uid, Mode.IDLE)
