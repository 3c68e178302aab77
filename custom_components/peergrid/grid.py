"""The grid: transfers between nodes, auto-balance and the transfer history.

One :class:`PeerGridGrid` lives in ``hass.data`` for the whole domain: node
entries register their coordinator with it, the actions and the intents call
it, and the grid entry shows its state. The rules themselves (validation,
metering, stop conditions, pairing) are the core's ``TransferSession`` and
``SocBalancer``; this module persists what they produce, announces it on the
event bus and maps their errors to translated Home Assistant errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.storage import Store
from homeassistant.util.hass_dict import HassKey
from pydantic import ValidationError

from .const import (
    CONF_KIND,
    DOMAIN,
    EVENT_TRANSFER_ABORTED,
    EVENT_TRANSFER_COMPLETED,
    EVENT_TRANSFER_PROGRESS,
    EVENT_TRANSFER_STARTED,
    LOGGER,
    EntryKind,
)
from .coordinator import PeerGridNodeCoordinator
from .iot_hub import DATA_IOT_HUB
from .peergrid_core.balancer import BalancePlan, NodeSoc, SocBalancer
from .peergrid_core.errors import PeerGridConnectionError, PeerGridError
from .peergrid_core.events import ScheduleEvent
from .peergrid_core.gateway_link import GatewayNodeLink
from .peergrid_core.protocol import CommandRefusedError
from .peergrid_core.schedule import schedule_commands, soc_spread
from .peergrid_core.thresholds import BalanceThresholds
from .peergrid_core.transfer import (
    DEFAULT_ENERGY_WH,
    ClientNodeLink,
    NodeLink,
    StopReason,
    TransferPolicy,
    TransferRecord,
    TransferRequest,
    TransferSession,
    TransferState,
    TransferValidationError,
    close_interrupted,
    utcnow,
)

if TYPE_CHECKING:
    from .gateway import PeerGridGatewayCoordinator

DATA_GRID: HassKey[PeerGridGrid] = HassKey(DOMAIN)
STORAGE_KEY = f"{DOMAIN}.transfers"
STORAGE_VERSION = 1
HISTORY_LIMIT = 500
"""Finished transfers kept in the history; the per-node totals keep counting past it."""
SAVE_DELAY_S = 5
"""Progress is written at most this often; start and end are written at once."""
SCHEDULE_DEVICE_ID = "peergrid-grid"
"""``device_id`` of the schedule events this grid publishes (the grid device, not a gateway)."""


@dataclass(kw_only=True)
class NodeTotals:
    """Energy a node shared with and received from peers over all its transfers (Wh)."""

    shared_wh: float = 0.0
    received_wh: float = 0.0


@dataclass(kw_only=True)
class _StoredData:
    transfers: list[TransferRecord] = field(default_factory=list)
    totals: dict[str, NodeTotals] = field(default_factory=dict)


class PeerGridGrid:
    """Runs transfers between the registered nodes and keeps their records."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Create an empty grid; :meth:`async_load` reads the stored history."""
        self.hass = hass
        self._store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, STORAGE_KEY)
        self._data = _StoredData()
        self._nodes: dict[str, PeerGridNodeCoordinator] = {}
        self._gateways: dict[str, PeerGridGatewayCoordinator] = {}
        self._sessions: dict[str, TransferSession] = {}
        self._listeners: list[CALLBACK_TYPE] = []
        self._ended_listeners: list[Callable[[TransferRecord], None]] = []

    # ------------------------------------------------------------ lifecycle

    async def async_load(self) -> None:
        """Read the history; close transfers a restart interrupted, with their measured energy."""
        stored = await self._store.async_load()
        if stored:
            self._data = _StoredData(
                transfers=[TransferRecord.model_validate(r) for r in stored["transfers"]],
                totals={
                    uid: NodeTotals(**totals) for uid, totals in stored.get("totals", {}).items()
                },
            )
        now = utcnow()
        interrupted = []
        for index, record in enumerate(self._data.transfers):
            if record.active:
                closed = close_interrupted(record, now)
                self._data.transfers[index] = closed
                self._count(closed)
                interrupted.append(closed)
        if interrupted:
            await self._store.async_save(self._serialise())
        for record in interrupted:
            LOGGER.warning(
                "Transfer %s from %s to %s was interrupted by a restart after %.3f Wh",
                record.transfer_id,
                record.sender,
                record.receiver,
                record.wh_out,
            )
            self._fire(EVENT_TRANSFER_ABORTED, record)

    async def async_shutdown(self) -> None:
        """Stop every running transfer (Home Assistant is stopping) and write the history."""
        for session in list(self._sessions.values()):
            await session.stop(StopReason.INTERRUPTED)
        await self._store.async_save(self._serialise())

    # ------------------------------------------------------------ nodes

    @callback
    def async_register_node(self, coordinator: PeerGridNodeCoordinator) -> CALLBACK_TYPE:
        """Make a node available to transfers; returns the function that removes it."""
        self._nodes[coordinator.uid] = coordinator
        self.async_notify()

        @callback
        def _unregister() -> None:
            if self._nodes.get(coordinator.uid) is coordinator:
                del self._nodes[coordinator.uid]
                self.async_notify()

        return _unregister

    @property
    def nodes(self) -> dict[str, PeerGridNodeCoordinator]:
        """The loaded nodes by uid."""
        return dict(self._nodes)

    @callback
    def async_register_gateway(self, coordinator: PeerGridGatewayCoordinator) -> CALLBACK_TYPE:
        """Make a gateway's nodes available to transfers; returns the function that removes it."""
        self._gateways[coordinator.device_id] = coordinator

        @callback
        def _unregister() -> None:
            if self._gateways.get(coordinator.device_id) is coordinator:
                del self._gateways[coordinator.device_id]

        return _unregister

    def gateway_of(self, uid: str) -> PeerGridGatewayCoordinator | None:
        """The gateway that reports node ``uid``, when it is not a directly connected node."""
        if uid in self._nodes:
            return None
        return next(
            (gateway for _, gateway in sorted(self._gateways.items()) if uid in gateway.nodes),
            None,
        )

    def has_node(self, uid: str) -> bool:
        """Whether ``uid`` is a loaded node: connected directly or reported by a gateway."""
        return uid in self._nodes or self.gateway_of(uid) is not None

    def _link(self, uid: str) -> NodeLink:
        """How a transfer reaches node ``uid``: its own session, or through its gateway.

        A node connected directly is always reached directly. Through a
        gateway a transfer needs the node's energy counters (the ping's
        telemetry); a node reported without them is refused here, before
        anything is asked of it.
        """
        if (gateway := self.gateway_of(uid)) is None:
            coordinator = self.node(uid)
            return ClientNodeLink(coordinator.client, coordinator.lease, uid)
        link = gateway.control.link(uid)
        if link.online and link.status is None:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="transfer_not_metered",
                translation_placeholders={"node": uid, "gateway": gateway.device_id},
            )
        return link

    def node(self, uid: str) -> PeerGridNodeCoordinator:
        """The loaded node ``uid``; a translated validation error when there is none."""
        if (coordinator := self._nodes.get(uid)) is None:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="unknown_node",
                translation_placeholders={"node": uid},
            )
        return coordinator

    # ------------------------------------------------------------ settings

    @property
    def thresholds(self) -> BalanceThresholds:
        """The balance thresholds from the grid entry's options (defaults without one)."""
        for entry in self.hass.config_entries.async_entries(DOMAIN):
            if entry.data.get(CONF_KIND) == EntryKind.GRID:
                return BalanceThresholds.from_options(entry.options)
        return BalanceThresholds()

    @property
    def policy(self) -> TransferPolicy:
        """Transfer safety margins that follow the thresholds: stop at critical and full."""
        thresholds = self.thresholds
        return TransferPolicy(
            sender_soc_floor_pct=thresholds.soc_critical,
            receiver_full_pct=thresholds.soc_full,
        )

    # ------------------------------------------------------------ state for entities

    @callback
    def async_add_ended_listener(self, ended: Callable[[TransferRecord], None]) -> CALLBACK_TYPE:
        """Call ``ended`` with every transfer record as it ends; returns the remover."""
        self._ended_listeners.append(ended)
        return lambda: self._ended_listeners.remove(ended)

    @callback
    def async_add_listener(self, update: CALLBACK_TYPE) -> CALLBACK_TYPE:
        """Call ``update`` whenever transfers or nodes change; returns the remover."""
        self._listeners.append(update)
        return lambda: self._listeners.remove(update)

    @callback
    def async_notify(self) -> None:
        """Tell the grid's entities that something changed."""
        for update in list(self._listeners):
            update()

    def active_transfer(self, uid: str) -> TransferRecord | None:
        """The running transfer ``uid`` takes part in, if any."""
        for session in self._sessions.values():
            if uid in (session.request.sender, session.request.receiver):
                return session.record
        return None

    @property
    def active_count(self) -> int:
        """How many transfers are running."""
        return len(self._sessions)

    def totals(self, uid: str) -> NodeTotals:
        """What ``uid`` shared and received over all transfers, the running one included."""
        done = self._data.totals.get(uid, NodeTotals())
        totals = NodeTotals(shared_wh=done.shared_wh, received_wh=done.received_wh)
        if (record := self.active_transfer(uid)) is not None:
            if record.sender == uid:
                totals.shared_wh += record.wh_out
            else:
                totals.received_wh += record.wh_in
        return totals

    def node_socs(self) -> list[NodeSoc]:
        """Every loaded node's SoC as the balancer sees it."""
        socs = []
        for uid, coordinator in sorted(self._nodes.items()):
            status = coordinator.data.status if coordinator.data else None
            if status is None or status.soc is None:
                continue
            socs.append(
                NodeSoc(
                    uid=uid,
                    soc_pct=status.soc / 10,
                    online=coordinator.client.connected and coordinator.last_update_success,
                    auto_balance=coordinator.auto_balance,
                )
            )
        return socs

    @property
    def soc_spread(self) -> float | None:
        """Highest minus lowest SoC of the online nodes, in percent."""
        spread = soc_spread([node for node in self.node_socs() if node.online])
        return None if spread is None else round(spread, 1)

    def transfers(self, *, limit: int = 20, active_only: bool = False) -> list[TransferRecord]:
        """The newest transfers first: running ones, then the history."""
        running = [session.record for session in self._sessions.values()]
        if active_only:
            return running[:limit]
        finished = [r for r in reversed(self._data.transfers) if not r.active]
        return (running + finished)[:limit]

    # ------------------------------------------------------------ transfers

    async def async_start_transfer(
        self,
        sender: str,
        receiver: str,
        *,
        energy_wh: float | None = None,
        duration_s: float | None = None,
    ) -> TransferRecord:
        """Start a transfer; every refusal is a translated error and moves no relay."""
        try:
            if energy_wh is None and duration_s is None:
                energy_wh = DEFAULT_ENERGY_WH  # the specification's energy per trade
            request = TransferRequest(
                sender=sender, receiver=receiver, energy_wh=energy_wh, duration_s=duration_s
            )
        except TransferValidationError as err:
            raise _refused(err) from err
        links = [self._link(uid) for uid in (sender, receiver)]
        for uid, reason in ((sender, "sender_busy"), (receiver, "receiver_busy")):
            if self.active_transfer(uid) is not None:
                raise ServiceValidationError(
                    translation_domain=DOMAIN,
                    translation_key=f"transfer_{reason}",
                    translation_placeholders={"node": uid},
                )
        session = TransferSession(
            request, links[0], links[1], policy=self.policy, on_update=self._on_update
        )
        self._sessions[session.transfer_id] = session
        try:
            return await session.start()
        except TransferValidationError as err:
            raise _refused(err) from err
        except CommandRefusedError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="transfer_refused",
                translation_placeholders={"reason": str(err.code)},
            ) from err
        except PeerGridConnectionError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="transfer_node_lost",
                translation_placeholders={"error": str(err)},
            ) from err
        except PeerGridError as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key="transfer_failed",
                translation_placeholders={"error": str(err)},
            ) from err
        finally:
            if not session.active:
                self._sessions.pop(session.transfer_id, None)

    async def async_stop_transfers(self, transfer_id: str | None = None) -> list[TransferRecord]:
        """Stop one running transfer, or all of them; returns their final records."""
        if transfer_id is None:
            sessions = list(self._sessions.values())
        elif (session := self._sessions.get(transfer_id)) is not None:
            sessions = [session]
        else:
            raise ServiceValidationError(
                translation_domain=DOMAIN,
                translation_key="unknown_transfer",
                translation_placeholders={"transfer_id": transfer_id},
            )
        return [await session.stop() for session in sessions]

    async def async_stop_gateway_transfers(self, device_id: str) -> list[TransferRecord]:
        """Stop the running transfers that reach a node through gateway ``device_id``."""
        sessions = [
            session
            for session in self._sessions.values()
            if any(
                isinstance(link, GatewayNodeLink) and link.device_id == device_id
                for link in (session.sender, session.receiver)
            )
        ]
        return [await session.stop() for session in sessions]

    def plan_balance(self) -> BalancePlan:
        """What auto-balance would do now, with the current thresholds."""
        busy = {
            uid for s in self._sessions.values() for uid in (s.request.sender, s.request.receiver)
        }
        nodes = [node for node in self.node_socs() if node.uid not in busy]
        return SocBalancer(self.thresholds).plan(nodes)

    async def async_auto_balance(
        self, *, dry_run: bool = False, energy_wh: float | None = None
    ) -> tuple[BalancePlan, list[TransferRecord]]:
        """Plan the pairs and, unless ``dry_run``, start one transfer per pair."""
        plan = self.plan_balance()
        started: list[TransferRecord] = []
        if dry_run:
            return plan, started
        for pair in plan.pairs:
            try:
                started.append(
                    await self.async_start_transfer(pair.donor, pair.receiver, energy_wh=energy_wh)
                )
            except HomeAssistantError as err:
                # One pair failing (a node just went away) must not stop the others.
                LOGGER.warning("Balancing %s -> %s not started: %s", pair.donor, pair.receiver, err)
        return plan, started

    # ------------------------------------------------------------ records

    @callback
    def _on_update(self, record: TransferRecord) -> None:
        transfers = self._data.transfers
        known = next(
            (i for i, r in enumerate(transfers) if r.transfer_id == record.transfer_id), None
        )
        if known is None:
            transfers.append(record)
            event = EVENT_TRANSFER_STARTED
        else:
            transfers[known] = record
            event = EVENT_TRANSFER_PROGRESS
        if record.active:
            self._store.async_delay_save(self._serialise, SAVE_DELAY_S)
        else:
            event = (
                EVENT_TRANSFER_COMPLETED
                if record.state is TransferState.COMPLETED
                else EVENT_TRANSFER_ABORTED
            )
            self._sessions.pop(record.transfer_id, None)
            self._count(record)
            for ended in list(self._ended_listeners):
                ended(record)
            del transfers[: max(0, len(transfers) - HISTORY_LIMIT)]
            self.hass.async_create_task(self._store.async_save(self._serialise()))
        self._fire(event, record)
        if event is not EVENT_TRANSFER_PROGRESS:
            self._publish_schedule()
        for uid in (record.sender, record.receiver):
            if (coordinator := self._nodes.get(uid)) is not None:
                coordinator.async_update_listeners()
            elif (gateway := self.gateway_of(uid)) is not None:
                gateway.async_update_listeners()
        self.async_notify()

    def _publish_schedule(self) -> None:
        """Announce what every node now does, as the specification's ``schedule`` event."""
        if (hub := self.hass.data.get(DATA_IOT_HUB)) is None:
            return
        nodes = self.node_socs()
        known = {node.uid for node in nodes}
        pairs = [
            (session.request.sender, session.request.receiver)
            for session in self._sessions.values()
            if {session.request.sender, session.request.receiver} <= known
        ]
        if not nodes:
            return
        try:
            schedule = schedule_commands(SCHEDULE_DEVICE_ID, nodes, pairs)
        except (PeerGridError, ValidationError) as err:
            # The specification's schedule describes at most one gateway's worth
            # of nodes; a larger grid still runs, it just is not announced whole.
            LOGGER.debug("Grid schedule not published: %s", err)
            return
        hub.publish(ScheduleEvent(data=schedule))

    def _count(self, record: TransferRecord) -> None:
        sender = self._data.totals.setdefault(record.sender, NodeTotals())
        receiver = self._data.totals.setdefault(record.receiver, NodeTotals())
        sender.shared_wh += record.wh_out
        receiver.received_wh += record.wh_in

    def _fire(self, event: str, record: TransferRecord) -> None:
        data = record.model_dump(mode="json")
        data["progress_pct"] = record.progress_pct
        for role in ("sender", "receiver"):
            uid = record.sender if role == "sender" else record.receiver
            coordinator = self._nodes.get(uid)
            data[f"{role}_device_id"] = (
                coordinator.device_id if coordinator else self._gateway_node_device_id(uid)
            )
        self.hass.bus.async_fire(event, data)

    def _gateway_node_device_id(self, uid: str) -> str | None:
        """The device registry id of node ``uid`` when a gateway reports it."""
        if self.gateway_of(uid) is None:
            return None
        device = dr.async_get(self.hass).async_get_device(identifiers={(DOMAIN, uid)})
        return device.id if device else None

    def _serialise(self) -> dict[str, Any]:
        return {
            "transfers": [r.model_dump(mode="json") for r in self._data.transfers],
            "totals": {
                uid: {"shared_wh": t.shared_wh, "received_wh": t.received_wh}
                for uid, t in self._data.totals.items()
            },
        }


def _refused(err: TransferValidationError) -> ServiceValidationError:
    return ServiceValidationError(
        translation_domain=DOMAIN,
        translation_key=f"transfer_{err.reason}",
        translation_placeholders={"field": err.field, "message": err.message},
    )
