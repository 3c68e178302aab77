"""The grid's own reports: built only from the transfer record, identical every time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from peergrid_core.ledger.settlement import GRID_REPORTER_ID, evidence_for_record, report_for_record
from peergrid_core.transfer import TransferRecord, TransferState

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _record(**changes: object) -> TransferRecord:
    values: dict[str, object] = {
        "transfer_id": "5a0c3e1f2b7d4c9e8f6a1b2c3d4e5f60",
        "sender": "NODE_A",
        "receiver": "NODE_B",
        "requested_wh": 5.0,
        "requested_duration_s": None,
        "started_at": START,
        "ended_at": START + timedelta(minutes=22),
        "state": TransferState.COMPLETED,
        "wh_out": 5.0219,
        "wh_in": 2.16,
        "loss_wh": round(5.0219 - 2.16, 3),
        "stop_reason": "target_reached",
        "avg_voltage_v": 3.9204,
        "avg_current_a": -0.3512,
    }
    return TransferRecord.model_validate(values | changes)


def test_report_is_the_record_rounded_down() -> None:
    """5.0219 Wh -> 0.005021 kWh (never up), 1320 s, magnitudes of current, the id as UUID."""
    report = report_for_record(_record())
    assert report == report_for_record(_record())
    assert report.device_id == GRID_REPORTER_ID
    assert report.kwh_transferred == Decimal("0.005021")
    assert report.duration_seconds == 1320
    assert (report.avg_voltage, report.avg_current) == (3.92, 0.351)
    assert report.report_id == "5a0c3e1f-2b7d-4c9e-8f6a-1b2c3d4e5f60"


def test_evidence_of_a_running_transfer_ends_now() -> None:
    """A running transfer is evidence too, ending at the moment it is checked."""
    now = START + timedelta(minutes=3)
    evidence = evidence_for_record(
        _record(ended_at=None, stop_reason=None, state=TransferState.ACTIVE), now=now
    )
    assert (evidence.ended_at, evidence.wh_out, evidence.discharge_commanded) == (
        now,
        5.0219,
        True,
    )
