"""TransferSession, its request, policy and record, against scripted node links.

The links here are in-memory :class:`NodeLink` implementations the tests
drive by hand (pushes, trips, lost connections), so every rule is checked
deterministically; ``test_transfer_sim.py`` runs the same session against the
real firmware on the simulator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
import json
import math

from hypothesis import given, settings, strategies as st
from pydantic import ValidationError
import pytest

from peergrid_core.errors import PeerGridError, PeerGridTimeoutError, PeerGridValidationError
from peergrid_core.protocol import (
    Ack,
    CommandRefusedError,
    ConnectionState,
    ErrorCode,
    Event,
    Limits,
    Mode,
    NodePush,
    NodeState,
    Status,
    TripReason,
)
from peergrid_core.transfer import (
    COMPLETED_REASONS,
    NodeLink,
    RefusalReason,
    StopReason,
    TransferManager,
    TransferPolicy,
    TransferRecord,
    TransferRequest,
    TransferSession,
    TransferState,
    TransferValidationError,
    close_interrupted,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_STATE = {Mode.IDLE: NodeState.IDLE, Mode.SUPPLY: NodeState.SUPPLYING}
_STATE[Mode.RECEIVE] = NodeState.RECEIVING


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeLink:
    """A scripted node: statuses and events are pushed when the test says."""

    def __init__(
        self,
        uid: str,
        *,
        soc: int | None = 500,
        mv: int | None = 3_900,
        online: bool = True,
        mode: Mode = Mode.IDLE,
    ) -> None:
        self.uid = uid
        self.online = online
        self.mode = mode
        self.state = _STATE[mode]
        self.trip: TripReason | None = None
        self.soc = soc
        self.mv = mv
        self.ma = 0
        self.e_out = 1_000
        self.e_in = 2_000
        self.uptime = 100
        self.holds: list[tuple[Mode, int | None, int | None]] = []
        self.releases = 0
        self.hold_error: BaseException | None = None
        self.node_limit_mwh = 100_000
        self._push: list[Callable[[NodePush], None]] = []
        self._conn: list[Callable[[ConnectionState], None]] = []
        self.status: Status | None = self._status()

    def _status(self) -> Status:
        return Status(
            uid=self.uid,
            mode=self.mode,
            state=self.state,
            mv=self.mv,
            ma=self.ma,
            mw=None if self.mv is None else self.mv * self.ma // 1000,
            soc=self.soc,
            e_out_mwh=self.e_out,
            e_in_mwh=self.e_in,
            uptime_s=self.uptime,
            fw="0.1.0",
            last_trip=self.trip,
            limits=Limits(limit_mwh=10_000, min_mv=3_300, max_ma=2_500, max_lease_s=120),
        )

    async def hold(
        self, mode: Mode, *, limit_mwh: int | None = None, min_mv: int | None = None
    ) -> Ack:
        self.holds.append((mode, limit_mwh, min_mv))
        await asyncio.sleep(0)
        if self.hold_error is not None:
            raise self.hold_error
        self.mode = mode
        self.state = _STATE[mode]
        effective = min(limit_mwh or 10_000, self.node_limit_mwh)
        return Ack(mode=mode, lease_s=30, limit_mwh=effective, min_mv=min_mv or 3_300)

    async def release(self) -> None:
        self.releases += 1
        await asyncio.sleep(0)
        if self.online:
            self.mode = Mode.IDLE
            self.state = NodeState.IDLE
            self.push()

    def listen(self, callback: Callable[[NodePush], None]) -> Callable[[], None]:
        self._push.append(callback)
        return lambda: self._push.remove(callback)

    def listen_connection(self, callback: Callable[[ConnectionState], None]) -> Callable[[], None]:
        self._conn.append(callback)
        return lambda: self._conn.remove(callback)

    @property
    def listeners(self) -> int:
        return len(self._push) + len(self._conn)

    # -- test controls

    def push(self, **changes: int) -> None:
        """Apply ``changes`` (e_out, e_in, soc, mv, ma, uptime) and push a status."""
        for name, value in changes.items():
            setattr(self, name, value)
        self.uptime += 5
        self.status = self._status()
        for callback in list(self._push):
            callback(self.status)

    def trip_now(self, reason: TripReason) -> None:
        stopped = self.mode
        self.mode = Mode.IDLE
        self.state = NodeState.TRIPPED
        self.trip = reason
        event = Event(reason=reason, mode=stopped, mv=self.mv)
        for callback in list(self._push):
            callback(event)
        self.push()

    def disconnect(self) -> None:
        self.online = False
        for callback in list(self._conn):
            callback(ConnectionState.DISCONNECTED)


def _links(**sender: object) -> tuple[FakeLink, FakeLink]:
    return FakeLink("A", soc=800, **sender), FakeLink("B", soc=200)  # type: ignore[arg-type]


def _session(
    sender: FakeLink,
    receiver: FakeLink,
    *,
    energy_wh: float | None = 1.0,
    duration_s: float | None = None,
    clock: FakeClock | None = None,
    updates: list[TransferRecord] | None = None,
    policy: TransferPolicy | None = None,
) -> TransferSession:
    return TransferSession(
        TransferRequest(sender="A", receiver="B", energy_wh=energy_wh, duration_s=duration_s),
        sender,
        receiver,
        policy=policy or TransferPolicy(),
        clock=clock or FakeClock(),
        on_update=None if updates is None else updates.append,
    )


async def _ended(session: TransferSession) -> TransferRecord:
    async with asyncio.timeout(5):
        return await session.wait()


def test_fake_link_is_a_node_link() -> None:
    link: NodeLink = FakeLink("A")
    assert link.uid == "A"


# ------------------------------------------------------------------ request


@pytest.mark.parametrize(
    ("kwargs", "field", "reason"),
    [
        ({"receiver": "A"}, "receiver", RefusalReason.SAME_NODE),
        ({"energy_wh": 0.0}, "energy_wh", RefusalReason.INVALID_ENERGY),
        ({"energy_wh": -1.0}, "energy_wh", RefusalReason.INVALID_ENERGY),
        ({"energy_wh": 100.001}, "energy_wh", RefusalReason.INVALID_ENERGY),
        ({"energy_wh": math.nan}, "energy_wh", RefusalReason.INVALID_ENERGY),
        ({"energy_wh": math.inf}, "energy_wh", RefusalReason.INVALID_ENERGY),
        ({"energy_wh": True}, "energy_wh", RefusalReason.INVALID_ENERGY),
        ({"energy_wh": "5"}, "energy_wh", RefusalReason.INVALID_ENERGY),
        ({"duration_s": 0.5}, "duration_s", RefusalReason.INVALID_DURATION),
        ({"duration_s": 86_401}, "duration_s", RefusalReason.INVALID_DURATION),
        ({"duration_s": math.nan}, "duration_s", RefusalReason.INVALID_DURATION),
        ({"energy_wh": None}, "energy_wh", RefusalReason.INVALID_ENERGY),
        ({"sender": ""}, "sender", RefusalReason.SENDER_OFFLINE),
        ({"receiver": ""}, "receiver", RefusalReason.RECEIVER_OFFLINE),
    ],
)
def test_bad_requests_name_the_field_and_reason(
    kwargs: dict[str, object], field: str, reason: RefusalReason
) -> None:
    values: dict[str, object] = {"sender": "A", "receiver": "B"} | kwargs
    with pytest.raises(TransferValidationError) as err:
        TransferRequest(**values)  # type: ignore[arg-type]
    assert err.value.field == field
    assert err.value.reason is reason
    assert isinstance(err.value, PeerGridValidationError)


def test_request_defaults_to_ten_wh() -> None:
    request = TransferRequest(sender="A", receiver="B")
    assert request.energy_wh == 10.0
    assert request.duration_s is None
    assert request.limit_mwh == 10_200  # 10 Wh and the 2 % margin
    duration_only = TransferRequest(sender="A", receiver="B", energy_wh=None, duration_s=60)
    assert duration_only.duration_s == 60.0
    assert duration_only.limit_mwh == 100_000


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0.0, max_value=100.0, exclude_min=True))
def test_node_budget_covers_the_target(energy_wh: float) -> None:
    """The node's budget covers the target with the documented margin, capped by the protocol."""
    limit = TransferRequest(sender="A", receiver="B", energy_wh=energy_wh).limit_mwh
    assert 1 <= limit <= 100_000
    target = energy_wh * 1000
    margin = max(50, target * 0.02)
    assert limit >= min(100_000, target + margin - 1e-6)
    assert limit < target + margin + 2


def test_policy_validation() -> None:
    assert TransferPolicy().sender_soc_floor_pct == 20.0
    assert TransferPolicy().receiver_full_pct == 90.0
    assert TransferPolicy().min_sender_mv == 3_300
    with pytest.raises(PeerGridValidationError) as err:
        TransferPolicy(sender_soc_floor_pct=95.0)
    assert err.value.field == "receiver_full_pct"
    with pytest.raises(PeerGridValidationError) as err:
        TransferPolicy(receiver_full_pct=101.0)
    assert err.value.field == "receiver_full_pct"
    with pytest.raises(PeerGridValidationError) as err:
        TransferPolicy(min_sender_mv=2_500)
    assert err.value.field == "min_sender_mv"


# ------------------------------------------------------------------ checks before start


@pytest.mark.parametrize(
    ("sender", "receiver", "field", "reason"),
    [
        ({"online": False}, {}, "sender", RefusalReason.SENDER_OFFLINE),
        ({}, {"online": False}, "receiver", RefusalReason.RECEIVER_OFFLINE),
        ({"soc": None}, {}, "sender", RefusalReason.SENDER_OFFLINE),
        ({}, {"soc": None}, "receiver", RefusalReason.RECEIVER_OFFLINE),
        ({"mode": Mode.SUPPLY}, {}, "sender", RefusalReason.SENDER_BUSY),
        ({}, {"mode": Mode.RECEIVE}, "receiver", RefusalReason.RECEIVER_BUSY),
        ({"mv": 3_250}, {}, "sender", RefusalReason.SENDER_LOW_VOLTAGE),
        ({"soc": 200}, {}, "sender", RefusalReason.SENDER_LOW_SOC),
        ({}, {"soc": 900}, "receiver", RefusalReason.RECEIVER_FULL),
    ],
)
async def test_refusals_move_no_relay(
    sender: dict[str, object], receiver: dict[str, object], field: str, reason: RefusalReason
) -> None:
    link_a = FakeLink("A", **({"soc": 800} | sender))  # type: ignore[arg-type]
    link_b = FakeLink("B", **({"soc": 200} | receiver))  # type: ignore[arg-type]
    updates: list[TransferRecord] = []
    session = _session(link_a, link_b, updates=updates)
    with pytest.raises(TransferValidationError) as err:
        await session.start()
    assert err.value.field == field
    assert err.value.reason is reason
    assert link_a.holds == link_b.holds == []
    assert link_a.releases == link_b.releases == 0
    assert link_a.listeners == link_b.listeners == 0
    assert updates == []
    assert not session.active
    with pytest.raises(PeerGridError):
        _ = session.record


async def test_sender_without_status_is_offline() -> None:
    link_a, link_b = _links()
    link_a.status = None
    with pytest.raises(TransferValidationError) as err:
        await _session(link_a, link_b).start()
    assert err.value.reason is RefusalReason.SENDER_OFFLINE


def test_links_must_match_the_request() -> None:
    with pytest.raises(PeerGridValidationError) as err:
        TransferSession(TransferRequest(sender="A", receiver="B"), FakeLink("X"), FakeLink("B"))
    assert err.value.field == "sender"
    with pytest.raises(PeerGridValidationError) as err:
        TransferSession(TransferRequest(sender="A", receiver="B"), FakeLink("A"), FakeLink("X"))
    assert err.value.field == "receiver"


# ------------------------------------------------------------------ start


async def test_start_commands_the_sender_then_the_receiver() -> None:
    sender, receiver = _links()
    updates: list[TransferRecord] = []
    session = _session(sender, receiver, energy_wh=2.5, updates=updates)
    record = await session.start()
    # The nodes' own budget is the target plus the margin (here 50 mWh).
    assert receiver.holds == [(Mode.RECEIVE, 2_550, None)]
    assert sender.holds == [(Mode.SUPPLY, 2_550, 3_300)]
    assert session.active
    assert record.state is TransferState.ACTIVE
    assert record.started_at == T0
    assert record.ended_at is None
    assert record.stop_reason is None
    assert record.requested_wh == 2.5
    assert record.wh_out == record.wh_in == 0.0
    assert record.progress_pct == 0.0
    assert len(record.transfer_id) == 32
    assert record.transfer_id == session.transfer_id
    assert updates == [record]
    with pytest.raises(PeerGridError):
        await session.start()
    await session.stop()


async def test_bus_never_carries_a_charger_without_its_supply() -> None:
    """The sender switches on before the receiver, and off after it."""
    sender, receiver = _links()
    order: list[tuple[str, str]] = []
    for link in (sender, receiver):
        original_hold, original_release = link.hold, link.release

        async def hold(mode: Mode, *, _h=original_hold, _u=link.uid, **kw: int | None) -> Ack:
            order.append((_u, str(mode)))
            return await _h(mode, **kw)

        async def release(*, _r=original_release, _u=link.uid) -> None:
            order.append((_u, "release"))
            await _r()

        link.hold = hold  # type: ignore[method-assign]
        link.release = release  # type: ignore[method-assign]
    session = _session(sender, receiver)
    await session.start()
    await session.stop()
    assert order == [
        (sender.uid, "SUPPLY"),
        (receiver.uid, "RECEIVE"),
        (receiver.uid, "release"),
        (sender.uid, "release"),
    ]


async def test_refused_sender_moves_nothing() -> None:
    sender, receiver = _links()
    sender.hold_error = CommandRefusedError(ErrorCode.BUSY, "another session controls the node")
    session = _session(sender, receiver)
    with pytest.raises(TransferValidationError) as err:
        await session.start()
    assert err.value.reason is RefusalReason.SENDER_BUSY
    assert isinstance(err.value.__cause__, CommandRefusedError)
    assert receiver.holds == []
    assert sender.releases == receiver.releases == 0  # the sender refused: never ours
    assert receiver.mode is Mode.IDLE
    assert sender.listeners == receiver.listeners == 0
    assert not session.active


async def test_sender_refusing_low_voltage_is_a_validation_error() -> None:
    sender, receiver = _links()
    sender.hold_error = CommandRefusedError(ErrorCode.LOW_VOLTAGE, "cell at 3250 mV")
    with pytest.raises(TransferValidationError) as err:
        await _session(sender, receiver).start()
    assert err.value.reason is RefusalReason.SENDER_LOW_VOLTAGE
    assert receiver.holds == []
    assert sender.releases == receiver.releases == 0


async def test_sender_timeout_releases_the_sender() -> None:
    """An unanswered SUPPLY may have been carried out: the sender is released."""
    sender, receiver = _links()
    sender.hold_error = PeerGridTimeoutError("node did not answer cmd")
    with pytest.raises(PeerGridTimeoutError):
        await _session(sender, receiver).start()
    assert sender.releases == 1
    assert receiver.holds == []
    assert receiver.releases == 0


async def test_receiver_timeout_releases_both() -> None:
    """An unanswered RECEIVE may have been carried out: both are released."""
    sender, receiver = _links()
    receiver.hold_error = PeerGridTimeoutError("node did not answer cmd")
    with pytest.raises(PeerGridTimeoutError):
        await _session(sender, receiver).start()
    assert sender.releases == receiver.releases == 1


async def test_refused_receiver_releases_the_sender() -> None:
    sender, receiver = _links()
    receiver.hold_error = CommandRefusedError(ErrorCode.BUSY, "another session")
    with pytest.raises(TransferValidationError) as err:
        await _session(sender, receiver).start()
    assert err.value.reason is RefusalReason.RECEIVER_BUSY
    assert sender.releases == 1
    assert receiver.releases == 0  # it refused, so it was never ours
    assert sender.mode is Mode.IDLE


async def test_receiver_fault_refusal_propagates() -> None:
    sender, receiver = _links()
    receiver.hold_error = CommandRefusedError(ErrorCode.FAULT, "interlock is latched")
    with pytest.raises(CommandRefusedError):
        await _session(sender, receiver).start()
    assert sender.releases == 1


# ------------------------------------------------------------------ metering and stop rules


async def test_meters_from_pushes_and_stops_at_the_target() -> None:
    sender, receiver = _links()
    updates: list[TransferRecord] = []
    session = _session(sender, receiver, energy_wh=1.0, updates=updates)
    await session.start()
    sender.push(e_out=1_400, mv=3_800, ma=2_000)
    receiver.push(e_in=2_180)
    assert session.record.wh_out == 0.4
    assert session.record.wh_in == 0.18
    assert session.record.loss_wh == 0.22
    assert session.record.progress_pct == pytest.approx(40.0)
    sender.push(e_out=2_000, mv=3_700, ma=1_800)
    record = await _ended(session)
    assert record.stop_reason is StopReason.TARGET_REACHED
    assert record.state is TransferState.COMPLETED
    assert record.wh_out == 1.0
    assert record.avg_voltage_v == pytest.approx(3.75)
    assert record.avg_current_a == pytest.approx(1.9)
    assert record.trip_reason is None
    assert sender.mode is receiver.mode is Mode.IDLE
    assert sender.releases == receiver.releases == 1
    assert sender.listeners == receiver.listeners == 0
    assert updates[-1] == record
    assert [u.state for u in updates].count(TransferState.COMPLETED) == 1
    assert not session.active
    # Pushes after the end change nothing.
    sender.push(e_out=9_000)
    assert session.record == record


@pytest.mark.parametrize(
    ("role", "trip", "reason", "state"),
    [
        ("sender", TripReason.ENERGY_LIMIT, StopReason.TARGET_REACHED, TransferState.COMPLETED),
        ("sender", TripReason.LOW_VOLTAGE, StopReason.SENDER_LOW_VOLTAGE, TransferState.ABORTED),
        ("sender", TripReason.OVER_CURRENT, StopReason.SENDER_TRIPPED, TransferState.ABORTED),
        ("sender", TripReason.LEASE_EXPIRED, StopReason.SENDER_TRIPPED, TransferState.ABORTED),
        ("receiver", TripReason.OVER_CURRENT, StopReason.RECEIVER_TRIPPED, TransferState.ABORTED),
        ("receiver", TripReason.ENERGY_LIMIT, StopReason.TARGET_REACHED, TransferState.COMPLETED),
    ],
)
async def test_trips_end_the_transfer(
    role: str, trip: TripReason, reason: StopReason, state: TransferState
) -> None:
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    sender.push(e_out=1_300, mv=3_800, ma=1_900)
    (sender if role == "sender" else receiver).trip_now(trip)
    record = await _ended(session)
    assert record.stop_reason is reason
    assert record.state is state
    assert record.trip_reason is trip
    assert record.wh_out == 0.3
    assert sender.releases == receiver.releases == 1
    assert sender.mode is receiver.mode is Mode.IDLE


async def test_node_budget_below_the_target_is_a_trip_not_the_target() -> None:
    sender, receiver = _links()
    sender.node_limit_mwh = 500  # the node's own budget is stricter than the request
    session = _session(sender, receiver, energy_wh=1.0)
    await session.start()
    sender.trip_now(TripReason.ENERGY_LIMIT)
    record = await _ended(session)
    assert record.stop_reason is StopReason.SENDER_TRIPPED
    assert record.trip_reason is TripReason.ENERGY_LIMIT


async def test_duration_only_receiver_budget_is_a_trip() -> None:
    sender, receiver = _links()
    session = _session(sender, receiver, energy_wh=None, duration_s=600)
    await session.start()
    receiver.trip_now(TripReason.ENERGY_LIMIT)
    record = await _ended(session)
    assert record.stop_reason is StopReason.RECEIVER_TRIPPED


async def test_missed_trip_event_is_read_from_the_status() -> None:
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    sender.mode, sender.state, sender.trip = Mode.IDLE, NodeState.TRIPPED, TripReason.LOW_VOLTAGE
    sender.push()
    record = await _ended(session)
    assert record.stop_reason is StopReason.SENDER_LOW_VOLTAGE


async def test_idle_from_another_controller_counts_as_requested() -> None:
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    receiver.mode, receiver.state = Mode.IDLE, NodeState.IDLE
    receiver.push()
    record = await _ended(session)
    assert record.stop_reason is StopReason.REQUESTED
    assert record.state is TransferState.COMPLETED
    assert sender.mode is Mode.IDLE


async def test_sender_soc_floor_and_receiver_full() -> None:
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    sender.push(soc=200)
    assert (await _ended(session)).stop_reason is StopReason.SENDER_SOC_FLOOR

    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    receiver.push(soc=901)
    record = await _ended(session)
    assert record.stop_reason is StopReason.RECEIVER_FULL
    assert record.state is TransferState.ABORTED


async def test_duration_uses_the_injected_clock() -> None:
    sender, receiver = _links()
    clock = FakeClock()
    session = _session(sender, receiver, energy_wh=None, duration_s=60, clock=clock)
    await session.start()
    clock.advance(59)
    sender.push(e_out=1_100)
    await asyncio.sleep(0)
    assert session.active
    clock.advance(1)
    receiver.push(e_in=2_040)
    record = await _ended(session)
    assert record.stop_reason is StopReason.DURATION_REACHED
    assert record.ended_at == T0 + timedelta(seconds=60)
    assert record.progress_pct is None
    assert record.wh_out == 0.1
    assert record.wh_in == 0.04


@pytest.mark.parametrize(
    ("lost", "reason"), [("A", StopReason.SENDER_LOST), ("B", StopReason.RECEIVER_LOST)]
)
async def test_lost_node_releases_its_partner(lost: str, reason: StopReason) -> None:
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    sender.push(e_out=1_250, mv=3_850, ma=1_900)
    receiver.push(e_in=2_100)
    gone, partner = (sender, receiver) if lost == "A" else (receiver, sender)
    gone.disconnect()
    record = await _ended(session)
    assert record.stop_reason is reason
    assert record.state is TransferState.ABORTED
    assert record.wh_out == 0.25
    assert record.wh_in == 0.1
    assert partner.mode is Mode.IDLE
    assert partner.releases == 1
    assert gone.listeners == partner.listeners == 0


async def test_rebooted_node_is_lost() -> None:
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    sender.push(e_out=1_250)
    sender.push(e_out=3, uptime=2)  # counters restarted with the node
    sender.push(e_out=40)
    record = await _ended(session)
    assert record.stop_reason is StopReason.SENDER_LOST
    assert record.wh_out == 0.25


async def test_trip_while_starting_ends_it_right_after() -> None:
    sender, receiver = _links()

    async def hold_then_trip(
        mode: Mode, *, limit_mwh: int | None = None, min_mv: int | None = None
    ) -> Ack:
        ack = await FakeLink.hold(receiver, mode, limit_mwh=limit_mwh, min_mv=min_mv)
        receiver.trip_now(TripReason.OVER_CURRENT)
        return ack

    receiver.hold = hold_then_trip  # type: ignore[method-assign]
    session = _session(sender, receiver)
    await session.start()
    record = await _ended(session)
    assert record.stop_reason is StopReason.RECEIVER_TRIPPED
    assert sender.mode is Mode.IDLE


async def test_node_lost_while_starting_ends_it_right_after() -> None:
    sender, receiver = _links()

    async def hold_then_drop(
        mode: Mode, *, limit_mwh: int | None = None, min_mv: int | None = None
    ) -> Ack:
        ack = await FakeLink.hold(sender, mode, limit_mwh=limit_mwh, min_mv=min_mv)
        sender.online = False
        return ack

    sender.hold = hold_then_drop  # type: ignore[method-assign]
    session = _session(sender, receiver)
    await session.start()
    assert (await _ended(session)).stop_reason is StopReason.SENDER_LOST


async def test_stop_on_request() -> None:
    sender, receiver = _links()
    session = _session(sender, receiver)
    with pytest.raises(PeerGridError):
        await session.stop()
    with pytest.raises(PeerGridError):
        await session.wait()
    await session.start()
    sender.push(e_out=1_050)
    record = await session.stop()
    assert record.stop_reason is StopReason.REQUESTED
    assert record.state is TransferState.COMPLETED
    assert record.wh_out == 0.05
    assert await session.stop(StopReason.SENDER_LOST) == record
    assert await session.wait() == record
    assert sender.releases == receiver.releases == 1


async def test_concurrent_stops_share_one_ending() -> None:
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    first, second = await asyncio.gather(session.stop(), session.stop(StopReason.SENDER_LOST))
    assert first == second
    assert first.stop_reason is StopReason.REQUESTED
    assert sender.releases == 1


async def test_silent_node_does_not_block_the_ending(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reachable node that never sends its final status delays the end only briefly."""
    monkeypatch.setattr("peergrid_core.transfer.FINAL_STATUS_TIMEOUT_S", 0.05)
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()
    receiver.push = lambda **_: None  # type: ignore[method-assign]
    record = await session.stop()
    assert record.stop_reason is StopReason.REQUESTED


async def test_release_failure_still_closes_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("peergrid_core.transfer.FINAL_STATUS_TIMEOUT_S", 0.05)
    sender, receiver = _links()
    session = _session(sender, receiver)
    await session.start()

    async def broken_release() -> None:
        raise PeerGridTimeoutError("no answer")

    sender.release = broken_release  # type: ignore[method-assign]
    record = await session.stop()
    assert record.state is TransferState.COMPLETED
    assert receiver.releases == 1


async def test_failing_update_callback_does_not_disturb_the_transfer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender, receiver = _links()

    def broken(record: TransferRecord) -> None:
        raise RuntimeError("listener bug")

    session = TransferSession(
        TransferRequest(sender="A", receiver="B"), sender, receiver, on_update=broken
    )
    await session.start()
    record = await session.stop()
    assert record.state is TransferState.COMPLETED
    assert "Transfer update callback failed" in caplog.text


# ------------------------------------------------------------------ record


def _record(**changes: object) -> TransferRecord:
    values: dict[str, object] = {
        "transfer_id": "0" * 32,
        "sender": "A",
        "receiver": "B",
        "requested_wh": 2.0,
        "requested_duration_s": None,
        "started_at": T0,
    }
    return TransferRecord.model_validate(values | changes)


def test_record_round_trips_through_json() -> None:
    record = _record(
        ended_at=T0 + timedelta(minutes=15),
        state="aborted",
        stop_reason="sender_low_voltage",
        wh_out=1.234,
        wh_in=0.61,
        loss_wh=0.624,
        avg_voltage_v=3.71,
        avg_current_a=1.93,
        trip_reason="low_voltage",
    )
    data = json.loads(record.model_dump_json())
    assert data["state"] == "aborted"
    assert data["stop_reason"] == "sender_low_voltage"
    assert data["trip_reason"] == "low_voltage"
    assert data["started_at"] == "2026-03-01T12:00:00Z"
    assert TransferRecord.model_validate_json(record.model_dump_json()) == record
    assert record.progress_pct == pytest.approx(61.7)


@pytest.mark.parametrize(
    "changes",
    [
        {"receiver": "A"},
        {"requested_wh": None},
        {"requested_wh": 0.0},
        {"started_at": datetime(2026, 3, 1)},  # noqa: DTZ001 - naive on purpose
        {"state": "completed"},
        {"ended_at": T0},
        {"state": "aborted", "stop_reason": "requested", "ended_at": T0},
        {"state": "completed", "stop_reason": "target_reached", "ended_at": T0 - timedelta(1)},
        {"wh_out": 1.0, "wh_in": 0.5, "loss_wh": 0.4},
        {"wh_out": -1.0, "loss_wh": -1.0},
        {"transfer_id": "not-hex"},
        {"unknown": 1},
    ],
)
def test_record_refuses_inconsistent_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _record(**changes)


def test_every_reason_has_one_final_state() -> None:
    for reason in StopReason:
        state = "completed" if reason in COMPLETED_REASONS else "aborted"
        record = _record(state=state, stop_reason=reason, ended_at=T0)
        assert not record.active


def test_close_interrupted_keeps_the_energy() -> None:
    active = _record(wh_out=0.8, wh_in=0.4, loss_wh=0.4)
    closed = close_interrupted(active, T0 + timedelta(hours=1))
    assert closed.state is TransferState.ABORTED
    assert closed.stop_reason is StopReason.INTERRUPTED
    assert closed.ended_at == T0 + timedelta(hours=1)
    assert (closed.wh_out, closed.wh_in, closed.loss_wh) == (0.8, 0.4, 0.4)
    assert close_interrupted(closed, T0 + timedelta(hours=2)) is closed
    # A clock that went backwards never produces an end before the start.
    assert close_interrupted(active, T0 - timedelta(hours=1)).ended_at == T0


# ------------------------------------------------------------------ manager


async def test_manager_refuses_a_node_already_in_a_transfer() -> None:
    updates: list[TransferRecord] = []
    manager = TransferManager(clock=FakeClock(), on_update=updates.append)
    a, b = _links()
    c = FakeLink("C", soc=150)
    session = await manager.start(TransferRequest(sender="A", receiver="B"), a, b)
    assert manager.sessions == {session.transfer_id: session}
    assert manager.session_for_node("A") is session
    assert manager.session_for_node("B") is session
    assert manager.session_for_node("C") is None
    with pytest.raises(TransferValidationError) as err:
        await manager.start(TransferRequest(sender="A", receiver="C"), a, c)
    assert err.value.reason is RefusalReason.SENDER_BUSY
    d = FakeLink("D", soc=900)
    with pytest.raises(TransferValidationError) as err:
        await manager.start(TransferRequest(sender="D", receiver="B"), d, b)
    assert err.value.reason is RefusalReason.RECEIVER_BUSY
    assert d.holds == []

    record = await manager.stop(session.transfer_id)
    assert record.stop_reason is StopReason.REQUESTED
    assert manager.sessions == {}
    assert manager.session_for_node("A") is None
    assert updates[0].state is TransferState.ACTIVE
    assert updates[-1] == record
    with pytest.raises(PeerGridValidationError) as unknown:
        await manager.stop(session.transfer_id)
    assert unknown.value.field == "transfer_id"


async def test_manager_forgets_failed_starts_and_ended_sessions() -> None:
    manager = TransferManager(clock=FakeClock())
    a, b = _links(mv=3_000)
    with pytest.raises(TransferValidationError):
        await manager.start(TransferRequest(sender="A", receiver="B"), a, b)
    assert manager.sessions == {}
    a, b = _links()
    session = await manager.start(TransferRequest(sender="A", receiver="B"), a, b)
    a.trip_now(TripReason.LOW_VOLTAGE)
    await _ended(session)
    assert manager.sessions == {}
    # Both nodes are free again.
    a, b = _links()
    await manager.start(TransferRequest(sender="A", receiver="B"), a, b)
    c, d = FakeLink("C", soc=900), FakeLink("D", soc=100)
    await manager.start(TransferRequest(sender="C", receiver="D"), c, d)
    records = await manager.stop_all()
    assert [r.sender for r in records] == ["A", "C"]
    assert all(r.stop_reason is StopReason.REQUESTED for r in records)
    assert manager.sessions == {}
