"""The ledger service: energy reports become tokens, credits and sell orders, exactly once.

:class:`LedgerService` is what the integration and the edge gateway talk to.
It owns the ledger database, writes every consequence of one event (an energy
report, a purchase, a reward sync) in **one** SQLite transaction through the
:class:`~.local.LocalLedger` and, when configured, a chain backend's outbox,
and keeps an in-memory mirror of the records so that Home Assistant entities
can read totals synchronously without touching the disk.

Processing an energy report (each check raises
:class:`~peergrid_core.errors.PeerGridValidationError` naming the field, and a
refused report writes nothing):

1. ``kwh_transferred`` within 0.001..10 kWh;
2. transfer evidence present and a discharge command was active for the
   sender (field ``sender_uid``);
3. sender and receiver equal the measured transfer's (``sender_uid``,
   ``receiver_uid``);
4. ``kwh_transferred`` within max(5 %, 1 Wh) of the energy measured leaving
   the sender (``kwh_transferred``);
5. in the write transaction: a report with the same id is answered from the
   record (a duplicate) or refused as a conflict; the measured transfer must
   not have been minted by another report (``report_id``);
6. quality factor from ``avg_voltage``; tokens and carbon credit; price;
7. the report row, the ENERGY and CARBON mints to the sender, the sell order
   and the chain outbox jobs, committed together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
import hashlib
import logging
import math
import sqlite3
from types import MappingProxyType
from typing import Final
import uuid

from .. import depin
from ..errors import PeerGridError, PeerGridValidationError
from ..events import EnergyMintData
from ..payloads import EnergyReport
from ..stability import quality_factor_from_voltage
from ..tokens import KWH_FIELD, MintAmounts, compute_mint, to_decimal, validate_kwh
from .base import (
    IdempotencyConflictError,
    LedgerBackend,
    LedgerConfigError,
    LedgerError,
    LedgerStorageError,
    Receipt,
    Token,
    VerifyResult,
    from_base_units,
    to_base_units,
)
from .db import LedgerDatabase, wait_until_done
from .local import EntryKind, LedgerEntry, LocalLedger, canonical_json, read_entries
from .market import MarketState, OrderStatus, PricingConfig, SellOrder, order_total, price_per_kwh

_LOGGER = logging.getLogger(__name__)

KWH_TOLERANCE_SHARE: Final = Decimal("0.05")
"""A report may differ from the measured energy by this share of it ..."""

KWH_TOLERANCE_MIN: Final = Decimal("0.001")
"""... or by one watt-hour, whichever is larger (kWh)."""

ORDER_NAMESPACE: Final = uuid.UUID("3f0c2a4e-5d1b-4c8e-9a77-6b2f1d0e9c41")
"""Namespace of the order ids derived from report ids (UUID5)."""

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS report (
        report_id TEXT PRIMARY KEY,
        transfer_id TEXT NOT NULL UNIQUE,
        device_id TEXT NOT NULL,
        sender_uid TEXT NOT NULL,
        receiver_uid TEXT NOT NULL,
        content_sha256 TEXT NOT NULL,
        report_json TEXT NOT NULL,
        kwh TEXT NOT NULL,
        quality_factor TEXT NOT NULL,
        tokens TEXT NOT NULL,
        carbon TEXT NOT NULL,
        order_id TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS sell_order (
        order_id TEXT PRIMARY KEY,
        report_id TEXT NOT NULL UNIQUE REFERENCES report (report_id),
        seller TEXT NOT NULL,
        kwh TEXT NOT NULL,
        tokens TEXT NOT NULL,
        price_per_kwh TEXT NOT NULL,
        total_price TEXT NOT NULL,
        currency TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'filled', 'cancelled')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        buyer TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS sell_order_status ON sell_order (status)",
    """
    CREATE TABLE IF NOT EXISTS reward (
        key TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        account TEXT NOT NULL,
        category TEXT NOT NULL,
        level INTEGER NOT NULL,
        amount TEXT NOT NULL,
        paid_at TEXT NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS reward_device ON reward (device_id, category)",
)

_REPORT_COLUMNS: Final = (
    "report_id, transfer_id, device_id, sender_uid, receiver_uid, content_sha256,"
    " report_json, kwh, quality_factor, tokens, carbon, order_id, created_at"
)
_ORDER_COLUMNS: Final = (
    "order_id, report_id, seller, kwh, tokens, price_per_kwh, total_price, currency,"
    " status, created_at, updated_at, buyer"
)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferEvidence:
    """What the grid itself measured for the transfer an energy report claims.

    The caller (the integration's transfer log, the gateway's session
    records) finds it; :meth:`LedgerService.process_report` checks the report
    against it.
    """

    transfer_id: str
    """The grid's id of the metered transfer session; minted at most once."""
    sender: str
    """Node uid the grid commanded to discharge."""
    receiver: str
    """Node uid the grid commanded to receive."""
    wh_out: float
    """Energy measured leaving the sender, Wh."""
    wh_in: float
    """Energy measured arriving at the receiver, Wh."""
    started_at: datetime
    ended_at: datetime
    discharge_commanded: bool
    """True when the sender was under an active discharge command."""

    def __post_init__(self) -> None:
        """Refuse evidence that cannot be true, naming the field."""
        for name in ("transfer_id", "sender", "receiver"):
            _check_text(name, getattr(self, name))
        for name in ("wh_out", "wh_in"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PeerGridValidationError(name, f"{value!r} is not a number")
            if not math.isfinite(value) or value < 0:
                raise PeerGridValidationError(name, f"{value} Wh must be finite and not negative")
        for name in ("started_at", "ended_at"):
            moment = getattr(self, name)
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise PeerGridValidationError(name, "needs a timezone (use UTC)")
        if self.ended_at < self.started_at:
            raise PeerGridValidationError("ended_at", "the transfer ended before it started")
        if not isinstance(self.discharge_commanded, bool):
            raise PeerGridValidationError("discharge_commanded", "must be true or false")


# ---------------------------------------------------------------- records


class RewardCategory(StrEnum):
    """The DePIN reward items of :class:`peergrid_core.depin.DepinRewards`."""

    REGISTRATION = "registration"
    UPTIME = "uptime"
    ROUTING = "routing"
    UPTIME_BONUS = "uptime_bonus"


class CreditKind(StrEnum):
    """Direction of a carbon credit record."""

    CREDITED = "credited"
    """Credited for energy shared (with an accepted report)."""
    RETIRED = "retired"
    """Claimed for good by its holder; cannot be claimed again."""


class LedgerChangeKind(StrEnum):
    """What a :class:`LedgerChange` notification is about."""

    OPENED = "opened"
    REPORT = "report"
    ORDER = "order"
    RETIREMENT = "retirement"
    REWARDS = "rewards"
    RECONCILED = "reconciled"


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerChange:
    """Sent to listeners after the mirror reflects a committed change."""

    kind: LedgerChangeKind
    report_id: str | None = None
    order_id: str | None = None
    receipts: tuple[Receipt, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class MintRecord:
    """An accepted energy report and what it minted."""

    report_id: str
    transfer_id: str
    device_id: str
    sender_uid: str
    receiver_uid: str
    kwh: Decimal
    quality_factor: Decimal
    tokens: Decimal
    """Energy tokens minted to the sender."""
    carbon_kg: Decimal
    """Carbon credit to the sender, kg CO2."""
    order_id: str
    created_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class CarbonCredit:
    """One carbon credit or retirement entry of the local ledger."""

    key: str
    account: str
    kind: CreditKind
    kg: Decimal
    report_id: str | None
    """The report that earned a credit; None for a retirement."""
    ref: str
    """Hash of the ledger entry."""
    created_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class RewardPayment:
    """One DePIN reward payment (LT) of the local ledger."""

    key: str
    device_id: str
    account: str
    category: RewardCategory
    level: int
    """Cumulative level the payment brought the category to (days, windows, base units)."""
    amount: Decimal
    ref: str
    paid_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerTotals:
    """Grid-wide totals of the local ledger, exact."""

    reports: int
    """Energy reports accepted."""
    kwh_minted: Decimal
    """Energy the accepted reports claimed, kWh."""
    tokens_minted: Decimal
    """Energy tokens minted."""
    carbon_kg_credited: Decimal
    carbon_kg_retired: Decimal
    open_orders: int
    filled_orders: int
    rewards_paid: Mapping[str, Decimal]
    """Reward tokens (LT) paid, per account."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportOutcome:
    """What processing one energy report produced (or had produced, for a duplicate)."""

    report_id: str
    duplicate: bool
    """True when the report had been processed before and nothing new was written."""
    amounts: MintAmounts
    order: SellOrder
    """The sell order as it stands now (a duplicate's order may be filled since)."""
    energy: Receipt
    carbon: Receipt
    chain: tuple[Receipt, ...]
    """The chain receipts (PENDING until the chain worker confirms); empty without a chain."""
    event: EnergyMintData
    """Payload of the ``energy_mint`` event to broadcast (only when not a duplicate)."""


# ---------------------------------------------------------------- service


@dataclass(frozen=True, kw_only=True, slots=True)
class _ReportPlan:
    """Everything about a report known before the transaction (computed on the loop)."""

    report: EnergyReport
    report_id: str
    content_sha256: str
    kwh: Decimal
    evidence: TransferEvidence
    market: MarketState
    chain_account: str | None
    now: datetime


class LedgerService:
    """Records energy mints, carbon credits, sell orders and rewards; see the module doc.

    Reads of the mirror (:meth:`mints`, :meth:`orders`, :meth:`credits`,
    :meth:`rewards`, :meth:`totals`, :meth:`balance`, :meth:`order`) are
    synchronous and safe on the event loop; everything that touches the
    database is async and runs in the executor.
    """

    def __init__(
        self,
        db: LedgerDatabase,
        *,
        local: LocalLedger,
        chain: LedgerBackend | None = None,
        pricing: PricingConfig,
        chain_account: Callable[[str], str] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """Wire the service; :meth:`open` opens the database and loads the mirror.

        ``chain_account`` maps a node uid or gateway account to the chain's
        address; it is required with a ``chain`` and may raise
        :class:`~.base.LedgerConfigError` for a node without one.
        """
        if local.db is not db:
            raise LedgerConfigError("the local ledger must use the service's database")
        if chain is not None and chain_account is None:
            raise LedgerConfigError("a chain backend needs chain_account to map accounts")
        self._db = db
        self._local = local
        self._chain = chain
        self._pricing = pricing
        self._chain_account = chain_account
        self._clock = clock
        self._listeners: list[Callable[[LedgerChange], None]] = []
        self._open = False
        self._mirror = _Mirror()

    # ------------------------------------------------------------ life cycle

    @property
    def pricing(self) -> PricingConfig:
        """The pricing in force for new sell orders."""
        return self._pricing

    @pricing.setter
    def pricing(self, config: PricingConfig) -> None:
        self._pricing = config

    async def open(self) -> None:
        """Open the database, create every schema, load the mirror, then reconcile.

        A chain that cannot be reached does not stop the service: its
        reconcile is retried by :meth:`reconcile` (the chain worker does it
        anyway). Storage errors propagate as
        :class:`~.base.LedgerStorageError`.
        """
        await self._db.open()
        try:
            await self._db.write(self._create_schemas)
            snapshot = await self._db.read(self._snapshot_in)
        except BaseException:
            # A failed open leaves nothing open behind it (Home Assistant does
            # not unload an entry whose setup failed).
            await self._db.close()
            raise
        self._mirror = _Mirror()
        self._mirror.load(snapshot)
        self._open = True
        self._notify(LedgerChange(kind=LedgerChangeKind.OPENED))
        try:
            await self.reconcile()
        except LedgerStorageError:
            await self.close()
            raise
        except (PeerGridError, OSError, TimeoutError) as err:
            _LOGGER.warning("Chain reconcile at open failed; it will be retried: %s", err)

    async def close(self) -> None:
        """Close the database; the mirror stays readable but no longer changes."""
        self._open = False
        await self._db.close()

    def add_listener(self, cb: Callable[[LedgerChange], None]) -> Callable[[], None]:
        """Call ``cb`` (on the event loop) after every committed change; returns the remover."""
        self._listeners.append(cb)

        def remove() -> None:
            if cb in self._listeners:
                self._listeners.remove(cb)

        return remove

    # ------------------------------------------------------------ energy reports

    async def process_report(
        self,
        report: EnergyReport,
        *,
        evidence: TransferEvidence | None,
        market: MarketState,
    ) -> ReportOutcome:
        """Validate ``report`` against ``evidence`` and mint for it, exactly once.

        Raises :class:`PeerGridValidationError` (field named) for a refused
        report, :class:`~.base.IdempotencyConflictError` for a report id
        reused with other content or another transfer,
        :class:`~.base.LedgerConfigError` when the chain has no account for
        the sender, and :class:`~.base.LedgerStorageError` when the file
        cannot be written. In every one of these cases nothing was written.
        """
        self._require_open()
        kwh = validate_kwh(report.kwh_transferred)
        if evidence is None or not evidence.discharge_commanded:
            raise PeerGridValidationError(
                "sender_uid",
                f"no discharge command was active for {report.sender_uid}:"
                " the grid did not order this transfer",
            )
        if report.sender_uid != evidence.sender:
            raise PeerGridValidationError(
                "sender_uid",
                f"{report.sender_uid} is not the measured sender {evidence.sender}",
            )
        if report.receiver_uid != evidence.receiver:
            raise PeerGridValidationError(
                "receiver_uid",
                f"{report.receiver_uid} is not the measured receiver {evidence.receiver}",
            )
        measured = to_decimal("wh_out", evidence.wh_out).scaleb(-3)
        tolerance = max(measured * KWH_TOLERANCE_SHARE, KWH_TOLERANCE_MIN)
        if abs(kwh - measured) > tolerance:
            raise PeerGridValidationError(
                KWH_FIELD,
                f"{_plain(kwh)} kWh differs from the {_plain(measured)} kWh measured leaving"
                f" {evidence.sender} by more than {_plain(tolerance)} kWh",
            )
        content_sha256 = _sha256(canonical_json(report.model_dump(mode="json")))
        plan = _ReportPlan(
            report=report,
            report_id=report.report_id or content_sha256,
            content_sha256=content_sha256,
            kwh=kwh,
            evidence=evidence,
            market=market,
            chain_account=self._account_on_chain(report.sender_uid),
            now=self._clock(),
        )
        pricing = self._pricing

        def apply(result: tuple[ReportOutcome, list[LedgerEntry]]) -> None:
            outcome, appended = result
            if outcome.duplicate:
                return
            self._mirror.add_report(_mint_record(outcome, plan))
            self._mirror.put_order(outcome.order)
            self._mirror.add_entries(appended)
            self._notify(
                LedgerChange(
                    kind=LedgerChangeKind.REPORT,
                    report_id=outcome.report_id,
                    order_id=outcome.order.order_id,
                    receipts=(outcome.energy, outcome.carbon, *outcome.chain),
                )
            )

        outcome, _ = await self._commit(
            lambda conn: _with_appended(conn, lambda: self._write_report_in(conn, plan, pricing)),
            apply,
        )
        if outcome.duplicate:
            chain = await self._chain_receipts(
                f"report:{outcome.report_id}:energy", f"report:{outcome.report_id}:carbon"
            )
            return _replace_chain(outcome, chain)
        return outcome

    async def report_outcome(self, report_id: str) -> ReportOutcome | None:
        """The stored outcome of a processed report (``duplicate=True``), or None.

        Lets a caller answer a gateway's retry when it no longer has the
        transfer evidence that :meth:`process_report` needs.
        """
        self._require_open()
        stored = await self._db.read(lambda conn: self._stored_outcome_in(conn, report_id))
        if stored is None:
            return None
        chain = await self._chain_receipts(
            f"report:{report_id}:energy", f"report:{report_id}:carbon"
        )
        return _replace_chain(stored, chain)

    def _write_report_in(
        self, conn: sqlite3.Connection, plan: _ReportPlan, pricing: PricingConfig
    ) -> ReportOutcome:
        """Steps 5 to 7 of the module doc, inside the write transaction."""
        report, report_id = plan.report, plan.report_id
        row = conn.execute(
            "SELECT content_sha256, transfer_id FROM report WHERE report_id = ?", (report_id,)
        ).fetchone()
        if row is not None:
            if row[0] != plan.content_sha256:
                raise IdempotencyConflictError(
                    f"report {report_id} was already processed with different content"
                )
            if row[1] != plan.evidence.transfer_id:
                raise IdempotencyConflictError(
                    f"report {report_id} was minted for transfer {row[1]},"
                    f" not {plan.evidence.transfer_id}"
                )
            stored = self._stored_outcome_in(conn, report_id)
            if stored is None:  # pragma: no cover - the row was just read
                raise LedgerError(f"report {report_id} vanished during its transaction")
            return stored
        other = conn.execute(
            "SELECT report_id FROM report WHERE transfer_id = ?", (plan.evidence.transfer_id,)
        ).fetchone()
        if other is not None:
            raise PeerGridValidationError(
                "report_id",
                f"transfer {plan.evidence.transfer_id} was already minted by report {other[0]}",
            )

        quality = quality_factor_from_voltage(report.avg_voltage)
        amounts = compute_mint(plan.kwh, quality)
        price = price_per_kwh(plan.market, quality, pricing)
        order = SellOrder(
            order_id=str(uuid.uuid5(ORDER_NAMESPACE, report_id)),
            report_id=report_id,
            seller=report.sender_uid,
            kwh=amounts.kwh_transferred,
            tokens=amounts.tokens_minted,
            price_per_kwh=price,
            total_price=order_total(amounts.kwh_transferred, price),
            currency=pricing.currency,
            status=OrderStatus.OPEN,
            created_at=plan.now,
            updated_at=plan.now,
        )
        event = EnergyMintData.from_report(
            report, quality_factor=quality, report_id=report_id, sell_price=order.price_per_token
        )
        energy_units = to_base_units(amounts.tokens_minted)
        carbon_units = to_base_units(amounts.carbon_kg)

        conn.execute(
            f"INSERT INTO report ({_REPORT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant column list
            (
                report_id,
                plan.evidence.transfer_id,
                report.device_id,
                report.sender_uid,
                report.receiver_uid,
                plan.content_sha256,
                report.model_dump_json(),
                str(amounts.kwh_transferred),
                str(quality),
                str(energy_units),
                str(carbon_units),
                order.order_id,
                _timestamp(plan.now),
            ),
        )
        detail = {
            "report_id": report_id,
            "transfer_id": plan.evidence.transfer_id,
            "device_id": report.device_id,
            "receiver_uid": report.receiver_uid,
            "kwh": str(amounts.kwh_transferred),
            "quality_factor": str(quality),
        }
        energy_key, carbon_key = f"report:{report_id}:energy", f"report:{report_id}:carbon"
        energy = self._local.mint_in(
            conn, Token.ENERGY, report.sender_uid, energy_units, key=energy_key, detail=detail
        )
        carbon = self._local.mint_in(
            conn, Token.CARBON, report.sender_uid, carbon_units, key=carbon_key, detail=detail
        )
        _insert_order(conn, order)
        chain: tuple[Receipt, ...] = ()
        if self._chain is not None and plan.chain_account is not None:
            chain = (
                self._chain.mint_in(
                    conn,
                    Token.ENERGY,
                    plan.chain_account,
                    energy_units,
                    key=energy_key,
                    detail=detail,
                ),
                self._chain.mint_in(
                    conn,
                    Token.CARBON,
                    plan.chain_account,
                    carbon_units,
                    key=carbon_key,
                    detail=detail,
                ),
            )
        return ReportOutcome(
            report_id=report_id,
            duplicate=False,
            amounts=amounts,
            order=order,
            energy=energy,
            carbon=carbon,
            chain=chain,
            event=event,
        )

    def _stored_outcome_in(self, conn: sqlite3.Connection, report_id: str) -> ReportOutcome | None:
        row = conn.execute(
            "SELECT report_json, kwh, quality_factor, order_id FROM report WHERE report_id = ?",
            (report_id,),
        ).fetchone()
        if row is None:
            return None
        report = EnergyReport.model_validate_json(str(row[0]))
        quality = Decimal(str(row[2]))
        order = _order_in(conn, str(row[3]))
        energy = self._local.receipt_in(conn, f"report:{report_id}:energy")
        carbon = self._local.receipt_in(conn, f"report:{report_id}:carbon")
        if order is None or energy is None or carbon is None:
            raise LedgerError(f"the records of report {report_id} are incomplete; run verify()")
        return ReportOutcome(
            report_id=report_id,
            duplicate=True,
            amounts=compute_mint(Decimal(str(row[1])), quality),
            order=order,
            energy=energy,
            carbon=carbon,
            chain=(),
            event=EnergyMintData.from_report(
                report,
                quality_factor=quality,
                report_id=report_id,
                sell_price=order.price_per_token,
            ),
        )

    # ------------------------------------------------------------ orders

    async def buy_order(self, order_id: str, *, buyer: str) -> SellOrder:
        """Fill the open order ``order_id`` for ``buyer``, atomically.

        Settlement (payment, token transfer) happens outside the ledger; when
        it fails, :meth:`reopen_order` puts the order back on offer.
        """
        _check_text("buyer", buyer)
        return await self._change_order(order_id, OrderStatus.OPEN, OrderStatus.FILLED, buyer)

    async def reopen_order(self, order_id: str) -> SellOrder:
        """Put a filled order back on offer (its settlement failed)."""
        return await self._change_order(order_id, OrderStatus.FILLED, OrderStatus.OPEN, None)

    async def cancel_order(self, order_id: str) -> SellOrder:
        """Withdraw an open order for good."""
        return await self._change_order(order_id, OrderStatus.OPEN, OrderStatus.CANCELLED, None)

    async def _change_order(
        self, order_id: str, current: OrderStatus, target: OrderStatus, buyer: str | None
    ) -> SellOrder:
        self._require_open()
        now = self._clock()

        def change(conn: sqlite3.Connection) -> SellOrder:
            order = _order_in(conn, order_id)
            if order is None:
                raise PeerGridValidationError("order_id", f"there is no sell order {order_id}")
            if order.status is not current:
                raise PeerGridValidationError(
                    "order_id", f"order {order_id} is {order.status}, not {current}"
                )
            if buyer is not None and buyer == order.seller:
                raise PeerGridValidationError("buyer", f"{buyer} cannot buy its own order")
            changed = order.with_status(target, at=max(now, order.updated_at), buyer=buyer)
            conn.execute(
                "UPDATE sell_order SET status = ?, buyer = ?, updated_at = ?"
                " WHERE order_id = ? AND status = ?",
                (
                    changed.status.value,
                    changed.buyer,
                    _timestamp(changed.updated_at),
                    order_id,
                    current.value,
                ),
            )
            return changed

        def apply(order: SellOrder) -> None:
            self._mirror.put_order(order)
            self._notify(
                LedgerChange(
                    kind=LedgerChangeKind.ORDER, report_id=order.report_id, order_id=order_id
                )
            )

        return await self._commit(change, apply)

    # ------------------------------------------------------------ carbon

    async def retire_carbon(self, account: str, kg: Decimal, *, key: str) -> Receipt:
        """Retire ``kg`` of ``account``'s carbon credits for good, once per ``key``.

        ``kg`` must be positive with at most seven decimals and not exceed
        the balance (field ``kg``). The same ``key`` and amount returns the
        first receipt; another amount under the same key raises
        :class:`~.base.IdempotencyConflictError`. Retirement is recorded on
        the local ledger only.
        """
        self._require_open()
        _check_text("account", account)
        _check_text("key", key)
        amount = to_decimal("kg", kg)
        try:
            units = to_base_units(amount)
        except ValueError as err:
            raise PeerGridValidationError("kg", str(err)) from err
        if units == 0:
            raise PeerGridValidationError("kg", "must be positive")

        def retire(conn: sqlite3.Connection) -> Receipt:
            try:
                return self._local.retire_in(
                    conn, Token.CARBON, account, units, key=f"retire:{key}", detail={}
                )
            except PeerGridValidationError as err:
                raise PeerGridValidationError(
                    "kg",
                    f"{_plain(from_base_units(units))} kg exceeds the carbon credit of {account}",
                ) from err

        def apply(result: tuple[Receipt, list[LedgerEntry]]) -> None:
            receipt, appended = result
            if appended:
                self._mirror.add_entries(appended)
                self._notify(LedgerChange(kind=LedgerChangeKind.RETIREMENT, receipts=(receipt,)))

        receipt, _ = await self._commit(
            lambda conn: _with_appended(conn, lambda: retire(conn)), apply
        )
        return receipt

    # ------------------------------------------------------------ rewards

    async def sync_rewards(
        self, node: depin.DepinNode, *, account: str, now: datetime
    ) -> list[Receipt]:
        """Pay ``node``'s DePIN rewards earned up to ``now`` that were not paid yet.

        Per category, the difference between :func:`peergrid_core.depin.depin_rewards`
        and what the ledger has paid the node is minted as REWARD to
        ``account`` (and queued on the chain), under the key
        ``reward:{device_id}:{category}:{level}`` where ``level`` is the
        cumulative level reached: 1 for registration, full uptime days,
        bonus windows, and the routing reward in base units. A retry or a
        restart finds the payment and pays nothing twice. Returns the new
        receipts: for each payment the local one, then the chain's.
        """
        self._require_open()
        _check_text("account", account)
        rewards = depin.depin_rewards(node, now=now)
        routing_units = to_base_units(rewards.routing)
        targets = (
            (RewardCategory.REGISTRATION, to_base_units(rewards.registration), 1),
            (RewardCategory.UPTIME, to_base_units(rewards.uptime), rewards.full_uptime_days),
            (RewardCategory.ROUTING, routing_units, routing_units),
            (
                RewardCategory.UPTIME_BONUS,
                to_base_units(rewards.uptime_bonus),
                rewards.bonus_windows,
            ),
        )
        chain_account = self._account_on_chain(account)
        paid_at = self._clock()

        def pay(conn: sqlite3.Connection) -> list[Receipt]:
            paid: dict[str, int] = {}
            for category, amount in conn.execute(
                "SELECT category, amount FROM reward WHERE device_id = ?", (node.node_id,)
            ):
                paid[str(category)] = paid.get(str(category), 0) + int(amount)
            receipts: list[Receipt] = []
            for category, target, level in targets:
                due = target - paid.get(category.value, 0)
                if due <= 0:
                    continue
                key = f"reward:{node.node_id}:{category.value}:{level}"
                detail = {
                    "device_id": node.node_id,
                    "category": category.value,
                    "level": str(level),
                    "cumulative": str(target),
                }
                receipts.append(
                    self._local.mint_in(conn, Token.REWARD, account, due, key=key, detail=detail)
                )
                conn.execute(
                    "INSERT INTO reward (key, device_id, account, category, level, amount, paid_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        node.node_id,
                        account,
                        category.value,
                        level,
                        str(due),
                        _timestamp(paid_at),
                    ),
                )
                if self._chain is not None and chain_account is not None:
                    receipts.append(
                        self._chain.mint_in(
                            conn, Token.REWARD, chain_account, due, key=key, detail=detail
                        )
                    )
            return receipts

        def apply(result: tuple[list[Receipt], list[LedgerEntry]]) -> None:
            receipts, appended = result
            if receipts:
                self._mirror.add_entries(appended)
                self._notify(LedgerChange(kind=LedgerChangeKind.REWARDS, receipts=tuple(receipts)))

        receipts, _ = await self._commit(
            lambda conn: _with_appended(conn, lambda: pay(conn)), apply
        )
        return receipts

    # ------------------------------------------------------------ checks

    async def verify(self, *, include_chain: bool = True) -> VerifyResult:
        """Verify the hash chain, the service's records against it, and the chain backend.

        Cross-checks: every report has its ENERGY and CARBON entries with the
        recorded amounts and its sell order; every reward row has its entry.
        With ``include_chain`` and a chain backend, the chain's own
        verification is added (its problems prefixed with its name); a chain
        that cannot be reached raises rather than reporting a false problem.
        """
        self._require_open()
        local = await self._local.verify()
        cross = await self._db.read(_cross_check_in)
        problems = [*local.problems, *cross]
        if include_chain and self._chain is not None:
            remote = await self._chain.verify()
            problems.extend(f"{self._chain.name}: {problem}" for problem in remote.problems)
        return VerifyResult(ok=not problems, entries=local.entries, problems=tuple(problems))

    async def reconcile(self) -> list[Receipt]:
        """Resolve chain mints left PENDING (after a crash or an outage); local: nothing."""
        self._require_open()
        backend: LedgerBackend = self._chain if self._chain is not None else self._local
        changed = await backend.reconcile()
        if changed:
            self._notify(LedgerChange(kind=LedgerChangeKind.RECONCILED, receipts=tuple(changed)))
        return changed

    # ------------------------------------------------------------ mirror (sync)

    def mints(self, *, sender: str | None = None) -> tuple[MintRecord, ...]:
        """Accepted reports, oldest first; only ``sender``'s when given."""
        return tuple(
            record
            for record in self._mirror.reports.values()
            if sender is None or record.sender_uid == sender
        )

    def orders(self, status: OrderStatus | None = None) -> tuple[SellOrder, ...]:
        """Sell orders, oldest first; only those in ``status`` when given."""
        return tuple(
            order
            for order in self._mirror.orders.values()
            if status is None or order.status is status
        )

    def order(self, order_id: str) -> SellOrder | None:
        """One sell order, or None."""
        return self._mirror.orders.get(order_id)

    def credits(self, account: str | None = None) -> tuple[CarbonCredit, ...]:
        """Carbon credits and retirements, in ledger order; only ``account``'s when given."""
        return tuple(
            credit
            for credit in self._mirror.credits
            if account is None or credit.account == account
        )

    def rewards(self, device_id: str | None = None) -> tuple[RewardPayment, ...]:
        """Reward payments, in ledger order; only ``device_id``'s when given."""
        return tuple(
            payment
            for payment in self._mirror.rewards
            if device_id is None or payment.device_id == device_id
        )

    def balance(self, token: Token, account: str) -> Decimal:
        """``account``'s local balance of ``token`` (tokens, kg or LT)."""
        return from_base_units(self._mirror.balances.get((Token(token), account), 0))

    def totals(self) -> LedgerTotals:
        """Grid-wide totals (see :class:`LedgerTotals`)."""
        return self._mirror.totals()

    # ------------------------------------------------------------ helpers

    def _create_schemas(self, conn: sqlite3.Connection) -> None:
        self._local.create_schema(conn)
        for statement in _SCHEMA:
            conn.execute(statement)
        if self._chain is not None:
            self._chain.create_schema(conn)

    def _snapshot_in(self, conn: sqlite3.Connection) -> _Snapshot:
        reports = [
            _mint_record_from_row(row)
            for row in conn.execute(f"SELECT {_REPORT_COLUMNS} FROM report ORDER BY rowid")  # noqa: S608 - constant column list
        ]
        orders = [
            _order_from_row(row)
            for row in conn.execute(f"SELECT {_ORDER_COLUMNS} FROM sell_order ORDER BY rowid")  # noqa: S608 - constant column list
        ]
        return _Snapshot(
            reports=reports,
            orders=orders,
            entries=list(self._local.entries_in(conn)),
        )

    async def _commit[T](
        self, fn: Callable[[sqlite3.Connection], T], apply: Callable[[T], None]
    ) -> T:
        """Run ``fn`` in a write transaction, then ``apply`` its result to the mirror.

        The two belong together: once the transaction committed, the mirror
        must reflect it even if the caller is cancelled meanwhile (Home
        Assistant stopping, a request timing out). A cancelled caller
        therefore waits for both, then sees :class:`asyncio.CancelledError`.
        """

        async def commit_and_apply() -> T:
            result = await self._db.write(fn)
            apply(result)
            return result

        task = asyncio.ensure_future(commit_and_apply())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await wait_until_done(task)
            raise

    def _account_on_chain(self, account: str) -> str | None:
        if self._chain is None or self._chain_account is None:
            return None
        return self._chain_account(account)

    async def _chain_receipts(self, *keys: str) -> tuple[Receipt, ...]:
        if self._chain is None:
            return ()
        found = [await self._chain.receipt(key) for key in keys]
        return tuple(receipt for receipt in found if receipt is not None)

    def _require_open(self) -> None:
        if not self._open:
            raise LedgerStorageError("the ledger service is not open")

    def _notify(self, change: LedgerChange) -> None:
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                # One broken listener must not keep the others (or the caller) from the news.
                _LOGGER.exception("Ledger listener %r failed", listener)


# ---------------------------------------------------------------- mirror


@dataclass(frozen=True, kw_only=True, slots=True)
class _Snapshot:
    reports: list[MintRecord]
    orders: list[SellOrder]
    entries: list[LedgerEntry]


class _Mirror:
    """Committed records in memory, updated only after a transaction committed."""

    def __init__(self) -> None:
        self.reports: dict[str, MintRecord] = {}
        self.orders: dict[str, SellOrder] = {}
        self.credits: list[CarbonCredit] = []
        self.rewards: list[RewardPayment] = []
        self.balances: dict[tuple[Token, str], int] = {}
        self.last_seq = 0
        self._totals: LedgerTotals | None = None

    def load(self, snapshot: _Snapshot) -> None:
        for record in snapshot.reports:
            self.add_report(record)
        for order in snapshot.orders:
            self.put_order(order)
        self.add_entries(snapshot.entries)

    def add_report(self, record: MintRecord) -> None:
        self.reports[record.report_id] = record
        self._totals = None

    def put_order(self, order: SellOrder) -> None:
        self.orders[order.order_id] = order
        self._totals = None

    def add_entries(self, entries: list[LedgerEntry]) -> None:
        for entry in entries:
            if entry.seq <= self.last_seq:
                continue  # already mirrored
            self.last_seq = entry.seq
            slot = (entry.token, entry.account)
            self.balances[slot] = self.balances.get(slot, 0) + entry.signed_amount
            if entry.token is Token.CARBON:
                self.credits.append(
                    CarbonCredit(
                        key=entry.key,
                        account=entry.account,
                        kind=CreditKind.CREDITED
                        if entry.kind is EntryKind.MINT
                        else CreditKind.RETIRED,
                        kg=from_base_units(entry.amount),
                        report_id=entry.detail.get("report_id"),
                        ref=entry.hash,
                        created_at=entry.created_at,
                    )
                )
            elif entry.token is Token.REWARD and "category" in entry.detail:
                self.rewards.append(
                    RewardPayment(
                        key=entry.key,
                        device_id=entry.detail.get("device_id", ""),
                        account=entry.account,
                        category=RewardCategory(entry.detail["category"]),
                        level=int(entry.detail.get("level", "0")),
                        amount=from_base_units(entry.amount),
                        ref=entry.hash,
                        paid_at=entry.created_at,
                    )
                )
        self._totals = None

    def totals(self) -> LedgerTotals:
        if self._totals is None:
            self._totals = self._compute_totals()
        return self._totals

    def _compute_totals(self) -> LedgerTotals:
        tokens = sum(
            (record.tokens for record in self.reports.values()), Decimal(0)
        )  # exact: Decimal sums of 7-decimal amounts
        credited = sum((c.kg for c in self.credits if c.kind is CreditKind.CREDITED), Decimal(0))
        retired = sum((c.kg for c in self.credits if c.kind is CreditKind.RETIRED), Decimal(0))
        rewards: dict[str, Decimal] = {}
        for payment in self.rewards:
            rewards[payment.account] = rewards.get(payment.account, Decimal(0)) + payment.amount
        statuses = [order.status for order in self.orders.values()]
        return LedgerTotals(
            reports=len(self.reports),
            kwh_minted=sum((record.kwh for record in self.reports.values()), Decimal(0)),
            tokens_minted=tokens,
            carbon_kg_credited=credited,
            carbon_kg_retired=retired,
            open_orders=statuses.count(OrderStatus.OPEN),
            filled_orders=statuses.count(OrderStatus.FILLED),
            rewards_paid=MappingProxyType(rewards),
        )


# ---------------------------------------------------------------- row helpers


def _with_appended[T](
    conn: sqlite3.Connection, body: Callable[[], T]
) -> tuple[T, list[LedgerEntry]]:
    """Run ``body`` and return its result with the ledger entries it appended."""
    row = conn.execute("SELECT coalesce(max(seq), 0) FROM entry").fetchone()
    start = int(row[0])
    result = body()
    appended = list(read_entries(conn, after_seq=start))
    return result, appended


def _insert_order(conn: sqlite3.Connection, order: SellOrder) -> None:
    conn.execute(
        f"INSERT INTO sell_order ({_ORDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant column list
        (
            order.order_id,
            order.report_id,
            order.seller,
            str(order.kwh),
            str(to_base_units(order.tokens)),
            str(order.price_per_kwh),
            str(order.total_price),
            order.currency,
            order.status.value,
            _timestamp(order.created_at),
            _timestamp(order.updated_at),
            order.buyer,
        ),
    )


def _order_in(conn: sqlite3.Connection, order_id: str) -> SellOrder | None:
    row = conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM sell_order WHERE order_id = ?",  # noqa: S608 - constant column list
        (order_id,),
    ).fetchone()
    return None if row is None else _order_from_row(row)


def _order_from_row(row: tuple[object, ...]) -> SellOrder:
    (
        order_id,
        report_id,
        seller,
        kwh,
        tokens,
        price,
        total,
        currency,
        status,
        created_at,
        updated_at,
        buyer,
    ) = row
    return SellOrder(
        order_id=str(order_id),
        report_id=str(report_id),
        seller=str(seller),
        kwh=Decimal(str(kwh)),
        tokens=from_base_units(int(str(tokens))),
        price_per_kwh=Decimal(str(price)),
        total_price=Decimal(str(total)),
        currency=str(currency),
        status=OrderStatus(str(status)),
        created_at=datetime.fromisoformat(str(created_at)),
        updated_at=datetime.fromisoformat(str(updated_at)),
        buyer=None if buyer is None else str(buyer),
    )


def _mint_record_from_row(row: tuple[object, ...]) -> MintRecord:
    (
        report_id,
        transfer_id,
        device_id,
        sender_uid,
        receiver_uid,
        _content,
        _json,
        kwh,
        quality,
        tokens,
        carbon,
        order_id,
        created_at,
    ) = row
    return MintRecord(
        report_id=str(report_id),
        transfer_id=str(transfer_id),
        device_id=str(device_id),
        sender_uid=str(sender_uid),
        receiver_uid=str(receiver_uid),
        kwh=Decimal(str(kwh)),
        quality_factor=Decimal(str(quality)),
        tokens=from_base_units(int(str(tokens))),
        carbon_kg=from_base_units(int(str(carbon))),
        order_id=str(order_id),
        created_at=datetime.fromisoformat(str(created_at)),
    )


def _mint_record(outcome: ReportOutcome, plan: _ReportPlan) -> MintRecord:
    return MintRecord(
        report_id=outcome.report_id,
        transfer_id=plan.evidence.transfer_id,
        device_id=plan.report.device_id,
        sender_uid=plan.report.sender_uid,
        receiver_uid=plan.report.receiver_uid,
        kwh=outcome.amounts.kwh_transferred,
        quality_factor=outcome.amounts.quality_factor,
        tokens=from_base_units(to_base_units(outcome.amounts.tokens_minted)),
        carbon_kg=from_base_units(to_base_units(outcome.amounts.carbon_kg)),
        order_id=outcome.order.order_id,
        created_at=plan.now.astimezone(UTC),
    )


def _replace_chain(outcome: ReportOutcome, chain: tuple[Receipt, ...]) -> ReportOutcome:
    return ReportOutcome(
        report_id=outcome.report_id,
        duplicate=outcome.duplicate,
        amounts=outcome.amounts,
        order=outcome.order,
        energy=outcome.energy,
        carbon=outcome.carbon,
        chain=chain,
        event=outcome.event,
    )


def _cross_check_in(conn: sqlite3.Connection) -> list[str]:
    """Problems between the service's tables and the hash chain."""
    problems: list[str] = []
    amounts = {
        str(key): str(amount) for key, amount in conn.execute("SELECT key, amount FROM entry")
    }
    for report_id, tokens, carbon, order_id in conn.execute(
        "SELECT report_id, tokens, carbon, order_id FROM report ORDER BY rowid"
    ):
        for token, expected in (("energy", tokens), ("carbon", carbon)):
            key = f"report:{report_id}:{token}"
            stored = amounts.get(key)
            if stored is None:
                problems.append(f"report {report_id}: ledger entry {key} is missing")
            elif stored != str(expected):
                problems.append(
                    f"report {report_id}: entry {key} holds {stored}, the report recorded {expected}"
                )
        if (
            conn.execute("SELECT 1 FROM sell_order WHERE order_id = ?", (order_id,)).fetchone()
            is None
        ):
            problems.append(f"report {report_id}: sell order {order_id} is missing")
    for key, amount in conn.execute("SELECT key, amount FROM reward ORDER BY rowid"):
        stored = amounts.get(str(key))
        if stored is None:
            problems.append(f"reward {key}: ledger entry is missing")
        elif stored != str(amount):
            problems.append(f"reward {key}: entry holds {stored}, the payment recorded {amount}")
    return problems


def _plain(number: Decimal) -> str:
    """``number`` without trailing zeros or exponent, for messages (0.500000 -> 0.5)."""
    return f"{number.normalize():f}"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _timestamp(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PeerGridValidationError("now", "the ledger clock must return aware datetimes")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _check_text(field: str, value: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip() or len(value) > 128:
        raise PeerGridValidationError(
            field, f"{value!r} must be 1-128 characters without surrounding blanks"
        )
