"""The gateway: nodes on one side, Home Assistant on the other.

:class:`Gateway` runs five things at once:

* one supervised protocol connection per node (:class:`~.nodes.NodeHandle`);
* the **cycle**: every ``cycle_s`` a node-data ping with the nodes' latest
  readings, and a DePIN heartbeat into the outbox; a node-data ping also goes
  out at once after a schedule was applied and whenever a node comes or goes
  or its mode or state changes (a command took effect, a trip), so Home
  Assistant, which meters transfers through the gateway from these pings,
  sees it at once;
* the **event stream** (``GET /api/peergrid/iot/events?device_id=...``):
  ``schedule`` events are carried out with leases (discharge -> SUPPLY,
  charge -> RECEIVE, idle or no command -> IDLE), with the energy budget and
  cut-off a command carries;
* the **forwarder**, delivering the outbox in order while Home Assistant is
  reachable;
* the **silence watch**: when nothing has come over the event stream (no
  event, no keep-alive) for ``lease_s``, nothing the scheduler decided can be
  trusted to still stand, so the gateway stops renewing and releases every
  node it holds to IDLE (a node it cannot reach falls back by itself when its
  lease runs out).

Home Assistant is "online" from a successful heartbeat ping until a request
fails for want of it; every transition to online starts with a heartbeat, so
Home Assistant always learns of a gateway before its other traffic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
import contextlib
from datetime import UTC, datetime
from decimal import Decimal
import hashlib
import json
import logging
from pathlib import Path
import platform
import random
import time
from types import MappingProxyType
from typing import Final, Self
import uuid

import aiohttp
from pydantic import ValidationError

from peergrid_core.errors import PeerGridAuthenticationError, PeerGridConnectionError, PeerGridError
from peergrid_core.events import (
    EnergyMintEvent,
    HeartbeatEvent,
    NodeDataEvent,
    ScheduleData,
    ScheduleEvent,
)
from peergrid_core.gateway_link import NodeCommand
from peergrid_core.payloads import (
    DepinHeartbeat,
    DepinRegistration,
    EnergyReport,
    HeartbeatPing,
    NodeDataPing,
    NodeState,
)
from peergrid_core.protocol import (
    Backoff,
    ConnectionState,
    Mode,
    NodePush,
    NodeState as StatusState,
    Status,
)

from . import SOURCE_NAME, __version__
from .advertise import GatewayAdvertiser
from .backend import (
    DEPIN_HEARTBEAT_PATH,
    DEPIN_REGISTER_PATH,
    ENERGY_REPORT_PATH,
    PING_PATH,
    HomeAssistantBackend,
)
from .config import GatewayConfig
from .nodes import ClientFactory, CompletedTransfer, NodeHandle, TransferTracker, default_client
from .outbox import Outbox, RetryPolicy

__all__ = ["MIN_REPORT_MWH", "Gateway", "detect_hardware_model"]

_LOGGER = logging.getLogger(__name__)

type Sleep = Callable[[float], Awaitable[None]]
type Clock = Callable[[], float]
type WallClock = Callable[[], datetime]
type AnyGridEvent = HeartbeatEvent | NodeDataEvent | ScheduleEvent | EnergyMintEvent

MIN_REPORT_MWH: Final = 1_000
"""Smallest transfer Home Assistant accepts for minting (0.001 kWh)."""

HA_KEEPALIVE_S: Final = 15
"""Home Assistant's event stream sends a keep-alive after this long without an event."""

_META_ROUTED: Final = "routed_mwh"
_META_REGISTRATION: Final = "depin_registration"
_DEVICE_TREE_MODEL: Final = Path("/proc/device-tree/model")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def detect_hardware_model() -> str:
    """The board's model (``Raspberry Pi 4 Model B Rev 1.4``), or the OS and CPU otherwise."""
    with contextlib.suppress(OSError):
        model = _DEVICE_TREE_MODEL.read_bytes().rstrip(b"\x00").decode("ascii", "replace")
        model = "".join(c for c in model if c.isprintable()).strip()
        if model:
            return model[:64].strip()
    return f"{platform.system()} {platform.machine()}".strip()[:64] or "unknown"


class Gateway:
    """One gateway process. ``async with Gateway(config):`` runs it.

    Injection points for tests and embedding: ``session`` (an aiohttp session,
    kept open), ``sleep`` and ``monotonic`` (the time of cycles, leases,
    silence and transfer durations: a simulated grid's in tests),
    ``wall_clock`` (timestamps), ``retry`` (outbox backoff), ``reconnect``
    (event-stream backoff), ``client_factory`` (node clients) and
    ``advertiser`` (``None`` builds one when the configuration enables
    zeroconf).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Clock = time.monotonic,
        wall_clock: WallClock = _utcnow,
        retry: RetryPolicy | None = None,
        reconnect: Backoff | None = None,
        client_factory: ClientFactory = default_client,
        advertiser: GatewayAdvertiser | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Build the parts; nothing runs until :meth:`start`."""
        self.config = config
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._retry = retry or RetryPolicy()
        self._reconnect = reconnect or Backoff()
        self._rng = rng or random.Random()
        settings = config.home_assistant
        self.backend = HomeAssistantBackend(
            settings.url,
            settings.token,
            session=session,
            request_timeout_s=settings.request_timeout_s,
            stream_timeout_s=settings.stream_timeout_s,
            verify_ssl=settings.verify_ssl,
        )
        self._handles = {
            node.uid: NodeHandle(
                node, lease_s=config.lease_s, sleep=sleep, client_factory=client_factory
            )
            for node in config.nodes
        }
        self.tracker = TransferTracker(clock=monotonic, on_complete=self._report_transfers)
        if advertiser is None and config.zeroconf:
            advertiser = GatewayAdvertiser(config.device_id, __version__)
        self._advertiser = advertiser
        self._outbox: Outbox | None = None
        self._online = False
        self._online_lock = asyncio.Lock()
        self._schedule_lock = asyncio.Lock()
        self._ping_lock = asyncio.Lock()
        self._ping_wanted = asyncio.Event()
        self._seen_states: dict[str, tuple[Mode, StatusState]] = {}
        self._wake = asyncio.Event()
        self._stream_open = False
        self._last_heard = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._started_at = 0.0
        self._started_wall: datetime | None = None
        self.heartbeats_sent = 0
        """Heartbeat pings Home Assistant accepted since start."""

        self.last_schedule: ScheduleData | None = None
        """The latest schedule applied."""

    # ------------------------------------------------------------ state

    @property
    def nodes(self) -> Mapping[str, NodeHandle]:
        """The node handles by uid, in configuration order."""
        return MappingProxyType(self._handles)

    @property
    def online(self) -> bool:
        """Whether Home Assistant answered the latest request."""
        return self._online

    @property
    def stream_connected(self) -> bool:
        """Whether the event stream is open."""
        return self._stream_open

    @property
    def outbox(self) -> Outbox:
        """The outbox (open while the gateway runs)."""
        if self._outbox is None:
            raise PeerGridConnectionError("the gateway is not running")
        return self._outbox

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the outbox, connect the nodes and start following Home Assistant."""
        self._outbox = Outbox(self.config.outbox_path, retry=self._retry)
        if self.config.lease_s <= HA_KEEPALIVE_S:
            _LOGGER.warning(
                "lease_s %s is not longer than Home Assistant's keep-alive period (%s s): "
                "a quiet event stream will release the nodes; use at least %s s",
                self.config.lease_s,
                HA_KEEPALIVE_S,
                2 * HA_KEEPALIVE_S,
            )
        self._started_at = self._last_heard = self._monotonic()
        self._started_wall = self._wall_clock()
        self._queue_registration()
        for uid, handle in self._handles.items():
            self._unsubscribe.append(handle.client.listen(self._push_listener(uid)))
            self._unsubscribe.append(handle.client.listen_connection(self._state_listener(uid)))
            await handle.start()
        self._tasks = [
            asyncio.create_task(self._cycle_loop(), name="peergrid-gateway-cycle"),
            asyncio.create_task(self._stream_loop(), name="peergrid-gateway-events"),
            asyncio.create_task(self._forward_loop(), name="peergrid-gateway-outbox"),
            asyncio.create_task(self._silence_watch(), name="peergrid-gateway-silence"),
            asyncio.create_task(self._prompt_ping_loop(), name="peergrid-gateway-prompt-ping"),
        ]
        if self._advertiser is not None:
            await self._advertiser.start()
        _LOGGER.info(
            "Gateway %s started with %d node(s)", self.config.device_id, len(self._handles)
        )

    async def stop(self) -> None:
        """Release every node, queue what was measured, and close everything."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self._release_all()
        for handle in self._handles.values():
            await handle.stop()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        # Transfers still open were ended by the release: queue them now.
        self.tracker.finish_all()
        if self._advertiser is not None:
            await self._advertiser.stop()
        await self.backend.close()
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
        self._online = self._stream_open = False
        _LOGGER.info("Gateway %s stopped", self.config.device_id)

    async def __aenter__(self) -> Self:
        """Start on entering ``async with``."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop on leaving ``async with``."""
        await self.stop()

    # ------------------------------------------------------------ Home Assistant link

    async def _ensure_online(self) -> bool:
        """Send the heartbeat ping if Home Assistant is not known to be there."""
        async with self._online_lock:
            if self._online:
                return True
            ping = HeartbeatPing(device_id=self.config.device_id, status="heartbeat")
            try:
                response = await self.backend.post(PING_PATH, ping.model_dump(mode="json"))
            except PeerGridConnectionError as err:
                _LOGGER.debug("Home Assistant unreachable: %s", err)
                return False
            if not response.ok:
                _LOGGER.warning(
                    "Home Assistant refused the heartbeat: HTTP %s %s",
                    response.status,
                    response.body,
                )
                return False
            self._online = True
            self.heartbeats_sent += 1
            _LOGGER.info("Connected to Home Assistant at %s", self.backend.url)
            if self._outbox is not None:
                self._outbox.retry_now()
            self._wake.set()
            return True

    def _set_offline(self, why: str) -> None:
        if self._online:
            _LOGGER.warning("Lost Home Assistant: %s", why)
        self._online = False

    async def _send(self, path: str, body: Mapping[str, object]) -> int:
        """The outbox's sender: a POST that also tracks whether Home Assistant is there."""
        try:
            status = await self.backend.post_status(path, body)
        except PeerGridConnectionError as err:
            self._set_offline(str(err))
            raise
        if status >= 500:
            self._set_offline(f"HTTP {status} from {path}")
        return status

    # ------------------------------------------------------------ cycle

    async def _cycle_loop(self) -> None:
        while True:
            try:
                await self._cycle()
            except Exception:
                _LOGGER.exception("Gateway cycle failed")
            await self._sleep(self.config.cycle_s)

    async def _cycle(self) -> None:
        self._queue_depin_heartbeat()
        if not await self._ensure_online():
            return
        await self._send_node_data()

    def _ping_soon(self) -> None:
        """Have a node-data ping sent now, outside the cycle (changes coalesce)."""
        self._ping_wanted.set()

    async def _prompt_ping_loop(self) -> None:
        while True:
            await self._ping_wanted.wait()
            self._ping_wanted.clear()
            if not self._online:
                continue  # the cycle reconnects; its ping carries the news
            try:
                await self._send_node_data()
            except Exception:
                _LOGGER.exception("Sending node data failed")

    async def _send_node_data(self) -> None:
        """Build and send one node-data ping.

        Pings are built and sent one at a time, so Home Assistant receives
        them in the order the readings were taken: a ping showing a node
        before a command took effect never arrives after one showing it
        after.
        """
        async with self._ping_lock:
            ping = await self._node_data()
            if ping is None:
                _LOGGER.debug("No node has readings yet; no node-data ping")
                return
            try:
                response = await self.backend.post(PING_PATH, ping.model_dump(mode="json"))
            except PeerGridConnectionError as err:
                self._set_offline(str(err))
                return
        if response.status >= 500:
            self._set_offline(f"HTTP {response.status} from {PING_PATH}")
        elif not response.ok:
            _LOGGER.error(
                "Home Assistant refused node data: HTTP %s %s", response.status, response.body
            )

    async def _node_data(self) -> NodeDataPing | None:
        """The node-data ping from every online node with readings (``None`` if none has)."""
        details: list[dict[str, object]] = []
        for handle in self._handles.values():
            status = handle.status
            if status is None or status.mv is None or status.soc is None:
                continue
            address = await handle.address()
            if address is None:
                continue
            details.append(
                {
                    "uid": handle.uid,
                    "ip": str(address),
                    "voltage": status.mv / 1000,
                    "soc": status.soc / 10,
                    "state": NodeState(status.mode.value),
                    # PeerGrid's extension: what Home Assistant meters transfers with.
                    "telemetry": {
                        "e_out_mwh": status.e_out_mwh,
                        "e_in_mwh": status.e_in_mwh,
                        "uptime_s": status.uptime_s,
                        "ma": status.ma,
                        "mw": status.mw,
                        "trip": status.last_trip if status.state is StatusState.TRIPPED else None,
                        "limit_mwh": handle.held_limit_mwh,
                    },
                }
            )
        if not details:
            return None
        primary = details[0]
        try:
            return NodeDataPing.model_validate(
                {
                    "device_id": self.config.device_id,
                    "voltage": primary["voltage"],
                    "battery_level": primary["soc"],
                    "state": primary["state"],
                    "source": SOURCE_NAME,
                    "timestamp": self._wall_clock(),
                    "connected_nodes_count": len(details),
                    "connected_nodes": [
                        {"uid": d["uid"], "voltage": d["voltage"]} for d in details
                    ],
                    "nodes_detail": details,
                }
            )
        except ValidationError:
            _LOGGER.exception("Node readings do not make a valid node-data ping")
            return None

    # ------------------------------------------------------------ DePIN

    def _queue_registration(self) -> None:
        depin = self.config.depin
        if depin is None:
            return
        registration = DepinRegistration(
            device_id=self.config.device_id,
            hardware_model=depin.hardware_model or detect_hardware_model(),
            firmware_version=__version__,
            wallet_address=depin.wallet_address,
            location=depin.location,
        )
        body = json.loads(registration.model_dump_json())
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if self.outbox.get_meta(_META_REGISTRATION) == digest:
            return  # registered before with exactly these details
        self.outbox.enqueue(
            "depin_register",
            DEPIN_REGISTER_PATH,
            body,
            coalesce=True,
            meta={_META_REGISTRATION: digest},
        )
        self._wake.set()

    def _routed_mwh(self) -> int:
        return int(self.outbox.get_meta(_META_ROUTED) or 0)

    def _queue_depin_heartbeat(self) -> None:
        if self.config.depin is None or self._outbox is None:
            return
        heartbeat = DepinHeartbeat(
            device_id=self.config.device_id,
            uptime_seconds=round(self._monotonic() - self._started_at, 3),
            timestamp=self._wall_clock(),
            routed_kwh=Decimal(self._routed_mwh()) / 1_000_000,
        )
        # Only the latest heartbeat matters (its values are cumulative), so
        # an outage leaves one queued heartbeat, not one per cycle.
        self._outbox.enqueue(
            "depin_heartbeat",
            DEPIN_HEARTBEAT_PATH,
            json.loads(heartbeat.model_dump_json()),
            coalesce=True,
        )
        self._wake.set()

    # ------------------------------------------------------------ transfers

    def _push_listener(self, uid: str) -> Callable[[NodePush], None]:
        def on_push(push: NodePush) -> None:
            if isinstance(push, Status) and push.uid == uid:
                self.tracker.observe(uid, push)
                seen = (push.mode, push.state)
                if self._seen_states.get(uid) != seen:
                    # The node came online, a command took effect, or it stopped on its own.
                    self._ping_soon()
                self._seen_states[uid] = seen

        return on_push

    def _state_listener(self, uid: str) -> Callable[[ConnectionState], None]:
        def on_state(state: ConnectionState) -> None:
            if state is ConnectionState.DISCONNECTED:
                self.tracker.lost(uid)
                self._seen_states.pop(uid, None)
                self._ping_soon()  # Home Assistant learns at once that the node is gone

        return on_state

    def _report_transfers(self, transfers: list[CompletedTransfer]) -> None:
        """Queue an energy report, with a fresh report id, for each completed transfer."""
        if self._outbox is None:
            return
        for transfer in transfers:
            if transfer.energy_mwh < MIN_REPORT_MWH:
                _LOGGER.info(
                    "Transfer %s -> %s moved %d mWh, below the %d mWh that can be reported",
                    transfer.sender,
                    transfer.receiver,
                    transfer.energy_mwh,
                    MIN_REPORT_MWH,
                )
                continue
            try:
                report = EnergyReport(
                    device_id=self.config.device_id,
                    sender_uid=transfer.sender,
                    receiver_uid=transfer.receiver,
                    kwh_transferred=Decimal(transfer.energy_mwh) / 1_000_000,
                    duration_seconds=round(transfer.duration_s, 3),
                    avg_voltage=round(transfer.avg_voltage_v, 3),
                    avg_current=round(transfer.avg_current_a, 3),
                    report_id=str(uuid.uuid4()),
                )
            except ValidationError:
                _LOGGER.exception("Cannot report transfer %s", transfer)
                continue
            routed = self._routed_mwh() + transfer.energy_mwh
            self._outbox.enqueue(
                "energy_report",
                ENERGY_REPORT_PATH,
                json.loads(report.model_dump_json()),
                meta={_META_ROUTED: str(routed)},
            )
            _LOGGER.info(
                "Transfer %s -> %s of %d mWh queued as report %s",
                transfer.sender,
                transfer.receiver,
                transfer.energy_mwh,
                report.report_id,
            )
        self._wake.set()

    # ------------------------------------------------------------ outbox

    async def _forward_loop(self) -> None:
        while True:
            self._wake.clear()
            due: float | None = None
            if self._online and self._outbox is not None:
                try:
                    await self._outbox.deliver_due(self._send)
                except Exception:
                    _LOGGER.exception("Outbox delivery failed")
                due = self._outbox.due_in()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due):
                    await self._wake.wait()

    # ------------------------------------------------------------ event stream

    async def _stream_loop(self) -> None:
        attempt = 0
        while True:
            if await self._ensure_online():
                try:
                    async with contextlib.aclosing(
                        self.backend.events(
                            self.config.device_id, on_open=self._stream_opened, on_line=self._heard
                        )
                    ) as events:
                        async for event in events:
                            await self._on_event(event)
                    why = "Home Assistant closed the event stream"
                except PeerGridAuthenticationError as err:
                    _LOGGER.error("Event stream refused: %s", err)
                    why = str(err)
                except PeerGridError as err:
                    why = str(err)
                if self._stream_open:
                    attempt = 0  # it worked until now: reconnect promptly
                self._stream_closed(why)
            delay = self._reconnect.delay(attempt, self._rng)
            attempt += 1
            await self._sleep(delay)

    def _stream_opened(self) -> None:
        self._stream_open = True
        self._heard()
        _LOGGER.info("Following Home Assistant's events")

    def _heard(self) -> None:
        self._last_heard = self._monotonic()

    def _stream_closed(self, why: str) -> None:
        self._stream_open = False
        self._set_offline(why)

    async def _silence_watch(self) -> None:
        """Release every held node once Home Assistant has been silent for a lease.

        Silence is measured from the last line of the event stream (an event or
        a keep-alive) or its opening: a stream that stays open but carries
        nothing is as silent as one that is gone.
        """
        lease_s = self.config.lease_s
        while True:
            remaining = self._last_heard + lease_s - self._monotonic()
            if remaining > 0:
                await self._sleep(remaining)
                continue
            if any(handle.keeper.mode is not Mode.IDLE for handle in self._handles.values()):
                _LOGGER.warning(
                    "No word from Home Assistant for %s s; releasing the nodes to IDLE", lease_s
                )
                async with self._schedule_lock:
                    await self._release_all()
            await self._sleep(lease_s / 3)

    async def _on_event(self, event: AnyGridEvent) -> None:
        if isinstance(event, ScheduleEvent):
            await self.apply_schedule(event.data)

    async def apply_schedule(self, schedule: ScheduleData) -> None:
        """Carry out a scheduler run: every node gets its command, or IDLE without one.

        Stops come first (receivers before suppliers, so a bus never carries a
        charger without its supply), then suppliers start, then receivers. A
        command's ``limit_mwh`` and ``min_mv`` go into the node's command. A
        node-data ping follows, so Home Assistant sees the outcome at once.

        A schedule issued before this gateway started (the one standing when
        it connected) asked for transfers its restart ended: every node was
        released when the previous run stopped. Its SUPPLY and RECEIVE
        commands are taken as carried out and not sent; Home Assistant sees
        the nodes idle and ends those transfers.
        """
        if schedule.device_id != self.config.device_id:
            return
        before_start = (
            schedule.issued_at is not None
            and self._started_wall is not None
            and schedule.issued_at < self._started_wall
        )
        wanted = {command.uid: command for command in schedule.commands}
        unknown = sorted(set(wanted) - set(self._handles))
        if unknown:
            _LOGGER.warning("Schedule names nodes this gateway does not have: %s", unknown)
        targets: dict[str, NodeCommand] = {}
        for uid in self._handles:
            command = wanted.get(uid)
            mode = Mode((command.node_command if command else NodeState.IDLE).value)
            targets[uid] = NodeCommand(
                mode=mode,
                limit_mwh=command.limit_mwh if command and mode is not Mode.IDLE else None,
                min_mv=command.min_mv if command and mode is Mode.SUPPLY else None,
            )
        async with self._schedule_lock:
            self.last_schedule = schedule
            for group in self._ordered(targets):
                for uid in group:
                    handle, target = self._handles[uid], targets[uid]
                    if before_start and target.mode is not Mode.IDLE and handle.applied is None:
                        _LOGGER.info(
                            "Not starting %s on node %s again: it was asked for before "
                            "this gateway started",
                            target.mode,
                            uid,
                        )
                        handle.applied = target
                        continue
                    await handle.apply(target)
        self._ping_soon()

    def _ordered(self, targets: Mapping[str, NodeCommand]) -> list[list[str]]:
        def held(uid: str) -> Mode:
            return self._handles[uid].keeper.mode

        idle = [uid for uid, command in targets.items() if command.mode is Mode.IDLE]
        return [
            [uid for uid in idle if held(uid) is Mode.RECEIVE],
            [uid for uid in idle if held(uid) is not Mode.RECEIVE],
            [uid for uid, command in targets.items() if command.mode is Mode.SUPPLY],
            [uid for uid, command in targets.items() if command.mode is Mode.RECEIVE],
        ]

    async def _release_all(self) -> None:
        receivers = [h for h in self._handles.values() if h.keeper.mode is Mode.RECEIVE]
        others = [h for h in self._handles.values() if h.keeper.mode is not Mode.RECEIVE]
        for handle in [*receivers, *others]:
            await handle.release()

    # ------------------------------------------------------------ running

    async def run_forever(self) -> None:
        """Start, wait until cancelled, stop."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())
