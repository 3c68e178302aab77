"""Settling the grid's own transfers: the evidence and the report built from a transfer record.

Pure functions of a :class:`~..transfer.TransferRecord`, shared by every
caller that settles transfers (the Home Assistant integration today). A
report built from a record is identical every time, so settling again after
a restart is answered as a duplicate.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Final
import uuid

from ..payloads import EnergyReport
from ..transfer import TransferRecord
from .service import TransferEvidence

GRID_REPORTER_ID: Final = "peergrid-grid"
"""``device_id`` of the reports the grid writes for its own transfers."""


def evidence_for_record(record: TransferRecord, *, now: datetime | None = None) -> TransferEvidence:
    """What the grid measured for ``record``; a running transfer ends ``now`` for the check.

    Every transfer the grid ran is one it commanded: the sender was told to discharge.
    """
    return TransferEvidence(
        transfer_id=record.transfer_id,
        sender=record.sender,
        receiver=record.receiver,
        wh_out=record.wh_out,
        wh_in=record.wh_in,
        started_at=record.started_at,
        ended_at=record.ended_at or max(now or datetime.now(UTC), record.started_at),
        discharge_commanded=True,
    )


def report_for_record(record: TransferRecord) -> EnergyReport:
    """The energy report the grid writes for one of its own ended transfers.

    Built only from the stored record, so it is the same report after a
    restart; the transfer id (a UUID) is its report id.
    """
    ended = record.ended_at or record.started_at
    duration = max((ended - record.started_at).total_seconds(), 0.001)
    kwh = (Decimal(repr(record.wh_out)) / 1000).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)
    return EnergyReport(
        device_id=GRID_REPORTER_ID,
        sender_uid=record.sender,
        receiver_uid=record.receiver,
        kwh_transferred=kwh,
        duration_seconds=round(duration, 3),
        avg_voltage=round(record.avg_voltage_v or 0.0, 3),
        avg_current=round(abs(record.avg_current_a or 0.0), 3),
        report_id=str(uuid.UUID(hex=record.transfer_id)),
    )
