"""The coordinator of one PeerGrid node: local push from the node's TCP session."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_HOST, CONF_PORT
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryError, HomeAssistantError
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed

from .const import CONF_KEY, DOMAIN, LEASE_SECONDS, LOGGER
from .peergrid_core.errors import (
    PeerGridAuthenticationError,
    PeerGridConnectionError,
    PeerGridError,
    PeerGridProtocolError,
)
from .peergrid_core.protocol import (
    PROTOCOL_VERSION,
    CommandRefusedError,
    ConnectionState,
    Event,
    Hello,
    Mode,
    NodeClient,
    NodePush,
    Status,
    TripReason,
    UnsupportedProtocolError,
)
from .peergrid_core.protocol.lease import LeaseKeeper

type PeerGridConfigEntry = ConfigEntry[PeerGridNodeCoordinator]

FALLBACK_POLL_INTERVAL = timedelta(minutes=5)
"""The node pushes its status every few seconds; a poll only catches a silent gap."""


@dataclass(frozen=True, kw_only=True)
class NodeData:
    """What the entities of one node read: its identity and latest status."""

    hello: Hello
    status: Status


class PeerGridNodeCoordinator(DataUpdateCoordinator[NodeData]):
    """Keeps one authenticated session to a node and fans its pushes out to entities.

    The core client's supervised loop reconnects with backoff; the node's
    ``status`` pushes become coordinator data, its trip events become repair
    issues where a person must act, and a :class:`LeaseKeeper` renews the
    lease while Home Assistant holds the node in SUPPLY or RECEIVE.
    """

    config_entry: PeerGridConfigEntry

    def __init__(self, hass: HomeAssistant, entry: PeerGridConfigEntry) -> None:
        """Build the client for the entry's node; nothing connects yet."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{DOMAIN} {entry.unique_id}",
            update_interval=FALLBACK_POLL_INTERVAL,
        )
        self.client = NodeClient(
            entry.data[CONF_HOST], entry.data[CONF_PORT], entry.data[CONF_KEY].encode()
        )
        self.lease = LeaseKeeper(self.client, lease_s=LEASE_SECONDS)
        self.uid: str = entry.unique_id or ""
        self.auto_balance = True
        """Whether this node takes part in automatic balancing (its switch)."""
        self._hello: Hello | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._online = False

    @property
    def device_id(self) -> str | None:
        """The device registry id of this node's device (once its entities exist)."""
        device = dr.async_get(self.hass).async_get_device(identifiers={(DOMAIN, self.uid)})
        return device.id if device else None

    async def _async_setup(self) -> None:
        """Connect and authenticate once, so that setup fails loudly and early."""
        try:
            self._hello = await self.client.connect()
        except PeerGridAuthenticationError as err:
            raise ConfigEntryAuthFailed(
                translation_domain=DOMAIN,
                translation_key="invalid_auth",
                translation_placeholders={"name": self.uid},
            ) from err
        except UnsupportedProtocolError as err:
            self._create_protocol_issue()
            raise ConfigEntryError(
                translation_domain=DOMAIN,
                translation_key="unsupported_protocol",
                translation_placeholders={"name": self.uid},
            ) from err
        except PeerGridProtocolError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="communication_error",
                translation_placeholders={"name": self.uid, "error": str(err)},
            ) from err
        except PeerGridError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="cannot_connect",
                translation_placeholders={"name": self.uid},
            ) from err
        ir.async_delete_issue(self.hass, DOMAIN, f"unsupported_protocol_{self.uid}")
        self._online = True
        self.config_entry.async_on_unload(self.client.listen(self._handle_push))
        self.config_entry.async_on_unload(self.client.listen_connection(self._handle_connection))

    async def _async_update_data(self) -> NodeData:
        """Ask the node for its status (first refresh and the fallback poll)."""
        try:
            status = await self.client.get_status()
        except PeerGridError as err:
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="cannot_connect",
                translation_placeholders={"name": self.uid},
            ) from err
        return self._node_data(status)

    def _node_data(self, status: Status) -> NodeData:
        hello = self.client.node or self._hello
        if hello is None:  # pragma: no cover - the first refresh connects before any data
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="cannot_connect",
                translation_placeholders={"name": self.uid},
            )
        self._hello = hello
        return NodeData(hello=hello, status=status)

    @callback
    def async_start(self) -> None:
        """Start the supervised connection loop (after the first refresh)."""
        self._run_task = self.config_entry.async_create_background_task(
            self.hass, self._async_run(), f"{DOMAIN} node {self.uid}"
        )

    async def _async_run(self) -> None:
        try:
            await self.client.run()
        except PeerGridAuthenticationError:
            LOGGER.warning("Node %s no longer accepts the configured key", self.uid)
            self._set_offline()
            self.config_entry.async_start_reauth(self.hass)

    async def async_shutdown(self) -> None:
        """Release the node (IDLE), close the session and stop the loop."""
        await super().async_shutdown()
        await self.lease.close()
        await self.client.close()
        if self._run_task is not None:
            await asyncio.gather(self._run_task, return_exceptions=True)

    # ------------------------------------------------------------ node pushes

    @callback
    def _handle_push(self, push: NodePush) -> None:
        if isinstance(push, Event):
            LOGGER.info("Node %s stopped %s: %s", self.uid, push.mode, push.reason)
            if push.reason is TripReason.STUCK_RELAY:
                self._create_stuck_relay_issue()
            return
        if push.last_trip is not TripReason.STUCK_RELAY:
            # A stuck relay latches until the node reboots; after that the
            # trip record starts empty and the issue is resolved.
            ir.async_delete_issue(self.hass, DOMAIN, f"stuck_relay_{self.uid}")
        self._set_online()
        self.async_set_updated_data(self._node_data(push))

    @callback
    def _handle_connection(self, state: ConnectionState) -> None:
        if state is ConnectionState.DISCONNECTED:
            self._set_offline()

    def _set_offline(self) -> None:
        if self._online:
            self._online = False
            LOGGER.info("Node %s is unavailable", self.uid)
        if self.last_update_success:
            self.last_exception = PeerGridConnectionError(f"node {self.uid} is unreachable")
            self.last_update_success = False
            self.async_update_listeners()

    def _set_online(self) -> None:
        if not self._online:
            self._online = True
            LOGGER.info("Node %s is available again", self.uid)

    # ------------------------------------------------------------ repairs

    def _create_stuck_relay_issue(self) -> None:
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            f"stuck_relay_{self.uid}",
            is_fixable=False,
            is_persistent=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key="stuck_relay",
            translation_placeholders={"name": self.uid},
        )

    def _create_protocol_issue(self) -> None:
        ir.async_create_issue(
            self.hass,
            DOMAIN,
            f"unsupported_protocol_{self.uid}",
            is_fixable=False,
            severity=ir.IssueSeverity.ERROR,
            translation_key="unsupported_protocol",
            translation_placeholders={"name": self.uid, "supported": str(PROTOCOL_VERSION)},
        )

    # ------------------------------------------------------------ control

    async def async_hold(self, mode: Mode) -> None:
        """Switch the node to ``mode`` and hold it there (IDLE releases it).

        Every failure becomes a translated :class:`HomeAssistantError`, and a
        refused command changes nothing on the node.
        """
        placeholders = {"name": self.uid, "mode": mode.value}
        if not self.client.connected:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="node_unreachable",
                translation_placeholders=placeholders,
            )
        try:
            await self.lease.hold(mode)
        except CommandRefusedError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="command_refused",
                translation_placeholders={**placeholders, "reason": str(err.code)},
            ) from err
        except PeerGridConnectionError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="node_unreachable",
                translation_placeholders=placeholders,
            ) from err
        except PeerGridError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="communication_error",
                translation_placeholders={"name": self.uid, "error": str(err)},
            ) from err
