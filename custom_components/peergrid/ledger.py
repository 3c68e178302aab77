"""The ledger in Home Assistant: transfers become mints, sell orders, credits and rewards.

One :class:`PeerGridLedger` lives in ``hass.data`` beside the grid. The rules
(amounts, prices, exactly-once, the hash chain, the Soroban journal) are the
core's :class:`LedgerService`; this module

* finds the transfer an energy report claims (the evidence the core checks),
* settles the grid's own transfers between directly connected nodes through
  the same path as a gateway's report, with the transfer id as report id,
* announces each mint as the ``energy_mint`` event (bus and event stream),
* pays DePIN rewards to registered gateways, and
* attaches the Stellar Soroban backend when a ledger entry configures one.

Transfers between a gateway's nodes are settled by that gateway's report: it
measured them at the nodes, and one transfer must never mint twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from homeassistant.const import EVENT_HOMEASSISTANT_STARTED
from homeassistant.core import CALLBACK_TYPE, CoreState, Event, HomeAssistant, callback
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.util import dt as dt_util
from homeassistant.util.hass_dict import HassKey

from .const import DOMAIN, LOGGER
from .grid import HISTORY_LIMIT, PeerGridGrid
from .iot_hub import DATA_IOT_HUB
from .peergrid_core.errors import PeerGridError
from .peergrid_core.events import EnergyMintEvent
from .peergrid_core.ledger import (
    LedgerBackend,
    LedgerDatabase,
    LedgerService,
    LocalLedger,
    MarketState,
    PricingConfig,
    ReportOutcome,
    TransferEvidence,
    price_per_kwh,
)
from .peergrid_core.ledger.settlement import evidence_for_record, report_for_record
from .peergrid_core.payloads import EnergyReport
from .peergrid_core.tokens import KWH_MIN
from .peergrid_core.transfer import TransferRecord

DATA_LEDGER: HassKey[PeerGridLedger] = HassKey(f"{DOMAIN}_ledger")
LEDGER_FILE: Final = "peergrid_ledger.db"
"""The embedded ledger's SQLite file, in Home Assistant's configuration folder."""
EVENT_ENERGY_MINT: Final = "peergrid_energy_mint"
REWARD_INTERVAL: Final = timedelta(minutes=15)
"""How often DePIN rewards are brought up to date (each payment is idempotent)."""

type LedgerListener = Callable[[], None]


class PeerGridLedger:
    """Runs the ledger service for the grid and connects it to Home Assistant."""

    def __init__(self, hass: HomeAssistant, grid: PeerGridGrid) -> None:
        """Prepare the ledger beside ``grid``; :meth:`async_setup` opens it."""
        self.hass = hass
        self._grid = grid
        self._db = LedgerDatabase(hass.config.path(LEDGER_FILE))
        self._local = LocalLedger(self._db)
        self._chain: LedgerBackend | None = None
        self._chain_account: Callable[[str], str] | None = None
        self.service = self._new_service()
        self._listeners: list[LedgerListener] = []
        self._unsubscribe: list[CALLBACK_TYPE] = []
        self._settling: set[asyncio.Task[None]] = set()

    def _new_service(self) -> LedgerService:
        return LedgerService(
            self._db,
            local=self._local,
            chain=self._chain,
            pricing=PricingConfig(currency=self.hass.config.currency),
            chain_account=self._chain_account,
            clock=dt_util.utcnow,
        )

    # ------------------------------------------------------------ lifecycle

    async def async_setup(self) -> None:
        """Open the ledger, follow the grid's transfers and schedule the reward payments."""
        await self.service.open()
        self._unsubscribe += [
            self._grid.async_add_ended_listener(self._on_transfer_ended),
            async_track_time_interval(
                self.hass, self._async_pay_rewards, REWARD_INTERVAL, cancel_on_shutdown=True
            ),
        ]
        if self.hass.state is CoreState.running:
            self.hass.async_create_task(self.async_settle_unsettled())
        else:
            self._unsubscribe.append(
                self.hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STARTED, self._async_on_started)
            )

    async def async_shutdown(self) -> None:
        """Finish settling the transfers that just ended, then close the ledger file."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self.service.close()

    async def async_attach_chain(
        self, chain: LedgerBackend, chain_account: Callable[[str], str]
    ) -> None:
        """Anchor every new mint on ``chain`` as well (the Stellar ledger entry is set up)."""
        await self.service.close()
        self._chain, self._chain_account = chain, chain_account
        self.service = self._new_service()
        await self.service.open()
        self.async_notify()

    async def async_detach_chain(self) -> None:
        """Mint locally only again (the Stellar ledger entry was unloaded)."""
        await self.service.close()
        self._chain = self._chain_account = None
        self.service = self._new_service()
        await self.service.open()
        self.async_notify()

    @property
    def db(self) -> LedgerDatabase:
        """The ledger file, shared by the embedded ledger and the chain journal."""
        return self._db

    @property
    def chain(self) -> LedgerBackend | None:
        """The chain backend mints are anchored on, if one is configured."""
        return self._chain

    # ------------------------------------------------------------ listeners

    @callback
    def async_add_listener(self, update: LedgerListener) -> CALLBACK_TYPE:
        """Call ``update`` after every change of the ledger; returns the remover."""
        self._listeners.append(update)
        return lambda: self._listeners.remove(update)

    @callback
    def async_notify(self) -> None:
        """Tell the ledger's entities that something changed."""
        for update in list(self._listeners):
            update()

    # ------------------------------------------------------------ market

    def market_state(self) -> MarketState:
        """Donors (SoC at or above the high threshold) and receivers (at or below low) online now."""
        return MarketState.from_soc(
            (node.soc_pct for node in self._grid.node_socs() if node.online),
            self._grid.thresholds,
        )

    def price_now(self, quality_factor: Decimal = Decimal(1)) -> Decimal:
        """Price per kWh a sell order of ``quality_factor`` would get now."""
        return price_per_kwh(self.market_state(), quality_factor, self.service.pricing)

    # ------------------------------------------------------------ reports

    async def async_process_report(self, report: EnergyReport) -> ReportOutcome:
        """Mint for ``report`` once; raises the core's errors when it is refused.

        A refused report (:class:`~.peergrid_core.errors.PeerGridValidationError`
        naming the field, or an idempotency conflict) leaves no trace.
        """
        outcome = await self.service.process_report(
            report, evidence=self.evidence_for(report), market=self.market_state()
        )
        if not outcome.duplicate:
            self._announce(outcome)
        self.async_notify()
        return outcome

    def evidence_for(self, report: EnergyReport) -> TransferEvidence | None:
        """The grid's transfer from the report's sender to its receiver that the report claims.

        Every transfer the grid ran is one it commanded: the sender was told
        to discharge for it. Of the transfers between the two nodes that no
        other report has minted, the one whose measured energy is closest to
        the report's wins (the newest on a tie); a running one counts too, as
        a gateway may report the end before the grid hears it. There is no
        age limit: a gateway that was offline for days still reports.
        """
        mints = self.service.mints(sender=report.sender_uid)
        between = [
            record
            for record in self._grid.transfers(limit=HISTORY_LIMIT)
            if record.sender == report.sender_uid and record.receiver == report.receiver_uid
        ]
        # A repeated report is judged against the transfer it minted the first time.
        for mint in mints:
            if mint.report_id == report.report_id:
                for record in between:
                    if record.transfer_id == mint.transfer_id:
                        return evidence_for_record(record)
        minted = {mint.transfer_id for mint in mints}
        claimed_wh = float(report.kwh_transferred) * 1000
        # Transfers already minted stay candidates of last resort, so that a
        # repeated report reaches the service, which answers it as a duplicate
        # (or refuses a second report of the same transfer).
        candidates = [r for r in between if r.transfer_id not in minted] or between
        if not candidates:
            return None
        best = min(candidates, key=lambda record: abs(record.wh_out - claimed_wh))
        return evidence_for_record(best)

    def _announce(self, outcome: ReportOutcome) -> None:
        event = EnergyMintEvent(data=outcome.event)
        if (hub := self.hass.data.get(DATA_IOT_HUB)) is not None:
            hub.publish(event)
        data: dict[str, Any] = outcome.event.model_dump(mode="json")
        data["order_id"] = outcome.order.order_id
        self.hass.bus.async_fire(EVENT_ENERGY_MINT, data)

    # ------------------------------------------------------------ the grid's own transfers

    @callback
    def _on_transfer_ended(self, record: TransferRecord) -> None:
        if self._settled_here(record):
            task = self.hass.async_create_task(self._async_settle(record), eager_start=True)
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _async_on_started(self, _event: Event) -> None:
        await self.async_settle_unsettled()

    async def async_settle_unsettled(self) -> None:
        """Settle ended transfers that a restart interrupted before they were minted.

        A report built from a record is identical every time, so one that was
        minted already comes back as a duplicate and mints nothing.
        """
        for record in self._grid.transfers(limit=HISTORY_LIMIT):
            if not record.active and self._settled_here(record):
                await self._async_settle(record)

    def _settled_here(self, record: TransferRecord) -> bool:
        """Direct transfers are settled by the grid; a gateway reports its own."""
        nodes = self._grid.nodes
        return (
            record.sender in nodes
            and record.receiver in nodes
            and Decimal(repr(record.wh_out)) / 1000 >= KWH_MIN
        )

    async def _async_settle(self, record: TransferRecord) -> None:
        report = report_for_record(record)
        try:
            outcome = await self.async_process_report(report)
        except PeerGridError as err:
            LOGGER.warning("Transfer %s was not minted: %s", record.transfer_id, err)
            return
        if not outcome.duplicate:
            LOGGER.info(
                "Transfer %s minted %s tokens to %s",
                record.transfer_id,
                outcome.amounts.tokens_minted,
                record.sender,
            )

    # ------------------------------------------------------------ rewards

    async def _async_pay_rewards(self, _now: datetime | None = None) -> None:
        """Bring every registered gateway's DePIN rewards up to date."""
        if (hub := self.hass.data.get(DATA_IOT_HUB)) is None:
            return
        now = dt_util.utcnow()
        paid = False
        for device_id in hub.depin.device_ids():
            if (node := hub.depin.record(device_id)) is None:
                continue
            try:
                receipts = await self.service.sync_rewards(node, account=device_id, now=now)
            except PeerGridError as err:
                LOGGER.warning("DePIN rewards for %s not paid: %s", device_id, err)
                continue
            paid = paid or bool(receipts)
        if paid:
            self.async_notify()

    async def async_pay_rewards(self) -> None:
        """Pay what the gateways have earned now (also runs every :data:`REWARD_INTERVAL`)."""
        await self._async_pay_rewards()
