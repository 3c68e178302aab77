"""Hold a node in SUPPLY or RECEIVE by renewing its lease.

A node drops to IDLE by itself when its controller stops renewing the lease
(``docs/protocol.md`` section 5.3), which is what keeps it safe when the
controller dies. A controller that means to keep a mode therefore renews it
well before the lease runs out; :class:`LeaseKeeper` does that for one node.

It never restarts a transfer the node stopped: when the node trips, reports a
mode other than the one held, or the connection drops, the keeper forgets the
mode instead of sending it again (a renewal after a trip would be a new
command, and the node would start supplying again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
import contextlib
import logging

from ..errors import PeerGridError, PeerGridValidationError
from .client import ConnectionState, NodeClient
from .codes import Mode
from .messages import Ack, Event, NodePush, Status

_LOGGER = logging.getLogger(__name__)

MIN_LEASE_S = 3
"""Shortest lease worth renewing: a third of it must leave room for a round trip."""

type Sleep = Callable[[float], Awaitable[None]]
type ReleaseCallback = Callable[[Mode, str], None]


class LeaseKeeper:
    """Keeps one node in the mode it was asked for, renewing the lease.

    ``lease_s`` is the lease asked for with every command; the keeper renews
    after a third of it, so two renewals may be lost before the node gives up.
    ``on_release`` is called with the mode that was dropped and why
    (``"trip:<reason>"``, ``"node:<mode>"``, ``"disconnected"``,
    ``"renew_failed"``) whenever the keeper stops holding on its own.
    """

    def __init__(
        self,
        client: NodeClient,
        *,
        lease_s: int = 30,
        on_release: ReleaseCallback | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Attach to ``client``; nothing is sent until :meth:`hold`."""
        if not MIN_LEASE_S <= lease_s <= 3600:
            raise PeerGridValidationError("lease_s", f"must be {MIN_LEASE_S} to 3600 seconds")
        self._client = client
        self._lease_s = lease_s
        self._on_release = on_release
        self._sleep = sleep
        self._mode = Mode.IDLE
        self._limits: dict[str, int | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe = [
            client.listen(self._on_push),
            client.listen_connection(self._on_connection),
        ]

    @property
    def mode(self) -> Mode:
        """The mode being held (IDLE when nothing is)."""
        return self._mode

    @property
    def lease_s(self) -> int:
        """The lease asked for with every command."""
        return self._lease_s

    async def hold(
        self, mode: Mode, *, limit_mwh: int | None = None, min_mv: int | None = None
    ) -> Ack:
        """Switch the node to ``mode`` now and keep it there until released.

        IDLE is the same as :meth:`release` but returns the node's ack. Errors
        of the command (refusal, connection, validation) propagate and leave
        nothing held.
        """
        self._stop_renewing()
        if mode is Mode.IDLE:
            self._mode = Mode.IDLE
            return await self._client.idle()
        self._mode = Mode.IDLE  # not held until the node accepted it
        ack = await self._client.command(
            mode, lease_s=self._lease_s, limit_mwh=limit_mwh, min_mv=min_mv
        )
        self._mode = mode
        self._limits = {"limit_mwh": limit_mwh, "min_mv": min_mv}
        self._task = asyncio.create_task(self._renew_loop(mode), name="peergrid-lease")
        return ack

    async def release(self) -> None:
        """Stop holding and send IDLE if the node is reachable (best effort)."""
        held = self._mode
        self._stop_renewing()
        self._mode = Mode.IDLE
        if held is not Mode.IDLE and self._client.connected:
            with contextlib.suppress(PeerGridError):
                await self._client.idle()

    async def close(self) -> None:
        """Release the node and detach from the client."""
        await self.release()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _stop_renewing(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    def _drop(self, why: str) -> None:
        if self._mode is Mode.IDLE:
            return
        dropped = self._mode
        self._mode = Mode.IDLE
        self._stop_renewing()
        _LOGGER.debug("No longer holding %s on %s: %s", dropped, self._client.host, why)
        if self._on_release is not None:
            self._on_release(dropped, why)

    def _on_push(self, push: NodePush) -> None:
        if self._mode is Mode.IDLE:
            return
        if isinstance(push, Event):
            self._drop(f"trip:{push.reason}")
        elif isinstance(push, Status) and push.mode is not self._mode:
            self._drop(f"node:{push.mode}")

    def _on_connection(self, state: ConnectionState) -> None:
        if state is ConnectionState.DISCONNECTED:
            # The node opened its relays when the controlling session closed.
            self._drop("disconnected")

    async def _renew_loop(self, mode: Mode) -> None:
        interval = self._lease_s / 3
        while True:
            await self._sleep(interval)
            if self._mode is not mode:
                return
            try:
                await self._client.command(mode, lease_s=self._lease_s, **self._limits)
            except PeerGridError as err:
                # The node keeps the old lease for two more intervals; the
                # next renewal may still make it. A refusal means the node
                # has moved on (tripped, or taken by another controller).
                _LOGGER.warning("Renewing %s on %s failed: %s", mode, self._client.host, err)
                if not self._client.connected or getattr(err, "code", None) is not None:
                    self._drop("renew_failed")
                    return
