"""The IoT hub: what edge gateways tell Home Assistant, and who is listening.

One :class:`IotHub` lives in ``hass.data`` (:data:`DATA_IOT_HUB`) for the
whole domain. The HTTP API (``http_api.py``) feeds it; the rest of the
integration reads it. It holds:

* the **latest state of every gateway** (:class:`GatewayState`: last
  heartbeat, last node-data ping), in memory: it is live telemetry, and a
  gateway sends a fresh heartbeat whenever its connection comes back;
* the **event fan-out**: :meth:`IotHub.publish` hands a grid event to every
  event-stream subscriber (``GET /api/peergrid/iot/events``) and fires it on
  the Home Assistant bus as ``peergrid_iot_<type>``; the latest ``schedule``
  of each gateway **stands**: a stream opened for that gateway
  (``?device_id=``) starts with it, so a gateway that reconnects learns what
  is asked of its nodes now, not what was asked before it lost the stream;
* the **energy report store** (:class:`EnergyReportStore`), accepting each
  report id exactly once, persisted before the gateway is answered;
* the **DePIN registry** (:class:`DepinRegistry`), persisted, with rewards and
  reliability computed by the core's :mod:`depin` rules on the hub's clock.

The clock is injectable (``clock=``) and defaults to Home Assistant's
``dt_util.utcnow``, which the test harness can freeze.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util
from homeassistant.util.hass_dict import HassKey
from pydantic import AwareDatetime, BaseModel, ConfigDict

from .const import DOMAIN, LOGGER
from .peergrid_core import depin as depin_rules
from .peergrid_core.api import GatewayEnergyReport
from .peergrid_core.errors import PeerGridValidationError
from .peergrid_core.events import (
    EnergyMintEvent,
    EventType,
    HeartbeatEvent,
    NodeDataEvent,
    ScheduleEvent,
)
from .peergrid_core.payloads import (
    DepinHeartbeat,
    DepinNode,
    DepinNodeList,
    DepinRegistration,
    DepinStats,
    HeartbeatPing,
    NodeDataPing,
)

DATA_IOT_HUB: HassKey[IotHub] = HassKey(f"{DOMAIN}_iot_hub")

EVENT_IOT_HEARTBEAT: Final = f"{DOMAIN}_iot_heartbeat"
EVENT_IOT_NODE_DATA: Final = f"{DOMAIN}_iot_node_data"
EVENT_IOT_SCHEDULE: Final = f"{DOMAIN}_iot_schedule"
EVENT_IOT_ENERGY_MINT: Final = f"{DOMAIN}_iot_energy_mint"
EVENT_ENERGY_REPORT: Final = f"{DOMAIN}_energy_report"
"""Fired once per accepted energy report (never for a duplicate)."""

BUS_EVENT_FOR: Final[Mapping[EventType, str]] = MappingProxyType(
    {
        EventType.HEARTBEAT: EVENT_IOT_HEARTBEAT,
        EventType.NODE_DATA: EVENT_IOT_NODE_DATA,
        EventType.SCHEDULE: EVENT_IOT_SCHEDULE,
        EventType.ENERGY_MINT: EVENT_IOT_ENERGY_MINT,
    }
)
"""The Home Assistant bus event each published grid event is fired as."""

REPORTS_STORAGE_KEY: Final = f"{DOMAIN}.energy_reports"
DEPIN_STORAGE_KEY: Final = f"{DOMAIN}.depin_registry"
STORAGE_VERSION: Final = 1
HEARTBEAT_SAVE_DELAY_S: Final = 30
"""DePIN heartbeats are written at most this often: losing the last few beats in
a crash costs a node seconds of uptime, not a reward."""

SUBSCRIBER_QUEUE_SIZE: Final = 256
"""Events one stream client may lag behind before it is disconnected.

A client that reads slower than the grid publishes would otherwise hold an
ever-growing queue; it is cut off instead and reconnects (SSE clients do)."""

type GridEventModel = HeartbeatEvent | NodeDataEvent | ScheduleEvent | EnergyMintEvent
type Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    # Looked up at each call so that a clock frozen by the test harness applies.
    return dt_util.utcnow()


# ---------------------------------------------------------------- gateways


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayState:
    """What the hub last heard from one edge gateway."""

    device_id: str
    last_seen_at: datetime
    """When any ping of this gateway arrived last."""

    last_heartbeat_at: datetime | None = None
    """When its last heartbeat ping arrived (it sends one on every (re)connect)."""

    node_data: NodeDataPing | None = None
    """Its last node-data ping, as received."""

    node_data_at: datetime | None = None
    """When that node-data ping arrived (receiver's clock)."""


type GatewayListener = Callable[[GatewayState], None]


class EventSubscription:
    """One event-stream client: a bounded queue of the events it wants.

    ``device_id`` restricts it to events about that gateway. The stream ends
    (``next_event`` returns None) once the subscription is closed: by the
    hub on shutdown, on overflow, or by the client leaving.
    """

    def __init__(self, device_id: str | None, *, max_queued: int) -> None:
        """Create an open subscription."""
        self.device_id = device_id
        self._queue: asyncio.Queue[GridEventModel | None] = asyncio.Queue(max_queued + 1)
        self._max_queued = max_queued
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether no more events will be queued."""
        return self._closed

    @property
    def queued(self) -> int:
        """Events waiting to be written to the client."""
        return self._queue.qsize()

    def wants(self, event: GridEventModel) -> bool:
        """Whether the event passes this subscription's filter."""
        return self.device_id is None or event.data.device_id == self.device_id

    def offer(self, event: GridEventModel) -> None:
        """Queue ``event``; a client that lags too far behind is closed instead."""
        if self._closed:
            return
        if self._queue.qsize() >= self._max_queued:
            LOGGER.warning("Closing an event stream that fell %s events behind", self._max_queued)
            self.close()
            return
        self._queue.put_nowait(event)

    def close(self) -> None:
        """End the stream after the events already queued."""
        if not self._closed:
            self._closed = True
            # One slot is always kept free for this end marker.
            self._queue.put_nowait(None)

    async def next_event(self) -> GridEventModel | None:
        """Wait for the next event; None when the stream is over."""
        return await self._queue.get()


# ---------------------------------------------------------------- stored records


class _StoredModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoredEnergyReport(_StoredModel):
    """An accepted energy report with the time Home Assistant received it."""

    received_at: AwareDatetime
    report: GatewayEnergyReport


class _StoredReports(_StoredModel):
    reports: tuple[StoredEnergyReport, ...] = ()


class _StoredDepinNode(_StoredModel):
    registration: DepinRegistration
    registered_at: AwareDatetime
    heartbeats: tuple[AwareDatetime, ...] = ()
    kwh_routed: Decimal = Decimal(0)
    routed_counter: Decimal | None = None


class _StoredRegistry(_StoredModel):
    nodes: tuple[_StoredDepinNode, ...] = ()


# ---------------------------------------------------------------- energy reports


class EnergyReportStore:
    """Every accepted energy report, keyed by report id: each id is accepted once.

    A report is written to storage before :meth:`async_add` returns, so a
    gateway that got an answer never needs to resend; one that did not will
    resend, and the repeat is recognised. Ids are kept for good: dropping an
    old id would let a very late retry count the same transfer twice.
    """

    def __init__(self, hass: HomeAssistant) -> None:
        """Create an empty store; :meth:`async_load` reads the saved reports."""
        self._store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, REPORTS_STORAGE_KEY)
        self._reports: dict[str, StoredEnergyReport] = {}
        # Check-then-save must be atomic, or two concurrent copies of one
        # report could both be accepted while the first save is in flight.
        self._lock = asyncio.Lock()

    async def async_load(self) -> None:
        """Read the saved reports."""
        if (raw := await self._store.async_load()) is None:
            return
        stored = _StoredReports.model_validate(raw)
        self._reports = {entry.report.report_id: entry for entry in stored.reports}

    def __len__(self) -> int:
        """Number of accepted reports."""
        return len(self._reports)

    def __contains__(self, report_id: object) -> bool:
        """Whether a report with this id was accepted."""
        return report_id in self._reports

    def get(self, report_id: str) -> StoredEnergyReport | None:
        """Return the accepted report with this id, if any."""
        return self._reports.get(report_id)

    @property
    def reports(self) -> tuple[StoredEnergyReport, ...]:
        """Every accepted report, oldest first."""
        return tuple(self._reports.values())

    async def async_add(
        self, report: GatewayEnergyReport, *, received_at: datetime
    ) -> StoredEnergyReport | None:
        """Store ``report``; None if its id was accepted before (nothing changes).

        If saving fails the report is not kept and the error propagates, so
        the gateway gets an error and retries.
        """
        async with self._lock:
            if report.report_id in self._reports:
                return None
            entry = StoredEnergyReport(received_at=received_at, report=report)
            reports = {**self._reports, report.report_id: entry}
            await self._store.async_save(
                _StoredReports(reports=tuple(reports.values())).model_dump(mode="json")
            )
            self._reports = reports
            return entry


# ---------------------------------------------------------------- DePIN registry


@dataclass(frozen=True, slots=True, kw_only=True)
class _DepinEntry:
    registration: DepinRegistration
    record: depin_rules.DepinNode
    routed_counter: Decimal | None = None
    """The last cumulative ``routed_kwh`` the gateway reported."""


class DepinRegistry:
    """The gateways of the DePIN registry, their uptime and their rewards.

    Uptime is measured on the hub's clock, never the gateway's: a heartbeat
    counts when it arrives, so a gateway cannot earn by stamping the past.
    The core's rules make rewards and reliability a pure function of the
    record and ``now``; the registry only keeps the record.
    """

    def __init__(self, hass: HomeAssistant, *, clock: Clock) -> None:
        """Create an empty registry; :meth:`async_load` reads the saved one."""
        self._hass = hass
        self._clock = clock
        self._store: Store[dict[str, Any]] = Store(hass, STORAGE_VERSION, DEPIN_STORAGE_KEY)
        self._entries: dict[str, _DepinEntry] = {}
        self._lock = asyncio.Lock()

    async def async_load(self) -> None:
        """Read the saved registry."""
        if (raw := await self._store.async_load()) is None:
            return
        stored = _StoredRegistry.model_validate(raw)
        self._entries = {
            node.registration.device_id: _DepinEntry(
                registration=node.registration,
                record=depin_rules.DepinNode(
                    node_id=node.registration.device_id,
                    registered_at=node.registered_at,
                    heartbeats=node.heartbeats,
                    kwh_routed=node.kwh_routed,
                ),
                routed_counter=node.routed_counter,
            )
            for node in stored.nodes
        }

    def __len__(self) -> int:
        """Number of registered gateways."""
        return len(self._entries)

    def __contains__(self, device_id: object) -> bool:
        """Whether a gateway with this id is registered."""
        return device_id in self._entries

    def device_ids(self) -> tuple[str, ...]:
        """The registered gateways' device ids, sorted."""
        return tuple(sorted(self._entries))

    def record(self, device_id: str) -> depin_rules.DepinNode | None:
        """The core's record of a gateway (registration, heartbeats, energy)."""
        entry = self._entries.get(device_id)
        return None if entry is None else entry.record

    def node(self, device_id: str) -> DepinNode | None:
        """The gateway as ``GET depin/nodes`` lists it, or None if unknown."""
        entry = self._entries.get(device_id)
        return None if entry is None else self._listing(entry, self._clock())

    def nodes(self) -> DepinNodeList:
        """Every registered gateway, ordered by device id."""
        now = self._clock()
        return DepinNodeList(
            nodes=tuple(self._listing(self._entries[key], now) for key in sorted(self._entries))
        )

    def stats(self) -> DepinStats:
        """Registry totals."""
        listed = self.nodes().nodes
        return DepinStats(
            registered_count=len(listed),
            online_count=sum(node.online for node in listed),
            total_rewards=sum((node.rewards_earned for node in listed), Decimal(0)),
            reliability_pct={node.device_id: node.reliability_pct for node in listed},
        )

    async def async_register(self, registration: DepinRegistration) -> tuple[DepinNode, bool]:
        """Register a gateway; return its listing and whether it is new.

        Registering a known device id again (a reinstalled gateway, a new
        firmware) updates the registration details and keeps the history
        and rewards, so re-registering never earns a second registration
        reward. The registry is saved before this returns.
        """
        async with self._lock:
            now = self._clock()
            device_id = registration.device_id
            previous = self._entries.get(device_id)
            if previous is None:
                entry = _DepinEntry(
                    registration=registration,
                    record=depin_rules.DepinNode(node_id=device_id, registered_at=now),
                )
            else:
                entry = _DepinEntry(
                    registration=registration,
                    record=previous.record,
                    routed_counter=previous.routed_counter,
                )
            listing = self._listing(entry, now)
            entries = {**self._entries, device_id: entry}
            await self._store.async_save(self._to_store(entries))
            self._entries = entries
            return listing, previous is None

    async def async_heartbeat(self, heartbeat: DepinHeartbeat) -> DepinNode:
        """Record a heartbeat of a registered gateway; return its listing.

        Raises :class:`PeerGridValidationError` at ``device_id`` when the
        gateway is not registered (nothing changes then).
        """
        async with self._lock:
            entry = self._entries.get(heartbeat.device_id)
            if entry is None:
                raise PeerGridValidationError(
                    "device_id", f"gateway {heartbeat.device_id} is not registered"
                )
            now = self._clock()
            record = _with_compacted_heartbeat(entry.record, now)
            counter = entry.routed_counter
            if heartbeat.routed_kwh is not None:
                reported = heartbeat.routed_kwh
                # The counter is cumulative; a smaller value means the gateway
                # lost it (reinstall), and everything it reports is new.
                added = (
                    reported - counter if counter is not None and reported >= counter else reported
                )
                record = record.with_routed(added)
                counter = reported
            entry = _DepinEntry(
                registration=entry.registration, record=record, routed_counter=counter
            )
            self._entries = {**self._entries, heartbeat.device_id: entry}
            entries = self._entries
            self._store.async_delay_save(lambda: self._to_store(entries), HEARTBEAT_SAVE_DELAY_S)
            return self._listing(entry, now)

    @staticmethod
    def _listing(entry: _DepinEntry, now: datetime) -> DepinNode:
        record = entry.record
        registration = entry.registration
        last = record.heartbeats[-1] if record.heartbeats else None
        return DepinNode(
            device_id=registration.device_id,
            hardware_model=registration.hardware_model,
            firmware_version=registration.firmware_version,
            wallet_address=registration.wallet_address,
            location=registration.location,
            registered_at=record.registered_at,
            last_heartbeat_at=last,
            online=last is not None and now - last <= record.max_gap,
            reliability_pct=depin_rules.reliability_pct(record, now=now),
            rewards_earned=depin_rules.depin_rewards(record, now=now).total,
            routed_kwh=record.kwh_routed,
        )

    @staticmethod
    def _to_store(entries: Mapping[str, _DepinEntry]) -> dict[str, Any]:
        return _StoredRegistry(
            nodes=tuple(
                _StoredDepinNode(
                    registration=entry.registration,
                    registered_at=entry.record.registered_at,
                    heartbeats=entry.record.heartbeats,
                    kwh_routed=entry.record.kwh_routed,
                    routed_counter=entry.routed_counter,
                )
                for entry in entries.values()
            )
        ).model_dump(mode="json")


def _with_compacted_heartbeat(record: depin_rules.DepinNode, at: datetime) -> depin_rules.DepinNode:
    """Add a heartbeat at ``at``, dropping the previous one when it adds nothing.

    A gateway beats every few seconds; keeping every beat would grow the
    record without bound. The core counts each beat as up until the next one,
    for at most ``max_gap``. When the new beat is within ``max_gap`` of the
    beat before the last, the span from that beat to the new one is covered
    with or without the last beat, so dropping it leaves the uptime spans,
    hence reliability, rewards and bonus windows, exactly as they were.
    """
    beats = record.heartbeats
    if beats:
        # Never step back: a clock adjusted backwards must not reorder beats.
        at = max(at, beats[-1])
        before_last = beats[-2] if len(beats) >= 2 else record.registered_at
        if at - before_last <= record.max_gap:
            beats = beats[:-1]
    else:
        at = max(at, record.registered_at)
    return depin_rules.DepinNode(
        node_id=record.node_id,
        registered_at=record.registered_at,
        heartbeats=(*beats, at),
        kwh_routed=record.kwh_routed,
        heartbeat_interval=record.heartbeat_interval,
    )


# ---------------------------------------------------------------- the hub


class IotHub:
    """Gateway telemetry, event fan-out, energy reports and the DePIN registry."""

    def __init__(
        self,
        hass: HomeAssistant,
        *,
        clock: Clock = _utcnow,
        max_queued_events: int = SUBSCRIBER_QUEUE_SIZE,
    ) -> None:
        """Create the hub; call :meth:`async_load` before serving requests."""
        self.hass = hass
        self._clock = clock
        self._max_queued = max_queued_events
        self._gateways: dict[str, GatewayState] = {}
        self._listeners: list[GatewayListener] = []
        self._subscriptions: set[EventSubscription] = set()
        self._standing: dict[str, ScheduleEvent] = {}
        self.reports = EnergyReportStore(hass)
        """Accepted energy reports."""
        self.depin = DepinRegistry(hass, clock=clock)
        """The DePIN registry."""

    async def async_load(self) -> None:
        """Read the stored reports and registry."""
        await self.reports.async_load()
        await self.depin.async_load()

    def now(self) -> datetime:
        """The hub's current time (aware, UTC)."""
        return self._clock()

    # ------------------------------------------------------------ gateways

    def gateway(self, device_id: str) -> GatewayState | None:
        """What the hub last heard from gateway ``device_id``."""
        return self._gateways.get(device_id)

    @property
    def gateways(self) -> Mapping[str, GatewayState]:
        """Every gateway heard from since Home Assistant started."""
        return MappingProxyType(self._gateways)

    @callback
    def async_add_listener(self, listener: GatewayListener) -> CALLBACK_TYPE:
        """Call ``listener`` with the gateway's new state on every ping; returns the remover."""
        self._listeners.append(listener)

        @callback
        def _remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return _remove

    @callback
    def async_record_ping(self, ping: HeartbeatPing | NodeDataPing) -> GatewayState:
        """Record a gateway's ping, tell the listeners and publish its event."""
        now = self._clock()
        previous = self._gateways.get(ping.device_id)
        event: GridEventModel
        if isinstance(ping, HeartbeatPing):
            state = GatewayState(
                device_id=ping.device_id,
                last_seen_at=now,
                last_heartbeat_at=now,
                node_data=previous.node_data if previous else None,
                node_data_at=previous.node_data_at if previous else None,
            )
            event = HeartbeatEvent(data=ping)
        else:
            state = GatewayState(
                device_id=ping.device_id,
                last_seen_at=now,
                last_heartbeat_at=previous.last_heartbeat_at if previous else None,
                node_data=ping,
                node_data_at=now,
            )
            event = NodeDataEvent(data=ping)
        self._gateways[ping.device_id] = state
        for listener in list(self._listeners):
            listener(state)
        self.publish(event)
        return state

    # ------------------------------------------------------------ events

    @callback
    def publish(self, event: GridEventModel) -> None:
        """Send ``event`` to every matching stream and fire it on the bus.

        A ``schedule`` event becomes its gateway's standing schedule.
        """
        if isinstance(event, ScheduleEvent):
            self._standing[event.data.device_id] = event
        for subscription in list(self._subscriptions):
            if subscription.wants(event):
                subscription.offer(event)
        self.hass.bus.async_fire(BUS_EVENT_FOR[event.type], event.data.model_dump(mode="json"))

    def standing_schedule(self, device_id: str) -> ScheduleEvent | None:
        """The latest schedule published for gateway ``device_id``, if any."""
        return self._standing.get(device_id)

    @callback
    def subscribe(self, device_id: str | None = None) -> EventSubscription:
        """Open an event subscription, optionally for one gateway's events only.

        A subscription for one gateway starts with its standing schedule.
        """
        subscription = EventSubscription(device_id, max_queued=self._max_queued)
        if device_id is not None and (standing := self._standing.get(device_id)) is not None:
            subscription.offer(standing)
        self._subscriptions.add(subscription)
        return subscription

    @callback
    def unsubscribe(self, subscription: EventSubscription) -> None:
        """Close a subscription and forget it."""
        subscription.close()
        self._subscriptions.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        """Open event subscriptions (one per connected stream)."""
        return len(self._subscriptions)

    @callback
    def async_shutdown(self) -> None:
        """End every event stream (Home Assistant is stopping)."""
        for subscription in list(self._subscriptions):
            subscription.close()

    # ------------------------------------------------------------ reports

    async def async_add_report(self, report: GatewayEnergyReport) -> StoredEnergyReport | None:
        """Store a report once and announce it; None for a report seen before."""
        entry = await self.reports.async_add(report, received_at=self._clock())
        if entry is not None:
            self.hass.bus.async_fire(
                EVENT_ENERGY_REPORT,
                {
                    **report.model_dump(mode="json"),
                    "received_at": entry.received_at.isoformat(),
                },
            )
        return entry
