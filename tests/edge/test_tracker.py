"""Transfer metering from status pushes: energy, attribution, reboots, short sessions."""

from __future__ import annotations

import pytest

from edge.nodes import CompletedTransfer, TransferTracker
from peergrid_core.protocol import Status


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def status(
    uid: str,
    mode: str,
    *,
    e_out: int = 0,
    e_in: int = 0,
    e_session: int = 0,
    uptime: int = 1000,
    mv: int | None = 3900,
    ma: int | None = 0,
) -> Status:
    return Status.model_validate(
        {
            "t": "status",
            "uid": uid,
            "mode": mode,
            "state": {"SUPPLY": "supplying", "RECEIVE": "receiving"}.get(mode, "idle"),
            "mv": mv,
            "ma": ma,
            "mw": None,
            "soc": 500,
            "e_out_mwh": e_out,
            "e_in_mwh": e_in,
            "e_session_mwh": e_session,
            "uptime_s": uptime,
            "fw": "0.1.0",
            "lim": {"limit_mwh": 10000, "min_mv": 3300, "max_ma": 2500, "max_lease_s": 120},
        }
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def completed() -> list[CompletedTransfer]:
    return []


@pytest.fixture
def tracker(clock: Clock, completed: list[CompletedTransfer]) -> TransferTracker:
    return TransferTracker(clock=clock, on_complete=completed.extend)


def test_one_sender_one_receiver(
    tracker: TransferTracker, clock: Clock, completed: list[CompletedTransfer]
) -> None:
    tracker.observe("B", status("B", "IDLE", e_in=40))
    tracker.observe("A", status("A", "SUPPLY", e_out=500, e_session=0, mv=3900, ma=2000))
    assert tracker.supplying == {"A"}
    tracker.observe("B", status("B", "RECEIVE", e_in=40, mv=3600, ma=-900))
    clock.now += 600
    tracker.observe("A", status("A", "SUPPLY", e_out=1700, e_session=1200, mv=3800, ma=2200))
    tracker.observe("B", status("B", "IDLE", e_in=700))
    tracker.observe("A", status("A", "IDLE", e_out=1800, e_session=1300))
    assert completed == [
        CompletedTransfer(
            sender="A",
            receiver="B",
            energy_mwh=1300,
            duration_s=600,
            avg_voltage_v=pytest.approx(3.85),  # type: ignore[arg-type]
            avg_current_a=pytest.approx(2.1),  # type: ignore[arg-type]
        )
    ]
    assert tracker.supplying == frozenset()


def test_energy_split_between_receivers(
    tracker: TransferTracker, clock: Clock, completed: list[CompletedTransfer]
) -> None:
    tracker.observe("B", status("B", "IDLE", e_in=0))
    tracker.observe("C", status("C", "IDLE", e_in=100))
    tracker.observe("A", status("A", "SUPPLY", e_out=0, ma=2000))
    clock.now += 10
    tracker.observe("B", status("B", "IDLE", e_in=300))
    tracker.observe("C", status("C", "IDLE", e_in=200))
    tracker.observe("A", status("A", "IDLE", e_out=2001))
    assert [(t.receiver, t.energy_mwh) for t in completed] == [("B", 1500), ("C", 501)]
    assert sum(t.energy_mwh for t in completed) == 2001


def test_nothing_reported_without_a_receiver(
    tracker: TransferTracker, clock: Clock, completed: list[CompletedTransfer]
) -> None:
    tracker.observe("B", status("B", "IDLE", e_in=10))
    tracker.observe("A", status("A", "SUPPLY", e_out=0, ma=2000))
    clock.now += 10
    tracker.observe("A", status("A", "IDLE", e_out=900))
    assert completed == []


def test_sender_reboot_closes_with_the_last_reading(
    tracker: TransferTracker, clock: Clock, completed: list[CompletedTransfer]
) -> None:
    tracker.observe("B", status("B", "RECEIVE", e_in=0))
    tracker.observe("A", status("A", "SUPPLY", e_out=0, uptime=1000, ma=2000))
    clock.now += 30
    tracker.observe("A", status("A", "SUPPLY", e_out=1100, uptime=1030, ma=2000))
    tracker.observe("B", status("B", "RECEIVE", e_in=600))
    # The node rebooted: its counters restart at 0, and power-on is IDLE.
    tracker.observe("A", status("A", "IDLE", e_out=0, uptime=2))
    assert [(t.sender, t.receiver, t.energy_mwh) for t in completed] == [("A", "B", 1100)]


def test_connection_loss_ends_the_session(
    tracker: TransferTracker, clock: Clock, completed: list[CompletedTransfer]
) -> None:
    tracker.observe("B", status("B", "RECEIVE", e_in=0))
    tracker.observe("A", status("A", "SUPPLY", e_out=0, ma=2000))
    clock.now += 30
    tracker.observe("A", status("A", "SUPPLY", e_out=1000, ma=2000))
    tracker.observe("B", status("B", "RECEIVE", e_in=550))
    tracker.lost("A")
    tracker.lost("A")
    assert [t.energy_mwh for t in completed] == [1000]


def test_finish_all(
    tracker: TransferTracker, clock: Clock, completed: list[CompletedTransfer]
) -> None:
    tracker.observe("B", status("B", "RECEIVE", e_in=0))
    tracker.observe("A", status("A", "SUPPLY", e_out=0, ma=2000))
    clock.now += 30
    tracker.observe("A", status("A", "SUPPLY", e_out=1000, ma=2000))
    tracker.observe("B", status("B", "RECEIVE", e_in=500))
    tracker.finish_all()
    assert [t.energy_mwh for t in completed] == [1000]
    assert tracker.supplying == frozenset()
