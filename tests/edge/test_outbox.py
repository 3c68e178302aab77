"""The SQLite outbox: order, retries with backoff, persistence, exactly-once with dedupe."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import logging
from pathlib import Path
import sqlite3

import pytest

from edge.outbox import DeliveryOutcome, Outbox, RetryPolicy, classify_status
from peergrid_core.errors import (
    PeerGridConnectionError,
    PeerGridTimeoutError,
    PeerGridValidationError,
)


class Clock:
    """Wall-clock seconds under the test's control."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class DedupingBackend:
    """Stores reports by report_id like Home Assistant; can be down or lose replies."""

    def __init__(self) -> None:
        self.stored: dict[str, Mapping[str, object]] = {}
        self.order: list[str] = []
        self.calls = 0
        self.down = False
        self.status: int | None = None
        self.lose_reply_once = False

    async def send(self, path: str, body: Mapping[str, object]) -> int:
        self.calls += 1
        if self.down:
            raise PeerGridConnectionError("connection refused")
        if self.status is not None:
            return self.status
        report_id = str(body["report_id"])
        if report_id not in self.stored:
            self.stored[report_id] = body
            self.order.append(report_id)
        if self.lose_reply_once:
            self.lose_reply_once = False
            raise PeerGridTimeoutError("reply lost")
        return 200


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def box(tmp_path: Path, clock: Clock) -> Iterator[Outbox]:
    outbox = Outbox(
        tmp_path / "outbox.sqlite3", retry=RetryPolicy(initial_s=2, maximum_s=30), clock=clock
    )
    yield outbox
    outbox.close()


def _report(n: int) -> dict[str, object]:
    return {"report_id": f"r{n}", "kwh_transferred": 0.001 * n}


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, DeliveryOutcome.DELIVERED),
        (201, DeliveryOutcome.DELIVERED),
        (400, DeliveryOutcome.REJECTED),
        (413, DeliveryOutcome.REJECTED),
        (415, DeliveryOutcome.REJECTED),
        (401, DeliveryOutcome.RETRY),
        (404, DeliveryOutcome.RETRY),
        (429, DeliveryOutcome.RETRY),
        (500, DeliveryOutcome.RETRY),
        (503, DeliveryOutcome.RETRY),
    ],
)
def test_classify_status(status: int, outcome: DeliveryOutcome) -> None:
    assert classify_status(status) is outcome


def test_retry_policy() -> None:
    policy = RetryPolicy(initial_s=2, factor=2, maximum_s=30)
    assert [policy.delay(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert policy.delay(10_000) == 30
    with pytest.raises(PeerGridValidationError) as err:
        RetryPolicy(initial_s=0)
    assert err.value.field == "initial_s"
    with pytest.raises(PeerGridValidationError) as err:
        RetryPolicy(initial_s=5, maximum_s=1)
    assert err.value.field == "maximum_s"


async def test_delivers_in_order(box: Outbox) -> None:
    backend = DedupingBackend()
    for n in range(5):
        box.enqueue("energy_report", "iot/energy/report", _report(n))
    assert len(box) == 5
    results = await box.deliver_due(backend.send)
    assert [outcome for _, outcome in results] == [DeliveryOutcome.DELIVERED] * 5
    assert backend.order == [f"r{n}" for n in range(5)]
    assert len(box) == 0
    assert box.due_in() is None


async def test_failure_blocks_the_queue_and_backs_off(box: Outbox, clock: Clock) -> None:
    backend = DedupingBackend()
    for n in range(3):
        box.enqueue("energy_report", "iot/energy/report", _report(n))
    backend.down = True
    results = await box.deliver_due(backend.send)
    # The head failed; nothing behind it was tried.
    assert [(m.body["report_id"], o) for m, o in results] == [("r0", DeliveryOutcome.RETRY)]
    head = box.head()
    assert head is not None
    assert head.attempts == 1
    assert box.due_in() == 2
    # Not due yet: nothing is sent.
    assert await box.deliver_due(backend.send) == []
    assert backend.calls == 1
    for expected_wait in (2, 4, 8, 16, 30, 30):
        assert box.due_in() == expected_wait
        clock.now += expected_wait
        await box.deliver_due(backend.send)
    backend.down = False
    clock.now += 30
    await box.deliver_due(backend.send)
    assert backend.order == ["r0", "r1", "r2"]
    assert len(box) == 0


async def test_server_error_is_retried(
    box: Outbox, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = DedupingBackend()
    box.enqueue("energy_report", "iot/energy/report", _report(1))
    backend.status = 503
    results = await box.deliver_due(backend.send)
    assert results[0][1] is DeliveryOutcome.RETRY
    assert len(box) == 1
    assert "HTTP 503" in caplog.text
    backend.status = None
    clock.now += 2
    await box.deliver_due(backend.send)
    assert list(backend.stored) == ["r1"]
    assert len(box) == 0


async def test_bad_request_is_dropped_and_logged(
    box: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    backend = DedupingBackend()
    box.enqueue("energy_report", "iot/energy/report", _report(1))
    box.enqueue("energy_report", "iot/energy/report", _report(2))
    backend.status = 400
    with caplog.at_level(logging.ERROR):
        results = await box.deliver_due(backend.send)
    assert [o for _, o in results] == [DeliveryOutcome.REJECTED, DeliveryOutcome.REJECTED]
    assert len(box) == 0
    assert "HTTP 400" in caplog.text
    assert '"report_id": "r1"' in caplog.text


async def test_survives_reopening(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(path, clock=clock)
    for n in range(3):
        first.enqueue("energy_report", "iot/energy/report", _report(n), meta={"routed_mwh": str(n)})
    backend = DedupingBackend()
    backend.down = True
    await first.deliver_due(backend.send)
    first.close()

    second = Outbox(path, clock=clock)
    try:
        assert [m.body["report_id"] for m in second.pending()] == ["r0", "r1", "r2"]
        assert second.head() is not None
        assert second.head().attempts == 1  # type: ignore[union-attr]
        assert second.get_meta("routed_mwh") == "2"
        assert second.get_meta("absent") is None
        second.retry_now()
        backend.down = False
        await second.deliver_due(backend.send)
        assert backend.order == ["r0", "r1", "r2"]
    finally:
        second.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_lost_reply_is_resent_and_deduplicated(box: Outbox, clock: Clock) -> None:
    backend = DedupingBackend()
    box.enqueue("energy_report", "iot/energy/report", _report(1))
    box.enqueue("energy_report", "iot/energy/report", _report(2))
    backend.lose_reply_once = True
    await box.deliver_due(backend.send)
    # Stored by the backend, but the outbox could not know: it keeps the row.
    assert list(backend.stored) == ["r1"]
    assert len(box) == 2
    clock.now += 2
    await box.deliver_due(backend.send)
    assert backend.calls == 3
    assert backend.order == ["r1", "r2"]
    assert len(box) == 0


async def test_coalesce_keeps_one_message_per_kind(box: Outbox) -> None:
    box.enqueue("depin_heartbeat", "depin/heartbeat", {"n": 1}, coalesce=True)
    box.enqueue("energy_report", "iot/energy/report", _report(1))
    box.enqueue("depin_heartbeat", "depin/heartbeat", {"n": 2}, coalesce=True)
    assert [(m.kind, m.body) for m in box.pending()] == [
        ("depin_heartbeat", {"n": 2}),
        ("energy_report", _report(1)),
    ]


async def test_body_replaced_in_flight_is_sent_again(box: Outbox) -> None:
    sent: list[Mapping[str, object]] = []

    async def send(path: str, body: Mapping[str, object]) -> int:
        sent.append(body)
        if len(sent) == 1:
            box.enqueue("depin_heartbeat", "depin/heartbeat", {"n": 2}, coalesce=True)
        return 200

    box.enqueue("depin_heartbeat", "depin/heartbeat", {"n": 1}, coalesce=True)
    await box.deliver_due(send)
    assert sent == [{"n": 1}, {"n": 2}]
    assert len(box) == 0


def test_unusable_path_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(PeerGridValidationError) as err:
        Outbox(tmp_path / "missing-dir" / "outbox.sqlite3")
    assert err.value.field == "outbox_path"
