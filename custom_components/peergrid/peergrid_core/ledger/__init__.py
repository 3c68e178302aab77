"""The PeerGrid ledger: energy tokens, carbon credits and rewards, exact and crash-safe.

* :mod:`.base` - units (integer base units, 7 decimals), receipts, errors and
  the :class:`LedgerBackend` protocol every backend implements.
* :mod:`.db` - the one SQLite file, with serialised, atomic async transactions.
* :mod:`.local` - :class:`LocalLedger`, the append-only hash chain (default).
* :mod:`.market` - dynamic price per kWh and sell orders.
* :mod:`.service` - :class:`LedgerService`, which turns energy reports into
  mints, credits and orders exactly once and pays DePIN rewards.

The Stellar Soroban backend lives in :mod:`.soroban` and is not imported
here, so the core imports without ``stellar_sdk``.
"""

from __future__ import annotations

from .base import (
    DECIMALS,
    IdempotencyConflictError,
    LedgerBackend,
    LedgerConfigError,
    LedgerError,
    LedgerStorageError,
    MintRejectedError,
    MintStatus,
    Receipt,
    Token,
    VerifyResult,
    from_base_units,
    to_base_units,
)
from .db import LedgerDatabase
from .local import EntryKind, LedgerEntry, LocalLedger
from .market import MarketState, OrderStatus, PricingConfig, SellOrder, price_per_kwh
from .service import (
    CarbonCredit,
    CreditKind,
    LedgerChange,
    LedgerChangeKind,
    LedgerService,
    LedgerTotals,
    MintRecord,
    ReportOutcome,
    RewardCategory,
    RewardPayment,
    TransferEvidence,
)

__all__ = [
    "DECIMALS",
    "CarbonCredit",
    "CreditKind",
    "EntryKind",
    "IdempotencyConflictError",
    "LedgerBackend",
    "LedgerChange",
    "LedgerChangeKind",
    "LedgerConfigError",
    "LedgerDatabase",
    "LedgerEntry",
    "LedgerError",
    "LedgerService",
    "LedgerStorageError",
    "LedgerTotals",
    "LocalLedger",
    "MarketState",
    "MintRecord",
    "MintRejectedError",
    "MintStatus",
    "OrderStatus",
    "PricingConfig",
    "Receipt",
    "ReportOutcome",
    "RewardCategory",
    "RewardPayment",
    "SellOrder",
    "Token",
    "TransferEvidence",
    "VerifyResult",
    "from_base_units",
    "price_per_kwh",
    "to_base_units",
]
