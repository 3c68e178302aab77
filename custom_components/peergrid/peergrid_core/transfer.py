"""One energy transfer between two nodes, from the checks to the final record.

A transfer closes the RECEIVE path (TP4056 charger) of one node and the
SUPPLY path (boost converter) of another, keeps both under lease, meters the
energy and opens both again when a stop condition is met.
:class:`TransferSession` does that for one pair of nodes and always ends with
both nodes released and a closed :class:`TransferRecord`:

* :meth:`TransferSession.start` checks the request against both nodes'
  latest status **before** any relay moves (a refusal raises
  :class:`TransferValidationError` and changes nothing), then commands the
  sender, then the receiver (and releases them in the reverse order, so a
  shared bus never carries a charger without its supply);
* every status push from either node updates the metered energy and is
  checked against the stop conditions (energy target, duration, the sender's
  SoC floor, the receiver full); a trip ``event``, a node switched to another
  mode, a lost connection or a rebooted node end it too;
* :meth:`TransferSession.stop` ends it on request.

Energy is metered by the nodes themselves: the transfer's energy out is the
growth of the sender's ``e_out_mwh`` counter since the start (what is traded),
its energy in the growth of the receiver's ``e_in_mwh``, and the loss is the
difference. The energy target is also given to the sender as its
``limit_mwh``, so the node stops itself at the target even if this
controller is slow or gone.

:class:`NodeLink` is what a session needs of a node; :class:`ClientNodeLink`
implements it over :class:`~.protocol.NodeClient` and
:class:`~.protocol.lease.LeaseKeeper`. :class:`TransferManager` tracks the
active sessions and refuses a node that is already in one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
import logging
import math
from types import MappingProxyType
from typing import Annotated, Final, Protocol, Self
import uuid

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import PeerGridError, PeerGridValidationError
from .protocol.client import ConnectionState, NodeClient
from .protocol.codes import ErrorCode, Mode, NodeState, TripReason
from .protocol.errors import CommandRefusedError
from .protocol.lease import LeaseKeeper
from .protocol.messages import Ack, Event, NodePush, Status
from .thresholds import DEFAULT_THRESHOLDS

__all__ = [
    "COMPLETED_REASONS",
    "DEFAULT_ENERGY_WH",
    "DEFAULT_POLICY",
    "FINAL_STATUS_TIMEOUT_S",
    "MAX_DURATION_S",
    "MAX_ENERGY_WH",
    "ClientNodeLink",
    "NodeLink",
    "RefusalReason",
    "StopReason",
    "TransferManager",
    "TransferPolicy",
    "TransferRecord",
    "TransferRequest",
    "TransferSession",
    "TransferState",
    "TransferValidationError",
    "close_interrupted",
    "utcnow",
]

_LOGGER = logging.getLogger(__name__)

type Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""

type UpdateCallback = Callable[[TransferRecord], None]

MAX_ENERGY_WH: Final = 100.0
"""Largest energy target: the protocol's largest ``limit_mwh`` (100 Wh)."""

DEFAULT_ENERGY_WH: Final = 10.0
"""Energy target when a request names none (the node's default budget)."""

LIMIT_MARGIN_MWH: Final = 50
LIMIT_MARGIN_SHARE: Final = 0.02
"""The nodes' own energy budget exceeds the target by this share, at least the mWh above."""

MAX_DURATION_S: Final = 86_400.0
"""Longest duration limit: one day."""

_MAX_LIMIT_MWH: Final = 100_000
FINAL_STATUS_TIMEOUT_S: Final = 2.0
"""How long a stopping session waits for each node's status after its IDLE.

The node pushes a status right after acknowledging a command, so this only
bounds the wait for a node that went silent.
"""


def utcnow() -> datetime:
    """The default clock: the current time in UTC."""
    return datetime.now(UTC)


# ---------------------------------------------------------------- vocabulary


class StopReason(StrEnum):
    """Why a transfer ended."""

    TARGET_REACHED = "target_reached"
    """The sender delivered the requested energy."""

    DURATION_REACHED = "duration_reached"
    """The requested duration passed."""

    SENDER_LOW_VOLTAGE = "sender_low_voltage"
    """The sender's cell fell below the cut-off under load (its ``low_voltage`` trip)."""

    SENDER_SOC_FLOOR = "sender_soc_floor"
    """The sender's SoC reached the policy's floor."""

    RECEIVER_FULL = "receiver_full"
    """The receiver's SoC reached the policy's full mark."""

    SENDER_LOST = "sender_lost"
    """The connection to the sender closed, or the sender rebooted."""

    RECEIVER_LOST = "receiver_lost"
    """The connection to the receiver closed, or the receiver rebooted."""

    SENDER_TRIPPED = "sender_tripped"
    """Another safety rule on the sender stopped it (see ``trip_reason``)."""

    RECEIVER_TRIPPED = "receiver_tripped"
    """A safety rule on the receiver stopped it (see ``trip_reason``)."""

    REQUESTED = "requested"
    """Stopped on request: by this controller, or an IDLE from another one."""

    INTERRUPTED = "interrupted"
    """The controller restarted while the transfer was active."""


COMPLETED_REASONS: Final = frozenset(
    {StopReason.TARGET_REACHED, StopReason.DURATION_REACHED, StopReason.REQUESTED}
)
"""Reasons that close a transfer as ``completed``; every other one is ``aborted``."""


class TransferState(StrEnum):
    """Where a transfer record stands."""

    ACTIVE = "active"
    COMPLETED = "completed"
    ABORTED = "aborted"


class RefusalReason(StrEnum):
    """Why a transfer request was refused (``TransferValidationError.reason``)."""

    SENDER_OFFLINE = "sender_offline"
    RECEIVER_OFFLINE = "receiver_offline"
    SAME_NODE = "same_node"
    SENDER_BUSY = "sender_busy"
    RECEIVER_BUSY = "receiver_busy"
    SENDER_LOW_SOC = "sender_low_soc"
    SENDER_LOW_VOLTAGE = "sender_low_voltage"
    RECEIVER_FULL = "receiver_full"
    INVALID_ENERGY = "invalid_energy"
    INVALID_DURATION = "invalid_duration"


class TransferValidationError(PeerGridValidationError):
    """A transfer request was refused before any relay moved.

    ``field`` names the input at fault (``sender``, ``receiver``,
    ``energy_wh``, ``duration_s``); ``reason`` is a :class:`RefusalReason`
    code for translations and automations.
    """

    def __init__(self, field: str, reason: RefusalReason, message: str) -> None:
        """Keep the reason code beside the field and message."""
        super().__init__(field, message)
        self.reason = reason


# ---------------------------------------------------------------- request and policy


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequest:
    """What to transfer: from ``sender`` to ``receiver``, up to an energy and/or a duration.

    ``energy_wh`` is energy out of the sender, ``(0, 100]`` Wh, 10 Wh unless
    given; ``None`` leaves only the duration. ``duration_s`` is optional,
    1 to 86400 s. At least one of the two limits must be set; with both, the
    first reached ends the transfer.
    """

    sender: str
    receiver: str
    energy_wh: float | None = DEFAULT_ENERGY_WH
    duration_s: float | None = None

    def __post_init__(self) -> None:
        """Check the uids and both limits; raise :class:`TransferValidationError`."""
        for name in ("sender", "receiver"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise TransferValidationError(
                    name,
                    RefusalReason.SENDER_OFFLINE
                    if name == "sender"
                    else RefusalReason.RECEIVER_OFFLINE,
                    f"{name} must be a node uid",
                )
        if self.sender == self.receiver:
            raise TransferValidationError(
                "receiver", RefusalReason.SAME_NODE, f"node {self.sender} cannot send to itself"
            )
        if self.energy_wh is None and self.duration_s is None:
            raise TransferValidationError(
                "energy_wh",
                RefusalReason.INVALID_ENERGY,
                "give an energy target, a duration, or both",
            )
        if self.energy_wh is not None:
            energy = _finite(self.energy_wh)
            if energy is None or not 0.0 < energy <= MAX_ENERGY_WH:
                raise TransferValidationError(
                    "energy_wh",
                    RefusalReason.INVALID_ENERGY,
                    f"{self.energy_wh!r} Wh is outside (0, {MAX_ENERGY_WH:g}] Wh",
                )
            object.__setattr__(self, "energy_wh", energy)
        if self.duration_s is not None:
            duration = _finite(self.duration_s)
            if duration is None or not 1.0 <= duration <= MAX_DURATION_S:
                raise TransferValidationError(
                    "duration_s",
                    RefusalReason.INVALID_DURATION,
                    f"{self.duration_s!r} s is outside 1..{MAX_DURATION_S:g} s",
                )
            object.__setattr__(self, "duration_s", duration)

    @property
    def limit_mwh(self) -> int:
        """The energy budget to give both nodes, in whole mWh: the target plus a margin.

        The controller ends a transfer at the target (receiver first, then the
        sender); the nodes' own budget is the backstop for a controller that
        is slow or gone. The margin (2 %, at least 50 mWh: several status
        pushes of a node supplying at full power) lets the controller act
        first, so a sender never drops off a shared bus while its receiver
        still draws from it. Without an energy target the largest budget is
        asked for, so only the duration (and the node's own configured
        budget) ends the transfer.
        """
        if self.energy_wh is None:
            return _MAX_LIMIT_MWH
        target = math.ceil(self.energy_wh * 1000 - 1e-9)
        margin = max(LIMIT_MARGIN_MWH, math.ceil(target * LIMIT_MARGIN_SHARE))
        return max(1, min(_MAX_LIMIT_MWH, target + margin))


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferPolicy:
    """Safety margins a transfer keeps on top of the nodes' own cut-offs.

    ``sender_soc_floor_pct``: a sender at or below it is refused, and a
    transfer stops when the sender reaches it (default: the critical band,
    20 %). ``receiver_full_pct``: a receiver at or above it is refused, and a
    transfer stops when the receiver reaches it (default: the full band,
    90 %). ``min_sender_mv``: a sender below it is refused, and it is the
    SUPPLY cut-off sent to the node (``min_mv``), which trips on it under load.
    """

    sender_soc_floor_pct: float = DEFAULT_THRESHOLDS.soc_critical
    receiver_full_pct: float = DEFAULT_THRESHOLDS.soc_full
    min_sender_mv: int = 3_300

    def __post_init__(self) -> None:
        """Check the ranges; the floor must lie below the full mark."""
        for name in ("sender_soc_floor_pct", "receiver_full_pct"):
            value = _finite(getattr(self, name))
            if value is None or not 0.0 <= value <= 100.0:
                raise PeerGridValidationError(name, "must be a percentage within 0..100")
            object.__setattr__(self, name, value)
        if self.receiver_full_pct <= self.sender_soc_floor_pct:
            raise PeerGridValidationError("receiver_full_pct", "must be above sender_soc_floor_pct")
        mv = self.min_sender_mv
        if isinstance(mv, bool) or not isinstance(mv, int) or not 3_000 <= mv <= 4_200:
            raise PeerGridValidationError("min_sender_mv", "must be an integer 3000..4200 mV")


DEFAULT_POLICY: Final = TransferPolicy()


# ---------------------------------------------------------------- record


class TransferRecord(BaseModel):
    """What happened in one transfer; JSON-serialisable, persisted by the integration.

    While active, ``ended_at`` and ``stop_reason`` are ``None`` and the
    energies are the latest measurement. Energies are in Wh to the mWh of the
    nodes' counters; ``loss_wh`` is ``wh_out - wh_in``. ``avg_voltage_v`` and
    ``avg_current_a`` average the sender's status samples while it supplied
    (``None`` before the first one).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    transfer_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    sender: Annotated[str, Field(min_length=1)]
    receiver: Annotated[str, Field(min_length=1)]
    requested_wh: Annotated[float, Field(gt=0.0, le=MAX_ENERGY_WH)] | None
    requested_duration_s: Annotated[float, Field(ge=1.0, le=MAX_DURATION_S)] | None
    started_at: datetime
    ended_at: datetime | None = None
    state: TransferState = TransferState.ACTIVE
    stop_reason: StopReason | None = None
    wh_out: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    wh_in: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    loss_wh: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    avg_voltage_v: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    avg_current_a: Annotated[float, Field(allow_inf_nan=False)] | None = None
    trip_reason: TripReason | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        if self.sender == self.receiver:
            raise ValueError("sender and receiver must differ")
        if self.requested_wh is None and self.requested_duration_s is None:
            raise ValueError("a transfer needs requested_wh, requested_duration_s or both")
        if self.started_at.tzinfo is None:
            raise ValueError("started_at must be timezone-aware")
        active = self.state is TransferState.ACTIVE
        if active != (self.ended_at is None) or active != (self.stop_reason is None):
            raise ValueError("ended_at and stop_reason are set exactly when the transfer ended")
        if self.stop_reason is not None:
            expected = (
                TransferState.COMPLETED
                if self.stop_reason in COMPLETED_REASONS
                else TransferState.ABORTED
            )
            if self.state is not expected:
                raise ValueError(f"a transfer stopped by {self.stop_reason} is {expected}")
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        if abs(self.loss_wh - round(self.wh_out - self.wh_in, 3)) > 1e-9:
            raise ValueError("loss_wh must be wh_out - wh_in")
        return self

    @property
    def progress_pct(self) -> float | None:
        """Share of the energy target delivered, 0-100 %; ``None`` without a target."""
        if self.requested_wh is None:
            return None
        return min(100.0, self.wh_out / self.requested_wh * 100.0)

    @property
    def active(self) -> bool:
        """Whether the transfer is still running."""
        return self.state is TransferState.ACTIVE


def _closed(
    record: TransferRecord,
    reason: StopReason,
    ended_at: datetime,
    trip_reason: TripReason | None = None,
) -> TransferRecord:
    state = TransferState.COMPLETED if reason in COMPLETED_REASONS else TransferState.ABORTED
    return TransferRecord.model_validate(
        record.model_dump()
        | {
            "ended_at": max(ended_at, record.started_at),
            "state": state,
            "stop_reason": reason,
            "trip_reason": trip_reason if trip_reason is not None else record.trip_reason,
        }
    )


def close_interrupted(record: TransferRecord, now: datetime) -> TransferRecord:
    """Close a record left active by a controller restart.

    The nodes stopped on their own (their controller's connection closed, or
    the lease ran out), so the record becomes ``aborted`` with reason
    ``interrupted`` at ``now``, keeping the energy measured so far. A record
    that already ended is returned unchanged.
    """
    if not record.active:
        return record
    return _closed(record, StopReason.INTERRUPTED, now)


# ---------------------------------------------------------------- node links


class NodeLink(Protocol):
    """What a transfer needs from one node."""

    @property
    def uid(self) -> str:
        """The node's identity."""

    @property
    def online(self) -> bool:
        """Whether the node is reachable now."""

    @property
    def status(self) -> Status | None:
        """The latest status the node sent (pushed or requested)."""

    async def hold(
        self, mode: Mode, *, limit_mwh: int | None = None, min_mv: int | None = None
    ) -> Ack:
        """Switch the node to ``mode`` and keep it there until :meth:`release`."""

    async def release(self) -> None:
        """Stop holding and leave the node IDLE (best effort, never raises)."""

    def listen(self, callback: Callable[[NodePush], None]) -> Callable[[], None]:
        """Call ``callback`` with every pushed status and event; returns an unsubscribe."""

    def listen_connection(self, callback: Callable[[ConnectionState], None]) -> Callable[[], None]:
        """Call ``callback`` on every connection state change; returns an unsubscribe."""


class ClientNodeLink:
    """:class:`NodeLink` over the core's :class:`NodeClient` and a :class:`LeaseKeeper`.

    The keeper renews the lease while a mode is held. :meth:`release` sends
    IDLE whenever this link commanded the node, even if the keeper already
    let go (after a trip, or an acknowledgement that never arrived), so a
    released node is always IDLE when it can be reached.
    """

    def __init__(self, client: NodeClient, keeper: LeaseKeeper, uid: str) -> None:
        """Wrap ``client`` and ``keeper`` of node ``uid``."""
        self._client = client
        self._keeper = keeper
        self._uid = uid
        self._commanded = False

    @property
    def uid(self) -> str:
        """The node's identity."""
        return self._uid

    @property
    def online(self) -> bool:
        """Whether the client has an authenticated connection."""
        return self._client.connected

    @property
    def status(self) -> Status | None:
        """The client's latest status."""
        return self._client.status

    async def hold(
        self, mode: Mode, *, limit_mwh: int | None = None, min_mv: int | None = None
    ) -> Ack:
        """Command ``mode`` through the keeper, which renews its lease."""
        self._commanded = mode is not Mode.IDLE
        return await self._keeper.hold(mode, limit_mwh=limit_mwh, min_mv=min_mv)

    async def release(self) -> None:
        """Release the keeper, and send IDLE if the node may still be in our mode."""
        held = self._keeper.mode is not Mode.IDLE
        commanded, self._commanded = self._commanded, False
        await self._keeper.release()
        if commanded and not held and self._client.connected:
            with contextlib.suppress(PeerGridError):
                await self._client.idle()

    def listen(self, callback: Callable[[NodePush], None]) -> Callable[[], None]:
        """Subscribe to the client's pushes."""
        return self._client.listen(callback)

    def listen_connection(self, callback: Callable[[ConnectionState], None]) -> Callable[[], None]:
        """Subscribe to the client's connection state."""
        return self._client.listen_connection(callback)


# ---------------------------------------------------------------- the session


class _Role(StrEnum):
    SENDER = "sender"
    RECEIVER = "receiver"


class _Phase(StrEnum):
    NEW = "new"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"
    DONE = "done"


_EXPECTED_MODE: Final = MappingProxyType({_Role.SENDER: Mode.SUPPLY, _Role.RECEIVER: Mode.RECEIVE})
_LOST: Final = MappingProxyType(
    {_Role.SENDER: StopReason.SENDER_LOST, _Role.RECEIVER: StopReason.RECEIVER_LOST}
)
_TRIPPED: Final = MappingProxyType(
    {_Role.SENDER: StopReason.SENDER_TRIPPED, _Role.RECEIVER: StopReason.RECEIVER_TRIPPED}
)


@dataclass(slots=True)
class _Meter:
    """Counter baseline and latest reading of one node."""

    baseline_mwh: int | None = None
    latest_mwh: int | None = None
    uptime_s: int | None = None
    rebooted: bool = False

    @property
    def moved_mwh(self) -> int:
        if self.baseline_mwh is None or self.latest_mwh is None:
            return 0
        return max(0, self.latest_mwh - self.baseline_mwh)


class TransferSession:
    """Runs one transfer from ``sender`` to ``receiver`` (see the module docs).

    ``clock`` gives timezone-aware times for the record and the duration
    limit (inject the simulated or a frozen clock in tests). ``on_update`` is
    called with the record on start, on every measured progress and once at
    the end; an exception in it is logged and does not disturb the transfer.
    """

    def __init__(
        self,
        request: TransferRequest,
        sender: NodeLink,
        receiver: NodeLink,
        *,
        policy: TransferPolicy = DEFAULT_POLICY,
        clock: Clock = utcnow,
        on_update: UpdateCallback | None = None,
    ) -> None:
        """Prepare the session; nothing is sent until :meth:`start`."""
        if sender.uid != request.sender:
            raise PeerGridValidationError(
                "sender", f"link is for node {sender.uid}, request names {request.sender}"
            )
        if receiver.uid != request.receiver:
            raise PeerGridValidationError(
                "receiver", f"link is for node {receiver.uid}, request names {request.receiver}"
            )
        self.request = request
        self.policy = policy
        self._links: dict[_Role, NodeLink] = {_Role.SENDER: sender, _Role.RECEIVER: receiver}
        self._clock = clock
        self._on_update = on_update
        self._transfer_id = uuid.uuid4().hex
        self._phase = _Phase.NEW
        self._record: TransferRecord | None = None
        self._meters = {_Role.SENDER: _Meter(), _Role.RECEIVER: _Meter()}
        self._mv_sum = 0
        self._ma_sum = 0
        self._samples = 0
        self._pending: tuple[StopReason, TripReason | None] | None = None
        self._target_is_sender_limit = request.energy_wh is not None
        self._unsubscribe: list[Callable[[], None]] = []
        self._stop_task: asyncio.Task[TransferRecord] | None = None
        self._done: asyncio.Future[TransferRecord] | None = None
        self._status_seen: dict[_Role, asyncio.Event] = {}
        self._last_emitted: TransferRecord | None = None

    # ------------------------------------------------------------ properties

    @property
    def transfer_id(self) -> str:
        """The transfer's id (uuid4 hex), known from construction."""
        return self._transfer_id

    @property
    def sender(self) -> NodeLink:
        """The sending node."""
        return self._links[_Role.SENDER]

    @property
    def receiver(self) -> NodeLink:
        """The receiving node."""
        return self._links[_Role.RECEIVER]

    @property
    def record(self) -> TransferRecord:
        """The current record; raises :class:`PeerGridError` before :meth:`start`."""
        if self._record is None:
            raise PeerGridError("the transfer has not started")
        return self._record

    @property
    def active(self) -> bool:
        """Whether the transfer runs (started and not yet ended)."""
        return self._phase in (_Phase.ACTIVE, _Phase.STOPPING)

    # ------------------------------------------------------------ start

    async def start(self) -> TransferRecord:
        """Check the request, then close the receiver's and the sender's relays.

        Raises :class:`TransferValidationError` when a check fails or a node
        refuses the command as busy or too low (nothing stays switched), and
        the node's :class:`~.protocol.CommandRefusedError` or a connection
        error when a command fails otherwise; if the sender's command fails,
        the receiver is released first.
        """
        if self._phase is not _Phase.NEW:
            raise PeerGridError("a transfer session can only be started once")
        statuses = self._check()
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._phase = _Phase.STARTING
        for role, link in self._links.items():
            status = statuses[role]
            meter = self._meters[role]
            meter.baseline_mwh = meter.latest_mwh = _counter(role, status)
            meter.uptime_s = status.uptime_s
            self._status_seen[role] = asyncio.Event()
            self._unsubscribe.append(link.listen(partial(self._on_push, role)))
            self._unsubscribe.append(link.listen_connection(partial(self._on_connection, role)))
        self._record = TransferRecord(
            transfer_id=self._transfer_id,
            sender=self.request.sender,
            receiver=self.request.receiver,
            requested_wh=self.request.energy_wh,
            requested_duration_s=self.request.duration_s,
            started_at=self._clock(),
        )
        limit = self.request.limit_mwh
        # Supplier first, receiver second (and the reverse when stopping): on a
        # bus that several transfers share, a charger must never be connected
        # before the converter that feeds it, or the suppliers already there
        # carry its load too and may trip on over-current.
        try:
            ack = await self.sender.hold(
                Mode.SUPPLY, limit_mwh=limit, min_mv=self.policy.min_sender_mv
            )
        except BaseException as err:
            # A refusal changed nothing; after any other failure (a lost
            # acknowledgement) the node may have switched, so it is released.
            refused = isinstance(err, CommandRefusedError)
            await self._abandon([] if refused else [self.sender])
            _raise_refusal(_Role.SENDER, err)
            raise
        try:
            await self.receiver.hold(Mode.RECEIVE, limit_mwh=limit)
        except BaseException as err:
            refused = isinstance(err, CommandRefusedError)
            await self._abandon([self.sender] if refused else [self.receiver, self.sender])
            _raise_refusal(_Role.RECEIVER, err)
            raise
        # The node applies the stricter of its own budget and ours; only a
        # budget that is the target makes its energy_limit trip "target reached".
        if ack.limit_mwh is not None and ack.limit_mwh < limit:
            self._target_is_sender_limit = False
        self._phase = _Phase.ACTIVE
        _LOGGER.debug(
            "Transfer %s started: %s -> %s", self._transfer_id, self.sender.uid, self.receiver.uid
        )
        self._emit()
        # The statuses held now may predate the acknowledgements, so the stop
        # conditions wait for the next push; a trip or loss seen while
        # starting, though, ends the transfer at once.
        if self._pending is not None:
            self._request_stop(*self._pending)
        else:
            for role, link in self._links.items():
                if not link.online:
                    self._request_stop(_LOST[role])
                    break
        return self.record

    def _check(self) -> dict[_Role, Status]:
        """Every refusal rule, on the nodes' latest statuses; raises before anything moves.

        A node without a status, or whose status has no SoC or voltage (its
        sensor is not reading), counts as offline: nothing can be checked.
        Returns the statuses checked, which become the metering baseline.
        """
        request, policy = self.request, self.policy
        statuses: dict[_Role, Status] = {}
        for role, link in self._links.items():
            status = link.status
            if not link.online or status is None or status.soc is None or status.mv is None:
                why = "is offline" if not link.online else "has no current reading"
                raise TransferValidationError(
                    role.value, RefusalReason(f"{role}_offline"), f"node {link.uid} {why}"
                )
            if status.mode is not Mode.IDLE:
                raise TransferValidationError(
                    role.value,
                    RefusalReason(f"{role}_busy"),
                    f"node {link.uid} is already in {status.mode}",
                )
            statuses[role] = status
        sender_mv = statuses[_Role.SENDER].mv or 0
        sender_soc = (statuses[_Role.SENDER].soc or 0) / 10
        receiver_soc = (statuses[_Role.RECEIVER].soc or 0) / 10
        if sender_mv < policy.min_sender_mv:
            raise TransferValidationError(
                "sender",
                RefusalReason.SENDER_LOW_VOLTAGE,
                f"node {request.sender} is at {sender_mv} mV, below {policy.min_sender_mv} mV",
            )
        if sender_soc <= policy.sender_soc_floor_pct:
            raise TransferValidationError(
                "sender",
                RefusalReason.SENDER_LOW_SOC,
                f"node {request.sender} is at {sender_soc:g} % SoC, "
                f"not above {policy.sender_soc_floor_pct:g} %",
            )
        if receiver_soc >= policy.receiver_full_pct:
            raise TransferValidationError(
                "receiver",
                RefusalReason.RECEIVER_FULL,
                f"node {request.receiver} is at {receiver_soc:g} % SoC, "
                f"not below {policy.receiver_full_pct:g} %",
            )
        return statuses

    async def _abandon(self, held: list[NodeLink]) -> None:
        """Undo a start that failed: release what was switched, forget the session."""
        for link in held:
            await _release(link)
        self._detach()
        self._phase = _Phase.DONE
        self._record = None
        if self._done is not None and not self._done.done():
            self._done.cancel()

    # ------------------------------------------------------------ stop and wait

    async def stop(self, reason: StopReason = StopReason.REQUESTED) -> TransferRecord:
        """End the transfer with ``reason``; both nodes are released.

        Returns the final record. Stopping an ended transfer returns its
        record; a transfer stopping already finishes with its first reason.
        """
        if self._phase in (_Phase.NEW, _Phase.STARTING):
            raise PeerGridError("the transfer has not started")
        if self._phase is _Phase.DONE:
            return self.record
        # Shielded: a cancelled caller must not cancel the release of the nodes.
        return await asyncio.shield(self._request_stop(reason))

    async def wait(self) -> TransferRecord:
        """Wait until the transfer ends and return its final record."""
        if self._done is None or self._record is None:
            raise PeerGridError("the transfer has not started")
        return await asyncio.shield(self._done)

    def _request_stop(
        self, reason: StopReason, trip_reason: TripReason | None = None
    ) -> asyncio.Task[TransferRecord]:
        if self._stop_task is None:
            self._phase = _Phase.STOPPING
            self._stop_task = asyncio.create_task(
                self._finish(reason, trip_reason), name="peergrid-transfer-stop"
            )
        return self._stop_task

    async def _finish(self, reason: StopReason, trip_reason: TripReason | None) -> TransferRecord:
        _LOGGER.debug("Transfer %s stopping: %s", self._transfer_id, reason)
        try:
            for event in self._status_seen.values():
                event.clear()
            # Receiver first: the charger leaves the bus before its supply does.
            for role in (_Role.RECEIVER, _Role.SENDER):
                await _release(self._links[role])
            # The IDLE is acknowledged before the status that carries the final
            # counters; wait for it from every node that is still reachable.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINAL_STATUS_TIMEOUT_S):
                    for role, link in self._links.items():
                        if link.online:
                            await self._status_seen[role].wait()
        finally:
            # Whatever happened above, the session ends with a closed record.
            self._detach()
            record = _closed(self._measured(), reason, self._clock(), trip_reason)
            self._record = record
            self._phase = _Phase.DONE
            self._emit()
            if self._done is not None and not self._done.done():
                self._done.set_result(record)
        _LOGGER.debug(
            "Transfer %s ended (%s): %.3f Wh out, %.3f Wh in",
            self._transfer_id,
            reason,
            record.wh_out,
            record.wh_in,
        )
        return record

    def _detach(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    # ------------------------------------------------------------ pushes

    def _on_push(self, role: _Role, push: NodePush) -> None:
        if self._phase in (_Phase.NEW, _Phase.DONE):
            return
        if isinstance(push, Event):
            if push.ev == "trip":
                self._on_trip(role, push.reason)
            return
        meter = self._meters[role]
        self._status_seen[role].set()
        if meter.uptime_s is not None and push.uptime_s < meter.uptime_s:
            # Rebooted: the counters restarted and the transfer is gone; the
            # energy measured before the reboot is kept.
            meter.rebooted = True
            self._stop_for(_LOST[role])
        meter.uptime_s = push.uptime_s
        if meter.rebooted:
            return
        meter.latest_mwh = max(meter.latest_mwh or 0, _counter(role, push))
        if (
            role is _Role.SENDER
            and push.mode is Mode.SUPPLY
            and push.mv is not None
            and push.ma is not None
        ):
            self._mv_sum += push.mv
            self._ma_sum += push.ma
            self._samples += 1
        if self._phase is _Phase.ACTIVE:
            self._evaluate(role, push)
            if self._phase is _Phase.ACTIVE:
                self._emit()

    def _on_trip(self, role: _Role, reason: TripReason) -> None:
        budget_is_target = (
            self._target_is_sender_limit
            if role is _Role.SENDER
            # The receiver's budget is the target too, and its energy in can
            # only reach it after the sender's energy out did.
            else self.request.energy_wh is not None
        )
        if reason is TripReason.ENERGY_LIMIT and budget_is_target:
            self._stop_for(StopReason.TARGET_REACHED, reason)
        elif role is _Role.SENDER and reason is TripReason.LOW_VOLTAGE:
            self._stop_for(StopReason.SENDER_LOW_VOLTAGE, reason)
        else:
            self._stop_for(_TRIPPED[role], reason)

    def _on_connection(self, role: _Role, state: ConnectionState) -> None:
        if state is ConnectionState.DISCONNECTED and self._phase is not _Phase.DONE:
            self._stop_for(_LOST[role])

    def _stop_for(self, reason: StopReason, trip_reason: TripReason | None = None) -> None:
        """Stop now if running, or once the start completes."""
        if self._phase is _Phase.STARTING:
            if self._pending is None:
                self._pending = (reason, trip_reason)
        elif self._phase is _Phase.ACTIVE:
            self._request_stop(reason, trip_reason)

    def _evaluate(self, role: _Role, status: Status) -> None:
        """The stop conditions, checked on every status while active."""
        if status.mode is not _EXPECTED_MODE[role]:
            if status.state is NodeState.TRIPPED and status.last_trip is not None:
                self._on_trip(role, status.last_trip)  # the event was missed
            else:
                self._stop_for(StopReason.REQUESTED)  # another controller sent IDLE
            return
        record = self._measured()
        policy = self.policy
        if self.request.energy_wh is not None and record.wh_out >= self.request.energy_wh:
            self._stop_for(StopReason.TARGET_REACHED)
        elif self.request.duration_s is not None and (
            (self._clock() - record.started_at).total_seconds() >= self.request.duration_s
        ):
            self._stop_for(StopReason.DURATION_REACHED)
        elif (
            role is _Role.SENDER
            and status.soc is not None
            and status.soc / 10 <= policy.sender_soc_floor_pct
        ):
            self._stop_for(StopReason.SENDER_SOC_FLOOR)
        elif (
            role is _Role.RECEIVER
            and status.soc is not None
            and status.soc / 10 >= policy.receiver_full_pct
        ):
            self._stop_for(StopReason.RECEIVER_FULL)

    # ------------------------------------------------------------ record

    def _measured(self) -> TransferRecord:
        """The record with the energy and averages measured so far."""
        out_mwh = self._meters[_Role.SENDER].moved_mwh
        in_mwh = self._meters[_Role.RECEIVER].moved_mwh
        update: dict[str, object] = {
            "wh_out": out_mwh / 1000,
            "wh_in": in_mwh / 1000,
            "loss_wh": (out_mwh - in_mwh) / 1000,
        }
        if self._samples:
            update["avg_voltage_v"] = round(self._mv_sum / self._samples / 1000, 4)
            update["avg_current_a"] = round(self._ma_sum / self._samples / 1000, 4)
        return TransferRecord.model_validate(self.record.model_dump() | update)

    def _emit(self) -> None:
        """Refresh the record and report it if it changed since the last report."""
        if self._phase is not _Phase.DONE:
            self._record = self._measured()
        record = self.record
        if record == self._last_emitted:
            return
        self._last_emitted = record
        if self._on_update is None:
            return
        try:
            self._on_update(record)
        except Exception:
            _LOGGER.exception("Transfer update callback failed")


def _counter(role: _Role, status: Status) -> int:
    return status.e_out_mwh if role is _Role.SENDER else status.e_in_mwh


async def _release(link: NodeLink) -> None:
    """Release ``link``; a failure is logged, never raised (the lease still ends it)."""
    try:
        await link.release()
    except (PeerGridError, OSError) as err:
        _LOGGER.warning("Releasing node %s failed: %s", link.uid, err)


def _raise_refusal(role: _Role, err: BaseException) -> None:
    """Turn a node's ``busy`` or ``low_voltage`` refusal into a validation error."""
    if not isinstance(err, CommandRefusedError):
        return
    if err.code == ErrorCode.BUSY:
        raise TransferValidationError(
            role.value, RefusalReason(f"{role}_busy"), f"the {role} is busy: {err.message}"
        ) from err
    if err.code == ErrorCode.LOW_VOLTAGE and role is _Role.SENDER:
        raise TransferValidationError(
            "sender", RefusalReason.SENDER_LOW_VOLTAGE, f"the sender refused: {err.message}"
        ) from err


# ---------------------------------------------------------------- manager


class TransferManager:
    """Keeps the active sessions by id and never lets a node into two of them."""

    def __init__(
        self,
        *,
        policy: TransferPolicy = DEFAULT_POLICY,
        clock: Clock = utcnow,
        on_update: UpdateCallback | None = None,
    ) -> None:
        """Sessions get ``policy``, ``clock`` and ``on_update``."""
        self.policy = policy
        self._clock = clock
        self._on_update = on_update
        self._sessions: dict[str, TransferSession] = {}
        self._busy: dict[str, str] = {}  # node uid -> transfer id, from before start()

    @property
    def sessions(self) -> Mapping[str, TransferSession]:
        """The active sessions by transfer id (a read-only view)."""
        return MappingProxyType(self._sessions)

    def session_for_node(self, uid: str) -> TransferSession | None:
        """The active session node ``uid`` is in, if any."""
        transfer_id = self._busy.get(uid)
        return self._sessions.get(transfer_id) if transfer_id else None

    async def start(
        self, request: TransferRequest, sender: NodeLink, receiver: NodeLink
    ) -> TransferSession:
        """Start a session; raises :class:`TransferValidationError` for a busy node."""
        for name, uid in (("sender", request.sender), ("receiver", request.receiver)):
            if uid in self._busy:
                raise TransferValidationError(
                    name, RefusalReason(f"{name}_busy"), f"node {uid} is already in a transfer"
                )
        session = TransferSession(
            request,
            sender,
            receiver,
            policy=self.policy,
            clock=self._clock,
            on_update=lambda record: self._updated(session, record),
        )
        # Reserve both nodes before the first await, so a concurrent start
        # for the same node is refused.
        self._busy[request.sender] = self._busy[request.receiver] = session.transfer_id
        self._sessions[session.transfer_id] = session
        try:
            await session.start()
        except BaseException:
            self._forget(session)
            raise
        if not session.active and session.transfer_id in self._sessions:
            self._forget(session)
        return session

    async def stop(
        self, transfer_id: str, reason: StopReason = StopReason.REQUESTED
    ) -> TransferRecord:
        """Stop one active transfer; raises a validation error for an unknown id."""
        session = self._sessions.get(transfer_id)
        if session is None:
            raise PeerGridValidationError("transfer_id", f"no active transfer {transfer_id}")
        return await session.stop(reason)

    async def stop_all(self, reason: StopReason = StopReason.REQUESTED) -> list[TransferRecord]:
        """Stop every active transfer; returns their final records."""
        return [await session.stop(reason) for session in list(self._sessions.values())]

    def _updated(self, session: TransferSession, record: TransferRecord) -> None:
        if not record.active:
            self._forget(session)
        if self._on_update is not None:
            try:
                self._on_update(record)
            except Exception:
                _LOGGER.exception("Transfer update callback failed")

    def _forget(self, session: TransferSession) -> None:
        self._sessions.pop(session.transfer_id, None)
        for uid in (session.request.sender, session.request.receiver):
            if self._busy.get(uid) == session.transfer_id:
                del self._busy[uid]
