"""Nodes behind an edge gateway, commanded and metered by the grid's controller.

The controller (Home Assistant) cannot reach a gateway's nodes. It tells the
gateway what every node should do with ``schedule`` events addressed to the
gateway's ``device_id`` (discharge, charge or idle, see :mod:`.events`), and
reads the nodes back from the gateway's node-data pings. :class:`GatewayNodes`
is that loop for one gateway:

* :meth:`GatewayNodes.observe` takes each node-data ping: the nodes it lists
  are reachable, the others are not;
* :meth:`GatewayNodes.command` asks for a mode and waits until a ping shows
  the node in it (the gateway pings at once after it applied a schedule), so
  a command through a gateway is confirmed like a direct command's ``ack``;
  on a timeout the command is withdrawn again, so nothing stays asked for
  that was never confirmed;
* every change of what is asked for publishes the gateway's **whole**
  schedule: every node it reports, commanded or idle. A node without a
  command is idle, so a lost event can only leave a node idler than asked,
  never busier;
* a node that leaves the mode it was confirmed in on its own (a trip, its
  lease) loses its command, which the next schedule then shows: the gateway
  never restarts a transfer a node stopped.

:class:`GatewayNodeLink` is a :class:`~.transfer.NodeLink` over one node of a
:class:`GatewayNodes`, so a :class:`~.transfer.TransferSession` runs through a
gateway unchanged: it meters from the counters of the ping's PeerGrid
extension (:class:`~.payloads.NodeTelemetry`), which :func:`node_status`
turns back into the node's :class:`~.protocol.Status`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
import logging
from types import MappingProxyType
from typing import Final

from pydantic import ValidationError

from .balancer import NodeSoc
from .errors import PeerGridConnectionError, PeerGridError, PeerGridTimeoutError
from .events import ScheduleCommand, ScheduleData, SchedulerAction
from .payloads import NodeDataPing, NodeDetail
from .protocol.client import ConnectionState
from .protocol.codes import Mode, NodeState
from .protocol.messages import DEFAULT_LIMIT_MWH, DEFAULT_MIN_MV, Ack, Limits, NodePush, Status
from .schedule import grid_summary

__all__ = [
    "COMMAND_TIMEOUT_S",
    "GatewayNodeLink",
    "GatewayNodes",
    "NodeCommand",
    "node_status",
]

_LOGGER = logging.getLogger(__name__)

COMMAND_TIMEOUT_S: Final = 15.0
"""How long a command waits for the gateway to report the node in the mode asked for.

The gateway applies a schedule as soon as the event arrives and pings right
after, so this only bounds the wait for a gateway whose event stream is down
or a node that refused the command."""

UNKNOWN_LIMITS: Final = Limits(
    limit_mwh=DEFAULT_LIMIT_MWH, min_mv=DEFAULT_MIN_MV, max_ma=2_500, max_lease_s=120
)
"""The ``lim`` of a status rebuilt from a gateway's ping, which does not carry the
node's configured limits: the firmware's defaults. Nothing that meters or stops
a transfer reads them."""

_STATE_OF_MODE: Final = MappingProxyType(
    {Mode.IDLE: NodeState.IDLE, Mode.SUPPLY: NodeState.SUPPLYING, Mode.RECEIVE: NodeState.RECEIVING}
)
_ACTION_OF_MODE: Final = MappingProxyType(
    {
        Mode.IDLE: SchedulerAction.IDLE,
        Mode.SUPPLY: SchedulerAction.DISCHARGE,
        Mode.RECEIVE: SchedulerAction.CHARGE,
    }
)

type SchedulePublisher = Callable[[ScheduleData], None]
type Clock = Callable[[], datetime]
type PushCallback = Callable[[NodePush], None]
type StateCallback = Callable[[ConnectionState], None]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def node_status(detail: NodeDetail) -> Status | None:
    """The node's ``status`` as its own protocol carries it, rebuilt from a gateway's detail.

    ``None`` when the detail has no telemetry (a gateway without PeerGrid's
    extension, whose nodes cannot be metered) or names a node the protocol
    could not have announced. The voltage and state of charge come from the
    specification's fields (exact to the mV and the per mille the gateway
    converted them from), everything else from the telemetry. A node tripped
    is ``tripped``, as its own status says.
    """
    telemetry = detail.telemetry
    if telemetry is None:
        return None
    mode = Mode(detail.state.value)
    try:
        return Status.model_validate(
            {
                "uid": detail.uid,
                "mode": mode,
                "state": NodeState.TRIPPED if telemetry.trip is not None else _STATE_OF_MODE[mode],
                "mv": round(detail.voltage * 1000),
                "ma": telemetry.ma,
                "mw": telemetry.mw,
                "soc": round(detail.soc * 10),
                "e_out_mwh": telemetry.e_out_mwh,
                "e_in_mwh": telemetry.e_in_mwh,
                "trip": telemetry.trip,
                "uptime_s": telemetry.uptime_s,
                "fw": "",
                "lim": UNKNOWN_LIMITS,
            }
        )
    except ValidationError:
        _LOGGER.debug("Node %s of a gateway cannot be read as a node status", detail.uid)
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCommand:
    """What one node behind a gateway is asked to do, with the limits passed on to it."""

    mode: Mode
    limit_mwh: int | None = None
    """Energy budget of a SUPPLY or RECEIVE, mWh (``None``: the node's own)."""

    min_mv: int | None = None
    """SUPPLY cut-off, mV (``None``: the node's own)."""


_IDLE: Final = NodeCommand(mode=Mode.IDLE)


@dataclass(slots=True)
class _Waiter:
    mode: Mode
    future: asyncio.Future[NodeDetail]
    superseded: bool = False


class GatewayNodes:
    """The nodes behind one gateway: what its pings report, and what they are asked to do.

    ``publish`` sends a schedule to the gateway (in Home Assistant: the IoT
    hub's event stream). Nothing is published until a command changes.
    ``clock`` stamps each schedule's ``issued_at``.
    """

    def __init__(
        self,
        device_id: str,
        publish: SchedulePublisher,
        *,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        clock: Clock = _utcnow,
    ) -> None:
        """Start with no nodes, nothing asked for, and the gateway offline."""
        self.device_id = device_id
        self._publish = publish
        self._timeout = command_timeout_s
        self._clock = clock
        self._online = False
        self._details: dict[str, NodeDetail] = {}
        self._commands: dict[str, NodeCommand] = {}
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._push_listeners: dict[str, list[PushCallback]] = {}
        self._state_listeners: dict[str, list[StateCallback]] = {}

    # ------------------------------------------------------------ what the gateway reports

    @property
    def online(self) -> bool:
        """Whether the gateway pinged since it was last judged offline."""
        return self._online

    @property
    def details(self) -> Mapping[str, NodeDetail]:
        """The nodes of the gateway's latest node-data ping, by uid."""
        return MappingProxyType(self._details)

    def reachable(self, uid: str) -> bool:
        """Whether the gateway is online and its latest ping lists node ``uid``."""
        return self._online and uid in self._details

    def observe(self, ping: NodeDataPing) -> None:
        """Take one of the gateway's node-data pings (another gateway's is ignored).

        The ping makes the gateway online. Nodes it lists are reachable and
        get their status pushed to the links; nodes it no longer lists are
        not, and lose their commands.
        """
        if ping.device_id != self.device_id:
            return
        before = {uid for uid in self._details if self._online}
        self._online = True
        self._details = {detail.uid: detail for detail in ping.nodes_detail}
        changed = False
        for uid in before - set(self._details):
            changed |= self._forget_command(uid, "no longer reported by its gateway")
            self._fail_waiters(uid, f"node {uid} is no longer reported by gateway {self.device_id}")
            self._notify_state(uid, ConnectionState.DISCONNECTED)
        for uid, detail in self._details.items():
            if uid not in before:
                self._notify_state(uid, ConnectionState.CONNECTED)
            changed |= self._follow(uid, detail)
        if changed:
            self._publish_schedule()
        for uid, detail in self._details.items():
            self._resolve_waiters(uid, detail)
            if (status := node_status(detail)) is not None:
                for callback in list(self._push_listeners.get(uid, ())):
                    _call(callback, status)

    def set_offline(self) -> None:
        """The gateway has been silent too long (the controller's judgement).

        Every node is unreachable until the next ping: every command is
        withdrawn (a gateway that hears nothing stops renewing its nodes'
        leases, and they fall back to IDLE), commands waiting fail and the
        links see their nodes disconnect.
        """
        if not self._online:
            return
        self._online = False
        if self._commands:
            self._commands.clear()
            self._confirmed.clear()
            self._publish_schedule()
        for uid in self._details:
            self._fail_waiters(uid, f"gateway {self.device_id} is offline")
            self._notify_state(uid, ConnectionState.DISCONNECTED)

    def _follow(self, uid: str, detail: NodeDetail) -> bool:
        """Confirm a command the node now follows, or drop one it left; True if dropped."""
        command = self._commands.get(uid)
        if command is None:
            return False
        in_mode = detail.state.value == command.mode.value
        if in_mode:
            self._confirmed.add(uid)
            return False
        if uid in self._confirmed:
            return self._forget_command(uid, f"left {command.mode} on its own")
        return False

    def _forget_command(self, uid: str, why: str) -> bool:
        command = self._commands.pop(uid, None)
        self._confirmed.discard(uid)
        if command is None:
            return False
        _LOGGER.debug("Node %s of gateway %s %s", uid, self.device_id, why)
        return True

    # ------------------------------------------------------------ commands

    @property
    def commands(self) -> Mapping[str, NodeCommand]:
        """What the nodes are asked to do (a node not listed is idle)."""
        return MappingProxyType(self._commands)

    def schedule(self) -> ScheduleData:
        """The gateway's schedule now: one command per reported node, idle unless asked."""
        commands = []
        for uid in self._details:
            command = self._commands.get(uid, _IDLE)
            commands.append(
                ScheduleCommand(
                    uid=uid,
                    action=_ACTION_OF_MODE[command.mode],
                    limit_mwh=command.limit_mwh,
                    min_mv=command.min_mv,
                )
            )
        summary = grid_summary(
            [
                NodeSoc(uid=uid, soc_pct=detail.soc, online=True)
                for uid, detail in self._details.items()
            ]
        )
        return ScheduleData(
            device_id=self.device_id,
            commands=tuple(commands),
            grid_summary=summary,
            issued_at=self._clock(),
        )

    def publish_schedule(self) -> None:
        """Publish the schedule as it stands (when the gateway must hear it again)."""
        self._publish_schedule()

    def _publish_schedule(self) -> None:
        self._publish(self.schedule())

    async def command(
        self, uid: str, mode: Mode, *, limit_mwh: int | None = None, min_mv: int | None = None
    ) -> NodeDetail:
        """Ask for ``mode`` on node ``uid`` and wait until the gateway reports it there.

        Returns the detail that confirmed it. Raises
        :class:`~.errors.PeerGridConnectionError` when the node is not
        reachable (or stops being reachable meanwhile) and
        :class:`~.errors.PeerGridTimeoutError` when no ping confirms it in
        time; either way the command is withdrawn (the node is asked to be
        idle), and a newer command for the same node makes this one fail.
        """
        if not self.reachable(uid):
            raise PeerGridConnectionError(
                f"node {uid} is not reachable through gateway {self.device_id}"
            )
        wanted = (
            _IDLE
            if mode is Mode.IDLE
            else NodeCommand(
                mode=mode,
                limit_mwh=limit_mwh,
                min_mv=min_mv if mode is Mode.SUPPLY else None,
            )
        )
        for older in self._waiters.pop(uid, []):
            if not older.future.done():
                older.superseded = True
                older.future.set_exception(PeerGridError("superseded by a newer command"))
        waiter = _Waiter(mode=mode, future=asyncio.get_running_loop().create_future())
        self._waiters.setdefault(uid, []).append(waiter)
        in_mode = self._details[uid].state.value == mode.value
        if not self._set(uid, wanted) and not in_mode:
            # Asked for before but not there yet: the gateway may have missed it.
            self._publish_schedule()
        self._resolve_waiters(uid, self._details[uid])
        try:
            async with asyncio.timeout(self._timeout):
                return await waiter.future
        except TimeoutError as err:
            self._withdraw(uid, wanted)
            raise PeerGridTimeoutError(
                f"gateway {self.device_id} did not report node {uid} in {mode} "
                f"within {self._timeout:g} s"
            ) from err
        except PeerGridError:
            if not waiter.superseded:  # the newer command stands
                self._withdraw(uid, wanted)
            raise
        finally:
            waiters = self._waiters.get(uid, [])
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(uid, None)

    def release(self, uid: str) -> None:
        """Ask for node ``uid`` to be idle, without waiting (a release never fails)."""
        self._set(uid, _IDLE)

    def release_all(self) -> None:
        """Ask for every node to be idle and say so to the gateway."""
        self._commands.clear()
        self._confirmed.clear()
        self._publish_schedule()

    def _set(self, uid: str, wanted: NodeCommand) -> bool:
        """Ask for ``wanted`` and publish the schedule if that changed it; True if it did."""
        current = self._commands.get(uid, _IDLE)
        if wanted == current:
            return False
        self._confirmed.discard(uid)
        if wanted.mode is Mode.IDLE:
            del self._commands[uid]
        else:
            self._commands[uid] = wanted
        self._publish_schedule()
        return True

    def _withdraw(self, uid: str, wanted: NodeCommand) -> None:
        """Take back a command that failed, unless a newer one replaced it."""
        if wanted.mode is not Mode.IDLE and self._commands.get(uid) == wanted:
            self._set(uid, _IDLE)

    def _resolve_waiters(self, uid: str, detail: NodeDetail) -> None:
        for waiter in self._waiters.get(uid, ()):
            if not waiter.future.done() and detail.state.value == waiter.mode.value:
                waiter.future.set_result(detail)

    def _fail_waiters(self, uid: str, why: str) -> None:
        for waiter in self._waiters.get(uid, ()):
            if not waiter.future.done():
                waiter.future.set_exception(PeerGridConnectionError(why))

    # ------------------------------------------------------------ links

    def link(self, uid: str) -> GatewayNodeLink:
        """A :class:`~.transfer.NodeLink` for node ``uid`` of this gateway."""
        return GatewayNodeLink(self, uid)

    def listen(self, uid: str, callback: PushCallback) -> Callable[[], None]:
        """Call ``callback`` with node ``uid``'s status from every ping that has it."""
        return _subscribe(self._push_listeners, uid, callback)

    def listen_connection(self, uid: str, callback: StateCallback) -> Callable[[], None]:
        """Call ``callback`` when node ``uid`` becomes reachable or unreachable."""
        return _subscribe(self._state_listeners, uid, callback)

    def _notify_state(self, uid: str, state: ConnectionState) -> None:
        for callback in list(self._state_listeners.get(uid, ())):
            _call(callback, state)


def _subscribe[T](registry: dict[str, list[T]], uid: str, callback: T) -> Callable[[], None]:
    registry.setdefault(uid, []).append(callback)

    def unsubscribe() -> None:
        callbacks = registry.get(uid, [])
        with contextlib.suppress(ValueError):
            callbacks.remove(callback)
        if not callbacks:
            registry.pop(uid, None)

    return unsubscribe


def _call[T](callback: Callable[[T], None], value: T) -> None:
    try:
        callback(value)
    except Exception:
        _LOGGER.exception("Gateway node listener failed")


class GatewayNodeLink:
    """:class:`~.transfer.NodeLink` over one node behind a gateway.

    Commands are schedules (see :class:`GatewayNodes`); holding a mode is
    the gateway's job (it renews the node's lease while the schedule
    stands). The acknowledgement of :meth:`hold` is the ping that shows the
    node in the mode, with the energy budget the node applies to it.
    """

    def __init__(self, nodes: GatewayNodes, uid: str) -> None:
        """Wrap node ``uid`` of ``nodes``."""
        self._nodes = nodes
        self._uid = uid

    @property
    def uid(self) -> str:
        """The node's identity."""
        return self._uid

    @property
    def device_id(self) -> str:
        """The gateway's device id."""
        return self._nodes.device_id

    @property
    def online(self) -> bool:
        """Whether the gateway is online and reports the node."""
        return self._nodes.reachable(self._uid)

    @property
    def status(self) -> Status | None:
        """The node's status from the gateway's latest ping (``None`` without telemetry)."""
        detail = self._nodes.details.get(self._uid)
        return None if detail is None or not self.online else node_status(detail)

    async def hold(
        self, mode: Mode, *, limit_mwh: int | None = None, min_mv: int | None = None
    ) -> Ack:
        """Ask the gateway for ``mode`` and wait until its ping shows the node in it."""
        detail = await self._nodes.command(self._uid, mode, limit_mwh=limit_mwh, min_mv=min_mv)
        applied = detail.telemetry.limit_mwh if detail.telemetry is not None else None
        return Ack(
            mode=mode,
            limit_mwh=applied if mode is not Mode.IDLE else None,
            min_mv=min_mv if mode is Mode.SUPPLY else None,
        )

    async def release(self) -> None:
        """Ask the gateway to leave the node idle (never raises)."""
        self._nodes.release(self._uid)

    def listen(self, callback: PushCallback) -> Callable[[], None]:
        """Subscribe to the node's status from every ping."""
        return self._nodes.listen(self._uid, callback)

    def listen_connection(self, callback: StateCallback) -> Callable[[], None]:
        """Subscribe to the node becoming reachable or not through the gateway."""
        return self._nodes.listen_connection(self._uid, callback)
