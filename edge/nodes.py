"""The gateway's side of its battery nodes: connections, leases and transfer metering.

:class:`NodeHandle` keeps one node's protocol connection up (the core's
supervised :meth:`~peergrid_core.protocol.NodeClient.run`) and holds the mode
the scheduler asked for with a :class:`~peergrid_core.protocol.lease.LeaseKeeper`.

:class:`TransferTracker` watches every node's status pushes and turns each
SUPPLY session into completed transfers: the energy is what the sender's own
``e_out_mwh`` counter grew by, and it is attributed to the nodes whose
``e_in_mwh`` grew meanwhile, in proportion to what each took in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import contextlib
from dataclasses import dataclass
import ipaddress
import logging
import socket

from peergrid_core.errors import PeerGridAuthenticationError, PeerGridError
from peergrid_core.gateway_link import NodeCommand
from peergrid_core.protocol import ConnectionState, Mode, NodeClient, Status
from peergrid_core.protocol.lease import LeaseKeeper

from .config import NodeSettings

__all__ = [
    "ClientFactory",
    "CompletedTransfer",
    "NodeHandle",
    "TransferTracker",
]

_LOGGER = logging.getLogger(__name__)

type Sleep = Callable[[float], Awaitable[None]]
type Clock = Callable[[], float]
type ClientFactory = Callable[[NodeSettings], NodeClient]
type IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def default_client(settings: NodeSettings) -> NodeClient:
    """A protocol client with the protocol's default timings."""
    return NodeClient(settings.host, settings.port, settings.key_bytes)


class NodeHandle:
    """One configured node: its connection, its lease keeper and its latest status."""

    def __init__(
        self,
        settings: NodeSettings,
        *,
        lease_s: int,
        sleep: Sleep = asyncio.sleep,
        client_factory: ClientFactory = default_client,
    ) -> None:
        """Build the client and keeper; nothing connects until :meth:`start`."""
        self.settings = settings
        self.uid = settings.uid
        self.client = client_factory(settings)
        self.keeper = LeaseKeeper(
            self.client, lease_s=lease_s, sleep=sleep, on_release=self._released
        )
        self._task: asyncio.Task[None] | None = None
        self._address: IpAddress | None = None
        self._unsubscribe = self.client.listen_connection(self._on_connection)
        self.applied: NodeCommand | None = None
        """The last command carried out (``None``: none yet, or the last one failed)."""

        self._limit_mwh: int | None = None

    @property
    def online(self) -> bool:
        """Connected, authenticated, and the node is the one configured."""
        hello = self.client.node
        return self.client.connected and hello is not None and hello.uid == self.uid

    @property
    def status(self) -> Status | None:
        """The node's latest status while it is online."""
        status = self.client.status
        return status if self.online and status is not None and status.uid == self.uid else None

    async def start(self) -> None:
        """Start the supervised connection (reconnecting with backoff)."""
        self._task = asyncio.create_task(self._supervise(), name=f"peergrid-node-{self.uid}")

    async def _supervise(self) -> None:
        try:
            await self.client.run()
        except PeerGridAuthenticationError as err:
            # A wrong key does not heal by retrying; the log says which node.
            _LOGGER.error("Node %s refused the gateway's key: %s", self.uid, err)

    def _on_connection(self, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:
            hello = self.client.node
            if hello is not None and hello.uid != self.uid:
                _LOGGER.error(
                    "%s:%s announces itself as %s, not %s; not using it",
                    self.settings.host,
                    self.settings.port,
                    hello.uid,
                    self.uid,
                )
            else:
                _LOGGER.info("Node %s connected", self.uid)
        elif state is ConnectionState.DISCONNECTED:
            self._address = None  # DHCP may move it while it is away

    def _released(self, mode: Mode, why: str) -> None:
        _LOGGER.info("Node %s left %s on its own (%s)", self.uid, mode, why)

    async def address(self) -> IpAddress | None:
        """The node's IP address: the configured literal, or the host name resolved."""
        if self._address is not None:
            return self._address
        with contextlib.suppress(ValueError):
            self._address = ipaddress.ip_address(self.settings.host)
            return self._address
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                self.settings.host, self.settings.port, type=socket.SOCK_STREAM
            )
        except OSError as err:
            _LOGGER.debug("Cannot resolve %s: %s", self.settings.host, err)
            return None
        for *_, sockaddr in infos:
            with contextlib.suppress(ValueError):
                self._address = ipaddress.ip_address(sockaddr[0])
                return self._address
        return None

    @property
    def held_limit_mwh(self) -> int | None:
        """The energy budget the node acknowledged for the mode held now (``None``: none held)."""
        return None if self.keeper.mode is Mode.IDLE else self._limit_mwh

    async def apply(self, command: NodeCommand) -> bool:
        """Hold the command's mode (renewing its lease) or, for IDLE, release what is held.

        IDLE is only sent when this gateway holds the node: a node another
        controller is using is left alone. A command carried out before is
        not sent again: either it still stands (the lease is being renewed)
        or the node left it on its own (a trip, a lost connection), and a
        transfer a node stopped is never restarted by a schedule that merely
        repeats itself. Returns whether the node is now where it was asked
        to be; a refusal or a lost connection is logged.
        """
        mode = command.mode
        if command == self.applied:
            return self.keeper.mode is mode
        if mode is Mode.IDLE:
            await self.release()
            self.applied = command
            return True
        self.applied = None
        if not self.online:
            _LOGGER.warning("Cannot switch node %s to %s: it is offline", self.uid, mode)
            return False
        try:
            ack = await self.keeper.hold(mode, limit_mwh=command.limit_mwh, min_mv=command.min_mv)
        except PeerGridError as err:
            _LOGGER.warning("Node %s did not switch to %s: %s", self.uid, mode, err)
            return False
        self.applied = command
        self._limit_mwh = ack.limit_mwh
        _LOGGER.info("Node %s switched to %s", self.uid, mode)
        return True

    async def release(self) -> None:
        """Stop renewing and send IDLE if this gateway holds the node."""
        await self.keeper.release()

    async def stop(self) -> None:
        """Release the node, close the connection and wait for the supervisor."""
        await self.keeper.close()
        self._unsubscribe()
        await self.client.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


# ---------------------------------------------------------------- transfer metering


@dataclass(frozen=True, kw_only=True)
class CompletedTransfer:
    """Energy one node supplied to another, measured by the sender's counter."""

    sender: str
    receiver: str
    energy_mwh: int
    duration_s: float
    avg_voltage_v: float
    avg_current_a: float


@dataclass(kw_only=True)
class _SupplySession:
    sender: str
    started_at: float
    uptime_s: int
    e_out_start: int
    e_out_last: int
    receivers: dict[str, tuple[int, int]]
    """uid -> (uptime_s, e_in_mwh) when the session started."""
    mv_sum: int = 0
    ma_sum: int = 0
    samples: int = 0

    def sample(self, status: Status) -> None:
        if status.mv is not None and status.ma is not None:
            self.mv_sum += status.mv
            self.ma_sum += abs(status.ma)
            self.samples += 1


class TransferTracker:
    """Turns status pushes into :class:`CompletedTransfer` records.

    ``clock`` gives the gateway's monotonic seconds (the durations);
    ``on_complete`` receives the transfers of each SUPPLY session that ended.
    """

    def __init__(
        self, *, clock: Clock, on_complete: Callable[[list[CompletedTransfer]], None]
    ) -> None:
        """Start with no sessions and no statuses."""
        self._clock = clock
        self._on_complete = on_complete
        self._latest: dict[str, Status] = {}
        self._sessions: dict[str, _SupplySession] = {}

    @property
    def supplying(self) -> frozenset[str]:
        """Nodes with an open SUPPLY session."""
        return frozenset(self._sessions)

    def observe(self, uid: str, status: Status) -> None:
        """Account for a status of node ``uid``."""
        previous = self._latest.get(uid)
        rebooted = previous is not None and status.uptime_s < previous.uptime_s
        self._latest[uid] = status
        session = self._sessions.get(uid)
        if session is not None and (rebooted or status.mode is not Mode.SUPPLY):
            if not rebooted:
                session.e_out_last = max(session.e_out_last, status.e_out_mwh)
            self._close(session)
            session = None
        if status.mode is not Mode.SUPPLY:
            return
        if session is None:
            start = max(0, status.e_out_mwh - status.e_session_mwh)
            session = _SupplySession(
                sender=uid,
                started_at=self._clock(),
                uptime_s=status.uptime_s,
                e_out_start=start,
                e_out_last=status.e_out_mwh,
                receivers={
                    other: (seen.uptime_s, seen.e_in_mwh)
                    for other, seen in self._latest.items()
                    if other != uid
                },
            )
            self._sessions[uid] = session
        session.e_out_last = max(session.e_out_last, status.e_out_mwh)
        session.sample(status)

    def lost(self, uid: str) -> None:
        """Node ``uid``'s connection closed: a SUPPLY it had ended with it."""
        session = self._sessions.get(uid)
        if session is not None:
            self._close(session)

    def finish_all(self) -> None:
        """Close every open session with what was measured so far (shutdown)."""
        for session in list(self._sessions.values()):
            self._close(session)

    def _close(self, session: _SupplySession) -> None:
        del self._sessions[session.sender]
        energy = session.e_out_last - session.e_out_start
        duration = self._clock() - session.started_at
        growth: dict[str, int] = {}
        for uid, (uptime_s, e_in_start) in session.receivers.items():
            now = self._latest.get(uid)
            # A receiver that rebooted lost its counter; what it took cannot be told.
            if now is not None and now.uptime_s >= uptime_s and now.e_in_mwh > e_in_start:
                growth[uid] = now.e_in_mwh - e_in_start
        if energy <= 0 or duration <= 0 or not growth or session.samples == 0:
            _LOGGER.info(
                "SUPPLY of %s ended: %d mWh out, %s; nothing to report",
                session.sender,
                max(energy, 0),
                "received by nodes " + ", ".join(sorted(growth)) if growth else "no node took it",
            )
            return
        avg_voltage = session.mv_sum / session.samples / 1000
        avg_current = session.ma_sum / session.samples / 1000
        total_in = sum(growth.values())
        transfers: list[CompletedTransfer] = []
        left = energy
        receivers = sorted(growth)
        for index, uid in enumerate(receivers):
            share = left if index == len(receivers) - 1 else energy * growth[uid] // total_in
            left -= share
            transfers.append(
                CompletedTransfer(
                    sender=session.sender,
                    receiver=uid,
                    energy_mwh=share,
                    duration_s=duration,
                    avg_voltage_v=avg_voltage,
                    avg_current_a=avg_current,
                )
            )
        self._on_complete(transfers)
